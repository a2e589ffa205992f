"""int8 exports: CPU targets from (faked) flags, the recipe's manifest, the retrieval agreement
measure, asymmetric serving (fp32 items, int8 queries) and the wrong-CPU warning, through a real
export of the tiny BERT and a real server."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient
from embedrec.export.validation import ExportValidationError
from embedrec.server.errors import ConfigurationError
from embedrec.server.inference import cpu_features
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.loading import open_items
from embedrec.server.manifest import read_model_manifest
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.tiny_models import build_tiny_bert

AVX2_HOST = "fpu sse sse2 avx avx2 fma"
VNNI_HOST = AVX2_HOST + " avx512f avx512bw avx512_vnni"
# The tiny random BERT is not MiniLM: its int8 error is larger, so these floors only catch a
# broken export; MiniLM's figures are in BENCHMARKS.md.
LOOSE = {"min_cosine": 0.5, "min_agreement": 0.3}


def fake_cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nvendor_id\t: Fake\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t: x\n")
    return path


# -- CPU flags ------------------------------------------------------------------------------------


# -- The agreement measure --------------------------------------------------------------------------


# -- Exports of the tiny BERT -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def int8_exports(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from embedrec.export.onnx_model import export_model

    root = tmp_path_factory.mktemp("int8")
    exports = {}
    for target in ("avx2", "vnni"):
        export_model(str(tiny_bert_dir), root / target, quantize="int8", int8_target=target, **LOOSE)  # type: ignore[arg-type]
        exports[target] = root / target
    return exports


@pytest.mark.parametrize("target", ["avx2", "vnni"])
def test_every_target_exports_with_its_recipe_and_the_fp32_base_checksum(
    int8_exports: dict[str, Path], tiny_model_dir: Path, target: str
) -> None:
    manifest = read_model_manifest(int8_exports[target])
    fp32 = read_model_manifest(tiny_model_dir)
    assert (manifest.variant, manifest.int8_target) == ("int8", target)
    assert manifest.base_onnx_sha256 == fp32.onnx_sha256 != manifest.onnx_sha256
    assert manifest.quantization["weights"].startswith("int8 7-bit" if target == "avx2" else "int8 full-range")
    ffn_outputs = [f"/encoder/layer.{layer}/output/dense/MatMul" for layer in (0, 1)]
    assert manifest.quantization["quantized_per_token"] == ffn_outputs and manifest.quantization["kept_fp32"] == []
    assert manifest.quantization["activations"] == "uint8, dynamic, per tensor; per token for ffn-output"
    assert manifest.quantization["smoothed"] > 0
    agreement = manifest.agreement
    assert agreement["sample"] == "generated texts" and agreement["k"] == 10
    assert 0.3 <= agreement["variant_vs_fp32_items"] <= 1.0 and 0.0 <= agreement["variant_vs_variant"] <= 1.0
    assert manifest.export_options["int8_target"] == target


def test_matmul_groups_are_chosen_per_token_or_fp32_and_an_unknown_group_is_refused(
    tiny_bert_dir: Path, tmp_path: Path
) -> None:
    from embedrec.export.cli import export_model_main
    from embedrec.export.onnx_model import export_model

    flags = ["--quantize", "int8", "--int8-per-token", "none", "--int8-keep-fp32", "first-ffn-output"]
    flags += ["--min-cosine", "0.5", "--min-agreement", "0.3"]
    assert export_model_main(["--model", str(tiny_bert_dir), "--output", str(tmp_path / "g"), *flags]) == 0
    manifest = read_model_manifest(tmp_path / "g")
    assert manifest.quantization["quantized_per_token"] == []
    assert manifest.quantization["kept_fp32"] == ["/encoder/layer.0/output/dense/MatMul"]
    with pytest.raises(ValueError, match="per-token group must be one of"):
        export_model(str(tiny_bert_dir), tmp_path / "u", quantize="int8", int8_per_token=("attention",), **LOOSE)  # type: ignore[arg-type]


def test_a_floor_above_the_measured_agreement_fails_the_export(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from embedrec.export.onnx_model import export_model

    with pytest.raises(ExportValidationError, match=r"--min-agreement 1\.01"):
        export_model(str(tiny_bert_dir), tmp_path / "x", quantize="int8", min_cosine=0.5, min_agreement=1.01)
    assert not (tmp_path / "x").exists()


def test_a_validation_catalog_is_the_agreement_sample(tiny_bert_dir: Path, catalog_path: Path, tmp_path: Path) -> None:
    from embedrec.export.onnx_model import export_model

    manifest = export_model(
        str(tiny_bert_dir),
        tmp_path / "c",
        quantize="int8",
        validation_catalog=catalog_path,
        **LOOSE,  # type: ignore[arg-type]
    )
    assert manifest.agreement["sample"] == str(catalog_path) and manifest.agreement["texts"] == 12


def test_rerank_int8_export_measures_top_n_agreement(tiny_cross_encoder: Path, tmp_path: Path) -> None:
    from embedrec.export.onnx_model import export_model

    manifest = export_model(str(tiny_cross_encoder), tmp_path / "r", task="rerank", quantize="int8", min_agreement=0.3)
    assert (manifest.task, manifest.variant) == ("rerank", "int8")
    assert manifest.agreement["top_n"] == 5 and 0.3 <= manifest.agreement["top_n_agreement"] <= 1.0


# -- Serving ---------------------------------------------------------------------------------------


@pytest.fixture()
def fake_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The host's CPU flags read from a file the test writes (AVX2 without VNNI to start)."""
    path = fake_cpuinfo(tmp_path, AVX2_HOST)
    monkeypatch.setattr(cpu_features, "CPUINFO", path)
    cpu_features.host_cpu_flags.cache_clear()
    yield path
    cpu_features.host_cpu_flags.cache_clear()


@contextlib.contextmanager
def serving(model_dir: Path, items_dir: Path) -> Iterator[tuple[ServerThread, EmbedrecClient]]:
    """A real server on `model_dir` and `items_dir`, and a client of it."""
    server: ServerThread = start_server(server_settings(model_dir, items_dir))
    try:
        with EmbedrecClient(server.target, timeout=30) as client:
            yield server, client
    finally:
        server.close()


def fetch(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
        return str(reply.read().decode())


def test_fp32_items_are_served_with_int8_queries_of_the_same_base(
    int8_exports: dict[str, Path], tiny_items_dir: Path, tiny_model_dir: Path
) -> None:
    with serving(int8_exports["avx2"], tiny_items_dir) as (server, client):
        info = client.info()
        found = client.recommend(texts=["quiet air conditioner"], k=3)
        query = client.embed(["quiet air conditioner"])[0]
        assert (info.model_variant, info.int8_target, info.items_precision) == ("int8", "avx2", "fp32")
        assert info.int8_agreement_fp32_items > 0 and info.int8_host_warning == ""
        assert (info.models[0].variant, info.models[0].int8_target) == ("int8", "avx2")
        # The answer is the brute force of the int8 query over the fp32 item matrix.
        matrix = np.load(tiny_items_dir / "items.npy")
        ids = (tiny_items_dir / "ids.txt").read_text().split()
        expected = [ids[row] for row in np.argsort(-(matrix @ query), kind="stable")[:3]]
        assert [item.id for item in found] == expected
        fp32_query = OnnxEncoder(tiny_model_dir, provider="cpu").encode(["quiet air conditioner"])[0]
        assert not np.array_equal(query, fp32_query)  # the query side really is the int8 model
        listed = json.loads(fetch(server.app.http_port, "/v1/models"))["data"][0]
        assert (listed["variant"], listed["int8_target"]) == ("int8", "avx2") and listed["int8_agreement"] > 0


def test_items_of_an_unrelated_model_are_still_refused(
    tiny_items_dir: Path, tmp_path: Path, int8_exports: dict[str, Path]
) -> None:
    from embedrec.export.onnx_model import export_model

    other = export_model(str(build_tiny_bert(tmp_path / "other", seed=5)), tmp_path / "o", quantize="int8", **LOOSE)  # type: ignore[arg-type]
    assert other.base_onnx_sha256 != read_model_manifest(int8_exports["avx2"]).base_onnx_sha256
    with pytest.raises(ConfigurationError, match="rebuild the items"):
        open_items(server_settings(tmp_path / "o", tiny_items_dir), OnnxEncoder(tmp_path / "o", provider="cpu"))


def test_a_vnni_model_on_a_cpu_without_vnni_is_served_with_a_warning_and_a_metric(
    int8_exports: dict[str, Path], tiny_items_dir: Path, fake_host: Path
) -> None:
    with serving(int8_exports["vnni"], tiny_items_dir) as (server, client):
        info = client.info()
        assert len(client.embed(["coffee"])) == 1
        assert "no VNNI" in info.int8_host_warning and "no VNNI" in info.models[0].int8_host_warning
        text = fetch(server.app.metrics_port, "/metrics")
        assert f'embedrec_int8_host_mismatch{{model="{info.model_name}"}} 1.0' in text


def test_the_same_vnni_model_on_a_vnni_cpu_has_no_warning(
    int8_exports: dict[str, Path], tiny_items_dir: Path, fake_host: Path
) -> None:
    fake_host.write_text(f"flags\t: {VNNI_HOST}\n")
    cpu_features.host_cpu_flags.cache_clear()
    with serving(int8_exports["vnni"], tiny_items_dir) as (server, client):
        assert client.info().int8_host_warning == ""
        assert "embedrec_int8_host_mismatch{" not in fetch(server.app.metrics_port, "/metrics")
