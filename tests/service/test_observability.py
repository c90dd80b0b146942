"""Metrics added for scale-out (in-flight, OOV per field, served probabilities) and the typed OpenAPI."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from service.testing import VERSION_A, VERSION_B, TinyBundle

ROWS = [
    {"user": "u1", "item": "nope", "daytime": "night", "city": "mars", "price": 1, "rating": 2},
    {"user": "u2", "item": 266, "daytime": "morning", "city": "oslo", "price": 0, "rating": 4},
    {"user": "zz", "item": "nope2", "daytime": "night", "city": "paris", "price": 3, "rating": 1},
]


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_in_flight_oov_and_probability_metrics(make_client, bundle_a: TinyBundle) -> None:
    client = await make_client()
    r = await client.post("/predict", json={"records": ROWS})
    assert r.status_code == 200
    probs = r.json()["probabilities"]
    got = samples((await client.get("/metrics")).text)
    assert got[("dlf_oov_values_total", (("field", "item"),))] == 2
    assert got[("dlf_oov_values_total", (("field", "city"),))] == 1
    assert got[("dlf_oov_values_total", (("field", "user"),))] == 1
    assert ("dlf_oov_values_total", (("field", "daytime"),)) not in got
    version = (("version", VERSION_A),)
    assert got[("dlf_served_probability_count", version)] == 3
    assert abs(got[("dlf_served_probability_sum", version)] - sum(probs)) < 1e-5
    for le in ("0.1", "0.5", "0.9", "1.0"):
        expected = sum(p <= float(le) for p in probs)
        assert got[("dlf_served_probability_bucket", (("le", le), ("version", VERSION_A)))] == expected
    assert got[("dlf_in_flight_requests", ())] == 1  # the /metrics request itself
    again = samples((await client.get("/metrics")).text)
    assert again[("dlf_in_flight_requests", ())] == 1  # not leaking: back to just this request


async def test_openapi_is_typed_for_the_bundle_and_follows_a_reload(
    make_client, bundle_b: TinyBundle
) -> None:
    client = await make_client(admin_token="t")
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    records = body["oneOf"][0]["properties"]["records"]
    fields = records["items"]["properties"]
    assert list(fields) == [f.name for f in bundle_b.schema.fields]
    assert records["items"]["required"] == list(fields) and records["maxItems"] == 1000
    assert fields["price"]["anyOf"][0] == {"type": "number", "exclusiveMinimum": -1}  # log1p field
    assert fields["city"]["examples"] == ["paris"]
    assert VERSION_A in spec["info"]["description"]
    assert {"401", "403", "404", "409", "413", "422", "503"} <= set(
        spec["paths"]["/admin/reload"]["post"]["responses"]
    )
    infer = spec["paths"]["/v2/models/{name}/infer"]["post"]
    assert infer["parameters"][0]["schema"]["enum"] == ["tiny"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]

    r = await client.post("/admin/reload", json={"version": VERSION_B}, headers={"Authorization": "Bearer t"})
    assert r.status_code == 200, r.text
    spec = (await client.get("/openapi.json")).json()
    assert VERSION_B in spec["info"]["description"] and VERSION_A not in spec["info"]["description"]


def test_vector_histogram_counts_small_and_large_batches_alike() -> None:
    import numpy as np

    from service.metrics import PROB_BUCKETS, SMALL_BATCH, VectorHistogram

    values = np.random.default_rng(0).random(200)
    values[:5] = [0.1, 0.2, 0.0, 1.0, 0.55]  # on the bounds and at the ends
    looped, vectorised = VectorHistogram("a", "a", PROB_BUCKETS), VectorHistogram("b", "b", PROB_BUCKETS)
    for i in range(0, 200, SMALL_BATCH // 2):
        looped.observe("v", values[i : i + SMALL_BATCH // 2])
    vectorised.observe("v", values)

    def samples(h: VectorHistogram) -> list[tuple[str, float]]:
        (family,) = h.collect()
        return [(s.name.split("_")[-1] + str(s.labels.get("le")), s.value) for s in family.samples]

    got, want = samples(looped), samples(vectorised)
    assert [k for k, _ in got] == [k for k, _ in want]
    assert np.allclose([v for _, v in got], [v for _, v in want])
    assert dict(want)["count" + "None"] == 200


def test_shared_histogram_matches_prometheus_observe_for_small_and_large_batches() -> None:
    """The multiprocess histogram adds whole batches (a Python path up to SMALL_BATCH values, numpy
    beyond): its buckets and sum must equal prometheus-client's one ``observe`` per value."""
    import numpy as np
    from prometheus_client import CollectorRegistry, Histogram

    from service.metrics import PROB_BUCKETS, SMALL_BATCH, SharedVectorHistogram

    rng = np.random.default_rng(7)
    small = np.array([0.1, 1.0, 0.0, 0.55, 0.9999], dtype=np.float32)  # bucket edges included
    large = rng.random(SMALL_BATCH * 4).astype(np.float32)
    ours_registry, ref_registry = CollectorRegistry(), CollectorRegistry()
    ours = SharedVectorHistogram("p", "probabilities", PROB_BUCKETS, ours_registry)
    ref = Histogram("p", "probabilities", ["version"], buckets=PROB_BUCKETS, registry=ref_registry)
    for version, values in (("a", small), ("a", large), ("b", small[:1])):
        ours.observe(version, values)
        for v in values.astype(np.float64).tolist():
            ref.labels(version=version).observe(v)

    def got(registry: CollectorRegistry) -> dict[tuple[str, tuple], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for m in registry.collect()
            for s in m.samples
            if not s.name.endswith("_created")  # a timestamp, not a count
        }

    mine, expected = got(ours_registry), got(ref_registry)
    assert mine.keys() == expected.keys() and len(mine) == 2 * (len(PROB_BUCKETS) + 1 + 2)
    for key, value in expected.items():
        assert abs(mine[key] - value) < 1e-6, key
