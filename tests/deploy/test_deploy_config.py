"""Static checks of the deployment configuration (no Docker engine needed).

Runs the real validators where they are installed (docker-compose 1.29, promtool,
nginx) and checks that the Grafana dashboard only queries metrics the service
exports, as listed in docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "deploy" / "compose.gpu.yml"
COMPOSE_LOCAL = ROOT / "deploy" / "compose.local.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "dlf.json"
ARCHITECTURE = ROOT / "docs" / "architecture.md"

_METRIC_RE = re.compile(r"dlf_[a-z_]+")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# ----------------------------------------------------------------- helpers


def documented_metrics(architecture: Path = ARCHITECTURE) -> set[str]:
    """Metric names from the 'Prometheus metric names' table of docs/architecture.md."""
    text = architecture.read_text(encoding="utf-8")
    section = text.split("## Prometheus metric names", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"`(dlf_[a-z_]+)`", section))
    if not names:
        raise ValueError(f"{architecture}: no `dlf_*` metric names in the Prometheus metric table")
    return names


def base_metric_name(name: str, known: set[str]) -> str:
    """Strip a histogram series suffix (_bucket/_sum/_count) unless the full name is itself known."""
    if name in known:
        return name
    for suffix in _HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL expr) for every target of every panel, rows' nested panels included."""
    out: list[tuple[str, str]] = []
    stack = list(dashboard.get("panels", []))
    while stack:
        panel = stack.pop()
        stack.extend(panel.get("panels", []))
        for target in panel.get("targets", []):
            if "expr" in target:
                out.append((panel.get("title", "?"), target["expr"]))
    return out


def dashboard_metric_names(dashboard: dict[str, Any], known: set[str] | None = None) -> dict[str, set[str]]:
    """Metric base names queried by each panel (title -> names); histogram suffixes stripped.

    `known` is the set of exported names (from docs or a live /metrics scrape); it keeps a
    counter that really ends in e.g. `_count` from being truncated.
    """
    known = known or set()
    by_panel: dict[str, set[str]] = {}
    for title, expr in dashboard_exprs(dashboard):
        names = {base_metric_name(n, known) for n in _METRIC_RE.findall(expr)}
        by_panel.setdefault(title, set()).update(names)
    return by_panel


def _compose(*files: Path, tmp_path: Path) -> dict[str, Any]:
    """Run `docker-compose -f ... config` and return the merged config it prints."""
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose binary not installed")
    args = [binary]
    for f in files:
        args += ["-f", str(f)]
    env = {**os.environ, "DLF_ADMIN_TOKEN": "test-token", "GRAFANA_ADMIN_PASSWORD": "test-password"}
    env.pop("COMPOSE_FILE", None)
    proc = subprocess.run([*args, "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"docker-compose config failed:\n{proc.stderr}"
    return yaml.safe_load(proc.stdout)


def _gpu_devices(service: dict[str, Any]) -> list[dict[str, Any]]:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source for short ("src:dst[:mode]") or long volume syntax."""
    out: dict[str, str] = {}
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
            out[target] = source
        else:
            out[v["target"]] = v["source"]
    return out


# ----------------------------------------------------------------- compose


def test_compose_base_is_the_cpu_stack(tmp_path: Path) -> None:
    cfg = _compose(COMPOSE, tmp_path=tmp_path)
    services = cfg["services"]
    assert {"redis", "bootstrap", "api", "nginx", "prometheus", "grafana", "trainer"} <= set(services)
    for name in services:
        assert not _gpu_devices(services[name]), f"{name}: the base file must run on any host"
    assert (
        services["api"]["build"]["target"] == "serve-cpu" and services["api"]["image"] == "dlf-ctr:serve-cpu"
    )
    for name in ("bootstrap", "trainer"):
        assert services[name]["build"]["target"] == "trainer-cpu", name
    assert services["trainer"]["profiles"] == ["train"]
    api = services["api"]
    assert api["depends_on"]["redis"]["condition"] == "service_healthy"
    assert api["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    assert "ports" not in api, "api must not publish a host port (nginx does), or --scale breaks"
    assert "--appendonly" in services["redis"]["command"]
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert {"registry", "redis-data"} <= set(cfg["volumes"])
    mounts = _mounts(api)
    trainer_mounts = _mounts(services["trainer"])
    assert mounts["/registry"] == trainer_mounts["/registry"] == "registry"


def _published(service: dict[str, Any]) -> dict[str, str]:
    """container port -> host ip for each published port (docker-compose 1.29 prints the long form)."""
    out = {}
    for p in service.get("ports", []):
        if isinstance(p, str):
            *host, target = p.split(":")
            out[target.split("/")[0]] = host[0] if len(host) == 2 else "0.0.0.0"
        else:
            out[str(p["target"])] = p.get("host_ip", "0.0.0.0")
    return out


def test_admin_and_ops_ports_publish_on_loopback_only(tmp_path: Path) -> None:
    services = _compose(COMPOSE, tmp_path=tmp_path)["services"]
    nginx = _published(services["nginx"])
    assert nginx["8081"] == "127.0.0.1", "the admin listener must not be public"
    assert _published(services["prometheus"])["9090"] == "127.0.0.1"
    assert _published(services["grafana"])["3000"] == "127.0.0.1"


def test_grafana_has_no_default_password(tmp_path: Path) -> None:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose binary not installed")
    env = {k: v for k, v in os.environ.items() if k != "GRAFANA_ADMIN_PASSWORD"}
    env["DLF_ADMIN_TOKEN"] = "t"
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE), "config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode != 0 and "GRAFANA_ADMIN_PASSWORD" in proc.stderr
    text = COMPOSE.read_text(encoding="utf-8")
    assert "GRAFANA_ADMIN_PASSWORD:-" not in text and "admin/admin" not in text


def test_compose_gpu_override_adds_gpu_images_and_reservations(tmp_path: Path) -> None:
    """Adds keys only (no `!reset`), so docker-compose 1.29 merges it as Compose v2 does."""
    assert " !reset" not in COMPOSE_GPU.read_text(encoding="utf-8").split("\nservices:", 1)[1]
    services = _compose(COMPOSE, COMPOSE_GPU, tmp_path=tmp_path)["services"]
    assert services["api"]["build"]["target"] == "serve-gpu"
    for name in ("api", "trainer", "bootstrap"):
        devices = _gpu_devices(services[name])
        assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name
    for name in ("bootstrap", "trainer"):
        assert services[name]["build"]["target"] == "trainer", name


def test_compose_local_override_uses_images_built_from_debian(tmp_path: Path) -> None:
    services = _compose(COMPOSE, COMPOSE_LOCAL, tmp_path=tmp_path)["services"]
    for name in ("redis", "nginx", "prometheus"):
        assert services[name]["image"] == "dlf-infra:bookworm", name
        assert services[name].get("user") not in (None, "root", "0"), f"{name} must not run as root"
    for name in ("api", "bootstrap", "trainer"):
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "dlf-base:bookworm", name
    # the base file's healthchecks and config mounts still apply to the Debian-built images
    assert "redis-cli" in services["redis"]["healthcheck"]["test"]
    assert "/etc/nginx/nginx.conf" in _mounts(services["nginx"])


# ----------------------------------------------------------------- prometheus / nginx


def test_promtool_accepts_prometheus_config() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    cfg_path = ROOT / "deploy" / "prometheus" / "prometheus.yml"
    proc = subprocess.run(
        [promtool, "check", "config", str(cfg_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    api_job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "dlf-api")
    assert api_job["dns_sd_configs"][0]["names"] == ["api"]
    assert api_job["dns_sd_configs"][0]["port"] == 8000


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )
    if nginx is None:
        pytest.skip("nginx not installed")
    conf = ROOT / "deploy" / "nginx" / "nginx.conf"
    proc = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-e", "stderr", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    text = conf.read_text(encoding="utf-8")
    assert "resolver 127.0.0.11" in text
    assert re.search(r"proxy_pass\s+\$\w+;", text), "proxy_pass must use a variable so replicas re-resolve"
    public, admin = text.split("listen 8080;", 1)[1].split("listen 8081;", 1)
    # the public listener answers /admin/ itself; only the admin listener proxies it
    admin_block = public.split("location /admin/", 1)[1].split("}", 1)[0]
    assert "return 404" in admin_block and "proxy_pass" not in admin_block
    assert (
        "location /admin/" in admin and "proxy_pass" in admin.split("location /admin/", 1)[1].split("}", 1)[0]
    )
    # retries: POST /predict only on connect errors and 503 (never on 502 / read timeouts)
    predict_block = public.split("location = /predict", 1)[1].split("}", 1)[0]
    assert "proxy_next_upstream error http_503 non_idempotent;" in predict_block
    assert "non_idempotent" not in public.replace(predict_block, "")


# ----------------------------------------------------------------- grafana


def test_dashboard_queries_only_documented_metrics() -> None:
    known = documented_metrics()
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    by_panel = dashboard_metric_names(dashboard, known)
    assert by_panel, "dashboard has no PromQL targets"
    for title, names in by_panel.items():
        assert names, f"panel {title!r} queries no dlf_* metric"
        unknown = names - known
        assert not unknown, f"panel {title!r} uses undocumented metrics {sorted(unknown)}"
    used = set().union(*by_panel.values())
    required = {
        "dlf_requests_total",  # QPS
        "dlf_request_latency_seconds",  # p50/p99
        "dlf_batch_rows",  # batch sizes
        "dlf_feature_cache_hits_total",  # cache hit ratio
        "dlf_feature_cache_misses_total",
        "dlf_degraded_responses_total",  # degraded rate
        "dlf_model_info",  # model version
        "dlf_reloads_total",  # reloads
    }
    assert required <= used, f"dashboard misses {sorted(required - used)}"


def test_metric_helper_strips_histogram_suffixes() -> None:
    dash = {
        "panels": [
            {
                "title": "row",
                "panels": [
                    {"title": "lat", "targets": [{"expr": "rate(dlf_request_latency_seconds_bucket[1m])"}]}
                ],
            },
            {"title": "qps", "targets": [{"expr": "sum(rate(dlf_requests_total[1m]))"}]},
        ]
    }
    assert dashboard_metric_names(dash, {"dlf_requests_total"}) == {
        "lat": {"dlf_request_latency_seconds"},
        "qps": {"dlf_requests_total"},
    }


def test_grafana_provisioning_points_at_dashboard_and_prometheus() -> None:
    prov = ROOT / "deploy" / "grafana" / "provisioning"
    ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    source = ds["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {t["datasource"]["uid"] for _, t in _targets_with_ds(dashboard)}
    assert uids == {source["uid"]}
    providers = yaml.safe_load((prov / "dashboards" / "dlf.yml").read_text(encoding="utf-8"))
    assert providers["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def _targets_with_ds(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["title"], t) for p in dashboard["panels"] for t in p.get("targets", [])]


# ----------------------------------------------------------------- kubernetes / docker


def test_k8s_manifests_parse_with_expected_kinds() -> None:
    docs = []
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    kinds = {d["kind"] for d in docs}
    expected = {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "ConfigMap",
        "PersistentVolumeClaim",
        "CronJob",
    }
    assert expected <= kinds, f"missing kinds {sorted(expected - kinds)}"
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    registry = next(
        d for d in docs if d["kind"] == "PersistentVolumeClaim" and d["metadata"]["name"] == "dlf-registry"
    )
    assert registry["spec"]["accessModes"] == ["ReadWriteMany"]
    api = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dlf-api")
    container = api["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]


def test_dockerfile_shape() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.MULTILINE | re.IGNORECASE)
    assert {"serve-cpu", "serve-gpu", "trainer-cpu", "trainer"} <= set(stages)
    # the legacy builder builds every stage above the target: CPU images must not need GPU stages
    assert max(stages.index("serve-cpu"), stages.index("trainer-cpu")) < stages.index("serve-gpu-deps")
    assert re.search(r"^USER\s+app", text, flags=re.MULTILINE)
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert "--chmod" not in text, "COPY --chmod needs BuildKit; CI builds with DOCKER_BUILDKIT=0"
    serve_cpu = text.split("FROM python AS serve-cpu\n", 1)[1].split("\nFROM ", 1)[0]
    assert "COPY service " in serve_cpu and "training" not in serve_cpu and "model" not in serve_cpu
    assert "DLF_REQUIRE_PROVIDER=CUDAExecutionProvider" in text.split("FROM python AS serve-gpu\n", 1)[1]
    # dependencies install from the lock before any code is copied (cache-friendly layers)
    deps = text.split("FROM python AS serve-cpu-deps", 1)[1].split("\nFROM ", 1)[0]
    assert "deploy/locks/serve-cpu.txt" in deps and "COPY service" not in deps
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    ignore = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    assert ignore[0] == "**" and "!service/**" in ignore and "!.venv" not in ignore
