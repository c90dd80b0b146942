"""DLF_REQUIRE_PROVIDER on a CPU-only onnxruntime: the guard fails readiness and says why."""

from __future__ import annotations

import asyncio
import logging

import pytest

from service.provider_guard import provider_name, provider_problem
from service.settings import Settings


def test_short_names_map_to_provider_names() -> None:
    assert provider_name("cuda") == provider_name("CUDA") == "CUDAExecutionProvider"
    assert provider_name("CPUExecutionProvider") == "CPUExecutionProvider"


def test_problem_names_the_missing_build_or_the_failed_initialisation() -> None:
    cpu_only = ["CPUExecutionProvider"]
    assert provider_problem(None, "CPUExecutionProvider", cpu_only) is None
    assert provider_problem("cpu", "CPUExecutionProvider", cpu_only) is None
    missing = provider_problem("cuda", "CPUExecutionProvider", cpu_only)
    assert missing is not None and "only ['CPUExecutionProvider']" in missing
    fell_back = provider_problem("cuda", "CPUExecutionProvider", ["CUDAExecutionProvider", *cpu_only])
    assert fell_back is not None and "failed to initialise" in fell_back


def test_setting_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLF_REQUIRE_PROVIDER", "CUDAExecutionProvider")
    assert Settings().require_provider == "CUDAExecutionProvider"


async def test_readyz_fails_and_logs_when_the_required_provider_is_not_active(
    make_client, bundle_a, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="service.provider_guard")
    client = await make_client(wait=False, require_provider="CUDAExecutionProvider")
    for _ in range(500):  # the model loads in the background; the guard must still say no
        r = await client.get("/readyz")
        if r.json().get("model_version"):
            break
        await asyncio.sleep(0.02)
    assert r.status_code == 503
    assert (
        "DLF_REQUIRE_PROVIDER=CUDAExecutionProvider but the model runs on CPUExecutionProvider"
        in r.json()["error"]
    )
    assert any("DLF_REQUIRE_PROVIDER=CUDAExecutionProvider" in m for m in caplog.messages)
    # the model itself works: only readiness is refused
    assert (await client.get("/info")).json()["providers"][0] == "CPUExecutionProvider"


async def test_readyz_passes_when_the_required_provider_serves(make_client, bundle_a) -> None:
    client = await make_client(require_provider="cpu")
    assert (await client.get("/readyz")).status_code == 200
