"""ServedModels without a server: name resolution, the batcher list and the descriptions."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from embedrec.server.errors import FailedPrecondition, NotFound
from embedrec.server.manifest import ModelManifest
from embedrec.server.models import ServedModels


def _manifest(name: str, task: str = "embed") -> ModelManifest:
    return ModelManifest(
        model_name=name,
        source_sha256="s",
        dim=8,
        max_length=16,
        pooling="mean",
        normalize=True,
        onnx_sha256=f"sha-{name}",
        opset=17,
        input_names=("input_ids",),
        pad_token_id=0,
        library_versions={},
        validation={},
        export_options={},
        task=task,
    )


def _model(name: str, task: str = "embed") -> Any:
    encoder = SimpleNamespace(manifest=_manifest(name, task), provider="CPUExecutionProvider", session_count=1, dim=8)
    policy = SimpleNamespace(max_batch_size=32, max_batch_tokens=4096, max_queued_texts=256)
    return SimpleNamespace(name=name, encoder=encoder, batcher=SimpleNamespace(policy=policy, instances=1))


def _served(*, rerankers: bool = True) -> tuple[ServedModels, Any, Any, Any]:
    default, other, reranker = _model("org/mini-lm"), _model("other"), _model("judge", "rerank")
    models = ServedModels(default.encoder, default, {"other": other}, {"judge": reranker} if rerankers else {})
    return models, default, other, reranker


def test_embedders_resolve_by_full_name_last_segment_and_empty() -> None:
    models, default, other, _ = _served()
    assert models.embedder("") is default
    assert models.embedder("org/mini-lm") is default
    assert models.embedder("mini-lm") is default
    assert models.embedder("other") is other
    with pytest.raises(NotFound, match=r"input_model .*embedding models: org/mini-lm, other; rerankers: judge"):
        models.embedder("judge", field="input_model")


def test_rerankers_resolve_and_refuse() -> None:
    models, _, _, reranker = _served()
    assert models.reranker("") is reranker
    assert models.reranker("judge") is reranker
    with pytest.raises(NotFound, match="rerankers: judge"):
        models.reranker("other")
    with pytest.raises(FailedPrecondition, match="serves no reranker"):
        _served(rerankers=False)[0].reranker("")


def test_batchers_and_descriptions_list_each_model_once_default_first() -> None:
    models, default, other, reranker = _served()
    assert models.batchers() == [default.batcher, other.batcher, reranker.batcher]
    assert [(one.name, one.task) for one in models.descriptions()] == [
        ("org/mini-lm", "embed"),
        ("other", "embed"),
        ("judge", "rerank"),
    ]
    assert [card["id"] for card in models.openai_cards()] == ["org/mini-lm", "other", "judge"]
    fields = models.info_fields()
    assert (fields["model_name"], fields["model_sha256"], fields["max_batch_tokens"]) == (
        "org/mini-lm",
        "sha-org/mini-lm",
        4096,
    )


def test_names_are_unique() -> None:
    default, twin = _model("org/mini-lm"), _model("org/mini-lm")
    with pytest.raises(ValueError, match="two embedding models"):
        ServedModels(default.encoder, default, {"org/mini-lm": twin})
    with pytest.raises(ValueError, match="both"):
        ServedModels(default.encoder, default, {"x": _model("x")}, {"x": _model("x", "rerank")})
    with pytest.raises(ValueError, match="default encoder"):
        ServedModels(twin.encoder, default)
