"""The models a server serves (`ServedModels`): every embedding model and reranker by name, the
default one (the --model-dir model: Recommend's, TEI's, and the one Info's top-level fields
describe), name resolution for the `model` fields of every transport, the descriptions Info and
the model listings give, and the batchers to start and stop. As vLLM's OpenAIServingModels: the
one place that knows which models there are; nothing else picks "the first"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from embedrec.server.batching.batcher import MicroBatcher
from embedrec.server.errors import FailedPrecondition, NotFound, quoted
from embedrec.server.inference.embedding import Embedder, ServedModel
from embedrec.server.inference.prompts import query_prompt_name
from embedrec.server.inference.reranking import Reranker
from embedrec.server.loading import int8_host_warning
from embedrec.server.manifest import ModelManifest

NO_RERANKER = (
    "this server serves no reranker (start it with --model NAME=DIR, a model exported with "
    "embedrec export-model --task rerank)"
)


@dataclass(frozen=True)
class ModelDescription:
    """One served model as Info lists it (InfoResponse.models)."""

    name: str
    task: str
    model_name: str
    dim: int
    max_length: int
    onnx_sha256: str
    activation: str = ""
    variant: str = "fp32"
    int8_target: str = ""
    int8_agreement: float = 0.0
    int8_host_warning: str = ""

    @classmethod
    def of(cls, name: str, manifest: ModelManifest) -> ModelDescription:
        """The description of the model `manifest` served as `name`."""
        agreement = manifest.agreement
        measured = agreement.get("top_n_agreement" if manifest.task == "rerank" else "variant_vs_fp32_items", 0.0)
        return cls(
            name,
            manifest.task,
            manifest.model_name,
            manifest.dim,
            manifest.max_length,
            manifest.onnx_sha256,
            manifest.activation,
            manifest.variant,
            manifest.int8_target,
            float(measured),
            int8_host_warning(manifest),
        )

    def openai_card(self) -> dict[str, Any]:
        """This model as OpenAI's GET /v1/models lists it (embedrec extensions: `task` embed or
        rerank, `variant`, `int8_target`, `int8_agreement`)."""
        return {
            "id": self.name,
            "object": "model",
            "created": 0,
            "owned_by": "embedrec",
            "task": self.task,
            "variant": self.variant,
            "int8_target": self.int8_target,
            "int8_agreement": self.int8_agreement,
        }


class ServedModels:
    """Every served model by name: `default` (served under its manifest's model name, also
    reachable by the last path segment of that name; `encoder` is its encoder) and the --model
    ones (`embedders`, `rerankers`, each with a batcher of its own). Names are unique (ValueError
    otherwise: the settings and `loading.load_extra_encoders` refuse duplicates first)."""

    def __init__(
        self,
        encoder: ServedModel,
        default: Embedder,
        embedders: Mapping[str, Embedder] | None = None,
        rerankers: Mapping[str, Reranker] | None = None,
    ) -> None:
        if default.encoder is not encoder:
            raise ValueError("the default embedder must run on the default encoder")
        self.encoder = encoder
        self.default = default
        self.default_name = encoder.manifest.model_name
        self.embedders: dict[str, Embedder] = {self.default_name: default}
        for name, embedder in (embedders or {}).items():
            if name in self.embedders:
                raise ValueError(f"two embedding models called {name!r}")
            self.embedders[name] = embedder
        self.rerankers: dict[str, Reranker] = dict(rerankers or {})
        if clash := set(self.embedders) & set(self.rerankers):
            raise ValueError(f"models served both as embedders and rerankers: {sorted(clash)}")

    def embedder(self, model: str, *, field: str = "model") -> Embedder:
        """The embedding model named `model` ("": the default; the default's name may also be
        given by its last path segment); NotFound naming `field` and the served models otherwise."""
        if not model:
            return self.default
        found = self.embedders.get(model)
        if found is None and model == self.default_name.rsplit("/", 1)[-1]:
            found = self.default
        if found is None:
            raise NotFound(
                f"{field} {quoted(model)} is not served here as an embedding model "
                f"(embedding models: {', '.join(self.embedders)}; rerankers: {', '.join(self.rerankers) or 'none'})",
                field=field,
            )
        return found

    def reranker(self, model: str, *, field: str = "model") -> Reranker:
        """The reranker named `model` ("": the first served); FailedPrecondition when none is
        served, NotFound naming `field` and the served rerankers for another name."""
        if not self.rerankers:
            raise FailedPrecondition(NO_RERANKER, field=field)
        if not model:
            return next(iter(self.rerankers.values()))
        found = self.rerankers.get(model)
        if found is None:
            raise NotFound(
                f"{field} {quoted(model)} is not served here as a reranker (rerankers: {', '.join(self.rerankers)})",
                field=field,
            )
        return found

    def embedder_names(self) -> list[str]:
        """The embedding models' names, the default's first."""
        return list(self.embedders)

    def batchers(self) -> list[MicroBatcher[Any, Any]]:
        """Every model's inference batcher (one each), the default's first (to start and stop them)."""
        return [one.batcher for one in self.embedders.values()] + [one.batcher for one in self.rerankers.values()]

    def descriptions(self) -> list[ModelDescription]:
        """Every model served, the default first, then the embedders and the rerankers."""
        described = [ModelDescription.of(name, one.encoder.manifest) for name, one in self.embedders.items()]
        described += [ModelDescription.of(name, one.encoder.manifest) for name, one in self.rerankers.items()]
        return described

    def openai_cards(self) -> list[dict[str, Any]]:
        """GET /v1/models' `data`: every model served, the default first."""
        return [model.openai_card() for model in self.descriptions()]

    def info_fields(self) -> dict[str, Any]:
        """Info's top-level model fields (InfoResponse's names): the default model's, with its
        provider, batch policy, instances and sessions, and `models`: every one's description."""
        encoder, policy = self.encoder, self.default.batcher.policy
        manifest = encoder.manifest
        return {
            "model_name": manifest.model_name,
            "dim": manifest.dim,
            "max_length": manifest.max_length,
            "pooling": manifest.pooling,
            "normalize": manifest.normalize,
            "provider": encoder.provider,
            "model_sha256": manifest.onnx_sha256,
            "max_batch_size": policy.max_batch_size,
            "max_batch_tokens": policy.max_batch_tokens,
            "max_queued_texts": policy.max_queued_texts,
            "instances": self.default.batcher.instances,
            "sessions": encoder.session_count,
            "prompts": dict(manifest.prompts),
            "default_prompt_name": manifest.default_prompt_name,
            "query_prompt_name": query_prompt_name(manifest),
            "models": self.descriptions(),
            "model_variant": manifest.variant,
            "int8_target": manifest.int8_target,
            "int8_agreement_fp32_items": float(manifest.agreement.get("variant_vs_fp32_items", 0.0)),
            "int8_agreement_int8_items": float(manifest.agreement.get("variant_vs_variant", 0.0)),
            "int8_host_warning": int8_host_warning(manifest),
        }
