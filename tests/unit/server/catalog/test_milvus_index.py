"""Milvus vector indexes without Milvus: each index takes only its own build parameters within
Milvus's ranges, a search effort must fit the served index, HNSW's ef is raised to the results
fetched. (Built and searched: tests/e2e/test_milvus_index.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from embedrec.export.cli import export_items_main
from embedrec.server.catalog.milvus.index import (
    DEFAULT_EF,
    FLAT,
    MAX_EF,
    SearchEffort,
    VectorIndex,
    check_effort,
    search_params,
)
from embedrec.server.errors import InvalidArgument as CoreInvalidArgument

HNSW = VectorIndex.of("HNSW", M=8, efConstruction=64)
IVF = VectorIndex.of("IVF_FLAT", nlist=4)


# -- the index and effort rules -----------------------------------------------------------------


def test_an_index_takes_only_its_own_build_parameters_within_milvus_ranges() -> None:
    assert VectorIndex.of("HNSW").params == {"M": 16, "efConstruction": 200}
    assert VectorIndex.of("IVF_FLAT", nlist=64).describe() == "IVF_FLAT nlist=64"
    with pytest.raises(ValueError, match="M is not a parameter of a FLAT index"):
        VectorIndex.of("FLAT", M=16)
    with pytest.raises(ValueError, match=r"HNSW M must be in \[2, 2048\], got 1"):
        VectorIndex.of("HNSW", M=1)
    with pytest.raises(ValueError, match="not one of FLAT, HNSW, IVF_FLAT"):
        VectorIndex.of("DISKANN")
    assert not FLAT.approximate and HNSW.approximate and IVF.approximate


def test_a_search_effort_must_fit_the_served_index() -> None:
    assert check_effort(SearchEffort(), FLAT, field="approximate") == SearchEffort()
    with pytest.raises(CoreInvalidArgument, match=r"approximate\.ef given, but the served items are searched exactly"):
        check_effort(SearchEffort(ef=64), FLAT, field="approximate")
    with pytest.raises(CoreInvalidArgument, match=r"users\[1\]\.approximate\.nprobe: .* HNSW, which takes ef"):
        check_effort(SearchEffort(nprobe=4), HNSW, field="users[1].approximate")
    with pytest.raises(CoreInvalidArgument, match=rf"approximate\.ef is {MAX_EF + 1}; the limit is {MAX_EF}"):
        check_effort(SearchEffort(ef=MAX_EF + 1), HNSW, field="approximate")
    with pytest.raises(CoreInvalidArgument, match=r"approximate\.nprobe is 5; the limit is 4 \(the index's nlist\)"):
        check_effort(SearchEffort(nprobe=5), IVF, field="approximate")


def test_hnsw_ef_is_raised_to_the_results_fetched_and_defaults_apply() -> None:
    assert search_params(HNSW, SearchEffort(ef=16), limit=100)["params"] == {"ef": 100}
    assert search_params(HNSW, SearchEffort(), limit=10)["params"] == {"ef": DEFAULT_EF}
    assert search_params(IVF, SearchEffort(nprobe=3), limit=10)["params"] == {"nprobe": 3}
    assert "params" not in search_params(FLAT, SearchEffort(), limit=10)


def test_export_items_refuses_a_parameter_of_another_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--catalog", "catalog.jsonl", "--model-dir", "m", "--output", str(tmp_path / "out"), "--store", "milvus"]
    argv += ["--milvus-uri", str(tmp_path / "x.db"), "--milvus-index", "FLAT", "--milvus-hnsw-m", "8"]
    with pytest.raises(SystemExit) as exited:
        export_items_main(argv)
    assert exited.value.code == 2
    assert "--milvus-index: M is not a parameter of a FLAT index" in capsys.readouterr().err


# -- end to end, on each backend ----------------------------------------------------------------
