"""The model behind a small interface: texts → float32 vectors, via tokenize → run → pool.

`OnnxEncoder` composes the pure steps of `server.inference.tokenization` and
`server.inference.pooling` around ONNX Runtime sessions. The embedder
(`server.inference.embedding`) calls `tokenize` at admission; the batcher's instances call `infer`
on a batch (one session each) and `pool_batch` on its output; `encode` is the one-call form used
by the item build and by tests.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime

from embedrec.server.inference.pooling import FloatArray, l2_normalize, pool
from embedrec.server.inference.providers import ProviderChoice, create_session
from embedrec.server.inference.scoring import relevance_scores
from embedrec.server.inference.tokenization import (
    IntArray,
    TextTokenizer,
    TokenizedText,
    TokenSpan,
    TruncationSide,
)
from embedrec.server.manifest import MODEL_FILE, TOKENIZER_FILE, ModelManifest, PoolingName, read_model_manifest

InferenceOutput = tuple[IntArray, FloatArray]


class OnnxEncoder:
    """An exported model (a directory written by `embedrec export-model`) ready to embed."""

    def __init__(
        self,
        model_dir: Path,
        *,
        provider: ProviderChoice = "auto",
        intra_op_threads: int = 0,
        device_id: int = 0,
        spinning: bool = True,
        spinning_in_runs: bool = False,
        cuda_memory_limit_mb: int = 0,
        io_binding: bool | None = None,
        sessions: int = 1,
        idle_sessions: bool = False,
    ) -> None:
        """Load the manifest, tokenizer and `sessions` ONNX sessions of `model_dir` (each with
        `intra_op_threads` threads; on CUDA they share the device). A session may run several
        batches at once (ONNX Runtime sessions are thread-safe); separate sessions give each
        concurrent batch threads of its own, at the cost of a copy of the weights each.
        `spinning` and `spinning_in_runs`: see `server.inference.providers.create_session`.
        `idle_sessions`: on CPU, one more session (the idle twin) whose threads spin in runs, for
        `infer(idle=True)` (a batch formed while the runtime is idle), another copy of the weights;
        it has the threads of all the sessions together (ONNX Runtime's default when
        `intra_op_threads` is 0), since the batch it runs is the only one.

        `io_binding` (default: on exactly when CUDA runs the model) binds inputs and outputs to
        the provider's device: inputs are copied there once, the output is allocated there and
        copied back once, with no intermediate host buffers. Raises ConfigurationError on a
        missing or mismatched manifest or an unusable provider.
        """
        self.model_dir = model_dir
        self.manifest: ModelManifest = read_model_manifest(model_dir)
        self.tokenizer = TextTokenizer(
            model_dir / TOKENIZER_FILE,
            max_length=self.manifest.max_length,
            pad_token_id=self.manifest.pad_token_id,
        )
        if sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {sessions}")

        make = functools.partial(
            create_session,
            model_dir / MODEL_FILE,
            provider=provider,
            intra_op_threads=intra_op_threads,
            device_id=device_id,
            cuda_memory_limit_mb=cuda_memory_limit_mb,
        )
        self.sessions = [make(spinning=spinning, spinning_in_runs=spinning_in_runs) for _ in range(sessions)]
        self.session = self.sessions[0]
        twin = idle_sessions and self.provider == "CPUExecutionProvider"  # spinning: CPU only
        self.idle_sessions = (
            [make(spinning=False, spinning_in_runs=True, intra_op_threads=intra_op_threads * sessions)] if twin else []
        )
        self._input_names = {graph_input.name for graph_input in self.session.get_inputs()}
        self._output_name = self.session.get_outputs()[0].name
        on_cuda = self.provider == "CUDAExecutionProvider"
        self._device = ("cuda", device_id) if on_cuda else ("cpu", 0)
        self.uses_io_binding = on_cuda if io_binding is None else io_binding

    @property
    def dim(self) -> int:
        """The embedding dimension."""
        return self.manifest.dim

    @property
    def provider(self) -> str:
        """The execution provider that really runs the model, e.g. CPUExecutionProvider."""
        return str(self.session.get_providers()[0])

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        field: str = "texts",
        side: TruncationSide = "right",
        max_tokens: int | None = None,
    ) -> list[TokenizedText]:
        """Tokenise texts (see TextTokenizer.tokenize; raises InvalidArgument when too long)."""
        return self.tokenizer.tokenize(texts, truncate=truncate, field=field, side=side, max_tokens=max_tokens)

    def token_spans(self, text: str, *, add_special_tokens: bool = True) -> list[TokenSpan]:
        """The tokens of `text` with the UTF-8 byte span of each (see TextTokenizer.token_spans)."""
        return self.tokenizer.token_spans(text, add_special_tokens=add_special_tokens)

    def run(self, batch: Sequence[TokenizedText], poolings: Sequence[PoolingName]) -> FloatArray:
        """Run the model on `batch` and pool row i with `poolings[i]`.

        Returns float32 (len(batch), dim), not normalised. Blocking: call it off the event loop.
        """
        return self.pool_batch(self.infer(batch), poolings)

    @property
    def session_count(self) -> int:
        """How many ONNX Runtime sessions there are (`infer`'s `session` is below this)."""
        return len(self.sessions)

    def infer(self, batch: Sequence[TokenizedText], session: int = 0, *, idle: bool = False) -> InferenceOutput:
        """Pad `batch` to its longest text and run the model on session number `session` (on the
        idle twin instead when `idle` and there is one): (attention mask, token vectors).

        Blocking (ONNX Runtime releases the GIL while it runs); thread-safe.
        """
        inputs = self.tokenizer.pad_batch(batch)
        feed = {name: array for name, array in inputs.items() if name in self._input_names}
        runner = self.idle_sessions[0] if idle and self.idle_sessions else self.sessions[session]
        hidden = np.asarray(self._run_session(runner, feed), dtype=np.float32)
        return inputs["attention_mask"], hidden

    def _run_session(self, session: onnxruntime.InferenceSession, feed: dict[str, IntArray]) -> np.ndarray:
        if not self.uses_io_binding:
            return np.asarray(session.run([self._output_name], feed)[0])
        device, device_id = self._device
        binding = session.io_binding()
        for name, array in feed.items():
            binding.bind_ortvalue_input(
                name, onnxruntime.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, device_id)
            )
        binding.bind_output(self._output_name, device, device_id)
        session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])

    def pool_batch(self, output: InferenceOutput, poolings: Sequence[PoolingName]) -> FloatArray:
        """Pool row i of an `infer` output with `poolings[i]`: float32 (rows, dim)."""
        mask, hidden = output
        if len(set(poolings)) == 1:
            return pool(hidden, mask, poolings[0])
        pooled = np.empty((len(poolings), self.dim), dtype=np.float32)
        for kind in set(poolings):
            rows = np.flatnonzero(np.asarray(poolings) == kind)
            pooled[rows] = pool(hidden[rows], mask[rows], kind)
        return pooled

    def score_batch(self, output: InferenceOutput, activation: str | None = None) -> FloatArray:
        """A reranker's `infer` output as relevance scores: float32 (rows,), through
        `activation` (default: the manifest's)."""
        _, logits = output
        return relevance_scores(logits, activation or self.manifest.activation or "none")

    def score(self, pairs: Sequence[tuple[str, str]], *, activation: str | None = None) -> FloatArray:
        """A reranker's scores of (query, document) `pairs` in one batch: float32 (len(pairs),)."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return self.score_batch(self.infer(self.tokenizer.tokenize_pairs(pairs)), activation)

    def encode(
        self,
        texts: Sequence[str],
        *,
        normalize: bool | None = None,
        pooling: PoolingName | None = None,
        truncate: bool = True,
    ) -> FloatArray:
        """Embed `texts` in one batch: float32 (len(texts), dim).

        `normalize` and `pooling` default to the model's (manifest).
        """
        tokenized = self.tokenize(texts, truncate=truncate)
        vectors = self.run(tokenized, [pooling or self.manifest.pooling] * len(tokenized))
        if self.manifest.normalize if normalize is None else normalize:
            vectors = l2_normalize(vectors)
        return vectors
