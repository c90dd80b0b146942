"""Fixtures for tests/model."""

from __future__ import annotations

import pytest
from model_testutils import INPUT_CASES


@pytest.fixture(params=list(INPUT_CASES), ids=list(INPUT_CASES))
def input_case(request: pytest.FixtureRequest) -> tuple[list[int], int]:
    """(cat_cardinalities, num_numeric) for: both kinds, categorical only, numeric only."""
    return INPUT_CASES[request.param]
