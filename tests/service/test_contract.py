"""service.contract: the one module training and serving both import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from service.contract import ReloadNotice, marker_key, reload_channel, vocab_key

ROOT = Path(__file__).resolve().parents[2]


def test_contract_imports_only_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); import service.contract; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "third = sorted(m for m in new if m not in sys.stdlib_module_names and m != 'service'); "
        "print(','.join(third))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"service.contract pulls in third-party modules: {out.stdout}"


def test_training_reaches_serving_only_through_the_contract() -> None:
    offenders = []
    for path in sorted((ROOT / "training").rglob("*.py")):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("from service", "import service")) and not stripped.startswith(
                "from service.contract import"
            ):
                offenders.append(f"{path.relative_to(ROOT)}: {stripped}")
    assert offenders == [], "training imports service internals:\n" + "\n".join(offenders)


def test_reload_notice_round_trips_and_ignores_unknown_keys() -> None:
    notice = ReloadNotice(
        "20261123T101500Z-0123abcd", previous="20261122T101500Z-0123abcd", reason="rollback"
    )
    assert ReloadNotice.parse(notice.to_json()) == notice
    extra = json.dumps({**json.loads(notice.to_json()), "from": "a newer trainer"})
    assert ReloadNotice.parse(extra) == notice
    assert ReloadNotice.parse("").version is None  # empty: follow CURRENT


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("not json", "not JSON"),
        ("[1]", "not a JSON object"),
        ('{"version": 7}', "'version' must be a string"),
    ],
)
def test_reload_notice_rejects_malformed_payloads(payload: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        ReloadNotice.parse(payload)


def test_redis_layout_is_versioned_per_field() -> None:
    a, b = vocab_key("p:", "v1", "city"), vocab_key("p:", "v2", "city")
    assert a != b and a.startswith("p:") and "city" in a
    assert marker_key("p:", "v1") != marker_key("p:", "v2")
    assert reload_channel("p:").startswith("p:")
