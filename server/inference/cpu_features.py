"""Which int8 arithmetic a CPU has, from its flags, and whether an int8 model fits it.

ONNX Runtime multiplies a dynamically quantised MatMul as uint8 activations x int8 weights.
With VNNI (AVX-512 VNNI, AVX-VNNI, or AMX beside them) one instruction (vpdpbusd) multiplies
and accumulates into int32: full 8-bit weights are exact and about twice as fast as fp32. With
plain AVX2 the kernel uses vpmaddubsw, which adds pairs of products into a *saturating* int16:
two products of 255 x 127 overflow it, so full-range int8 weights give wrong sums there.
Weights limited to 7 bits ("reduce range") cannot overflow, and are exact on every CPU.

So an export has a target: "vnni" (full-range weights: more precise, correct only with VNNI) or
"avx2" (7-bit weights: correct everywhere). These functions are pure over a flag set, so tests
fake the host.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

INT8_TARGETS = ("avx2", "vnni")
INT8_TARGET_CHOICES = ("auto", *INT8_TARGETS)
# Any of these gives the non-saturating u8 x s8 dot product ONNX Runtime's VNNI kernels use.
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
CPUINFO = Path("/proc/cpuinfo")


def read_cpu_flags(cpuinfo: Path | None = None) -> frozenset[str]:
    """The CPU's feature flags (the first `flags` line of `cpuinfo`, default CPUINFO); empty
    where there is no such file or line (non-Linux)."""
    try:
        text = (cpuinfo or CPUINFO).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator and key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def host_cpu_flags() -> frozenset[str]:
    """This host's flags, read once (tests that fake CPUINFO call host_cpu_flags.cache_clear())."""
    return read_cpu_flags()


def has_vnni(flags: Iterable[str]) -> bool:
    """Whether `flags` include a non-saturating u8 x s8 int8 dot product (VNNI or AMX)."""
    return not VNNI_FLAGS.isdisjoint(flags)


def int8_target_for(flags: Iterable[str]) -> str:
    """The int8 target `auto` picks for a CPU with `flags`: "vnni" where the CPU has VNNI, else
    "avx2" (7-bit weights, correct on any CPU)."""
    return "vnni" if has_vnni(flags) else "avx2"


def resolve_int8_target(choice: str, flags: Iterable[str]) -> str:
    """`choice` ("auto", "avx2" or "vnni") as a target; "auto" from `flags`. ValueError on any
    other choice."""
    if choice not in INT8_TARGET_CHOICES:
        raise ValueError(f"int8 target must be one of {', '.join(INT8_TARGET_CHOICES)}, not {choice!r}")
    return int8_target_for(flags) if choice == "auto" else choice


def int8_host_problem(target: str, flags: Iterable[str]) -> str:
    """Why a model quantised for `target` computes wrongly on a CPU with `flags` ("" when it
    is fine): a "vnni" model needs VNNI, because without it ONNX Runtime's AVX2 kernel saturates
    full-range int8 weights. An "avx2" model (or a model without a target: "") is fine anywhere.
    An empty flag set (flags unknown) is taken as fine: nothing to go on."""
    flag_set = frozenset(flags)
    if target != "vnni" or not flag_set or has_vnni(flag_set):
        return ""
    return (
        "the model was quantised for VNNI (full-range int8 weights) but this CPU has no VNNI/AMX "
        "(no avx512_vnni, avx_vnni or amx_int8 flag): ONNX Runtime's AVX2 int8 kernel saturates "
        "such weights, so embeddings drift from the fp32 model's; re-export with "
        "--int8-target avx2 (or auto on this host)"
    )
