"""The feature-id store interface, its in-process LRU cache and the backend factory.

Two backends resolve ``(version, field, raw key) -> id``: the embedded one reads
the bundle's vocab files (single machine, no Redis), the Redis one shares the
vocab between replicas. Both sit behind ``FeatureStore`` so the request path
does not care which one runs.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from service.contract import BundleSchema
from service.metrics import ServiceMetrics
from service.settings import Settings


@dataclass
class Lookup:
    """Ids found for one request; keys not in ``ids`` are OOV. ``degraded``: some keys were unresolvable."""

    ids: dict[str, dict[str, int]]
    degraded: bool = False


@dataclass
class StoreStatus:
    """What /readyz and /info report about the store; ``ready`` False blocks readiness."""

    backend: str
    ready: bool
    details: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class FeatureStore(Protocol):
    """Resolves raw categorical keys to ids for one bundle version."""

    backend: str

    async def prepare(self, bundle_dir: Path, schema: BundleSchema) -> None:
        """Make the ids of this bundle version available (load files / check or publish Redis)."""
        ...

    async def lookup(self, version: str, keys: Mapping[str, Collection[str]]) -> Lookup:
        """Ids for every ``field -> keys``; never raises for unknown keys (they are OOV)."""
        ...

    async def status(self, version: str) -> StoreStatus: ...

    async def close(self) -> None: ...


class LRUCache:
    """A bounded mapping that forgets the least recently used entry first (maxsize 0 = disabled)."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable, default: Any = None) -> Any:
        try:
            self._data.move_to_end(key)
        except KeyError:
            return default
        return self._data[key]

    def put(self, key: Hashable, value: Any) -> None:
        if self.maxsize == 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()


def build_feature_store(settings: Settings, metrics: ServiceMetrics | None = None) -> FeatureStore:
    """Redis when ``REDIS_URL`` is set, the embedded vocab otherwise."""
    if settings.redis_url:
        from service.redis_store import RedisFeatureStore

        return RedisFeatureStore.from_settings(settings, metrics)
    from service.embedded_store import EmbeddedFeatureStore

    return EmbeddedFeatureStore()
