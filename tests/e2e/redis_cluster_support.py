"""A real 3-master Redis Cluster on loopback (redis-server --cluster-enabled yes x3 + redis-cli --cluster create)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from serving_support import _stop, wait_redis


def cluster_port() -> int:
    """A free port p <= 55535 whose cluster-bus port p + 10000 is free too (Redis requires both)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port > 55535:
            port = 20000 + port % 30000
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


class LocalRedisCluster:
    """Three masters, no replicas, on free ports; a shard may be killed to test degraded answers."""

    def __init__(self, workdir: Path, masters: int = 3) -> None:
        server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if server is None or cli is None:
            raise RuntimeError("redis-server / redis-cli not found")
        self.server, self.cli = server, cli
        self.workdir = workdir
        self.ports = [cluster_port() for _ in range(masters)]
        self.procs: dict[int, subprocess.Popen] = {}

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start(self, timeout: float = 30.0) -> None:
        for port in self.ports:
            node_dir = self.workdir / str(port)
            node_dir.mkdir(parents=True, exist_ok=True)
            cmd = [
                self.server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
            cmd += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf"]
            # Fast failure detection; a dead shard must not take the healthy slots down with it.
            cmd += ["--cluster-node-timeout", "2000", "--cluster-require-full-coverage", "no"]
            cmd += ["--dir", str(node_dir), "--daemonize", "no"]
            self.procs[port] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in self.ports:
            wait_redis(port, timeout)
        create = [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
        create += ["--cluster-replicas", "0", "--cluster-yes"]
        done = subprocess.run(create, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout}\n{done.stderr}")
        deadline = time.monotonic() + timeout
        while any(self.node(p).cluster("info")["cluster_state"] != "ok" for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError("cluster did not reach cluster_state:ok")
            time.sleep(0.1)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2.0)

    def port_of_key(self, key: str) -> int:
        """The master port owning ``key``'s slot (CLUSTER KEYSLOT + CLUSTER SLOTS)."""
        with self.node(self.ports[0]) as c:
            slot = int(c.cluster("keyslot", key))
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if int(start) <= slot <= int(end):
                    return int(master[1])
        raise RuntimeError(f"slot of {key!r} not covered")

    def command_calls(self) -> dict[int, dict[str, int]]:
        """Per live node: calls per command from INFO commandstats."""
        out = {}
        for port, proc in self.procs.items():
            if proc.poll() is None:
                with self.node(port) as c:
                    stats = c.info("commandstats")
                out[port] = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}
        return out

    def kill(self, port: int) -> None:
        proc = self.procs[port]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            _stop(proc)
        self.procs.clear()
