"""Settings come from the environment; the CLI fails clearly on a bad registry."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli import app
from service.settings import Settings


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLF_REGISTRY", "/tmp/reg")
    monkeypatch.setenv("REDIS_URL", "redis://h:1/2")
    monkeypatch.setenv("DLF_MAX_WAIT_MS", "7.5")
    monkeypatch.setenv("DLF_BATCHING_ENABLED", "false")
    monkeypatch.setenv("DLF_ADMIN_TOKEN", "s3cret")
    s = Settings()
    assert s.registry == Path("/tmp/reg") and s.redis_url == "redis://h:1/2"
    assert s.max_wait_ms == 7.5 and s.batching_enabled is False and s.max_request_rows == 1000
    assert s.admin_token is not None and s.admin_token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


def test_settings_reject_bad_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLF_MAX_BATCH_ROWS", "0")
    with pytest.raises(ValueError, match="max_batch_rows"):
        Settings()


def test_publish_vocab_cli_names_the_problem(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["publish-vocab", "--registry", str(tmp_path), "--redis-url", "redis://127.0.0.1:6379/0"]
    )
    assert result.exit_code != 0
    assert "no bundle found" in result.output


def test_serve_log_level_reaches_the_app_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve --log-level warning`` turns the per-request access line off (the factory used to reset INFO)."""
    import logging

    import uvicorn

    from service.app import app_factory

    # setenv, not delenv: a delenv of an unset variable records nothing to restore, and serve writes
    # DLF_LOG_LEVEL into the environment, so later tests' subprocesses logged at WARNING
    monkeypatch.setenv("DLF_LOG_LEVEL", "info")
    monkeypatch.setenv("DLF_PROCESSES", "1")  # one process: the uvicorn.run path
    seen: dict[str, object] = {}

    def fake_run(target: str, **kwargs: object) -> None:  # stands in for the server only
        app_factory()  # what uvicorn does with factory=True
        seen["uvicorn_level"] = kwargs["log_level"]
        seen["access_on"] = logging.getLogger("service.access").isEnabledFor(logging.INFO)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))  # configure_logging replaces both
    try:
        result = CliRunner().invoke(app, ["serve", "--log-level", "WARNING"])
        assert result.exit_code == 0, result.output
        assert seen == {"uvicorn_level": "warning", "access_on": False}
        monkeypatch.delenv("DLF_LOG_LEVEL")
        result = CliRunner().invoke(app, ["serve"])  # default: info, access line on
        assert result.exit_code == 0, result.output
        assert seen == {"uvicorn_level": "info", "access_on": True}
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]


def test_serve_names_a_bad_log_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLF_LOG_LEVEL", "info")  # restored after: serve writes the option into the environment
    result = CliRunner().invoke(app, ["serve", "--log-level", "loud"])
    assert result.exit_code == 2
    assert "log_level" in result.output and "Traceback" not in result.output
