"""Fixtures for service unit tests: tiny bundles on disk and in-process apps."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from service.settings import Settings
from service.testing import VERSION_A, VERSION_B, TinyBundle, write_tiny_bundle

REDIS_URL = "redis://127.0.0.1:6379"


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    return tmp_path / "registry"


@pytest.fixture
def bundle_a(registry: Path) -> TinyBundle:
    return write_tiny_bundle(registry, version=VERSION_A, seed=0, make_current=True)


@pytest.fixture
def bundle_b(registry: Path, bundle_a: TinyBundle) -> TinyBundle:
    """Same schema, different weights, not CURRENT: for hot-reload tests."""
    return write_tiny_bundle(registry, version=VERSION_B, seed=1, make_current=False)


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of its own on the shared Redis; every key under it is deleted afterwards."""
    import redis

    prefix = f"dlf-test-{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


async def wait_ready(client: httpx.AsyncClient, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get("/readyz")
        if r.status_code == 200:
            return
        if "load failed" in (r.json().get("error") or ""):
            break
        await asyncio.sleep(0.02)
    raise AssertionError(f"app not ready: {r.json()}")


@pytest.fixture
async def make_client(registry: Path) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """Start an in-process app (its lifespan included) with settings overrides; waits for readiness."""
    async with contextlib.AsyncExitStack() as stack:

        async def _make(wait: bool = True, **overrides: object) -> httpx.AsyncClient:
            app = create_app(Settings(registry=registry, **overrides))  # type: ignore[arg-type]
            await stack.enter_async_context(app.router.lifespan_context(app))
            client = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")
            )
            client.app = app  # type: ignore[attr-defined]
            if wait:
                await wait_ready(client)
            return client

        yield _make
