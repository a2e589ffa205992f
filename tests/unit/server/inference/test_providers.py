"""Execution provider options without a GPU: CUDA's carry the device and the arena cap.
(Serving on each provider: tests/e2e/test_providers.py.)"""

from __future__ import annotations


def test_cuda_options_carry_the_device_and_the_arena_cap() -> None:
    from embedrec.server.inference.providers import cuda_options

    assert cuda_options(1, 0) == {"device_id": 1, "arena_extend_strategy": "kSameAsRequested"}
    assert cuda_options(0, 2048)["gpu_mem_limit"] == 2048 * 1024 * 1024
