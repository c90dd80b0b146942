"""Every request/response example in docs/api.md runs against the app and still holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from service.settings import Settings
from service.testing import TinyBundle

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
BLOCK = re.compile(r"```http\n(.*?)```", re.S)


def examples() -> list[tuple[str, str, dict | None, int, dict]]:
    """(method, path, request body, expected status, expected body) for each request/response pair."""
    blocks = BLOCK.findall(DOC.read_text())
    assert len(blocks) % 2 == 0, "docs/api.md: every ```http request block needs a response block"
    pairs = []
    for request, response in zip(blocks[::2], blocks[1::2], strict=True):
        head, _, body = request.partition("\n\n")
        method, path = head.splitlines()[0].split()[:2]
        status_line, _, expected = response.partition("\n\n")
        pairs.append(
            (
                method,
                path,
                json.loads(body) if body.strip() else None,
                int(status_line.split()[1]),
                json.loads(expected),
            )
        )
    return pairs


def test_docs_have_examples() -> None:
    found = examples()
    assert len(found) >= 4
    assert {
        tuple(sorted(body)) for _, path, body, status, _ in found if status == 200 and path == "/predict"
    } == {
        ("records",),
        ("candidates", "context"),
    }
    v2 = {(method, path) for method, path, *_ in found if path.startswith("/v2/")}
    assert {("GET", "/v2/models/tiny"), ("POST", "/v2/models/tiny/infer")} <= v2


def assert_matches(got: object, expected: object, where: str = "body") -> None:
    """Same structure and values; floats to 1e-6; ``request_id``/``impression_ids`` are fresh ids, only shaped."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected), f"{where}: {got} vs {expected}"
        for key, value in expected.items():
            if key == "request_id":
                assert isinstance(got[key], str) and got[key], f"{where}.{key}"
            elif key == "impression_ids":  # fresh ids too: one "<batch>-<row>" per row, one batch
                assert [i.rsplit("-", 1)[1] for i in got[key]] == [str(n) for n in range(len(value))]
                assert len({i.rsplit("-", 1)[0] for i in got[key]}) == 1, f"{where}.{key}"
            else:
                assert_matches(got[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), f"{where}: {got} vs {expected}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_matches(g, e, f"{where}[{i}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-6), f"{where}: {got} vs {expected}"
    else:
        assert got == expected, f"{where}: {got!r} vs {expected!r}"


@pytest.mark.parametrize("example", examples(), ids=lambda e: f"{e[0]} {e[1]} -> {e[3]}")
async def test_example_runs(make_client, bundle_a: TinyBundle, example) -> None:
    method, path, body, status, expected = example
    client = await make_client()
    r = await client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert_matches(r.json(), expected)


def test_settings_table_lists_every_setting() -> None:
    text = DOC.read_text()
    for name, field in Settings.model_fields.items():
        env = "REDIS_URL" if name == "redis_url" else f"DLF_{name.upper()}"
        assert f"| `{env}` |" in text, f"docs/api.md settings table misses {env} ({field.description})"
