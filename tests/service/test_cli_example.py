"""`python -m service.cli example` prints a curl request that the service really answers."""

from __future__ import annotations

import json
import shlex

from typer.testing import CliRunner

from service.cli import app as cli_app
from service.testing import TinyBundle


async def test_example_curl_body_is_accepted_and_has_one_oov(make_client, bundle_a: TinyBundle) -> None:
    out = CliRunner().invoke(
        cli_app, ["example", "--registry", str(bundle_a.registry), "--url", "http://h:1"]
    )
    assert out.exit_code == 0, out.output
    curl = next(line for line in out.output.splitlines() if line.startswith("curl "))
    argv = shlex.split(curl)
    assert "http://h:1/predict" in argv
    body = json.loads(argv[argv.index("-d") + 1])
    client = await make_client()
    r = await client.post("/predict", json=body)
    assert r.status_code == 200, r.text
    assert len(r.json()["probabilities"]) == 2
    assert sum(r.json()["oov_fields"].values()) == 1


def test_example_without_bundle_fails_clearly(tmp_path) -> None:
    out = CliRunner().invoke(cli_app, ["example", "--registry", str(tmp_path)])
    assert out.exit_code != 0
    assert "no bundle found" in out.output
