"""`embedrec tune`: find the inference configuration this machine runs best, and keep it.

Two stages, bounded by `--budget` seconds all together:

1. In-process floor: for each layout (instances x threads per session, each instance with a
   session of its own or all sharing one), the texts/s of tokenise + infer + pool at batch 1, 8
   and 32, one feeding thread per instance.
2. Through a real server (`embedrec serve` in a subprocess, the project's load tester in
   another): each candidate (a split x a max batch size) at closed-loop concurrency 1, 8 and 32,
   then an open-loop rate of 90% of its c=32 throughput.

The sweep's best has the best geometric mean of the c=8, c=32 and open-loop throughputs among the
candidates whose c=1 p50 is within 10% of the default configuration's (a tuning must not make an
idle server slower). Then a confirmation: the default and that candidate are measured again,
alternately, twice each at c=8 and c=32; the candidate wins only if it beats the default there by
at least CONFIRM_MARGIN, else the default stays (one sweep step is short, and on a small shared
machine runs of one configuration differ by 10%). The winner is written to MODEL_DIR/tuning.json
with the machine's CPU model, core count, provider and the date; `embedrec serve` applies it on a
matching machine.

Usage: embedrec tune --model-dir DIR [--texts-file F] [--budget S] [--provider P] [--plot F.png]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import math
import multiprocessing
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedrec.ports import free_port
from embedrec.server.inference.providers import PROVIDER_CHOICES
from embedrec.server.tuning import Machine, Tuning, write_tuning

RAW_BATCHES = (1, 8, 32)
CONCURRENCIES = (1, 8, 32)
BATCH_SIZES = (8, 32)
SERVER_START_S = 4.0  # planning figure for one server's start-up (tiny models start faster)
LATENCY_TOLERANCE = 1.10
CONFIRM_ROUNDS = 2
CONFIRM_CONCURRENCIES = (8, 32)
CONFIRM_MARGIN = 0.03


@dataclass(frozen=True)
class Layout:
    """Instances (batches at once) on sessions of `threads` intra-op threads each."""

    instances: int
    sessions: int
    threads: int

    @property
    def label(self) -> str:
        if self.instances > 1 and self.sessions == 1:
            return f"{self.instances}x{self.threads} shared"
        return f"{self.instances}x{self.threads}"


@dataclass(frozen=True)
class Candidate:
    """One configuration to measure: a layout and the batch bound."""

    layout: Layout
    max_batch_size: int

    @property
    def label(self) -> str:
        return f"{self.layout.label} b{self.max_batch_size}"

    def settings(self) -> dict[str, int]:
        """The setting values this candidate stands for (the tuning file's keys)."""
        return {
            "instances": self.layout.instances,
            "sessions": self.layout.sessions,
            "intra_op_threads": self.layout.threads,
            "max_batch_size": self.max_batch_size,
            "max_batch_tokens": max(1024, 32 * self.max_batch_size),
        }


def layouts(cores: int) -> list[Layout]:
    """Every core used: instance counts that divide the cores (at most five: 1, 2, 4, ... and the
    core count), each with sessions of its own splitting the cores; and 2 instances on all cores,
    sharing one session or with one each (a lone batch keeps every thread, two at once share them)."""
    counts = sorted({n for n in (1, 2, 4, 8, 16, 32, cores) if n <= cores and cores % n == 0})
    if len(counts) > 5:
        counts = [*counts[:4], cores]
    found = [Layout(count, count, cores // count) for count in counts]
    extra = [Layout(2, 1, cores), Layout(2, 2, cores)] if cores > 1 else []
    return [*found, *(layout for layout in extra if layout not in found)]


def candidates(cores: int) -> list[Candidate]:
    """Every layout x batch size; the default configuration (1 instance, all cores, batch 32) first."""
    found = [Candidate(layout, size) for layout in layouts(cores) for size in BATCH_SIZES]
    default = Candidate(Layout(1, 1, cores), 32)
    return [default, *(candidate for candidate in found if candidate != default)]


def sample_texts(texts_file: Path | None, count: int = 512, seed: int = 0) -> list[str]:
    """Texts to tune with: the lines of `texts_file`, else ~17-word texts from common words."""
    if texts_file is not None:
        texts = [line.strip() for line in texts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise SystemExit(f"embedrec tune: {texts_file} has no texts")
        return texts
    from embedrec.client.loadtest.workload import WORDS

    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(12, 22))) for _ in range(count)]


def raw_floor(
    model_dir: Path, provider: str, texts: Sequence[str], seconds: float, tick: Callable[[str], None]
) -> tuple[list[dict[str, Any]], str]:
    """Texts/s in-process for every core split and batch size; and the provider that ran."""
    from embedrec.server.inference.encoder import OnnxEncoder

    rows: list[dict[str, Any]] = []
    used = ""
    for layout in layouts(os.cpu_count() or 1):
        encoder = OnnxEncoder(
            model_dir,
            provider=provider,  # type: ignore[arg-type]
            intra_op_threads=layout.threads,
            sessions=layout.sessions,
            spinning=False,
        )
        used = encoder.provider
        for batch in RAW_BATCHES:
            rate = feed_rate(encoder, layout.instances, texts, batch, seconds)
            rows.append({"layout": layout.label, "batch": batch, "texts_per_s": rate})
            tick(f"raw {layout.label} batch {batch}: {rate:.0f} texts/s")
        del encoder
    return rows, used


def feed_rate(encoder: Any, instances: int, texts: Sequence[str], batch: int, seconds: float) -> float:
    """Texts/s with one thread per instance, each tokenising, inferring and pooling batches on
    session (instance mod the encoder's sessions)."""
    done = [0] * instances
    stop_at = time.perf_counter() + seconds
    pooling = [encoder.manifest.pooling] * batch

    def worker(instance: int) -> None:
        position = instance * batch
        while time.perf_counter() < stop_at:
            chunk = [texts[(position + i) % len(texts)] for i in range(batch)]
            position += batch
            encoder.pool_batch(encoder.infer(encoder.tokenize(chunk), instance % encoder.session_count), pooling)
            done[instance] += batch

    _feed_once(encoder, texts, batch)
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(index,)) for index in range(instances)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done) / (time.perf_counter() - started)


def _feed_once(encoder: Any, texts: Sequence[str], batch: int) -> None:
    """Warm every session up with one batch."""
    for session in range(encoder.session_count):
        encoder.infer(encoder.tokenize(list(texts[:batch])), session)


def load_step(target: str, mode: str, level: float, seconds: float, texts_file: str | None) -> dict[str, Any]:
    """One load step from a fresh process (so the load generator never shares the server's GIL)."""
    from embedrec.client.loadtest.runner import StepPlan, run_step
    from embedrec.client.loadtest.workload import TextLengths, Workload

    workload = Workload(
        rpc_weights={"embed": 1.0},
        lengths=TextLengths(12, 22),
        texts_file=Path(texts_file) if texts_file else None,
    )
    plan = StepPlan(mode, level, seconds, min(1.0, seconds / 2))
    summary: dict[str, Any] = asyncio.run(run_step(target, workload, plan, dim=1)).summary()
    return summary


def wait_serving(target: str, process: subprocess.Popen[bytes] | None = None, timeout_s: float = 300.0) -> None:
    """Block until `target` reports SERVING; raise when `process` (the server, if given) exits
    first or `timeout_s` passes."""
    from embedrec.client import EmbedrecClient, EmbedrecClientError

    deadline = time.monotonic() + timeout_s
    with EmbedrecClient(target, timeout=2) as client:
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"the server under test exited with {process.returncode}")
            try:
                if client.health() == "SERVING":
                    return
            except EmbedrecClientError:
                pass
            time.sleep(0.1)
    raise TimeoutError(f"{target} did not become SERVING within {timeout_s} s")


def measure_server(
    model_dir: Path,
    candidate: Candidate,
    *,
    provider: str,
    seconds: float,
    texts_file: Path | None,
    pool: ProcessPoolExecutor,
    tick: Callable[[str], None],
    concurrencies: Sequence[int] = CONCURRENCIES,
    open_loop: bool = True,
) -> dict[str, Any]:
    """Closed loop at `concurrencies` (c=1, 8, 32) and, with `open_loop`, a rate of 90% of the
    c=32 throughput, against a real server started for `candidate`."""
    port = free_port()
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in candidate.settings().items()]
    command = [sys.executable, "-m", "embedrec.cli", "serve", "--model-dir", str(model_dir), "--port", str(port)]
    command += [
        "--provider",
        provider,
        "--tuning",
        "off",
        "--metrics-port",
        "-1",
        "--http-port",
        "-1",
        "--log-level",
        "WARNING",
        *flags,
    ]
    process = subprocess.Popen(command)
    target = f"127.0.0.1:{port}"
    row: dict[str, Any] = {"candidate": candidate.label, **candidate.settings()}
    texts = str(texts_file) if texts_file else None
    try:
        wait_serving(target, process)
        for concurrency in concurrencies:
            summary = pool.submit(load_step, target, "closed", concurrency, seconds, texts).result()
            row[f"c{concurrency}_per_s"] = summary["requests_per_s"]
            row[f"c{concurrency}_p50_ms"] = summary["latency_ms"]["p50"]
            row[f"c{concurrency}_p99_ms"] = summary["latency_ms"]["p99"]
            tick(f"{candidate.label} c={concurrency}: {summary['requests_per_s']:.0f} req/s")
        if not open_loop:
            return row
        rate = max(1.0, 0.9 * row["c32_per_s"])
        summary = pool.submit(load_step, target, "open", rate, seconds, texts).result()
        row["open_rate"] = rate
        row["open_per_s"] = summary["requests_per_s"]
        row["open_p99_ms"] = summary["latency_ms"]["p99"]
        tick(f"{candidate.label} open {rate:.0f}/s: p99 {summary['latency_ms']['p99']:.0f} ms")
    finally:
        stop_server(process)
    return row


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the server drains), then kill if it is still there after 60 s."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()


def score(row: dict[str, Any]) -> float:
    """Geometric mean of the c=8, c=32 and open-loop throughputs."""
    values = [row["c8_per_s"], row["c32_per_s"], row["open_per_s"]]
    return math.exp(statistics.fmean(math.log(max(value, 1e-9)) for value in values))


def confirmed_score(rows: Sequence[dict[str, Any]]) -> float:
    """Geometric mean of the confirmation throughputs of one configuration over its rounds."""
    values = [row[f"c{c}_per_s"] for row in rows for c in CONFIRM_CONCURRENCIES]
    return math.exp(statistics.fmean(math.log(max(value, 1e-9)) for value in values))


def confirms(candidate_runs: Sequence[dict[str, Any]], default_runs: Sequence[dict[str, Any]]) -> bool:
    """Whether the candidate's confirmation runs beat the default's by at least CONFIRM_MARGIN."""
    return confirmed_score(candidate_runs) >= confirmed_score(default_runs) * (1 + CONFIRM_MARGIN)


def choose(rows: list[dict[str, Any]], latency_tolerance: float = LATENCY_TOLERANCE) -> dict[str, Any]:
    """The best-scoring row whose c=1 p50 is within `latency_tolerance` x the default's (rows[0])."""
    limit = rows[0]["c1_p50_ms"] * latency_tolerance
    eligible = [row for row in rows if row["c1_p50_ms"] <= limit] or rows[:1]
    return max(eligible, key=score)


class Progress:
    """A one-line text progress bar on stderr."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0

    def tick(self, what: str) -> None:
        self.done += 1
        filled = int(30 * self.done / self.total)
        bar = "#" * filled + "-" * (30 - filled)
        print(f"\r[{bar}] {self.done}/{self.total} {what[:60]:<60}", end="", file=sys.stderr, flush=True)


def table(rows: list[dict[str, Any]], winner: dict[str, Any]) -> list[str]:
    """The server measurements as a Markdown table, the winner marked."""
    lines = [
        "| configuration | c=1 req/s | c=1 p50 ms | c=8 req/s | c=32 req/s | open-loop rate | achieved | p99 ms "
        "| score |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mark = " **(chosen)**" if row is winner else ""
        lines.append(
            f"| {row['candidate']}{mark} | {row['c1_per_s']:.1f} | {row['c1_p50_ms']:.2f} | {row['c8_per_s']:.1f} | "
            f"{row['c32_per_s']:.1f} | {row['open_rate']:.0f}/s | {row['open_per_s']:.1f} | "
            f"{row['open_p99_ms']:.1f} | {score(row):.1f} |"
        )
    return lines


def raw_table(rows: list[dict[str, Any]]) -> list[str]:
    """The in-process floor as a Markdown table: texts/s by layout and batch."""
    labels = list(dict.fromkeys(row["layout"] for row in rows))
    lines = ["| instances x threads | " + " | ".join(f"batch {b} texts/s" for b in RAW_BATCHES) + " |"]
    lines.append("|---|" + "---|" * len(RAW_BATCHES))
    for label in labels:
        rates = {row["batch"]: row["texts_per_s"] for row in rows if row["layout"] == label}
        lines.append(f"| {label} | " + " | ".join(f"{rates[b]:.0f}" for b in RAW_BATCHES) + " |")
    return lines


@dataclass(frozen=True)
class TuneResult:
    """What a tuning run measured and decided."""

    tuning: Tuning
    raw: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    winner: dict[str, Any]
    skipped: list[str]
    confirmation: str = ""


def tune(
    model_dir: Path,
    *,
    budget_s: float,
    provider: str = "auto",
    texts_file: Path | None = None,
    latency_tolerance: float = LATENCY_TOLERANCE,
) -> TuneResult:
    """Measure every candidate within `budget_s` seconds and return the tuning (not yet written).

    Candidates that do not fit in the budget are skipped (named in `skipped`); the default is
    always measured, so there is always a winner.
    """
    # The tuning run reads top to bottom: floor, sweep, confirmation, decision.
    from embedrec.server.manifest import read_model_manifest

    started = time.monotonic()
    cores = os.cpu_count() or 1
    texts = sample_texts(texts_file)
    planned = candidates(cores)
    raw_steps = len(layouts(cores)) * len(RAW_BATCHES)
    confirm_runs = 2 * CONFIRM_ROUNDS
    server_steps = len(planned) * (len(CONCURRENCIES) + 1) + confirm_runs * len(CONFIRM_CONCURRENCIES)
    # Each step also warms up for up to a second; server start-up is planned separately.
    step_s = (budget_s - (len(planned) + confirm_runs) * SERVER_START_S) / (raw_steps + 1.5 * server_steps)
    step_s = min(5.0, max(0.5, step_s))
    progress = Progress(raw_steps + server_steps)
    raw, used = raw_floor(model_dir, provider, texts, step_s, progress.tick)
    rows: list[dict[str, Any]] = []
    skipped: list[str] = []
    per_candidate = SERVER_START_S + 1.5 * step_s * (len(CONCURRENCIES) + 1)
    confirm_s = confirm_runs * (SERVER_START_S + 1.5 * step_s * len(CONFIRM_CONCURRENCIES))
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        measure = functools.partial(
            measure_server,
            model_dir,
            provider=provider,
            seconds=step_s,
            texts_file=texts_file,
            pool=pool,
            tick=progress.tick,
        )
        for candidate in planned:
            if rows and time.monotonic() - started + per_candidate + confirm_s > budget_s:
                skipped.append(candidate.label)
                continue
            rows.append(measure(candidate))
        winner, confirmation = _confirm(measure, planned, rows[0], choose(rows, latency_tolerance))
    print(file=sys.stderr)
    settings = {name: int(winner[name]) for name in Candidate(Layout(1, 1, 1), 1).settings()}
    tuning = Tuning(
        settings=settings,
        machine=Machine.here(used),
        model_sha256=read_model_manifest(model_dir).onnx_sha256,
        measurements=[{"stage": "in-process", **row} for row in raw] + [{"stage": "server", **row} for row in rows],
    )
    return TuneResult(tuning, raw, rows, winner, skipped, confirmation)


def _confirm(
    measure: Callable[..., dict[str, Any]],
    planned: Sequence[Candidate],
    default: dict[str, Any],
    best: dict[str, Any],
) -> tuple[dict[str, Any], str]:
    """When the sweep's `best` is not the `default`, measure both again, alternating, CONFIRM_ROUNDS
    times at CONFIRM_CONCURRENCIES closed-loop; the winner (`best` only when it confirms its margin)
    and the line that says so ("" when `best` is the default)."""
    if best is default:
        return best, ""
    by_label = {candidate.label: candidate for candidate in planned}
    runs: dict[str, list[dict[str, Any]]] = {default["candidate"]: [], best["candidate"]: []}
    for _ in range(CONFIRM_ROUNDS):
        for label in runs:
            runs[label].append(measure(by_label[label], concurrencies=CONFIRM_CONCURRENCIES, open_loop=False))
    default_score = confirmed_score(runs[default["candidate"]])
    best_score = confirmed_score(runs[best["candidate"]])
    kept = confirms(runs[best["candidate"]], runs[default["candidate"]])
    confirmation = (
        f"confirmation ({CONFIRM_ROUNDS} alternating rounds at c={CONFIRM_CONCURRENCIES}): "
        f"{best['candidate']} {best_score:.1f} vs default {default_score:.1f} "
        f"({best_score / default_score:.2f}x; needs {1 + CONFIRM_MARGIN:.2f}x): "
        + (f"{best['candidate']} chosen" if kept else "the default stays")
    )
    return (best if kept else default), confirmation


def plot(result: TuneResult, path: Path) -> None:
    """Throughput by concurrency for every candidate (matplotlib, the loadtest extra)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for row in result.rows:
        axis.plot(CONCURRENCIES, [row[f"c{c}_per_s"] for c in CONCURRENCIES], marker="o", label=row["candidate"])
    axis.set_xscale("log", base=2)
    axis.set_xlabel("concurrency (closed loop)")
    axis.set_ylabel("Embed requests/s")
    axis.set_title("embedrec tune: candidates")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)


def main(argv: Sequence[str]) -> int:
    """`embedrec tune`: measure, print the table, write MODEL_DIR/tuning.json."""
    parser = argparse.ArgumentParser(prog="embedrec tune", description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("models/all-MiniLM-L6-v2"), help="exported model")
    parser.add_argument("--texts-file", type=Path, help="sample of real texts, one per line (default: generated)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the whole run (default 240)")
    parser.add_argument("--provider", default="auto", choices=PROVIDER_CHOICES, help="ONNX Runtime provider")
    parser.add_argument("--plot", type=Path, help="also write a PNG of throughput by concurrency")
    parser.add_argument(
        "--c1-tolerance",
        type=float,
        default=LATENCY_TOLERANCE,
        help="largest c=1 p50 a winner may have, as a multiple of the default configuration's (default 1.10; "
        "raise it to trade idle latency for throughput)",
    )
    parser.add_argument("--dry-run", action="store_true", help="measure and print, but write no tuning file")
    arguments = parser.parse_args(argv)
    if arguments.budget < 10:
        parser.error("--budget must be at least 10 seconds")
    result = tune(
        arguments.model_dir,
        budget_s=arguments.budget,
        provider=arguments.provider,
        texts_file=arguments.texts_file,
        latency_tolerance=arguments.c1_tolerance,
    )
    print("\n".join(["In-process floor:", "", *raw_table(result.raw), "", "Through the server (Embed, 1 text):", ""]))
    print("\n".join(table(result.rows, result.winner)))
    if result.confirmation:
        print(f"\n{result.confirmation}")
    if result.skipped:
        print(f"\nnot measured within the budget: {', '.join(result.skipped)}")
    if arguments.plot:
        plot(result, arguments.plot)
    if arguments.dry_run:
        print(f"\nwinner {result.winner['candidate']} (dry run: nothing written)")
        return 0
    path = write_tuning(arguments.model_dir, result.tuning)
    print(f"\nwrote {path}: {result.tuning.settings} (embedrec serve applies it on this machine)")
    return 0
