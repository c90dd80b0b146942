"""Malformed /predict payloads against a real uvicorn: each is a 4xx whose message names the problem."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from serving_support import uvicorn_server

from service.testing import write_tiny_bundle

pytestmark = pytest.mark.e2e

GOOD = {"user": "u1", "item": 266, "daytime": "morning", "city": "paris", "price": 3.5, "rating": 4}
MAX_ROWS = 5
MAX_BODY = 4000


def without(field: str) -> dict:
    return {k: v for k, v in GOOD.items() if k != field}


def records(*rows: dict) -> bytes:
    return json.dumps({"records": list(rows)}).encode()


# (id, raw body, expected status, fragments that must all appear in "detail")
CASES: list[tuple[str, bytes, int, list[str]]] = [
    ("invalid-json", b'{"records": [', 422, ["JSON"]),
    ("not-an-object", b"[1, 2]", 422, ["valid dictionary"]),
    ("empty-object", b"{}", 422, ["send 'records'"]),
    ("records-not-list", b'{"records": {"user": "u1"}}', 422, ["records", "valid list"]),
    ("record-not-object", b'{"records": [1]}', 422, ["records.0", "valid dictionary"]),
    ("both-shapes", json.dumps({"records": [GOOD], "candidates": [GOOD]}).encode(), 422, ["not both"]),
    ("context-without-candidates", b'{"context": {"user": "u1"}}', 422, ["candidates"]),
    (
        "unknown-top-level-key",
        json.dumps({"records": [GOOD], "rows": []}).encode(),
        422,
        ["rows", "Extra inputs"],
    ),
    ("empty-records", b'{"records": []}', 422, ["no records"]),
    ("empty-candidates", b'{"context": {}, "candidates": []}', 422, ["no candidates"]),
    (
        "too-many-rows",
        records(*[GOOD] * (MAX_ROWS + 1)),
        422,
        [f"too many records: {MAX_ROWS + 1} > max {MAX_ROWS}"],
    ),
    ("body-too-large", records(*[{**GOOD, "pad": "x" * MAX_BODY}]), 413, ["limit is 4000"]),
    ("missing-categorical", records(GOOD, without("city")), 422, ["record 1, field 'city': missing"]),
    ("missing-numeric", records(without("price")), 422, ["record 0, field 'price': missing"]),
    ("numeric-garbage-string", records({**GOOD, "rating": "four"}), 422, ["field 'rating'", "'four'"]),
    ("numeric-boolean", records({**GOOD, "price": True}), 422, ["field 'price'", "boolean"]),
    ("numeric-list", records({**GOOD, "price": [1]}), 422, ["field 'price'", "list"]),
    ("numeric-object", records({**GOOD, "rating": {"v": 1}}), 422, ["field 'rating'", "object"]),
    (
        "numeric-nan-token",
        records(GOOD).replace(b'"rating": 4', b'"rating": NaN'),
        422,
        ["field 'rating'", "finite"],
    ),
    (
        "numeric-infinity-token",
        records(GOOD).replace(b'"price": 3.5', b'"price": Infinity'),
        422,
        ["'price'", "finite"],
    ),
    ("numeric-nan-string", records({**GOOD, "rating": "nan"}), 422, ["field 'rating'", "finite"]),
    (
        "numeric-overflow",
        records(GOOD).replace(b'"rating": 4', b'"rating": 1e999'),
        422,
        ["'rating'", "finite"],
    ),
    ("log1p-domain", records({**GOOD, "price": -2}), 422, ["field 'price'", "> -1"]),
    ("categorical-list", records({**GOOD, "user": ["u1"]}), 422, ["record 0, field 'user'", "list"]),
    (
        "categorical-object",
        records(GOOD, {**GOOD, "item": {"id": 266}}),
        422,
        ["record 1, field 'item'", "object"],
    ),
    (
        "candidate-index",
        json.dumps({"context": {"user": "u1"}, "candidates": [without("daytime")] * 2}).encode(),
        422,
        ["candidate 0, field 'daytime'"],
    ),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bundle = write_tiny_bundle(tmp_path_factory.mktemp("registry"))
    env = {
        "DLF_REGISTRY": str(bundle.registry),
        "DLF_MAX_REQUEST_ROWS": str(MAX_ROWS),
        "DLF_MAX_BODY_BYTES": str(MAX_BODY),
    }
    with uvicorn_server(env, tmp_path_factory.mktemp("logs") / "uvicorn.log") as url:
        yield url


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("body", "status", "fragments"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_payload(server: str, body: bytes, status: int, fragments: list[str]) -> None:
    r = httpx.post(
        f"{server}/predict", content=body, headers={"content-type": "application/json"}, timeout=10
    )
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    for fragment in fragments:
        assert fragment in detail, f"{fragment!r} not in {detail!r}"


def test_good_payload_still_works(server: str) -> None:
    r = httpx.post(f"{server}/predict", content=records(GOOD), headers={"content-type": "application/json"})
    assert r.status_code == 200 and len(r.json()["probabilities"]) == 1
