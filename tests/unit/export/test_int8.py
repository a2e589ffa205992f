"""int8 without an export: CPU targets from (faked) flags, and the agreement measures (top-k,
retrieval on a constructed catalog, rerank order). (Exports and serving: tests/e2e/test_int8.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedrec.export.agreement import retrieval_agreement, top_k_agreement, top_k_rows
from embedrec.export.rerank_agreement import order_agreement, top_n_overlap
from embedrec.server.inference.cpu_features import (
    int8_host_problem,
    int8_target_for,
    read_cpu_flags,
    resolve_int8_target,
)

AVX2_HOST = "fpu sse sse2 avx avx2 fma"
VNNI_HOST = AVX2_HOST + " avx512f avx512bw avx512_vnni"


def fake_cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: Fake\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t: x\n")
    return path


# -- CPU flags ------------------------------------------------------------------------------------


def test_flags_are_read_from_the_first_flags_line(tmp_path: Path) -> None:
    assert read_cpu_flags(fake_cpuinfo(tmp_path, VNNI_HOST)) == frozenset(VNNI_HOST.split())
    assert read_cpu_flags(tmp_path / "absent") == frozenset()


@pytest.mark.parametrize(
    ("flags", "target"),
    [(VNNI_HOST, "vnni"), (AVX2_HOST + " avx_vnni", "vnni"), (AVX2_HOST + " amx_int8", "vnni"), (AVX2_HOST, "avx2")],
)
def test_auto_picks_vnni_only_where_the_cpu_has_a_non_saturating_int8_dot_product(flags: str, target: str) -> None:
    assert int8_target_for(flags.split()) == target
    assert resolve_int8_target("auto", flags.split()) == target
    assert resolve_int8_target("avx2", flags.split()) == "avx2"
    with pytest.raises(ValueError, match="int8 target"):
        resolve_int8_target("avx512", flags.split())


def test_a_vnni_model_is_a_problem_only_on_a_cpu_without_vnni() -> None:
    assert "saturates" in int8_host_problem("vnni", AVX2_HOST.split())
    assert int8_host_problem("vnni", VNNI_HOST.split()) == ""
    assert int8_host_problem("avx2", AVX2_HOST.split()) == ""
    assert int8_host_problem("", AVX2_HOST.split()) == ""
    assert int8_host_problem("vnni", []) == ""  # flags unknown: nothing to go on


# -- The agreement measure --------------------------------------------------------------------------


def test_top_k_agreement_counts_the_shared_share_order_ignored() -> None:
    reference = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    candidate = np.array([[3, 2, 1, 0], [4, 5, 8, 9]])
    assert top_k_agreement(reference, candidate) == pytest.approx((4 / 4 + 2 / 4) / 2)


def test_retrieval_agreement_on_a_constructed_catalog_with_a_known_answer() -> None:
    # 12 unit vectors on a circle: each row's nearest neighbours are its ring neighbours. The
    # "variant" moves row 0 far away: queries near it lose it from their top-2, nothing else.
    angles = np.linspace(0, 2 * np.pi, 12, endpoint=False)
    reference = np.stack([np.cos(angles), np.sin(angles), np.zeros(12)], axis=1).astype(np.float32)
    variant = reference.copy()
    variant[0] = [0.0, 0.0, 1.0]
    report = retrieval_agreement(reference, variant, k=2, queries=12)
    # Queries 1 and 11 had row 0 in their top-2 ({0, 2} and {0, 10}). Variant vs variant: row 0
    # is orthogonal, so each keeps 1 of 2; query 0 itself (now at the pole, every score 0, ties
    # broken by the lowest index) gets {1, 2} for {1, 11}: 9 full + 3 halves = 10.5 / 12.
    assert report["variant_vs_variant"] == pytest.approx(10.5 / 12, abs=1e-4)
    # Variant queries on reference items: only query 0 moved, and it scores every item 0: ties
    # broken by the lowest index, {1, 2} against {1, 11}: half.
    assert report["variant_vs_fp32_items"] == pytest.approx(11.5 / 12, abs=1e-4)
    assert top_k_rows(reference[:1], reference, 2, np.array([0])).tolist() == [[1, 11]]
    with pytest.raises(ValueError, match="more than 2 texts"):
        retrieval_agreement(reference[:2], variant[:2], k=2)


def test_rerank_order_agreement() -> None:
    reference = np.array([3.0, 2.0, 1.0, 0.0])
    assert order_agreement(reference, reference * 2) == 1.0
    assert order_agreement(reference, -reference) == 0.0
    assert order_agreement(reference, np.array([3.0, 2.0, 0.0, 1.0])) == pytest.approx(5 / 6)
    assert top_n_overlap(reference, np.array([0.0, 2.0, 1.0, 3.0]), 2) == 0.5


# -- Exports of the tiny BERT -------------------------------------------------------------------------


# -- Serving ---------------------------------------------------------------------------------------
