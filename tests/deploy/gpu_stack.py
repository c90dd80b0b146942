"""One CUDA major across the GPU images: onnxruntime-gpu (serve-gpu), torch (trainer) and the bases.

CUDA libraries of different majors cannot serve one process, and an
onnxruntime-gpu whose CUDA libraries are missing silently runs on the CPU.
The evidence of a CUDA major, read from the locked sets and the Dockerfile:

* a ``-cuNN`` package name suffix (``nvidia-cudnn-cu13``, ``nvidia-cuda-runtime-cu12``);
* the version major of the unsuffixed CUDA 13+ wheels (``nvidia-cuda-runtime==13.0.96``);
* a torch local version (``torch==2.13.0+cu128`` -> 12);
* a CUDA base image tag (``nvidia/cuda:12.8.1-...`` -> 12).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)", re.MULTILINE)
SUFFIX = re.compile(r"-cu(\d{2,3})$")
# Unsuffixed wheels whose version major is the CUDA major (not e.g. cufft, whose 12.x ships in CUDA 13).
VERSIONED_BY_CUDA = {
    "nvidia-cuda-runtime",
    "nvidia-cuda-nvrtc",
    "nvidia-cuda-cupti",
    "nvidia-cublas",
    "nvidia-nvjitlink",
    "nvidia-nvtx",
    "cuda-toolkit",
    "cuda-bindings",
}
CUDA_IMAGE = re.compile(r"(?:^|/)cuda:(\d+)\.")


def parse_lock(text: str) -> dict[str, str]:
    """``name -> version`` of every ``name==version`` line (pip/uv requirement format)."""
    return {m.group(1).lower().replace("_", "-"): m.group(2) for m in PIN.finditer(text)}


def cuda_evidence(pins: dict[str, str]) -> dict[str, int]:
    """``package -> CUDA major`` for every pinned package that says which CUDA it is built for."""
    out: dict[str, int] = {}
    for name, version in pins.items():
        if (m := SUFFIX.search(name)) is not None:
            out[name] = int(m.group(1)[:2])
        elif name in VERSIONED_BY_CUDA:
            out[name] = int(version.split(".")[0])
        elif name == "torch" and (m := re.search(r"\+cu(\d+)", version)) is not None:
            out["torch"] = int(m.group(1)) // 10
    return out


def image_cuda_major(image: str) -> int | None:
    m = CUDA_IMAGE.search(image)
    return int(m.group(1)) if m else None


def stage_bases(dockerfile_text: str, stages: list[str]) -> dict[str, str]:
    """The external base image each named stage ends up on (following ``FROM <stage>`` chains, ARG defaults)."""
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", dockerfile_text, re.MULTILINE))
    froms = {
        m.group(2): m.group(1)
        for m in re.finditer(r"^FROM\s+(\S+)\s+AS\s+(\S+)", dockerfile_text, re.MULTILINE)
    }
    out = {}
    for stage in stages:
        ref = stage
        seen = set()
        while ref in froms and ref not in seen:
            seen.add(ref)
            ref = froms[ref]
        out[stage] = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)
    return out


@dataclass
class GpuStack:
    serve_lock: dict[str, str]  # the serve-gpu image's locked set
    trainer_lock: dict[str, str]  # the GPU trainer image's locked set
    base_images: dict[str, str]  # stage -> external base image


def check_gpu_stack(stack: GpuStack) -> list[str]:
    """Problems that would make the GPU images run on the CPU or fail to load CUDA ([] = consistent)."""
    problems: list[str] = []
    majors: dict[int, list[str]] = {}
    serve = cuda_evidence(stack.serve_lock)
    trainer = cuda_evidence(stack.trainer_lock)
    bases = {s: image_cuda_major(i) for s, i in stack.base_images.items()}
    for where, evidence in (("serve-gpu", serve), ("trainer", trainer)):
        for pkg, major in evidence.items():
            majors.setdefault(major, []).append(f"{where}:{pkg}")
    for stage, major in bases.items():
        if major is not None:
            majors.setdefault(major, []).append(f"base of {stage}:{stack.base_images[stage]}")

    if "onnxruntime-gpu" not in stack.serve_lock:
        problems.append("serve-gpu lock has no onnxruntime-gpu")
    serve_base_cuda = any(m is not None for s, m in bases.items() if s.startswith("serve"))
    if not serve and not serve_base_cuda:
        problems.append(
            "onnxruntime-gpu has no CUDA libraries: neither CUDA wheels in its lock nor a CUDA base image "
            "(it would fall back to the CPU)"
        )
    torch = stack.trainer_lock.get("torch")
    if torch is None:
        problems.append("trainer lock has no torch")
    elif "+cpu" in torch or not trainer:
        problems.append(f"trainer torch {torch} is not a CUDA build")
    if len(majors) > 1:
        detail = "; ".join(f"CUDA {m}: {', '.join(sorted(v))}" for m, v in sorted(majors.items()))
        problems.append(f"more than one CUDA major across the GPU images: {detail}")
    if not majors:
        problems.append("no CUDA major found in the GPU images at all")
    return problems


def repo_gpu_stack(root: Path) -> GpuStack:
    """The GPU stack as this repository builds it: deploy/locks + the Dockerfile's GPU stages."""
    dockerfile = (root / "Dockerfile").read_text()
    return GpuStack(
        serve_lock=parse_lock((root / "deploy/locks/serve-gpu.txt").read_text()),
        trainer_lock=parse_lock((root / "deploy/locks/trainer-gpu.txt").read_text()),
        base_images=stage_bases(dockerfile, ["serve-gpu", "trainer"]),
    )
