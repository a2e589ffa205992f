"""Embedding texts: validation against the limits, the model's prompts, tokenising off the event
loop, the inference batcher, Matryoshka truncation and normalisation; cosine similarity."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from embedrec.server.batching.batcher import IdlePath, MicroBatcher
from embedrec.server.batching.offload import INLINE_TOKENIZE_MAX_CHARS, CpuPool
from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.errors import InvalidArgument
from embedrec.server.inference.encoder import InferenceOutput, OnnxEncoder
from embedrec.server.inference.pooling import FloatArray, l2_normalize
from embedrec.server.inference.prompts import prompt_text, query_prompt_name, with_prompt
from embedrec.server.inference.tokenization import TokenizedText, TokenSpan, TruncationSide
from embedrec.server.limits import Limits, check_count, check_texts
from embedrec.server.manifest import ModelManifest, PoolingName
from embedrec.server.observability.tracing import batch_tracer, span
from embedrec.server.observability.tracing import enabled as tracing_enabled


@dataclass(frozen=True, slots=True)
class VectorShape:
    """How one text's vector leaves the model: its pooling, then Matryoshka truncation to
    `dimensions` (None: all), then L2 normalisation when `normalize`."""

    pooling: PoolingName
    dimensions: int | None
    normalize: bool


BatchItem = tuple[TokenizedText, VectorShape]


class Encoder(Protocol):
    """What embedding needs of a model: its manifest (dim, pooling, prompts...) and tokenising."""

    @property
    def manifest(self) -> ModelManifest: ...

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        field: str = "texts",
        side: TruncationSide = "right",
        max_tokens: int | None = None,
    ) -> list[TokenizedText]:
        """Token sequences of `texts`, each cut on `side` to the model's max length (or
        `max_tokens` when smaller); InvalidArgument naming `field`[i] for a text too long when
        `truncate` is false."""
        ...


class ServedModel(Encoder, Protocol):
    """What the service reports of the model it serves, beyond embedding: its dimension, the
    execution provider in use, and how many runtime sessions it has."""

    def token_spans(self, text: str, *, add_special_tokens: bool = True) -> list[TokenSpan]:
        """The tokens of `text` with the UTF-8 byte span of each (see TextTokenizer.token_spans)."""
        ...

    @property
    def dim(self) -> int: ...

    @property
    def provider(self) -> str: ...

    @property
    def session_count(self) -> int: ...


@dataclass(frozen=True)
class EmbedResult:
    """Vectors (n, dim) float32 in request order, and the tokens each text used."""

    vectors: FloatArray
    token_counts: list[int]


def create_batcher(
    encoder: OnnxEncoder,
    policy: BatchPolicy,
    *,
    instances: int = 1,
    quiet: Callable[[], bool] = lambda: True,
    **hooks: Any,
) -> MicroBatcher[BatchItem, FloatArray]:
    """A micro-batcher running `encoder` on (tokens, shape) items: padding and inference in the
    lane of whichever of the `instances` is free (instance i runs on session i modulo the
    encoder's sessions); pooling, truncation and normalisation after it, in the same lane when
    nothing else waits (else in the finishing lane, overlapping the next batch's inference), so
    each item's result is its final vector and the event loop only stacks them. With the encoder's
    idle twin, a batch that finds the runtime idle and `quiet()` true runs on the twin, whichever
    instance's lane forms it."""

    def infer_on(instance: int, items: list[BatchItem], idle: bool = False) -> InferenceOutput:
        return encoder.infer([tokens for tokens, _ in items], instance % encoder.session_count, idle=idle)

    def finish(items: list[BatchItem], output: InferenceOutput) -> Sequence[FloatArray]:
        return shaped_vectors(encoder.pool_batch(output, [shape.pooling for _, shape in items]), items)

    return MicroBatcher(
        [functools.partial(infer_on, instance) for instance in range(instances)],
        finish,
        idle_path=IdlePath([functools.partial(infer_on, instance, idle=True) for instance in range(instances)], quiet)
        if getattr(encoder, "idle_sessions", None)
        else None,
        tracer=batch_tracer("inference", finish_span="embedrec.pooling"),
        policy=policy,
        cost=lambda item: item[0].length,
        name="inference",
        unit="texts",
        queue_limit_name="max_queued_texts",
        **hooks,
    )


def shaped_vectors(pooled: FloatArray, items: Sequence[BatchItem]) -> list[FloatArray]:
    """Row i of `pooled` (rows, dim) truncated and normalised as `items[i]`'s shape says; rows
    of one shape in one vectorised step (a batch almost always has a single shape)."""
    shapes = [shape for _, shape in items]
    if len(set(shapes)) == 1:
        return list(_shaped(pooled, shapes[0]))
    out: list[FloatArray] = [pooled[0]] * len(shapes)
    for shape in set(shapes):
        rows = [row for row, one in enumerate(shapes) if one == shape]
        for row, vector in zip(rows, _shaped(pooled[rows], shape), strict=True):
            out[row] = vector
    return out


def _shaped(vectors: FloatArray, shape: VectorShape) -> FloatArray:
    if shape.dimensions is not None:
        vectors = vectors[:, : shape.dimensions]
    return l2_normalize(vectors) if shape.normalize else vectors


class Embedder:
    """Embed and Similarity over an encoder and its inference batcher."""

    def __init__(
        self, encoder: Encoder, batcher: MicroBatcher[BatchItem, FloatArray], limits: Limits, cpu: CpuPool
    ) -> None:
        """`cpu` runs the request-sized CPU work (tokenising) off the loop."""
        self.encoder = encoder
        self.batcher = batcher
        self.limits = limits
        self.cpu = cpu

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        truncate: bool | None = None,
        pooling: PoolingName | None = None,
        prompt_name: str | None = None,
        dimensions: int | None = None,
        timeout: float | None = None,
        field_name: str = "texts",
        side: TruncationSide = "right",
        max_tokens: int | None = None,
    ) -> EmbedResult:
        """Embed `texts` (validated against the limits); vectors in request order.

        `prompt_name`: one of the model's prompts, prepended to each text (None: the model's
        default, "": none). `dimensions`: keep the first `dimensions` values of each vector
        (Matryoshka truncation), normalised after truncating. `side`: the end a text too long is
        cut at; `max_tokens`: a shorter cut than the model's max length (>= 1). Raises
        InvalidArgument, Overloaded, DeadlineExpired or Unavailable.
        """
        manifest = self.encoder.manifest
        with span("embedrec.admission", texts=len(texts)):
            check_texts(texts, self.limits, field=field_name)
            prompt = prompt_text(manifest, prompt_name)
            if dimensions is not None and not 1 <= dimensions <= manifest.dim:
                raise InvalidArgument(
                    f"dimensions must be 1 to the model's dimension {manifest.dim}, got {dimensions}",
                    field="dimensions",
                )
            if max_tokens is not None and max_tokens < 1:
                raise InvalidArgument(f"max_tokens must be a positive integer, got {max_tokens}", field="max_tokens")
            self.batcher.check_admission(len(texts))  # refuse before tokenising under overload
        (tokenized,) = await self._tokenize(
            [(with_prompt(prompt, list(texts)), field_name)],
            truncate=True if truncate is None else truncate,
            side=side,
            max_tokens=max_tokens,
        )
        shape = VectorShape(
            pooling or manifest.pooling, dimensions, manifest.normalize if normalize is None else normalize
        )
        vectors = await self._run(tokenized, shape, timeout)
        return EmbedResult(vectors, [tokens.length for tokens in tokenized])

    async def _run(self, tokenized: Sequence[TokenizedText], shape: VectorShape, timeout: float | None) -> FloatArray:
        """Tokenised texts through the batcher: float32 (n, dims), C-contiguous, shaped as `shape` says."""
        vectors = await self.batcher.submit([(tokens, shape) for tokens in tokenized], timeout=timeout)
        return np.stack(vectors).astype(np.float32, copy=False)

    async def embed_queries(
        self, groups: Sequence[tuple[Sequence[str], str]], *, timeout: float | None
    ) -> list[FloatArray]:
        """Unit vectors for several groups of (texts, field name), each group validated on its own
        against the limits, all submitted to the batcher at once (so they share batches). The
        texts are queries: embedded with the model's query prompt."""
        with span("embedrec.admission", texts=sum(len(texts) for texts, _ in groups)):
            for texts, field_name in groups:
                check_texts(texts, self.limits, field=field_name)
            self.batcher.check_admission(sum(len(texts) for texts, _ in groups))
        prompt = prompt_text(self.encoder.manifest, query_prompt_name(self.encoder.manifest))
        tokenized = await self._tokenize(
            [(with_prompt(prompt, list(texts)), field_name) for texts, field_name in groups], truncate=True
        )
        flat = [tokens for group in tokenized for tokens in group]
        if not flat:
            return []
        vectors = await self._run(flat, VectorShape(self.encoder.manifest.pooling, None, True), timeout)
        bounds = np.cumsum([len(group) for group in tokenized])[:-1]
        return list(np.split(vectors, bounds))

    async def _tokenize(
        self,
        groups: Sequence[tuple[Sequence[str], str]],
        *,
        truncate: bool,
        side: TruncationSide = "right",
        max_tokens: int | None = None,
    ) -> list[list[TokenizedText]]:
        """Each group of (texts, field name) tokenised: inline when all of them hold at most
        INLINE_TOKENIZE_MAX_CHARS characters (cheaper than the hop), else in the CPU pool."""
        characters = sum(len(text) for texts, _ in groups for text in texts)

        def tokenize_all() -> list[list[TokenizedText]]:
            return [
                self.encoder.tokenize(texts, truncate=truncate, field=field, side=side, max_tokens=max_tokens)
                for texts, field in groups
            ]

        with span("embedrec.tokenize", characters=characters) as traced:
            tokenized = await self.cpu.run_unless_small(characters <= INLINE_TOKENIZE_MAX_CHARS, tokenize_all)
            if tracing_enabled():
                traced.set(tokens=sum(tokens.length for group in tokenized for tokens in group))
        return tokenized

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
