"""The feature-id store interface, its in-process cache and the backend factory.

Two backends resolve ``(version, field, raw key) -> id``: the embedded one reads
the bundle's vocab files (single machine, no Redis), the Redis one shares the
vocab between replicas. Both sit behind ``FeatureStore`` so the request path
does not care which one runs.
"""

from __future__ import annotations

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


class GenerationalCache:
    """A bounded cache of ``key -> value`` per scope (e.g. one bundle version's field), looked up a
    request's keys at a time, that forgets what was not used for about ``maxsize`` insertions.

    Two generations of plain dicts: new and re-used entries go to the young one; when it holds
    ``maxsize // 2`` entries it becomes the old one and the previous old one is dropped, so an
    entry used at least once per generation stays, and at most ``maxsize`` entries are held. An
    approximation of LRU, chosen over an ``OrderedDict`` LRU (or cachetools') because a hit here is
    one dict comprehension over the request's keys instead of a Python call, a tuple and a
    ``move_to_end`` per key: 81 -> 37 us for the 268 distinct keys of a 100-row Frappe request
    (all cached; ``python -m bench.request_pieces``).
    """

    def __init__(self, maxsize: int) -> None:
        if maxsize < 0:
            raise ValueError(f"maxsize must be >= 0, got {maxsize}")
        self.maxsize = maxsize
        self._young: dict[Hashable, dict[str, Any]] = {}
        self._old: dict[Hashable, dict[str, Any]] = {}
        self._young_size = 0

    def __len__(self) -> int:
        return self._young_size + sum(len(d) for d in self._old.values())

    def get_many(self, scope: Hashable, keys: Collection[str]) -> tuple[dict[str, Any], list[str]]:
        """(found ``key -> value``, keys not cached) for ``keys`` of ``scope``."""
        young = self._young.get(scope)
        found = {k: young[k] for k in keys if k in young} if young else {}
        if len(found) == len(keys):
            return found, []
        old = self._old.get(scope, {})
        missing: list[str] = []
        revived: dict[str, Any] = {}
        for k in keys:
            if k in found:
                continue
            if k in old:
                revived[k] = old[k]
            else:
                missing.append(k)
        if revived:
            found.update(revived)
            for k in revived:  # moved, not copied: ``len`` counts each entry once
                del old[k]
            self.put_many(scope, revived)  # used again: into the young generation
        return found, missing

    def put_many(self, scope: Hashable, items: Mapping[str, Any]) -> None:
        if self.maxsize == 0 or not items:
            return
        young = self._young.setdefault(scope, {})
        before = len(young)
        young.update(items)
        self._young_size += len(young) - before
        if self._young_size >= max(1, self.maxsize // 2):
            self._old, self._young, self._young_size = self._young, {}, 0

    def clear(self) -> None:
        self._young.clear()
        self._old.clear()
        self._young_size = 0


def build_feature_store(settings: Settings, metrics: ServiceMetrics | None = None) -> FeatureStore:
    """Redis when ``REDIS_URL`` is set, the embedded vocab otherwise."""
    if settings.redis_url:
        from service.redis_store import RedisFeatureStore

        return RedisFeatureStore.from_settings(settings, metrics)
    from service.embedded_store import EmbeddedFeatureStore

    return EmbeddedFeatureStore()
