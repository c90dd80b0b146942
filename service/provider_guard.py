"""``DLF_REQUIRE_PROVIDER``: not ready unless the named ONNX Runtime execution provider serves.

A GPU image whose CUDA libraries fail to load does not crash: ONNX Runtime
falls back to the CPU and the service answers, slowly. The guard turns that
into a failed ``/readyz`` with the reason in the body and in the log, so an
orchestrator never routes traffic to a GPU replica that is running on the CPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

log = logging.getLogger(__name__)

ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}
_logged: set[str] = set()


def provider_name(name: str) -> str:
    """``cuda`` / ``CUDA`` / ``CUDAExecutionProvider`` -> ``CUDAExecutionProvider``."""
    return ALIASES.get(name.strip().lower(), name.strip())


def provider_problem(required: str | None, active: str, available: Sequence[str]) -> str | None:
    """Why the active provider does not satisfy ``required`` (None when it does or nothing is required)."""
    if not required:
        return None
    want = provider_name(required)
    if active == want:
        return None
    reason = f"DLF_REQUIRE_PROVIDER={want} but the model runs on {active}"
    if want not in available:
        return f"{reason}: this onnxruntime build has only {list(available)} (wrong package installed?)"
    return (
        f"{reason}: {want} is built in but failed to initialise (driver, CUDA/cuDNN libraries; see the log)"
    )


def check_provider(required: str | None, active: str, available: Sequence[str]) -> str | None:
    """``provider_problem``, logged as an error the first time each distinct reason is seen."""
    problem = provider_problem(required, active, available)
    if problem is not None and problem not in _logged:
        _logged.add(problem)
        log.error("not ready: %s", problem)
    return problem


def preload_cuda_libraries() -> None:
    """Load CUDA/cuDNN from the nvidia-* wheels so the CUDA provider finds them (ORT >= 1.21).

    The GPU image ships ORT's own CUDA wheels instead of a CUDA base image;
    they live in site-packages, outside the loader's search path.
    """
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload(cuda=True, cudnn=True, msvc=False)
    except Exception as exc:  # a failure shows up as the provider guard's reason
        log.warning("could not preload the CUDA libraries: %s: %s", type(exc).__name__, exc)
