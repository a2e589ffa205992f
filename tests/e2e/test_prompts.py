"""Prompts and dimensions: a model's prompts recorded at export, chosen per Embed call, used for
items (document prompt) and Recommend's texts (query prompt), equal to sentence-transformers'
prompted embeddings; Matryoshka truncation validated and re-normalised."""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient, InvalidArgument
from embedrec.server.manifest import ModelManifest, read_items_manifest, read_model_manifest
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server

PROMPTS = {"query": "query: ", "passage": "passage: "}
TEXT = "energy saving air conditioner"


@pytest.fixture(scope="module")
def prompted_model_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT with sentence-transformers prompts in its config, plus one given at export."""
    from embedrec.export.onnx_model import export_model

    source = tmp_path_factory.mktemp("prompted") / "source"
    shutil.copytree(tiny_bert_dir, source)
    (source / "config_sentence_transformers.json").write_text(json.dumps({"prompts": PROMPTS}))
    output = tmp_path_factory.mktemp("prompted-export") / "model"
    export_model(str(source), output, prompts={"title": "title: "})
    return output


@pytest.fixture(scope="module")
def prompted_items_dir(prompted_model_dir: Path, catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from embedrec.export.items import build_items

    output = tmp_path_factory.mktemp("prompted-items") / "items"
    build_items(catalog_path, prompted_model_dir, output, filter_field="category", progress=False)
    return output


@pytest.fixture(scope="module")
def prompted_server(prompted_model_dir: Path, prompted_items_dir: Path) -> Iterator[ServerThread]:
    server = start_server(server_settings(prompted_model_dir, prompted_items_dir))
    yield server
    server.close()


@pytest.fixture()
def prompted(prompted_server: ServerThread) -> Iterator[EmbedrecClient]:
    with EmbedrecClient(prompted_server.target, timeout=30) as connected:
        yield connected


def test_the_export_records_the_models_prompts_and_those_given(prompted_model_dir: Path) -> None:
    manifest = read_model_manifest(prompted_model_dir)
    assert manifest.prompts == {**PROMPTS, "title": "title: "}
    assert manifest.default_prompt_name == ""


def test_info_reports_the_prompts_and_which_serve_queries_and_items(prompted: EmbedrecClient) -> None:
    info = prompted.info()
    assert info.prompts == {**PROMPTS, "title": "title: "}
    assert (info.default_prompt_name, info.query_prompt_name, info.items_prompt_name) == ("", "query", "passage")


def test_a_named_prompt_is_prepended_and_its_tokens_counted(prompted: EmbedrecClient) -> None:
    with_prompt = prompted.embed([TEXT], prompt_name="query")
    np.testing.assert_array_equal(with_prompt, prompted.embed(["query: " + TEXT], prompt_name=""))
    assert not np.allclose(with_prompt, prompted.embed([TEXT]))  # no default prompt: plain text


def test_prompted_embeddings_match_sentence_transformers(
    prompted: EmbedrecClient, prompted_model_dir: Path, tiny_bert_dir: Path
) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    max_length = read_model_manifest(prompted_model_dir).max_length
    with warnings.catch_warnings():  # sentence-transformers imports its own deprecated paths
        warnings.simplefilter("ignore", DeprecationWarning)
        transformer = Transformer(str(tiny_bert_dir), max_seq_length=max_length)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="cls")
        reference = SentenceTransformer(modules=[transformer, pooling, Normalize()], prompts=PROMPTS, device="cpu")
    texts = [TEXT, "我喜欢喝咖啡"]
    for name in PROMPTS:
        expected = reference.encode(texts, prompt_name=name, convert_to_numpy=True)
        served = prompted.embed(texts, prompt_name=name)
        cosines = np.sum(expected * served, axis=1) / np.linalg.norm(expected, axis=1) / np.linalg.norm(served, axis=1)
        assert cosines.min() >= 0.9999


def test_an_unknown_prompt_name_is_invalid_and_lists_the_known_ones(prompted: EmbedrecClient) -> None:
    with pytest.raises(InvalidArgument, match=r"prompt_name 'doc' .*passage, query, title"):
        prompted.embed([TEXT], prompt_name="doc")


def test_items_are_embedded_with_the_document_prompt(
    prompted: EmbedrecClient, prompted_items_dir: Path, catalog_path: Path
) -> None:
    manifest = read_items_manifest(prompted_items_dir)
    assert (manifest.prompt_name, manifest.prompt) == ("passage", "passage: ")
    rows = [json.loads(line) for line in catalog_path.read_text().splitlines()]
    matrix = np.load(prompted_items_dir / "items.npy")
    expected = prompted.embed([row["text"] for row in rows], prompt_name="passage")
    np.testing.assert_allclose(matrix, expected, atol=1e-5)


def test_recommend_embeds_its_texts_with_the_query_prompt_exactly_as_brute_force(
    prompted: EmbedrecClient, prompted_items_dir: Path
) -> None:
    ids = (prompted_items_dir / "ids.txt").read_text().split("\n")[:-1]
    matrix = np.load(prompted_items_dir / "items.npy").astype(np.float64)
    query = prompted.embed([TEXT], prompt_name="query")[0].astype(np.float64)
    scores = matrix @ (query / np.linalg.norm(query))
    order = sorted(range(len(ids)), key=lambda row: (-scores[row], row))[:5]
    found = prompted.recommend(5, texts=[TEXT])
    assert [r.id for r in found] == [ids[row] for row in order]
    np.testing.assert_allclose([r.score for r in found], scores[order], atol=1e-5)


def test_a_rebuild_with_another_prompt_is_not_up_to_date(
    prompted_model_dir: Path, catalog_path: Path, tmp_path: Path
) -> None:
    from embedrec.export.items import build_items

    output = tmp_path / "items"
    assert build_items(catalog_path, prompted_model_dir, output, progress=False, prompt_name="").prompt_name == ""
    first = np.load(output / "items.npy")
    assert (
        build_items(catalog_path, prompted_model_dir, output, progress=False, prompt_name="title").prompt == "title: "
    )
    assert not np.allclose(first, np.load(output / "items.npy"))


def manifest_with(prompts: dict[str, str], default: str = "") -> ModelManifest:
    return ModelManifest(
        "m", "", 8, 16, "cls", True, "", 17, (), 0, {}, {}, {}, prompts=prompts, default_prompt_name=default
    )


class TestDimensions:
    def test_vectors_are_cut_then_renormalised_or_left_raw(self, client: EmbedrecClient) -> None:
        raw = client.embed([TEXT], normalize=False)[0]
        short = client.embed([TEXT], dimensions=8)[0]
        np.testing.assert_allclose(short, raw[:8] / np.linalg.norm(raw[:8]), atol=1e-6)
        np.testing.assert_array_equal(client.embed([TEXT], normalize=False, dimensions=8)[0], raw[:8])
        assert client.embed([TEXT], dimensions=client.info().dim).shape == (1, client.info().dim)

    @pytest.mark.parametrize("dimensions", [0, 33, 10_000])
    def test_out_of_range_is_invalid_naming_the_models_dimension(self, client: EmbedrecClient, dimensions: int) -> None:
        with pytest.raises(InvalidArgument, match=r"dimensions must be 1 to the model's dimension 32"):
            client.embed([TEXT], dimensions=dimensions)
