"""Splitting a log into each user's history (what the recommender may see) and the items held
out to find: leave-last-out per user, or a global time cutoff.

Leave-last-out orders a user's rows by timestamp when every row of that user has one, else by
their order in the log, and holds out the last liked item; the history is everything before it,
so nothing from the future leaks into the profile. A repeated item counts once (its first
time): a recommender that excludes history can never "find" an item the user already had.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from embedrec.client.evaluate.interactions import Interaction, parse_timestamp
from embedrec.client.evaluate.profiles import Feedback


@dataclass(frozen=True)
class UserCase:
    """One user to evaluate: the history (oldest first) and the held-out items to find."""

    user: str
    history: list[Interaction]
    held_out: list[str]


@dataclass
class SplitReport:
    """How many users the split kept, and why it skipped the others."""

    users: int = 0
    evaluated: int = 0
    too_few: int = 0
    no_held_out: int = 0
    no_history: int = 0
    repeated_rows: int = 0
    untimed_rows: int = 0
    sampled_out: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SplitSpec:
    """`last` (leave-last-out, `holdout` items per user), `time:T` (a cutoff: epoch seconds or
    ISO 8601) or `quantile:Q` (the cutoff at that quantile of all timestamps)."""

    kind: str = "last"
    cutoff: float | None = None
    quantile: float | None = None
    holdout: int = 1
    min_interactions: int = 2

    @classmethod
    def parse(cls, text: str, *, holdout: int = 1, min_interactions: int = 2) -> SplitSpec:
        """A SplitSpec from `last`, `time:2024-01-01` / `time:1700000000` or `quantile:0.9`;
        ValueError naming the accepted forms otherwise."""
        kind, _, value = text.partition(":")
        if kind == "last" and not value:
            return cls("last", holdout=holdout, min_interactions=min_interactions)
        if kind == "time":
            cutoff = parse_timestamp(value)
            if isinstance(cutoff, float):
                return cls("time", cutoff=cutoff, min_interactions=min_interactions)
        if kind == "quantile":
            try:
                quantile = float(value)
            except ValueError:
                quantile = -1.0
            if 0 < quantile < 1:
                return cls("quantile", quantile=quantile, min_interactions=min_interactions)
        raise ValueError(f"split {text[:40]!r}: use last, time:EPOCH_OR_ISO8601 or quantile:Q (0 < Q < 1)")


def split_log(
    rows: Sequence[Interaction],
    spec: SplitSpec,
    feedback: Feedback,
    *,
    max_users: int = 0,
    seed: int = 0,
) -> tuple[list[UserCase], SplitReport]:
    """The users to evaluate (in first-seen order) and a report of the rest. Users with fewer
    than `spec.min_interactions` distinct item rows, nothing liked to hold out, or an empty history
    are counted and skipped; `max_users` > 0 keeps a random sample of that many (by `seed`)."""
    report = SplitReport()
    by_user: dict[str, list[Interaction]] = defaultdict(list)
    for row in rows:
        by_user[row.user].append(row)
    report.users = len(by_user)
    cutoff = spec.cutoff if spec.kind != "quantile" else _quantile_cutoff(rows, spec.quantile or 0.5, report)
    cases = []
    for user, user_rows in by_user.items():
        ordered = _distinct_items(_ordered(user_rows, by_time=spec.kind != "last", report=report), report)
        if sum(row.item is not None for row in ordered) < spec.min_interactions:
            report.too_few += 1
            continue
        case = _leave_last_out(user, ordered, spec, feedback) if spec.kind == "last" else None
        if spec.kind != "last":
            case = _by_cutoff(user, ordered, cutoff or 0.0, feedback)
        if case is None or not case.held_out:
            report.no_held_out += 1
        elif not case.history:
            report.no_history += 1
        else:
            cases.append(case)
    if 0 < max_users < len(cases):
        kept = set(random.Random(seed).sample(range(len(cases)), max_users))
        report.sampled_out = len(cases) - max_users
        cases = [case for index, case in enumerate(cases) if index in kept]
    report.evaluated = len(cases)
    return cases, report


def _ordered(rows: list[Interaction], *, by_time: bool, report: SplitReport) -> list[Interaction]:
    if by_time:
        timed = [row for row in rows if row.timestamp is not None]
        report.untimed_rows += len(rows) - len(timed)
        return sorted(timed, key=lambda row: (row.timestamp or 0.0, row.position))
    if all(row.timestamp is not None for row in rows):
        return sorted(rows, key=lambda row: (row.timestamp or 0.0, row.position))
    return sorted(rows, key=lambda row: row.position)


def _distinct_items(rows: Iterable[Interaction], report: SplitReport) -> list[Interaction]:
    seen: set[str] = set()
    kept = []
    for row in rows:
        if row.item is not None:
            if row.item in seen:
                report.repeated_rows += 1
                continue
            seen.add(row.item)
        kept.append(row)
    return kept


def _leave_last_out(user: str, rows: list[Interaction], spec: SplitSpec, feedback: Feedback) -> UserCase:
    liked = [index for index, row in enumerate(rows) if feedback.is_positive(row)]
    held = liked[-spec.holdout :] if len(liked) > 0 else []
    if not held:
        return UserCase(user, rows, [])
    return UserCase(user, rows[: held[0]], [rows[index].item or "" for index in held])


def _by_cutoff(user: str, rows: list[Interaction], cutoff: float, feedback: Feedback) -> UserCase:
    history = [row for row in rows if (row.timestamp or 0.0) < cutoff]
    later = [row.item or "" for row in rows if (row.timestamp or 0.0) >= cutoff and feedback.is_positive(row)]
    return UserCase(user, history, later)


def _quantile_cutoff(rows: Sequence[Interaction], quantile: float, report: SplitReport) -> float:
    times = sorted(row.timestamp for row in rows if row.timestamp is not None)
    if not times:
        raise ValueError("a time split needs timestamps, and no row of the log has one")
    cutoff = times[min(len(times) - 1, int(quantile * len(times)))]
    report.notes.append(f"cutoff at quantile {quantile}: timestamp {cutoff:g}")
    return cutoff
