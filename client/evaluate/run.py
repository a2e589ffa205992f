"""`evaluate`: read a log, split it, build each user's profile from the history part, ask every
server target and run every baseline on the same users, score them, compare them.

The item universe is the catalog file's ids when one is given (and every server must know each
of the log's items in it: a mismatch is an error, not a silently worse score), else the log's
items the first server knows. Rows naming other items are counted and dropped before the split.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedrec.client.evaluate import baselines, metrics
from embedrec.client.evaluate.compare import compare_targets
from embedrec.client.evaluate.interactions import Columns, Interaction, ReadReport, read_interactions
from embedrec.client.evaluate.profiles import BuiltProfile, Feedback, ProfileLimits, build_profile, user_profile
from embedrec.client.evaluate.results import EvaluationResult, TargetResult, previous_targets, split_fingerprint
from embedrec.client.evaluate.served import (
    EvaluationError,
    ServerTarget,
    recommend_all,
    server_info,
    unknown_items,
)
from embedrec.client.evaluate.split import SplitSpec, UserCase, split_log
from embedrec.client.models import ServerInfo

Progress = Callable[[str, int, int], None]  # (stage label, done, total)


@dataclass(frozen=True)
class EvaluationConfig:
    """How to evaluate: cutoffs `ks`, the split, how rows read as likes and dislikes, the
    baselines, the catalog's ids (None: the log's items the server knows), a user sample
    (`max_users`, 0: all), the seed, the bootstrap's resamples and confidence, earlier runs to
    compare with (`against`: their JSON files), and the log's column names."""

    ks: tuple[int, ...] = (1, 5, 10, 20)
    split: SplitSpec = field(default_factory=SplitSpec)
    feedback: Feedback = field(default_factory=Feedback)
    baselines: tuple[str, ...] = baselines.BASELINES
    catalog_ids: Sequence[str] | None = None
    max_users: int = 0
    seed: int = 0
    resamples: int = 2000
    confidence: float = 0.95
    against: tuple[Path, ...] = ()
    columns: Columns = field(default_factory=Columns)


@dataclass
class _Prepared:
    cases: list[UserCase]
    built: list[BuiltProfile]
    universe: list[str]
    catalog_size: int
    data: dict[str, Any]


def evaluate(
    log: Path | Sequence[Interaction],
    targets: Sequence[ServerTarget],
    config: EvaluationConfig | None = None,
    progress: Progress | None = None,
) -> EvaluationResult:
    """Evaluate `targets` (servers; the first is the reference the others are compared with)
    and the configured baselines on the interaction `log` (a file, or rows already read).

    Raises EvaluationError when a server cannot be reached, answers no call, or does not serve
    the log's items (the catalog and the server do not match); ValueError for bad settings.
    Malformed rows, unknown items and users with too few interactions are counted in `data`.
    """
    config = config or EvaluationConfig()
    if not targets:
        raise ValueError("give at least one server target")
    if not config.ks or min(config.ks) < 1:
        raise ValueError("ks must be one or more cutoffs >= 1")
    return asyncio.run(_evaluate(log, list(targets), config, progress))


async def _evaluate(
    log: Path | Sequence[Interaction], targets: list[ServerTarget], config: EvaluationConfig, progress: Progress | None
) -> EvaluationResult:
    rows, read = read_interactions(log, config.columns) if isinstance(log, Path) else (list(log), ReadReport())
    infos = [await _info(target) for target in targets]
    k = max(config.ks)
    for target, info in zip(targets, infos, strict=True):
        if k > info.limits.get("max_k", k):
            raise ValueError(f"k={k} is above {target.label}'s max_k={info.limits['max_k']}")
    prepared = await _prepare(rows, read, targets, infos, config)
    held_out = {case.user: case.held_out for case in prepared.cases}
    results = []
    for target, info in zip(targets, infos, strict=True):
        results.append(await _serve(target, info, prepared, config, progress))
    results += _baselines(prepared, config, progress)
    result = EvaluationResult(
        list(config.ks),
        _split_text(config.split),
        split_fingerprint(held_out),
        prepared.catalog_size,
        prepared.data,
        results,
    )
    for path in config.against:
        result.targets += previous_targets(path, result.split_sha256)
    per_user = {target.name: target.per_user for target in result.targets}
    result.differences = compare_targets(
        per_user,
        targets[0].label,
        metrics.metric_names(config.ks),
        confidence=config.confidence,
        resamples=config.resamples,
        seed=config.seed,
    )
    return result


async def _info(target: ServerTarget) -> ServerInfo:
    from embedrec.client.errors import EmbedrecClientError

    try:
        return await server_info(target)
    except EmbedrecClientError as error:
        raise EvaluationError(f"{target.label} ({target.address}): {str(error)[:200]}") from None


async def _prepare(
    rows: list[Interaction],
    read: ReadReport,
    targets: list[ServerTarget],
    infos: list[ServerInfo],
    config: EvaluationConfig,
) -> _Prepared:
    """The universe, the rows on it, the split, and each kept user's profile."""
    log_items = list(dict.fromkeys(row.item for row in rows if row.item is not None))
    universe = await _universe(log_items, targets, infos, config.catalog_ids)
    known = set(universe)
    kept = [row for row in rows if row.item is None or row.item in known]
    unknown_rows = len(rows) - len(kept)
    cases, report = split_log(kept, config.split, config.feedback, max_users=config.max_users, seed=config.seed)
    limits = ProfileLimits(
        min(info.limits.get("max_history_items", 1000) for info in infos),
        min(info.limits.get("max_texts_per_request", 64) for info in infos),
    )
    built = [build_profile(case.history, config.feedback, limits) for case in cases]
    usable = [index for index, profile in enumerate(built) if profile.positives or profile.texts]
    data = {
        "rows": read.rows,
        "malformed_rows": read.malformed,
        "malformed_examples": read.examples,
        "unknown_item_rows": unknown_rows,
        "unknown_items": len(log_items) - len(known & set(log_items)),
        "unknown_item_examples": [item for item in log_items if item not in known][:5],
        "users": report.users,
        "users_evaluated": len(usable),
        "users_too_few_interactions": report.too_few,
        "users_nothing_to_hold_out": report.no_held_out,
        "users_no_history": report.no_history,
        "users_no_liked_history": len(cases) - len(usable),
        "users_sampled_out": report.sampled_out,
        "repeated_rows": report.repeated_rows,
        "untimed_rows": report.untimed_rows,
        "history_rows_over_limits": sum(profile.dropped for profile in built),
        "notes": report.notes,
    }
    catalog_size = len(config.catalog_ids) if config.catalog_ids is not None else infos[0].item_count
    return _Prepared(
        [cases[index] for index in usable], [built[index] for index in usable], universe, catalog_size, data
    )


async def _universe(
    log_items: list[str], targets: list[ServerTarget], infos: list[ServerInfo], catalog_ids: Sequence[str] | None
) -> list[str]:
    """The items recommendable in this run; EvaluationError when a server does not serve them."""
    if catalog_ids is not None:
        catalog = set(catalog_ids)
        for target, info in zip(targets, infos, strict=True):
            if info.item_count != len(catalog):
                raise EvaluationError(
                    f"the catalog has {len(catalog)} items but {target.label} serves {info.item_count}: "
                    "the catalog and the server's items do not match"
                )
        for target, info in zip(targets, infos, strict=True):
            missing = await unknown_items(target, list(catalog_ids), info)
            if missing:
                raise EvaluationError(
                    f"{target.label} does not know {len(missing)} of the catalog's {len(catalog)} items "
                    f"(e.g. {sorted(missing)[:3]}): the catalog and the server's items do not match"
                )
        return list(dict.fromkeys(catalog_ids))
    missing = await unknown_items(targets[0], log_items, infos[0])
    universe = [item for item in log_items if item not in missing]
    if log_items and not universe:
        raise EvaluationError(
            f"none of the {len(log_items)} items named in the log is served by {targets[0].label} "
            f"(e.g. {log_items[:3]}): the log and the served catalog do not match"
        )
    for target, info in zip(targets[1:], infos[1:], strict=True):
        lacking = await unknown_items(target, universe, info)
        if lacking:
            raise EvaluationError(
                f"{target.label} does not know {len(lacking)} items {targets[0].label} serves "
                f"(e.g. {sorted(lacking)[:3]}): compared servers must serve the same catalog"
            )
    return universe


async def _serve(
    target: ServerTarget, info: ServerInfo, prepared: _Prepared, config: EvaluationConfig, progress: Progress | None
) -> TargetResult:
    k = max(config.ks)
    profiles = [user_profile(built, k, target.options) for built in prepared.built]
    positions = [index for index, profile in enumerate(profiles) if profile is not None]
    asked = [profiles[index] for index in positions]
    total = len(asked)
    done = [0]

    def advance(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(target.label, done[0], total)

    run = await recommend_all(target, [profile for profile in asked if profile is not None], info, advance)
    recommended: list[list[str]] = [[] for _ in profiles]
    for index, found in zip(positions, run.recommended, strict=True):
        recommended[index] = found
    note = f"{run.failed_users} users failed ({run.first_error})" if run.failed_users else ""
    return _scored(target.label, "server", recommended, prepared, config, run.summary(), note)


def _baselines(prepared: _Prepared, config: EvaluationConfig, progress: Progress | None) -> list[TargetResult]:
    data = baselines.TrainingData(
        prepared.universe,
        [{item: w for item, w in built.item_weights.items() if w > 0} for built in prepared.built],
        [
            set(built.item_weights) | {row.item for row in case.history if row.item}
            for built, case in zip(prepared.built, prepared.cases, strict=True)
        ],
    )
    found = []
    for name in config.baselines:
        if progress is not None:
            progress(name, 0, len(prepared.cases))
        try:
            recommended = baselines.run_baseline(name, data, max(config.ks), config.seed)
        except ImportError as error:
            found.append(TargetResult(name, "baseline", {}, 0.0, None, {}, note=f"skipped: {error}"))
            continue
        found.append(_scored(name, "baseline", recommended, prepared, config, {}, ""))
        if progress is not None:
            progress(name, len(prepared.cases), len(prepared.cases))
    return [target for target in found if target.per_user or target.note]


def _scored(
    name: str,
    kind: str,
    recommended: list[list[str]],
    prepared: _Prepared,
    config: EvaluationConfig,
    serving: dict[str, Any],
    note: str,
) -> TargetResult:
    k = max(config.ks)
    lists = {case.user: items[:k] for case, items in zip(prepared.cases, recommended, strict=True)}
    held_out = {case.user: case.held_out for case in prepared.cases}
    per_user = metrics.ranking_metrics(held_out, lists, config.ks)
    counts = metrics.interaction_counts(built.positives for built in prepared.built)
    ranks = metrics.popularity_ranks(counts, prepared.universe)
    every = [item for items in lists.values() for item in items]
    return TargetResult(
        name,
        kind,
        metrics.mean_metrics(per_user, metrics.metric_names(config.ks)),
        metrics.coverage(lists.values(), prepared.catalog_size),
        metrics.novelty(every, ranks),
        per_user,
        serving,
        note,
    )


def _split_text(spec: SplitSpec) -> str:
    if spec.kind == "last":
        return f"leave-last-out (holdout {spec.holdout}, min {spec.min_interactions} interactions)"
    if spec.kind == "time":
        return f"time cutoff {spec.cutoff:g}"
    return f"time cutoff at quantile {spec.quantile}"
