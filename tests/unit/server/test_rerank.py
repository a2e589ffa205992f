"""Several models in one server, parsed: --model takes NAME=DIR. (Served and reranking:
tests/e2e/test_rerank.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.server.settings import Settings

# -- several models ------------------------------------------------------------------------------


# -- Rerank --------------------------------------------------------------------------------------


# -- configuration -------------------------------------------------------------------------------


def test_models_are_given_as_name_equals_directory() -> None:
    with pytest.raises(ValueError, match="--model takes NAME=DIR"):
        Settings.of(model=("just-a-path",))
    with pytest.raises(ValueError, match="'a' is given twice"):
        Settings.of(model=("a=x", "a=y"))
    with pytest.raises(ValueError, match="a name of letters"):
        Settings.of(model=("bad name=x",))
    assert Settings.from_args(["--model", "a=x", "--model", "b=y"], {}).model.extra_models == {
        "a": Path("x"),
        "b": Path("y"),
    }
    assert Settings.from_args([], {"EMBEDREC_MODEL": "a=x,b=y"}).model.extra_models == {"a": Path("x"), "b": Path("y")}


# -- Recommend with a rerank stage ----------------------------------------------------------------
