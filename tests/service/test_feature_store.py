"""The lookup cache, the embedded store and the backend factory."""

from __future__ import annotations

import pytest

from service.contract import load_schema
from service.embedded_store import EmbeddedFeatureStore
from service.feature_store import FeatureStore, GenerationalCache, build_feature_store
from service.redis_store import RedisFeatureStore
from service.settings import Settings
from service.testing import VERSION_A, VERSION_B, TinyBundle


def test_cache_forgets_what_was_not_used_for_a_generation() -> None:
    cache = GenerationalCache(4)  # generations of 2 entries
    assert cache.get_many("s", {"a"}) == ({}, ["a"])
    cache.put_many("s", {"a": 1, "b": 2})  # the young generation is full: it becomes the old one
    assert cache.get_many("s", {"a", "x"}) == ({"a": 1}, ["x"])  # "a" used again: young again
    cache.put_many("s", {"c": 3})  # young {a, c} is full: old {b} is dropped
    found, missing = cache.get_many("s", {"a", "b", "c"})
    assert found == {"a": 1, "c": 3} and missing == ["b"]
    cache.put_many("s", {"a": 10})  # an update replaces the value
    assert cache.get_many("s", ["a"])[0] == {"a": 10}


def test_an_entry_used_again_moves_to_the_young_generation_and_counts_once() -> None:
    cache = GenerationalCache(4)
    cache.put_many("s", {"a": 1, "b": 2})  # full young generation: now the old one
    assert cache.get_many("s", {"a"}) == ({"a": 1}, [])  # revived into the young generation
    assert len(cache) == 2  # a (young) and b (old), not a twice
    cache.put_many("s", {"c": 3})  # young {a, c} full: old {b} dropped
    assert len(cache) == 2 and cache.get_many("s", {"a", "b", "c"}) == ({"a": 1, "c": 3}, ["b"])


def test_cache_stays_within_its_size() -> None:
    cache = GenerationalCache(100)
    for i in range(1000):
        cache.put_many("s", {str(i): i})
        assert len(cache) <= 100
    assert cache.get_many("s", {"999"})[0] == {"999": 999}  # the newest survive
    assert cache.get_many("s", {"0"})[1] == ["0"]


def test_cache_zero_size_disables_and_negative_rejected() -> None:
    cache = GenerationalCache(0)
    cache.put_many("s", {"a": 1})
    assert len(cache) == 0 and cache.get_many("s", {"a"}) == ({}, ["a"])
    with pytest.raises(ValueError):
        GenerationalCache(-1)


def test_cache_scopes_with_versions_do_not_collide() -> None:
    cache = GenerationalCache(10)
    cache.put_many((VERSION_A, "item"), {"266": 1})
    cache.put_many((VERSION_B, "item"), {"266": 7})
    assert cache.get_many((VERSION_A, "item"), {"266"})[0] == {"266": 1}
    assert cache.get_many((VERSION_B, "item"), {"266"})[0] == {"266": 7}
    assert cache.get_many((VERSION_A, "user"), {"266"})[1] == ["266"]


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
