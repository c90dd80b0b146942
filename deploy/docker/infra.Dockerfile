# Redis, nginx and Prometheus from Debian packages, for hosts that cannot pull the Hub images
# (deploy/compose.local.yml runs one image per role with its own command and user):
#   docker build -f deploy/docker/infra.Dockerfile --build-arg BASE_IMAGE=dlf-base:bookworm \
#     -t dlf-infra:bookworm deploy/docker
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server nginx-light prometheus wget ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
      /usr/share/doc/* /usr/share/man/* /usr/share/locale/* \
 && mkdir -p /data /prometheus \
 && chown redis:redis /data \
 && chown prometheus:prometheus /prometheus
USER nobody
CMD ["sh", "-c", "echo 'pick a role: redis-server, nginx or prometheus (see deploy/compose.local.yml)'; exit 2"]
