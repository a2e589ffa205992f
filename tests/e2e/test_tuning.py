"""Model instances and the built-in tuner: several sessions serve one batcher with the same
results; `embedrec tune` writes a tuning file that `serve` applies on the machine it was measured
on, never elsewhere, and never over an explicit flag."""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient
from embedrec.server.manifest import read_model_manifest
from embedrec.server.settings import Settings
from embedrec.server.tuning import TUNING_FILE, Machine, Tuning, read_tuning, write_tuning
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.support.paths import REPO_ROOT

TUNE_FLAGS = ["--budget", "20", "--provider", "cpu"]


@pytest.fixture()
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny export (tuning files are written next to its manifest)."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def info_of(server: ServerThread) -> object:
    with EmbedrecClient(server.target, timeout=30) as client:
        return client.info()


@pytest.mark.parametrize(("sessions", "expected_sessions"), [(0, 2), (1, 1)], ids=["own-sessions", "shared-session"])
def test_two_instances_embed_exactly_like_one(
    tiny_server: ServerThread, tiny_model_dir: Path, sessions: int, expected_sessions: int
) -> None:
    texts = [f"text number {index} about air conditioners and coffee" for index in range(24)]
    server = start_server(server_settings(tiny_model_dir, None, instances=2, sessions=sessions))
    try:
        with EmbedrecClient(server.target, timeout=30) as two, EmbedrecClient(tiny_server.target) as one:
            info = two.info()
            assert (info.instances, info.sessions) == (2, expected_sessions)
            with ThreadPoolExecutor(8) as pool:  # concurrent calls keep both instances busy
                served = list(pool.map(lambda text: two.embed([text])[0], texts))
            expected = one.embed(texts)
        np.testing.assert_allclose(np.stack(served), expected, atol=1e-5)
        assert server.app.state.service.models.default.batcher.instances == 2  # type: ignore[union-attr]
    finally:
        server.close()


def test_tune_writes_a_tuning_file_that_serve_applies(model_copy: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "embedrec.cli", "tune", "--model-dir", str(model_copy), *TUNE_FLAGS],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "In-process floor" in completed.stdout and "(chosen)" in completed.stdout
    tuning = read_tuning(model_copy)
    assert tuning is not None
    assert set(tuning.settings) == {"instances", "sessions", "intra_op_threads", "max_batch_size", "max_batch_tokens"}
    assert tuning.machine == Machine.here("CPUExecutionProvider")
    server = start_server(server_settings(model_copy, None))  # intra_op_threads=1 is given explicitly
    try:
        info = info_of(server)
        assert info.tuning.startswith(f"tuning file {model_copy / TUNING_FILE}")  # type: ignore[attr-defined]
        assert "overridden by flags: intra_op_threads" in info.tuning  # type: ignore[attr-defined]
        assert info.instances == tuning.settings["instances"]  # type: ignore[attr-defined]
        assert info.limits["max_batch_size"] == tuning.settings["max_batch_size"]  # type: ignore[attr-defined]
    finally:
        server.close()


def write_fake_tuning(model_dir: Path, machine: Machine, instances: int = 2) -> None:
    sha = read_model_manifest(model_dir).onnx_sha256
    settings = {
        "instances": instances,
        "sessions": 1,
        "intra_op_threads": 1,
        "max_batch_size": 8,
        "max_batch_tokens": 1024,
    }
    write_tuning(model_dir, Tuning(settings=settings, machine=machine, model_sha256=sha))


def test_a_tuning_measured_on_another_machine_is_ignored(model_copy: Path) -> None:
    write_fake_tuning(model_copy, Machine("Some Other CPU", 96, "CPUExecutionProvider"))
    server = start_server(server_settings(model_copy, None, provider="cpu"))
    try:
        info = info_of(server)
        assert info.tuning.startswith("ignored") and "Some Other CPU" in info.tuning  # type: ignore[attr-defined]
        assert info.instances == 1  # type: ignore[attr-defined]
    finally:
        server.close()


def test_explicit_flags_win_over_the_tuning_file_and_off_ignores_it(model_copy: Path) -> None:
    write_fake_tuning(model_copy, Machine.here("CPUExecutionProvider"), instances=2)
    base = [
        "--model-dir",
        str(model_copy),
        "--port",
        "0",
        "--provider",
        "cpu",
        "--metrics-port",
        "-1",
        "--http-port",
        "-1",
    ]
    cases = [
        (base, 2, "tuning file"),
        ([*base, "--instances", "1"], 1, "tuning file"),
        ([*base, "--tuning", "off"], 1, "off"),
    ]
    for argv, instances, note in cases:
        server = start_server(Settings.from_args(argv, environ={}))
        try:
            info = info_of(server)
            assert (info.instances, info.tuning.split(" ")[0]) == (instances, note.split(" ")[0]), argv  # type: ignore[attr-defined]
            assert info.limits["max_batch_size"] == (32 if note == "off" else 8)  # type: ignore[attr-defined]
        finally:
            server.close()


def run(c1_p50: float, c8: float, c32: float, open_loop: float, name: str = "x") -> dict[str, object]:
    return {"candidate": name, "c1_p50_ms": c1_p50, "c8_per_s": c8, "c32_per_s": c32, "open_per_s": open_loop}
