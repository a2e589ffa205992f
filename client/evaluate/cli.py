"""`embedrec evaluate LOG --target SERVER [--compare SERVER...]`: offline evaluation of running
servers and baselines on an interaction log (see docs/evaluate.md)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from embedrec.client.cli import (
    add_connection_arguments,
    add_request_options,
    channel_config,
    request_options,
    target_of,
)
from embedrec.client.evaluate.baselines import BASELINES
from embedrec.client.evaluate.interactions import Columns, read_catalog_ids
from embedrec.client.evaluate.profiles import DEFAULT_NEGATIVE_EVENTS, DEFAULT_SEEN_EVENTS, Feedback
from embedrec.client.evaluate.report import ProgressBar, format_report, plot
from embedrec.client.evaluate.run import EvaluationConfig, evaluate
from embedrec.client.evaluate.served import EvaluationError, ServerTarget
from embedrec.client.evaluate.split import SplitSpec
from embedrec.client.evaluate.targets import parse_target
from embedrec.client.models import UserProfile

EVALUATE_TIMEOUT_S = 60.0


def _list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = sorted({int(part) for part in _list(text)})
    except ValueError:
        raise argparse.ArgumentTypeError(f"-k takes cutoffs like 1,5,10, got {text[:30]!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError("-k takes cutoffs >= 1")
    return tuple(ks)


def build_parser() -> argparse.ArgumentParser:
    """The flags of `embedrec evaluate`."""
    parser = argparse.ArgumentParser(prog="embedrec evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path, help="interactions: JSON Lines or CSV (.gz too) of user, item, ...")
    add_connection_arguments(parser)
    parser.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="TARGET",
        help="another server to evaluate on the same split and compare with --target (repeatable); "
        "[LABEL=]HOST:PORT[;OPTION=VALUE...], e.g. 'rerank=127.0.0.1:50051;rerank=true'",
    )
    parser.add_argument("--catalog", type=Path, help="the served catalog (JSONL/CSV): its ids are the item universe")
    parser.add_argument("--catalog-id-field", default="id", help="the catalog's id column (default id)")
    parser.add_argument("-k", type=_ks, default=(1, 5, 10, 20), help="cutoffs, comma-separated (default 1,5,10,20)")
    parser.add_argument("--split", default="last", help="last (default), time:EPOCH_OR_ISO8601 or quantile:Q")
    parser.add_argument("--holdout", type=int, default=1, help="items held out per user with --split last")
    parser.add_argument("--min-interactions", type=int, default=2, help="skip users with fewer item rows")
    parser.add_argument("--max-users", type=int, default=0, help="evaluate a random sample of this many users")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample, random baseline, ALS, bootstrap")
    parser.add_argument(
        "--baselines", default=",".join(BASELINES), help=f"comma-separated, or none (default {','.join(BASELINES)})"
    )
    parser.add_argument(
        "--negative-events", default=",".join(sorted(DEFAULT_NEGATIVE_EVENTS)), help="event types that are dislikes"
    )
    parser.add_argument(
        "--seen-events", default=",".join(sorted(DEFAULT_SEEN_EVENTS)), help="event types only to exclude (seen)"
    )
    parser.add_argument("--dislike-below", type=float, default=None, help="ratings below this are dislikes")
    parser.add_argument("--no-weights", action="store_true", help="weigh every liked item 1, not by its rating")
    for name, default in Columns().__dict__.items():
        parser.add_argument(f"--{name}-column", default=",".join(default), help=f"{name} column names (first found)")
    parser.add_argument("--batch-users", type=int, default=32, help="users per RecommendBatch call")
    parser.add_argument("--concurrency", type=int, default=4, help="RecommendBatch calls in flight per server")
    add_request_options(parser)
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the comparisons")
    parser.add_argument("--confidence", type=float, default=0.95, help="the comparisons' confidence level")
    parser.add_argument("--against", type=Path, action="append", default=[], help="an earlier --output to compare")
    parser.add_argument("--json", action="store_true", help="print JSON (no per-user metrics) instead of tables")
    parser.add_argument("--output", type=Path, help="write the full result, per-user metrics included, as JSON")
    parser.add_argument("--plot", type=Path, help="draw metric@k curves per target to this PNG (needs matplotlib)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    # Batches of users take longer than one call: a longer default deadline than other commands'.
    parser.set_defaults(timeout=EVALUATE_TIMEOUT_S)
    return parser


def _config(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> EvaluationConfig:
    try:
        split = SplitSpec.parse(arguments.split, holdout=arguments.holdout, min_interactions=arguments.min_interactions)
    except ValueError as error:
        parser.error(str(error))
    names = [] if arguments.baselines == "none" else _list(arguments.baselines)
    if unknown := [name for name in names if name not in BASELINES]:
        parser.error(f"--baselines: unknown {', '.join(unknown)}; the baselines are {', '.join(BASELINES)}")
    catalog_ids = None
    if arguments.catalog is not None:
        try:
            catalog_ids = read_catalog_ids(arguments.catalog, arguments.catalog_id_field)
        except OSError as error:
            parser.error(f"--catalog: {error}")
    feedback = Feedback(
        frozenset(_list(arguments.negative_events)),
        frozenset(_list(arguments.seen_events)),
        arguments.dislike_below,
        not arguments.no_weights,
    )
    columns = Columns(**{name: tuple(_list(getattr(arguments, f"{name}_column"))) for name in Columns().__dict__})
    return EvaluationConfig(
        ks=arguments.k,
        split=split,
        feedback=feedback,
        baselines=tuple(names),
        catalog_ids=catalog_ids,
        max_users=arguments.max_users,
        seed=arguments.seed,
        resamples=arguments.resamples,
        confidence=arguments.confidence,
        against=tuple(arguments.against),
        columns=columns,
    )


def _targets(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> list[ServerTarget]:
    base = UserProfile(**request_options(arguments, parser))
    targets = []
    for spec in [arguments.target, *arguments.compare]:
        try:
            label, address, options = parse_target(spec, base)
        except ValueError as error:
            parser.error(str(error))
        targets.append(
            ServerTarget(
                label,
                target_of(address),
                options,
                channel_config(arguments),
                arguments.timeout,
                arguments.batch_users,
                arguments.concurrency,
            )
        )
    if len({target.label for target in targets}) < len(targets):
        parser.error("two targets share a label: name them, e.g. --compare int8=HOST:PORT")
    return targets


def main(argv: Sequence[str]) -> int:
    """Run `embedrec evaluate`; 0 on success, 1 when the evaluation could not run."""
    parser = build_parser()
    arguments = parser.parse_args(argv)
    config, targets = _config(arguments, parser), _targets(arguments, parser)
    progress = None if arguments.no_progress else ProgressBar()
    try:
        result = evaluate(arguments.log, targets, config, progress)
    except (EvaluationError, ValueError, OSError) as error:
        print(f"embedrec evaluate: {error}", file=sys.stderr)
        return 1
    except ImportError as error:
        print(f"embedrec evaluate: {error.name or error} is missing: pip install 'embedrec[evaluate]'", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            progress.close()
    if arguments.output is not None:
        result.write(arguments.output)
    if arguments.plot is not None:
        plot(result, arguments.plot)
    if arguments.json:
        print(json.dumps(result.as_dict(per_user=False), indent=1, ensure_ascii=False))
    else:
        print(format_report(result))
    return 0
