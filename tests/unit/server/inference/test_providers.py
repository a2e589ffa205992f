"""Execution provider options without a GPU: CUDA's carry the device and the arena cap; the
intra-op threads spin always, in runs only, or never.
(Serving on each provider: tests/e2e/test_providers.py.)"""

from __future__ import annotations


def test_cuda_options_carry_the_device_and_the_arena_cap() -> None:
    from embedrec.server.inference.providers import cuda_options

    assert cuda_options(1, 0) == {"device_id": 1, "arena_extend_strategy": "kSameAsRequested"}
    assert cuda_options(0, 2048)["gpu_mem_limit"] == 2048 * 1024 * 1024


def test_spinning_always_in_runs_only_or_never() -> None:
    from embedrec.server.inference.providers import session_options

    def entries(spinning: bool, in_runs: bool) -> tuple[str, str]:
        options = session_options(2, spinning=spinning, spinning_in_runs=in_runs)
        assert options.intra_op_num_threads == 2
        return (
            options.get_session_config_entry("session.intra_op.allow_spinning"),
            options.get_session_config_entry("session.force_spinning_stop"),
        )

    assert entries(True, False) == entries(True, True) == ("1", "0")  # ONNX Runtime's default
    assert entries(False, True) == ("1", "1")  # spins in a run, stops when the last run returns
    assert entries(False, False) == ("0", "0")
