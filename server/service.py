"""The transport-free core: Embed, Similarity, Recommend and Info on plain Python and numpy.

`EmbeddingService` validates requests against `Limits`, tokenises at admission (so a too-long
text with truncate=false is refused before it is queued), sends token sequences through the
micro-batcher, and ranks items with the item index. The gRPC servicer is a thin adapter on it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime

from embedrec import __version__
from server.batcher import BatchPolicy, MicroBatcher
from server.encoder import InferenceOutput, OnnxEncoder
from server.errors import FailedPrecondition, InvalidArgument
from server.items import ItemIndex, Recommendation
from server.limits import Limits, check_count, check_k, check_texts, check_vector, check_weight
from server.manifest import PoolingName
from server.pooling import FloatArray, l2_normalize
from server.profiles import combine_profile
from server.tokenization import TokenizedText

BatchItem = tuple[TokenizedText, PoolingName]


@dataclass(frozen=True)
class EmbedResult:
    """Vectors (n, dim) float32 in request order, and the tokens each text used."""

    vectors: FloatArray
    token_counts: list[int]


@dataclass(frozen=True)
class ProfileRequest:
    """A Recommend request in core terms (see RecommendRequest in the proto)."""

    k: int
    user_vector: Sequence[float] | FloatArray = ()
    user_vector_weight: float = 1.0
    texts: Sequence[tuple[str, float]] = ()
    items: Sequence[tuple[str, float]] = ()
    exclude_ids: Sequence[str] = ()
    exclude_history: bool = True


@dataclass(frozen=True)
class ServiceInfo:
    """What Info reports."""

    model_name: str
    dim: int
    max_length: int
    pooling: PoolingName
    normalize: bool
    provider: str
    model_sha256: str
    item_count: int
    items_sha256: str
    server_version: str
    runtime_version: str
    server_instance: str
    batch_policy: BatchPolicy
    limits: Limits = field(default_factory=Limits)


def create_batcher(encoder: OnnxEncoder, policy: BatchPolicy, **hooks: Any) -> MicroBatcher[BatchItem, FloatArray]:
    """A micro-batcher running `encoder` on (tokens, pooling) items: padding and inference in the
    inference thread, pooling in the finishing thread (overlapping the next batch's inference)."""

    def infer(items: list[BatchItem]) -> InferenceOutput:
        return encoder.infer([tokens for tokens, _ in items])

    def finish(items: list[BatchItem], output: InferenceOutput) -> Sequence[FloatArray]:
        return list(encoder.pool_batch(output, [pooling for _, pooling in items]))

    return MicroBatcher(infer, finish, policy=policy, cost=lambda item: item[0].length, name="inference", **hooks)


class EmbeddingService:
    """Embedding and recommendation use cases over an encoder, a batcher and optional items."""

    def __init__(
        self,
        encoder: OnnxEncoder,
        batcher: MicroBatcher[BatchItem, FloatArray],
        items: ItemIndex | None,
        limits: Limits,
    ) -> None:
        self.encoder = encoder
        self.batcher = batcher
        self.items = items
        self.limits = limits

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        truncate: bool | None = None,
        pooling: PoolingName | None = None,
        timeout: float | None = None,
        field_name: str = "texts",
    ) -> EmbedResult:
        """Embed `texts` (validated against the limits); vectors in request order.

        Raises InvalidArgument, Overloaded, DeadlineExpired or Unavailable.
        """
        check_texts(texts, self.limits, field=field_name)
        self.batcher.check_admission(len(texts))  # refuse before tokenising under overload
        tokenized = self.encoder.tokenize(texts, truncate=True if truncate is None else truncate, field=field_name)
        chosen_pooling = pooling or self.encoder.manifest.pooling
        pooled = await self.batcher.submit([(tokens, chosen_pooling) for tokens in tokenized], timeout=timeout)
        vectors = np.stack(pooled).astype(np.float32, copy=False)
        if self.encoder.manifest.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        return EmbedResult(vectors, [tokens.length for tokens in tokenized])

    async def similarity_to_query(self, query: str, candidates: Sequence[str], *, timeout: float | None) -> FloatArray:
        """Cosine similarity of `query` with each candidate, in candidate order."""
        check_texts([query], self.limits, field="query")
        check_texts(candidates, self.limits, field="candidates", max_count=self.limits.max_texts_per_request - 1)
        vectors = (
            await self.embed([query, *candidates], normalize=True, timeout=timeout, field_name="query and candidates")
        ).vectors
        scores: FloatArray = (vectors[1:] @ vectors[0]).astype(np.float32)
        return scores

    async def similarity_of_pairs(self, pairs: Sequence[tuple[str, str]], *, timeout: float | None) -> FloatArray:
        """Cosine similarity of each (a, b) pair, in pair order."""
        max_pairs = self.limits.max_texts_per_request // 2
        if not pairs:
            raise InvalidArgument(f"give either query with candidates, or 1 to {max_pairs} pairs")
        check_count(len(pairs), max_pairs, field="pairs", limit_name="max_texts_per_request / 2")
        for index, (first, second) in enumerate(pairs):
            check_texts([first], self.limits, field=f"pairs[{index}].a")
            check_texts([second], self.limits, field=f"pairs[{index}].b")
        flat = [text for pair in pairs for text in pair]
        vectors = (await self.embed(flat, normalize=True, timeout=timeout, field_name="pairs")).vectors
        scores: FloatArray = np.sum(vectors[0::2] * vectors[1::2], axis=1).astype(np.float32)
        return scores

    async def recommend(self, request: ProfileRequest, *, timeout: float | None) -> list[Recommendation]:
        """Top-k items for the profile of `request`, best first (exact, ties by catalog order).

        Raises FailedPrecondition without items, InvalidArgument on bad fields, NotFound on
        unknown history ids.
        """
        if self.items is None:
            raise FailedPrecondition("this server runs without an item matrix (start it with --items-dir)")
        check_k(request.k, self.limits)
        check_count(len(request.items), self.limits.max_history_items, field="items", limit_name="max_history_items")
        check_count(
            len(request.exclude_ids), self.limits.max_exclude_ids, field="exclude_ids", limit_name="max_exclude_ids"
        )
        text_weights = [check_weight(weight, field=f"texts[{i}].weight") for i, (_, weight) in enumerate(request.texts)]
        item_weights = [check_weight(weight, field=f"items[{i}].weight") for i, (_, weight) in enumerate(request.items)]
        parts: list[tuple[FloatArray, float]] = []
        if len(request.user_vector):
            vector = check_vector(request.user_vector, self.encoder.dim, field="user_vector")
            parts.append((vector, check_weight(request.user_vector_weight, field="user_vector_weight")))
        history_rows = self.items.rows_of([item_id for item_id, _ in request.items], field="items")
        parts.extend(zip(self.items.vectors(history_rows), item_weights, strict=True))
        if request.texts:
            texts = [text for text, _ in request.texts]
            embedded = await self.embed(texts, normalize=True, timeout=timeout, field_name="texts")
            parts.extend(zip(embedded.vectors, text_weights, strict=True))
        profile = combine_profile(parts)
        excluded = self.items.known_rows(request.exclude_ids)
        if request.exclude_history:
            excluded = np.concatenate([excluded, history_rows])
        return self.items.recommend(profile, request.k, excluded_rows=excluded)

    def info(self) -> ServiceInfo:
        """The model, the provider in use, the item matrix identity and the limits."""
        manifest = self.encoder.manifest
        return ServiceInfo(
            model_name=manifest.model_name,
            dim=manifest.dim,
            max_length=manifest.max_length,
            pooling=manifest.pooling,
            normalize=manifest.normalize,
            provider=self.encoder.provider,
            model_sha256=manifest.onnx_sha256,
            item_count=len(self.items) if self.items is not None else 0,
            items_sha256=self.items.manifest.items_sha256 if self.items is not None else "",
            server_version=__version__,
            runtime_version=onnxruntime.__version__,
            server_instance=f"{socket.gethostname()}:{os.getpid()}",
            batch_policy=self.batcher.policy,
            limits=self.limits,
        )
