"""Export: model → validated ONNX with a manifest; catalog → item matrix, atomically."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from embedrec.export.catalog import CatalogError
from embedrec.export.items import build_items
from embedrec.export.onnx_model import export_model
from embedrec.export.validation import ExportValidationError
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.manifest import read_items_manifest, read_model_manifest, sha256_file


class TestModelExport:
    def test_manifest_describes_the_export(self, tiny_model_dir: Path, tiny_bert_dir: Path) -> None:
        manifest = read_model_manifest(tiny_model_dir)
        assert manifest.model_name == tiny_bert_dir.name
        assert (manifest.dim, manifest.max_length, manifest.pooling, manifest.normalize) == (32, 48, "cls", True)
        assert manifest.onnx_sha256 == sha256_file(tiny_model_dir / "model.onnx")
        assert set(manifest.input_names) == {"input_ids", "attention_mask", "token_type_ids"}
        assert manifest.opset >= 14
        assert manifest.validation["min_cosine"] >= 0.9999
        assert manifest.library_versions["onnxruntime"] == "1.31.1"
        assert sorted(p.name for p in tiny_model_dir.iterdir()) == ["manifest.json", "model.onnx", "tokenizer.json"]

    def test_rerunning_with_the_same_inputs_is_a_no_op(self, tiny_bert_dir: Path, tiny_model_dir: Path) -> None:
        before = {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()}
        export_model(str(tiny_bert_dir), tiny_model_dir)
        assert {p.name: p.stat().st_mtime_ns for p in tiny_model_dir.iterdir()} == before

    def test_a_failed_validation_leaves_no_output(self, tiny_bert_dir: Path, tmp_path: Path) -> None:
        with pytest.raises(ExportValidationError, match="min cosine"):
            export_model(str(tiny_bert_dir), tmp_path / "never", min_cosine=1.5)
        assert list(tmp_path.iterdir()) == []

    def test_sentence_transformers_config_sets_mean_pooling(self, tiny_bert_dir: Path, tmp_path: Path) -> None:
        import shutil

        model_dir = tmp_path / "st-model"
        shutil.copytree(tiny_bert_dir, model_dir)
        (model_dir / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                ]
            )
        )
        (model_dir / "1_Pooling").mkdir()
        (model_dir / "1_Pooling/config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
        (model_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 20}))
        manifest = export_model(str(model_dir), tmp_path / "out")
        assert (manifest.pooling, manifest.normalize, manifest.max_length) == ("mean", False, 20)


class TestItemBuild:
    def test_rows_are_unit_vectors_of_the_texts_in_catalog_order(
        self, tiny_items_dir: Path, tiny_model_dir: Path, catalog_path: Path
    ) -> None:
        rows = [json.loads(line) for line in catalog_path.read_text().splitlines()]
        matrix = np.load(tiny_items_dir / "items.npy", mmap_mode="r")
        assert matrix.dtype == np.float32
        assert matrix.shape == (len(rows), 32)
        assert (tiny_items_dir / "ids.txt").read_text().split("\n")[:-1] == [row["id"] for row in rows]
        expected = OnnxEncoder(tiny_model_dir, provider="cpu").encode([row["text"] for row in rows], normalize=True)
        np.testing.assert_allclose(matrix, expected, atol=1e-5)
        manifest = read_items_manifest(tiny_items_dir)
        assert manifest.model_onnx_sha256 == read_model_manifest(tiny_model_dir).onnx_sha256
        assert manifest.items_sha256 == sha256_file(tiny_items_dir / "items.npy")

    def test_csv_and_gzip_catalogs_build_the_same_matrix(
        self, tiny_model_dir: Path, tiny_items_dir: Path, catalog_path: Path, tmp_path: Path
    ) -> None:
        import csv

        rows = [json.loads(line) for line in catalog_path.read_text().splitlines()]
        csv_path = tmp_path / "catalog.csv.gz"
        with gzip.open(csv_path, "wt", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "text", "category"])
            writer.writeheader()
            writer.writerows(rows)
        build_items(
            csv_path, tiny_model_dir, tmp_path / "from-csv", progress=False, batch_size=5, filter_field="category"
        )
        np.testing.assert_allclose(
            np.load(tmp_path / "from-csv/items.npy"), np.load(tiny_items_dir / "items.npy"), atol=1e-5
        )

    def test_bad_rows_are_all_listed_with_line_numbers(self, tiny_model_dir: Path, tmp_path: Path) -> None:
        catalog = tmp_path / "bad.jsonl"
        catalog.write_text(
            "\n".join(
                [
                    json.dumps({"id": "a", "text": "fine"}),
                    json.dumps({"id": "a", "text": "again"}),
                    json.dumps({"id": "", "text": "no id"}),
                    json.dumps({"id": "b", "text": "  "}),
                    "{not json",
                ]
            )
            + "\n"
        )
        with pytest.raises(CatalogError) as caught:
            build_items(catalog, tiny_model_dir, tmp_path / "out", progress=False)
        message = str(caught.value)
        assert "duplicate ids: 'a' (lines 1 and 2)" in message
        assert "empty ids: line 3" in message
        assert "empty texts: line 4" in message
        assert "unparsable rows: line 5" in message
        assert not (tmp_path / "out").exists()

    def test_rebuilding_an_unchanged_catalog_is_a_no_op(
        self, tiny_items_dir: Path, tiny_model_dir: Path, catalog_path: Path
    ) -> None:
        before = (tiny_items_dir / "items.npy").stat().st_mtime_ns
        build_items(catalog_path, tiny_model_dir, tiny_items_dir, progress=False, filter_field="category")
        assert (tiny_items_dir / "items.npy").stat().st_mtime_ns == before


class TestVariants:
    @pytest.mark.parametrize(
        ("options", "variant"),
        [({"optimize": "O2"}, "O2"), ({"quantize": "int8"}, "int8"), ({"fp16": True}, "fp16")],
    )
    def test_a_variant_is_validated_recorded_and_served(
        self, tiny_bert_dir: Path, tiny_model_dir: Path, tmp_path: Path, options: dict[str, str], variant: str
    ) -> None:
        # The tiny random model quantises worse than a trained one: its floor is set low here, and
        # the test checks what is recorded, not the bundled model's accuracy (BENCHMARKS.md).
        floor = 0.9999 if variant == "O2" else 0.5
        manifest = export_model(str(tiny_bert_dir), tmp_path / variant, min_cosine=floor, **options)  # type: ignore[arg-type]
        assert manifest.variant == variant
        assert manifest.export_options["min_cosine"] == floor
        assert manifest.validation["min_cosine"] >= floor
        assert manifest.onnx_sha256 != read_model_manifest(tiny_model_dir).onnx_sha256
        texts = ["hello world", "这是一款高效节能的空调"]
        served = OnnxEncoder(tmp_path / variant, provider="cpu").encode(texts, normalize=True)
        plain = OnnxEncoder(tiny_model_dir, provider="cpu").encode(texts, normalize=True)
        assert np.sum(served * plain, axis=1).min() >= floor

    def test_optimize_and_quantize_together_are_refused(self, tiny_bert_dir: Path, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="not both"):
            export_model(str(tiny_bert_dir), tmp_path / "both", optimize="O2", quantize="int8")


def test_a_model_without_token_type_ids_exports_and_serves(tmp_path: Path) -> None:
    from tests.e2e.tiny_models import build_tiny_roberta

    manifest = export_model(str(build_tiny_roberta(tmp_path / "roberta")), tmp_path / "export")
    assert "token_type_ids" not in manifest.input_names
    assert manifest.max_length == 40  # positions minus RoBERTa's padding offset
    assert manifest.validation["min_cosine"] >= 0.9999
    vectors = OnnxEncoder(tmp_path / "export", provider="cpu").encode(["hello world", "这是一款空调", "a " * 80])
    assert vectors.shape == (3, 32)
