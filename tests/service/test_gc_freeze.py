"""DLF_GC_FREEZE: what is alive after the first model load leaves the cyclic collector's reach."""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from service.testing import TinyBundle

RECORD = {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4}


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite runs with nothing frozen (tests/conftest.py)


@pytest.mark.usefixtures("unfrozen")
async def test_the_first_load_freezes_what_is_alive_and_a_full_collection_gets_cheap(
    bundle_a: TinyBundle, make_client: Callable[..., Awaitable[httpx.AsyncClient]]
) -> None:
    client = await make_client(gc_freeze=True)
    assert (await client.post("/predict", json={"records": [RECORD]})).status_code == 200
    frozen = gc.get_freeze_count()
    assert frozen > 10_000  # the app, FastAPI, numpy, onnxruntime's Python side...
    start = time.perf_counter()
    gc.collect()
    frozen_pass = time.perf_counter() - start
    gc.unfreeze()
    start = time.perf_counter()
    gc.collect()
    full_pass = time.perf_counter() - start
    assert frozen_pass < full_pass  # the pass that would stop the event loop skips the frozen objects


@pytest.mark.usefixtures("unfrozen")
async def test_off_leaves_the_collector_alone(
    bundle_a: TinyBundle, make_client: Callable[..., Awaitable[httpx.AsyncClient]]
) -> None:
    client = await make_client(gc_freeze=False)
    assert (await client.post("/predict", json={"records": [RECORD]})).status_code == 200
    assert gc.get_freeze_count() == 0
