"""LRU cache, the embedded store and the backend factory."""

from __future__ import annotations

import pytest

from service.contract import load_schema
from service.embedded_store import EmbeddedFeatureStore
from service.feature_store import FeatureStore, LRUCache, build_feature_store
from service.redis_store import RedisFeatureStore
from service.settings import Settings
from service.testing import VERSION_A, VERSION_B, TinyBundle


def test_lru_evicts_least_recently_used() -> None:
    cache = LRUCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert "b" not in cache and cache.get("a") == 1 and cache.get("c") == 3
    assert len(cache) == 2
    cache.put("a", 10)  # update keeps size
    assert len(cache) == 2 and cache.get("a") == 10
    assert cache.get("missing", -5) == -5


def test_lru_zero_size_disables_and_negative_rejected() -> None:
    cache = LRUCache(0)
    cache.put("a", 1)
    assert len(cache) == 0 and cache.get("a") is None
    with pytest.raises(ValueError):
        LRUCache(-1)


def test_lru_keys_with_versions_do_not_collide() -> None:
    cache = LRUCache(10)
    cache.put((VERSION_A, "item", "266"), 1)
    cache.put((VERSION_B, "item", "266"), 7)
    assert cache.get((VERSION_A, "item", "266")) == 1
    assert cache.get((VERSION_B, "item", "266")) == 7


async def test_embedded_store_resolves_known_keys_only(bundle_a: TinyBundle) -> None:
    store = EmbeddedFeatureStore()
    assert isinstance(store, FeatureStore)
    assert not (await store.status(VERSION_A)).ready
    with pytest.raises(KeyError, match="prepare"):
        await store.lookup(VERSION_A, {"item": {"266"}})
    await store.prepare(bundle_a.path, load_schema(bundle_a.path))
    assert (await store.status(VERSION_A)).ready
    found = await store.lookup(VERSION_A, {"item": {"266", "1.5", "nope"}, "user": {"u3"}})
    assert found.ids == {"item": {"266": 1, "1.5": 4}, "user": {"u3": 3}}
    assert not found.degraded
    store.forget(VERSION_A)
    assert not (await store.status(VERSION_A)).ready


async def test_embedded_store_keeps_versions_apart(bundle_a: TinyBundle, registry) -> None:
    from service.testing import TINY_VOCAB, write_tiny_bundle

    other = write_tiny_bundle(registry, version=VERSION_B, seed=3, make_current=False)
    # give version B a different vocabulary order for "city"
    (other.path / "vocab/city.json").write_text('["oslo", "paris"]')
    store = EmbeddedFeatureStore()
    await store.prepare(bundle_a.path, load_schema(bundle_a.path))
    await store.prepare(other.path, load_schema(other.path))
    assert TINY_VOCAB["city"] == ["paris", "oslo"]
    assert (await store.lookup(VERSION_A, {"city": {"paris"}})).ids["city"]["paris"] == 1
    assert (await store.lookup(VERSION_B, {"city": {"paris"}})).ids["city"]["paris"] == 2


async def test_factory_picks_backend_from_redis_url(tmp_path) -> None:
    assert isinstance(build_feature_store(Settings(registry=tmp_path)), EmbeddedFeatureStore)
    store = build_feature_store(Settings(registry=tmp_path, redis_url="redis://127.0.0.1:6379/0"))
    assert isinstance(store, RedisFeatureStore)
    await store.close()
