"""Strict CI: with CI=true a test may not skip because a component CI installs is missing.

Locally a missing redis-server, prometheus/promtool, nginx, docker engine or
docker-compose skips the tests that need it. In CI (`.ci/run` installs all of
them) such a skip would hide a broken install step, so it becomes a failure.
"""

from __future__ import annotations

import os

import pytest

# The service freezes what is alive after its first model load (DLF_GC_FREEZE); in one pytest
# process that builds hundreds of apps, frozen apps that later become cyclic garbage would never
# be freed. tests/service/test_gc_freeze.py turns it on for itself (servers started by the e2e
# tests inherit this too).
os.environ.setdefault("DLF_GC_FREEZE", "false")

CI_COMPONENTS = ("redis", "prometheus", "promtool", "nginx", "docker", "compose", "kubernetes-validate")


def strict_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    outcome = yield
    report = outcome.get_result()
    if not (strict_ci() and report.skipped and isinstance(report.longrepr, tuple)):
        return
    reason = str(report.longrepr[2])
    if any(word in reason.lower() for word in CI_COMPONENTS):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a component CI installs is missing ({reason}); see .ci/run"
