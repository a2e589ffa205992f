"""The unit layer: pure logic, fast. Its tests import no model stack and start nothing; a
session-end check fails the run if torch, transformers or optimum was imported anyway (a unit test
that needs one of them belongs in tests/e2e/)."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

# What the e2e layer's exports need and the unit layer must never pull in (each costs seconds).
HEAVY_MODULES = ("torch", "transformers", "optimum", "sentence_transformers")


def heavy_modules_imported() -> list[str]:
    return [name for name in HEAVY_MODULES if name in sys.modules]


@pytest.fixture(scope="session", autouse=True)
def no_model_stack(request: pytest.FixtureRequest) -> Iterator[None]:
    """After the unit tests, none of HEAVY_MODULES is imported (checked only when the session ran
    unit tests alone: the e2e layer imports them by design)."""
    yield
    if all("unit" in item.path.relative_to(request.config.rootpath).parts[:2] for item in request.session.items):
        assert heavy_modules_imported() == [], "the unit layer imported the model stack; move the test to tests/e2e/"
