"""The GPU images' locked sets agree on one CUDA major (runs without a GPU)."""

from __future__ import annotations

from pathlib import Path

from gpu_stack import GpuStack, check_gpu_stack, cuda_evidence, parse_lock, repo_gpu_stack, stage_bases

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures/gpu-stack-2026-11.txt"


def sections(text: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        if line.startswith("["):
            current = line.strip("[]")
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def test_repository_gpu_images_use_one_cuda_major() -> None:
    stack = repo_gpu_stack(ROOT)
    assert check_gpu_stack(stack) == []
    # the check saw real evidence on both sides, not an empty set that trivially agrees
    assert "onnxruntime-gpu" in stack.serve_lock and cuda_evidence(stack.serve_lock)
    assert cuda_evidence(stack.trainer_lock).get("torch") or any(
        k.startswith("nvidia-cuda-runtime") for k in cuda_evidence(stack.trainer_lock)
    )


def test_the_cu128_base_with_cuda13_onnxruntime_is_caught() -> None:
    s = sections(FIXTURE.read_text())
    stack = GpuStack(parse_lock(s["serve-gpu"]), parse_lock(s["trainer"]), {"gpu": s["base"].strip()})
    problems = check_gpu_stack(stack)
    assert len(problems) == 1 and "more than one CUDA major" in problems[0], problems
    assert "CUDA 12:" in problems[0] and "CUDA 13:" in problems[0]
    assert "trainer:torch" in problems[0] and "serve-gpu:nvidia-cudnn-cu13" in problems[0]


def test_onnxruntime_gpu_without_cuda_libraries_is_caught() -> None:
    stack = GpuStack(
        parse_lock("onnxruntime-gpu==1.31.1\nnumpy==2.4.6"),
        parse_lock("torch==2.13.0\nnvidia-cuda-runtime==13.0.96"),
        {"serve-gpu": "debian:bookworm-slim"},
    )
    assert any("would fall back to the CPU" in p for p in check_gpu_stack(stack))


def test_cpu_torch_in_the_gpu_trainer_is_caught() -> None:
    stack = GpuStack(
        parse_lock("onnxruntime-gpu==1.31.1\nnvidia-cuda-runtime==13.0.96"),
        parse_lock("torch==2.13.0+cpu"),
        {},
    )
    assert any("not a CUDA build" in p for p in check_gpu_stack(stack))


def test_stage_bases_follow_from_chains_and_arg_defaults() -> None:
    text = "ARG BASE=nvidia/cuda:13.0.1-runtime\nFROM ${BASE} AS py\nFROM py AS deps\nFROM deps AS app\n"
    assert stage_bases(text, ["app"]) == {"app": "nvidia/cuda:13.0.1-runtime"}
