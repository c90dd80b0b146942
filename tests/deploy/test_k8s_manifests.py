"""Kubernetes manifests: schema-valid (kubernetes-validate, strict), restricted Pod Security, PDB, drain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
VALIDATOR = Path(sys.executable).parent / "kubernetes-validate"


def manifests() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def docs() -> list[dict[str, Any]]:
    return [d for p in manifests() for d in yaml.safe_load_all(p.read_text()) if d]


def validate(*paths: Path) -> subprocess.CompletedProcess:
    if not VALIDATOR.exists():
        pytest.skip("kubernetes-validate not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [str(VALIDATOR), "--strict", "--quiet", *map(str, paths)], capture_output=True, text=True, timeout=120
    )


def test_manifests_pass_strict_schema_validation() -> None:
    proc = validate(*manifests())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifests())


def test_the_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    broken = tmp_path / "api.yaml"
    broken.write_text((K8S / "api.yaml").read_text().replace("containerPort: 8000", "containerPort: eight"))
    assert validate(broken).returncode != 0


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs():
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        if "template" in spec:
            out.append((f"{d['kind']}/{d['metadata']['name']}", spec["template"]["spec"]))
    return out


def test_every_pod_meets_restricted_pod_security() -> None:
    specs = pod_specs()
    assert len(specs) >= 4
    for name, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
    namespace = next(d for d in docs() if d["kind"] == "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_api_has_a_disruption_budget_and_drains_on_termination() -> None:
    all_docs = docs()
    pdb = next(d for d in all_docs if d["kind"] == "PodDisruptionBudget")
    api = next(d for d in all_docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "dlf-api")
    assert pdb["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["minAvailable"] >= 1 and api["spec"]["replicas"] > pdb["spec"]["minAvailable"]
    spec = api["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    settings = next(d for d in all_docs if d["kind"] == "ConfigMap")["data"]
    budget = (
        int(pre_stop[1]) + float(settings["DLF_SHUTDOWN_GRACE_S"]) + float(settings["DLF_DRAIN_TIMEOUT_S"])
    )
    assert spec["terminationGracePeriodSeconds"] > budget, "the kubelet would kill the pod mid-drain"
