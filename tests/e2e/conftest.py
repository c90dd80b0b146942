"""Fixtures shared by the end-to-end tests (process helpers live in serving_support.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from serving_support import RedisServer


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server of the test module's own, free to be stopped, restarted or flooded with notices."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
