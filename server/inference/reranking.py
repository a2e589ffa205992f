"""Reranking: a cross-encoder scoring (query, document) pairs, batched like Embed.

Each pair is one item of the reranker's own micro-batcher, costed by its tokens: the same token
budget, length grouping, fairness between calls and deadlines as Embed's texts. Tokenising runs
off the event loop when the request is not small; the batcher answers raw logits, and the
request's activation (the model's, or none for raw scores) turns them into its scores.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedrec.server.batching.batcher import MicroBatcher
from embedrec.server.batching.offload import INLINE_TOKENIZE_MAX_CHARS, CpuPool
from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.inference.encoder import InferenceOutput, OnnxEncoder
from embedrec.server.inference.scoring import relevance_scores
from embedrec.server.inference.tokenization import TokenizedText
from embedrec.server.limits import Limits, check_texts
from embedrec.server.observability.tracing import batch_tracer, span


@dataclass(frozen=True)
class RerankHit:
    """One document's score: its position in the request and the model's relevance score."""

    index: int
    score: float


@dataclass(frozen=True)
class RerankResult:
    """The best documents first (equal scores in document order) and the tokens of all pairs."""

    hits: list[RerankHit]
    tokens: int


def create_rerank_batcher(
    encoder: OnnxEncoder, policy: BatchPolicy, *, instances: int = 1, **hooks: Any
) -> MicroBatcher[TokenizedText, float]:
    """A micro-batcher running the cross-encoder `encoder` on tokenised pairs: padding and
    inference in the thread of whichever of the `instances` is free; it answers raw logits (the
    activation is the request's choice)."""

    def infer_on(instance: int, items: list[TokenizedText]) -> InferenceOutput:
        return encoder.infer(items, instance % encoder.session_count)

    def finish(items: list[TokenizedText], output: InferenceOutput) -> Sequence[float]:
        logits: list[float] = encoder.score_batch(output, "none").tolist()
        return logits

    return MicroBatcher(
        [functools.partial(infer_on, instance) for instance in range(instances)],
        finish,
        tracer=batch_tracer("rerank", finish_span="embedrec.scoring"),
        policy=policy,
        cost=lambda item: item.length,
        name="rerank",
        unit="pairs",
        queue_limit_name="max_queued_texts",
        **hooks,
    )


class Reranker:
    """Rerank over a cross-encoder and its batcher."""

    def __init__(
        self, name: str, encoder: OnnxEncoder, batcher: MicroBatcher[TokenizedText, float], limits: Limits, cpu: CpuPool
    ) -> None:
        """`name`: what calls name it by; `cpu` runs the tokenising of large requests."""
        self.name = name
        self.encoder = encoder
        self.batcher = batcher
        self.limits = limits
        self.cpu = cpu

    async def rerank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_n: int = 0,
        raw_scores: bool = False,
        timeout: float | None = None,
        from_catalog: bool = False,
        max_document_tokens: int = 0,
    ) -> RerankResult:
        """Score every document against `query` (the model's logit through its activation; the
        logit itself with `raw_scores`); the `top_n` best (0: all), best first, equal scores in
        document order. Raises InvalidArgument naming `query` or `documents[i]` and the limit,
        Overloaded, DeadlineExpired or Unavailable. `from_catalog`: the documents are the
        catalog's texts (Recommend's rerank stage), bounded by the store, not a request's limits.
        `max_document_tokens` (> 0): each document cut to that many tokens before pairing."""
        with span("embedrec.admission", texts=len(documents) + 1):
            check_texts([query], self.limits, field="query")
            if not from_catalog:
                limit = self.limits.max_texts_per_request - 1
                check_texts(documents, self.limits, field="documents", max_count=limit)
            self.batcher.check_admission(len(documents))  # refuse before tokenising under overload
        pairs = [(query, document) for document in documents]
        characters = len(query) * len(documents) + sum(len(document) for document in documents)
        with span("embedrec.tokenize", characters=characters):
            tokenized = await self.cpu.run_unless_small(
                characters <= INLINE_TOKENIZE_MAX_CHARS,
                self.encoder.tokenizer.tokenize_pairs,
                pairs,
                max_document_tokens=max_document_tokens,
            )
        logits = np.asarray(await self.batcher.submit(tokenized, timeout=timeout), dtype=np.float32)
        scores = relevance_scores(logits, "none" if raw_scores else self.encoder.manifest.activation or "none")
        order = np.lexsort((np.arange(len(scores)), -scores))  # score desc, then document order
        if 0 < top_n < len(order):
            order = order[:top_n]
        hits = [RerankHit(int(index), float(scores[index])) for index in order]
        return RerankResult(hits, sum(tokens.length for tokens in tokenized))
