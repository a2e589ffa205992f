"""GPU check for a host with NVIDIA GPUs: which ONNX Runtime providers exist, CUDA-vs-CPU
embedding parity, CUDA throughput by batch size with and without IO binding, and two model
instances sharing the GPU, in one short run.

Usage (on the GPU host, from the repository root):
    python -m bench.gpu_check [--model-dir models/all-MiniLM-L6-v2]

Needs onnxruntime-gpu (or any onnxruntime build with the CUDA provider), tokenizers and numpy,
plus an exported model directory (`embedrec export-model`). Exits 0 after printing "no CUDA
provider" when the runtime has none, so it can be run first as the provider check. Prints one
JSON object at the end with everything measured.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from embedrec.client.loadtest.workload import WORDS
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.tune import feed_rate

BATCH_SIZES = (1, 8, 32, 128, 256)
PARITY_FLOOR_FP32 = 0.999
PARITY_FLOOR_FP16 = 0.99


def main(argv: list[str] | None = None) -> int:
    """Run the check; 0 when CUDA is absent (reported) or parity holds, 1 when parity fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/all-MiniLM-L6-v2"))
    parser.add_argument("--fp16-model-dir", type=Path, help="an --fp16 export of the same model, for fp16 parity")
    parser.add_argument("--seconds", type=float, default=2.0, help="per batch size")
    arguments = parser.parse_args(argv)
    report: dict[str, Any] = {
        "onnxruntime": ort.__version__,
        "device": ort.get_device(),
        "available_providers": ort.get_available_providers(),
    }
    print(json.dumps(report))
    if "CUDAExecutionProvider" not in report["available_providers"]:
        print("no CUDA provider in this onnxruntime build")
        return 0
    cuda = OnnxEncoder(arguments.model_dir, provider="cuda")
    cuda_plain = OnnxEncoder(arguments.model_dir, provider="cuda", io_binding=False)
    cpu = OnnxEncoder(arguments.model_dir, provider="cpu")
    report["provider_in_use"] = cuda.provider
    report["io_binding"] = cuda.uses_io_binding
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(4, 60))) for _ in range(512)]
    on_gpu, on_cpu = cuda.encode(texts[:256], normalize=True), cpu.encode(texts[:256], normalize=True)
    cosines = np.sum(on_gpu * on_cpu, axis=1)
    report["parity_fp32"] = {
        "min_cosine": float(cosines.min()),
        "mean_cosine": float(cosines.mean()),
        "floor": PARITY_FLOOR_FP32,
    }
    if arguments.fp16_model_dir is not None:
        half = OnnxEncoder(arguments.fp16_model_dir, provider="cuda").encode(texts[:256], normalize=True)
        half_cosines = np.sum(half * on_cpu, axis=1)
        report["parity_fp16"] = {
            "min_cosine": float(half_cosines.min()),
            "mean_cosine": float(half_cosines.mean()),
            "floor": PARITY_FLOOR_FP16,
        }
    plain = cuda_plain.encode(texts[:256], normalize=True)
    report["io_binding_vs_plain_max_abs_diff"] = float(np.abs(on_gpu - plain).max())
    report["texts_per_s"] = {}
    report["texts_per_s_without_io_binding"] = {}
    for encoder, key in ((cuda, "texts_per_s"), (cuda_plain, "texts_per_s_without_io_binding")):
        for batch in BATCH_SIZES:
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < arguments.seconds:
                for offset in range(0, len(texts) - batch + 1, batch):
                    encoder.encode(texts[offset : offset + batch])
                    done += batch
            report[key][batch] = round(done / (time.perf_counter() - started), 1)
    # Two sessions sharing the GPU (--instances 2), each fed by its own thread, at batch 32.
    shared = OnnxEncoder(arguments.model_dir, provider="cuda", sessions=2)
    report["two_instances_texts_per_s_batch_32"] = round(feed_rate(shared, 2, texts, 32, arguments.seconds), 1)
    print(json.dumps(report, indent=2))
    fp16_ok = "parity_fp16" not in report or report["parity_fp16"]["min_cosine"] >= PARITY_FLOOR_FP16
    return 0 if report["parity_fp32"]["min_cosine"] >= PARITY_FLOOR_FP32 and fp16_ok else 1


if __name__ == "__main__":
    sys.exit(main())
