"""Execution provider selection on a machine without CUDA: auto falls back to CPU, cuda is a
clear start-up error, and Info reports the provider really in use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from embedrec.server.errors import ConfigurationError
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.inference.providers import create_session
from embedrec.server.manifest import MODEL_FILE
from tests.e2e.server_thread import serve_command
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime build has CUDA"
)


def test_auto_runs_on_cpu_when_cuda_is_not_usable(tiny_model_dir: Path) -> None:
    session = create_session(tiny_model_dir / MODEL_FILE, provider="auto")
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert OnnxEncoder(tiny_model_dir, provider="auto").provider == "CPUExecutionProvider"


def test_cuda_without_cuda_is_a_clear_start_up_error(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="provider 'cuda' requested but this onnxruntime build has no CUDA"):
        create_session(tiny_model_dir / MODEL_FILE, provider="cuda")


def test_an_unknown_provider_is_refused(tiny_model_dir: Path) -> None:
    with pytest.raises(ConfigurationError, match="provider must be one of auto, cuda, cpu"):
        create_session(tiny_model_dir / MODEL_FILE, provider="tpu")  # type: ignore[arg-type]


def test_serve_with_cuda_on_a_cpu_machine_exits_2_with_the_reason(tiny_model_dir: Path) -> None:
    import subprocess

    completed = subprocess.run(
        serve_command(tiny_model_dir, "--port", "0", "--provider", "cuda", "--metrics-port", "-1", "--http-port", "-1"),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "provider 'cuda' requested" in completed.stderr


def test_io_binding_is_off_on_cpu_by_default_and_gives_the_same_vectors_when_forced(tiny_model_dir: Path) -> None:
    plain = OnnxEncoder(tiny_model_dir, provider="cpu")
    bound = OnnxEncoder(tiny_model_dir, provider="cpu", io_binding=True)
    assert not plain.uses_io_binding and bound.uses_io_binding
    texts = ["red shoes", "a much longer text about coffee, kitchens and the family", "空调"]
    np.testing.assert_array_equal(bound.encode(texts), plain.encode(texts))


def test_every_spinning_mode_and_the_idle_twin_give_the_same_vectors(tiny_model_dir: Path) -> None:
    texts = ["red shoes", "a much longer text about coffee, kitchens and the family"]
    plain = OnnxEncoder(tiny_model_dir, provider="cpu", spinning=False)
    expected = plain.encode(texts)
    for spinning, in_runs in ((True, False), (False, True)):
        encoder = OnnxEncoder(tiny_model_dir, provider="cpu", spinning=spinning, spinning_in_runs=in_runs)
        np.testing.assert_allclose(encoder.encode(texts), expected, rtol=1e-5, atol=1e-6)
    twin = OnnxEncoder(
        tiny_model_dir, provider="cpu", spinning=False, sessions=2, intra_op_threads=1, idle_sessions=True
    )
    assert len(twin.sessions) == 2 and len(twin.idle_sessions) == 1 and not plain.idle_sessions
    # The twin runs the server's only batch: it gets the threads of both sessions.
    assert twin.idle_sessions[0].get_session_options().intra_op_num_threads == 2
    batch = twin.tokenize(texts)
    idle, busy = twin.infer(batch, 1, idle=True), twin.infer(batch, 1)
    np.testing.assert_allclose(idle[1], busy[1], rtol=1e-5, atol=1e-6)
