"""Feature ids straight from the bundle's vocab files: the single-machine default."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from pathlib import Path

from service.contract import BundleSchema, load_vocab
from service.feature_store import Lookup, StoreStatus


class EmbeddedFeatureStore:
    """Holds ``version -> field -> key -> id`` in memory; the vocab is the cache, so no LRU."""

    backend = "embedded"

    def __init__(self) -> None:
        self._vocab: dict[str, dict[str, dict[str, int]]] = {}

    async def prepare(self, bundle_dir: Path, schema: BundleSchema) -> None:
        if schema.version in self._vocab:
            return
        self._vocab[schema.version] = await asyncio.to_thread(self._load, Path(bundle_dir), schema)

    @staticmethod
    def _load(bundle_dir: Path, schema: BundleSchema) -> dict[str, dict[str, int]]:
        return {f.name: load_vocab(bundle_dir, f) for f in schema.categorical}

    def forget(self, version: str) -> None:
        """Drop a version no longer served (after a hot swap)."""
        self._vocab.pop(version, None)

    async def lookup(self, version: str, keys: Mapping[str, Collection[str]]) -> Lookup:
        try:
            vocab = self._vocab[version]
        except KeyError:
            raise KeyError(f"vocab of version {version!r} is not loaded; call prepare() first") from None
        ids: dict[str, dict[str, int]] = {}
        for name, wanted in keys.items():
            table = vocab.get(name, {})
            ids[name] = {k: table[k] for k in wanted if k in table}
        return Lookup(ids=ids, degraded=False)

    async def status(self, version: str) -> StoreStatus:
        loaded = version in self._vocab
        return StoreStatus(backend=self.backend, ready=loaded, details={"vocab_loaded": loaded})

    async def close(self) -> None:
        self._vocab.clear()
