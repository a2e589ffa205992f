"""Choosing the ONNX Runtime execution provider, and saying which one really runs.

`get_available_providers()` lists CUDA whenever the GPU build is installed, GPU or not, and a
failed CUDA load silently falls back to CPU; only `session.get_providers()` tells the truth. So
`auto` tries CUDA and keeps it only when the session really uses it, and `cuda` is a start-up
error when the session would not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from embedrec.server.errors import ConfigurationError

ProviderChoice = Literal["auto", "cuda", "cpu"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDER_CHOICES: tuple[ProviderChoice, ...] = ("auto", "cuda", "cpu")

logger = logging.getLogger(__name__)


def create_session(
    model_path: Path,
    *,
    provider: ProviderChoice,
    intra_op_threads: int = 0,
    device_id: int = 0,
    spinning: bool = True,
    spinning_in_runs: bool = False,
    cuda_memory_limit_mb: int = 0,
) -> ort.InferenceSession:
    """Create an inference session for `model_path` on the chosen provider.

    `auto` uses CUDA when a session can really run on it, else CPU; `cuda` raises
    ConfigurationError when CUDA is not usable; `cpu` always uses CPU. `intra_op_threads` 0
    lets ONNX Runtime choose (one per physical core). `spinning`: the intra-op threads spin
    while waiting for work, in a run and between runs (ONNX Runtime's default); else, with
    `spinning_in_runs`, they spin only between the operators of a run and stop the moment the
    last concurrent run returns; with neither, they never spin. `cuda_memory_limit_mb` caps the CUDA
    memory arena (0: no cap), and the arena grows only by what is requested, so several
    workers can share one GPU.
    """
    if provider not in PROVIDER_CHOICES:
        raise ConfigurationError(f"provider must be one of {', '.join(PROVIDER_CHOICES)}, not {provider!r}")
    options = session_options(intra_op_threads, spinning=spinning, spinning_in_runs=spinning_in_runs)
    if provider != "cpu":
        cuda_built = CUDA in ort.get_available_providers()
        if cuda_built:
            session = ort.InferenceSession(
                str(model_path),
                sess_options=options,
                providers=[(CUDA, cuda_options(device_id, cuda_memory_limit_mb)), CPU],
            )
            if session.get_providers()[0] == CUDA:
                return session
        if provider == "cuda":
            reason = (
                "this onnxruntime build has no CUDA provider (install the server-gpu extra)"
                if not cuda_built
                else "the CUDA provider failed to load (no GPU, or CUDA/cuDNN libraries missing)"
            )
            raise ConfigurationError(f"provider 'cuda' requested but {reason}; use --provider cpu or auto")
        logger.info("CUDA not usable; running on CPU")
    return ort.InferenceSession(str(model_path), sess_options=options, providers=[CPU])


def session_options(intra_op_threads: int, *, spinning: bool, spinning_in_runs: bool) -> ort.SessionOptions:
    """Session options: `intra_op_threads` threads (0: ONNX Runtime's choice), full graph
    optimisation, and the spinning of `create_session`."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning or spinning_in_runs else "0")
    # In runs only: ONNX Runtime stops its threads spinning as soon as the last concurrent run returns.
    options.add_session_config_entry("session.force_spinning_stop", "1" if spinning_in_runs and not spinning else "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def expected_provider(choice: str) -> str:
    """The provider a session will most likely run for `choice`, without creating one: CUDA for
    `cuda`, and for `auto` when this onnxruntime build has the CUDA provider; else CPU."""
    if choice == "cuda" or (choice == "auto" and CUDA in ort.get_available_providers()):
        return CUDA
    return CPU


def cuda_options(device_id: int, memory_limit_mb: int) -> dict[str, object]:
    """CUDA provider options: the device, and the arena cap and growth policy."""
    options: dict[str, object] = {"device_id": device_id, "arena_extend_strategy": "kSameAsRequested"}
    if memory_limit_mb > 0:
        options["gpu_mem_limit"] = memory_limit_mb * 1024 * 1024
    return options
