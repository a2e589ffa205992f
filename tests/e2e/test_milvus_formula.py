"""Score formulas on the Milvus store (FLAT), on Milvus Lite and on a real Milvus server: the
same answers as a float64 brute force over every admitted item, and a live upsert that widens a
field's range still ranks exactly (the prior's bound is recomputed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedrec.client import EmbedrecClient, NewItem
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.profiles import ProfilePart, combine_profile
from embedrec.server.catalog.score_formula import ScoreFormulaSpec, check_formula
from embedrec.server.catalog.store import ItemStore, Query
from tests.e2e.conftest import MilvusBackend, milvus_copy, milvus_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.test_score_formula_server import FORMULAS, brute_force, index, items_dir  # noqa: F401 (fixtures)

SELECTIONS: list[dict[str, Any]] = [
    {},
    {"exclude": ["p001", "p002", "no-such-id"]},
    {"filter_values": ["acme", "nova"]},
    {"where": [ConditionSpec("price", gte=50.0, lt=150.0)]},
    {"min_score": 0.1},
]


@pytest.fixture(scope="module")
def milvus(items_dir: Path, tmp_path_factory: pytest.TempPathFactory, milvus_backend: MilvusBackend) -> MilvusItems:  # noqa: F811
    collection = milvus_backend.collection("formula")
    uri = milvus_copy(items_dir, tmp_path_factory.mktemp("milvus-formula"), collection, milvus_backend)
    return MilvusItems(uri, collection)


def ranked(store: ItemStore, profile: np.ndarray, k: int, text: str, **selection: Any) -> list[tuple[str, float]]:
    chosen = store.selection(
        store.history([], field="items", ignore_unknown=False),
        selection.pop("exclude", []),
        selection.pop("filter_values", []),
        field="filter_values",
        conditions=selection.pop("where", []),
    )
    formula = check_formula(
        ScoreFormulaSpec(expression=text), store.describe().fields, max_terms=8, field="score_formula"
    )
    query = Query(profile.astype(np.float32), chosen, selection.pop("min_score", None), formula=formula)
    (found,) = store.search([query], k)
    return [(one.item_id, one.score) for one in found]


@pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: "+".join(s) or "plain")
@pytest.mark.parametrize("text", FORMULAS)
def test_flat_milvus_equals_the_matrix_and_the_brute_force(
    milvus: MilvusItems,
    index: ItemIndex,  # noqa: F811
    text: str,
    selection: dict[str, Any],
) -> None:
    rng = np.random.default_rng(len(text))
    for _ in range(3):
        profile = combine_profile([ProfilePart(rng.standard_normal(index.manifest.dim), 1.0, "user_vector")]).vector
        expected = ranked(index, profile, 10, text, **dict(selection))
        found = ranked(milvus, profile, 10, text, **dict(selection))
        assert [one for one, _ in found] == [one for one, _ in expected]
        assert [score for _, score in found] == [score for _, score in expected]
        if not selection:
            assert [one for one, _ in found] == brute_force(index, profile, text, np.ones(len(index), bool))[0][:10]


@pytest.fixture(scope="module")
def milvus_server_on_formula_items(
    tiny_model_dir: Path,
    items_dir: Path,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
    milvus_backend: MilvusBackend,
) -> Iterator[ServerThread]:
    directory = tmp_path_factory.mktemp("milvus-formula-server")
    server = start_server(milvus_settings(tiny_model_dir, items_dir, directory, "formula_live", milvus_backend))
    yield server
    server.close()


def test_an_upsert_that_widens_a_range_still_ranks_exactly(
    milvus_server_on_formula_items: ServerThread,
    index: ItemIndex,  # noqa: F811
) -> None:
    """The first call caches popularity's range; an item upserted far above it, dissimilar to
    the profile, must still win by its prior (a stale bound would not fetch it)."""
    vector = np.asarray(index.matrix[0], dtype=np.float32)
    text = "0.5*log1p(popularity)"
    with EmbedrecClient(milvus_server_on_formula_items.target, timeout=60) as client:
        before = client.recommend(3, vector=vector, score_formula=text, explain=True)
        assert before[0].similarity is not None and len(before[0].score_terms) == 1
        client.upsert_items([NewItem("star", vector=(-vector).tolist(), fields={"popularity": 1e12})])
        after = client.recommend(3, vector=vector, score_formula=text)
    assert after[0].id == "star" and "star" not in {one.id for one in before}
