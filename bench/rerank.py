"""Rerank and several models in one server: the cross-encoder served against its raw in-process
floor, Recommend with a rerank stage against without, and what a second model costs.

The reranker has ms-marco-MiniLM-L-6-v2's architecture and size (BERT, 6 layers, hidden 384,
the bundled MiniLM's tokenizer) with random weights: the hub is unreachable here, and the cost
of a forward pass does not depend on the weights' values. It is exported with
`export-model --task rerank` (validated against PyTorch like any export).

- Rerank pairs/s: 32 requests of one query and DOCS documents each (real texts: standard-library
  docstrings), sent in a loop by c concurrent callers (c = 1, 8, 32) through `embedrec serve`,
  against the floor: the same pairs scored in process by the same ONNX model, sorted by length
  and batched under the server's rules (pairs and padded-token budget), no server, no client.
  Ratio = server / floor (target: >= 0.9 at c >= 8).
- Recommend by text on the demo catalog (built with its texts), c=1: p50 without a rerank stage,
  with rerank over N=50 and N=200 candidates.
- Resident memory of the server with one model and with the reranker added, against the
  reranker's weights (its ONNX file); Embed c=1 p50 of the first model with the second loaded
  and idle, against the server with one model (target: <= 1.10x).

Usage: python -m bench.rerank [--seconds S] [--quick]   (make bench-rerank)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import CATALOG, MODEL_DIR, ensure_artifacts, run_header, server_process, write_section
from bench.exact_scan import real_texts
from embedrec.server.manifest import MODEL_FILE

DOCS = 16
SERVER_BATCH = 32  # the server's default --max-batch-size
TOKEN_BUDGET = 1024  # the server's default --max-batch-tokens


def build_reranker(directory: Path) -> Path:
    """A random cross-encoder of MiniLM-L6's size, exported with --task rerank."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedrec.export.onnx_model import export_model
    from embedrec.export.source import BUNDLED_MODEL, resolve_model_source

    bundled = resolve_model_source(BUNDLED_MODEL).directory
    source = directory / "source"
    config = BertConfig.from_pretrained(bundled)
    config.num_labels = 1
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(source)  # type: ignore[no-untyped-call]
    AutoTokenizer.from_pretrained(bundled).save_pretrained(source)  # type: ignore[no-untyped-call]
    output = directory / "reranker"
    export_model(str(source), output, task="rerank", max_length=256)
    return output


def request_pairs(turn: int, queries: list[str], documents: list[str]) -> list[tuple[str, str]]:
    """The (query, document) pairs of the load's request number `turn` (cycling after 32, so the
    floor scores the very pairs the server does)."""
    turn %= 32
    start = (turn * DOCS) % (len(documents) - DOCS)
    return [(queries[turn % len(queries)], document) for document in documents[start : start + DOCS]]


def floor_pairs_per_s(reranker: Path, pairs: list[tuple[str, str]], seconds: float) -> float:
    """Pairs/s of the ONNX reranker in process on the same pairs, no server: sorted by length and
    cut into batches under the server's rules (at most SERVER_BATCH pairs and TOKEN_BUDGET padded
    tokens), the best schedule the server's batcher can reach; each pass tokenises and scores,
    as the server does."""
    from embedrec.server.inference.encoder import OnnxEncoder

    encoder = OnnxEncoder(reranker, provider="cpu")
    lengths = [item.length for item in encoder.tokenizer.tokenize_pairs(pairs)]
    batches: list[list[tuple[str, str]]] = [[]]
    for position in sorted(range(len(pairs)), key=lambda p: lengths[p]):
        batch = batches[-1]
        if batch and (len(batch) == SERVER_BATCH or (len(batch) + 1) * lengths[position] > TOKEN_BUDGET):
            batches.append(batch := [])
        batch.append(pairs[position])
    encoder.score(batches[0])  # warm-up
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for batch in batches:
            encoder.score(batch)
            done += len(batch)
    return done / (time.perf_counter() - started)


async def rerank_load(target: str, queries: list[str], documents: list[str], concurrency: int, seconds: float) -> float:
    """Pairs/s through the server: `concurrency` callers each reranking DOCS documents in a loop."""
    from embedrec.client import AsyncEmbedrecClient

    done = 0
    stop = time.perf_counter() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        async with AsyncEmbedrecClient(target, timeout=60) as client:
            turn = offset
            while time.perf_counter() < stop:
                pairs = request_pairs(turn, queries, documents)
                await client.rerank(pairs[0][0], [document for _, document in pairs])
                done += DOCS
                turn += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(caller(offset) for offset in range(concurrency)))
    return done / (time.perf_counter() - started)


def p50_ms(call: Any, rounds: int) -> float:
    call()
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    """Run every measurement and write the BENCHMARKS.md section."""
    from embedrec.client import EmbedrecClient
    from embedrec.export.items import build_items

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput step")
    parser.add_argument("--rounds", type=int, default=40, help="calls per latency median")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 s steps, 8 rounds")
    parser.add_argument(
        "--server-flags", default="", help="more `embedrec serve` flags for both servers, e.g. '--instances 2'"
    )
    arguments = parser.parse_args(argv)
    seconds = 2.0 if arguments.quick else arguments.seconds
    rounds = 8 if arguments.quick else arguments.rounds
    ensure_artifacts()
    texts = real_texts(2_000)
    queries, documents = texts[:200], texts[200:]
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        reranker = build_reranker(scratch)
        items = scratch / "demo-items"
        build_items(CATALOG, MODEL_DIR, items, progress=False)
        pairs = [pair for turn in range(32) for pair in request_pairs(turn, queries, documents)]
        floor = floor_pairs_per_s(reranker, pairs, seconds)
        print(f"floor: {floor:.1f} pairs/s", flush=True)

        one_model: dict[str, float] = {}
        extra = arguments.server_flags.split()
        with server_process([*extra, "--metrics-port", "-1", "--http-port", "-1"], items_dir=items) as (
            target,
            process,
        ):
            with EmbedrecClient(target, timeout=60) as client:
                one_model["embed_p50"] = p50_ms(lambda: client.embed(["a short query about coffee"]), rounds)
            one_model["rss"] = rss_mib(process.pid)

        flags = [*extra, "--model", f"ranker={reranker}", "--metrics-port", "-1", "--http-port", "-1"]
        with server_process(flags, items_dir=items) as (target, process):
            with EmbedrecClient(target, timeout=60) as client:
                embed_p50 = p50_ms(lambda: client.embed(["a short query about coffee"]), rounds)
                two_rss = rss_mib(process.pid)
                liked = ["energy saving appliance for a small flat"]
                plain = p50_ms(lambda: client.recommend(10, texts=liked), rounds)
                staged = {
                    n: p50_ms(lambda n=n: client.recommend(10, texts=liked, rerank_candidates=n), rounds)
                    for n in (50, 200)
                }
            served = {c: asyncio.run(rerank_load(target, queries, documents, c, seconds)) for c in (1, 8, 32)}
        weights_mib = (reranker / MODEL_FILE).stat().st_size / 2**20

    lines += [
        "| concurrency | server pairs/s | floor pairs/s | server / floor |",
        "|---|---|---|---|",
        *(f"| {c} | {rate:.1f} | {floor:.1f} | {rate / floor:.2f}x |" for c, rate in served.items()),
        "",
        "| Recommend by text, k=10, c=1 | p50 ms | vs without |",
        "|---|---|---|",
        f"| without a rerank stage | {plain:.1f} | 1.00x |",
        *(f"| rerank over N={n} candidates | {ms:.1f} | {ms / plain:.1f}x |" for n, ms in staged.items()),
        "",
        "| server | RSS MiB | Embed c=1 p50 ms |",
        "|---|---|---|",
        f"| the first model only | {one_model['rss']:.0f} | {one_model['embed_p50']:.2f} |",
        f"| + the reranker (idle during Embed) | {two_rss:.0f} | {embed_p50:.2f} |",
        "",
        f"The second model added {two_rss - one_model['rss']:.0f} MiB against its {weights_mib:.0f} MiB of weights; "
        f"Embed c=1 p50 with it loaded: {embed_p50 / one_model['embed_p50']:.2f}x the one-model server's. "
        f"Rerank through the server at c=8: {served[8] / floor:.2f}x the floor, c=32: {served[32] / floor:.2f}x "
        "(target >= 0.9x at c >= 8).",
    ]
    body = "\n".join(
        [
            "## Rerank and several models in one server",
            "",
            run_header("make bench-rerank  (python -m bench.rerank)"),
            f"- reranker: ms-marco-MiniLM-L-6-v2's architecture (BERT, 6 layers, hidden 384) with random weights, "
            f"exported with --task rerank, max length 256; requests of 1 query x {DOCS} documents (standard-library "
            f"docstrings); floor: the same ONNX model in process on such pairs sorted by length, batches of at most "
            f"{SERVER_BATCH} pairs and {TOKEN_BUDGET} padded tokens (the server's defaults); {seconds:.0f} s "
            f"per step, medians of {rounds} calls",
            "",
            *lines,
        ]
    )
    write_section("rerank", body + "\n")
    print(body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
