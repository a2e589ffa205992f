"""`embedrec evaluate`'s parts without a server: reading logs, splitting, profiles, the metrics
against hand-computed values, the baselines on logs whose answer is known, paired intervals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from embedrec.client.evaluate.baselines import TrainingData, als, popularity, random_items, run_baseline
from embedrec.client.evaluate.compare import compare_targets, paired_difference
from embedrec.client.evaluate.interactions import Interaction, read_interactions
from embedrec.client.evaluate.metrics import coverage, novelty, popularity_ranks, ranking_metrics
from embedrec.client.evaluate.profiles import Feedback, ProfileLimits, build_profile, user_profile
from embedrec.client.evaluate.split import SplitSpec, split_log
from embedrec.client.evaluate.targets import parse_target
from embedrec.client.models import UserProfile

KS = (1, 3)


def test_ranking_metrics_match_hand_computed_values() -> None:
    held_out = {"a": ["x"], "b": ["x", "y"], "c": ["z"], "d": ["x"]}
    recommended = {"a": ["p", "x", "q"], "b": ["y", "p", "x"], "c": []}  # d: no answer at all
    found = ranking_metrics(held_out, recommended, KS)
    assert found["a"] == pytest.approx(
        {
            "HitRate@1": 0,
            "HitRate@3": 1,
            "Recall@1": 0,
            "Recall@3": 1,
            "NDCG@1": 0,
            "NDCG@3": 1 / math.log2(3),
            "MRR@1": 0,
            "MRR@3": 0.5,
        }
    )
    ideal = 1 + 1 / math.log2(3)
    assert found["b"] == pytest.approx(
        {
            "HitRate@1": 1,
            "HitRate@3": 1,
            "Recall@1": 0.5,
            "Recall@3": 1,
            "NDCG@1": 1,
            "NDCG@3": (1 + 1 / math.log2(4)) / ideal,
            "MRR@1": 1,
            "MRR@3": 1,
        }
    )
    assert set(found["c"].values()) == {0.0} and set(found["d"].values()) == {0.0}


def test_the_recommended_order_is_the_order_scored_even_against_id_order() -> None:
    # trec_eval breaks score ties by document id; scores from the rank keep the server's order.
    found = ranking_metrics({"u": ["a"]}, {"u": ["z", "a"]}, (1, 2))
    assert found["u"]["HitRate@1"] == 0 and found["u"]["MRR@2"] == 0.5


def test_coverage_and_novelty() -> None:
    assert coverage([["p", "x"], ["x", "q"], ["y"]], 10) == pytest.approx(0.4)
    ranks = popularity_ranks({"p": 3, "x": 2, "q": 2}, ["p", "x", "q", "y", "z"])
    assert ranks == {"p": 1.0, "x": 2.5, "q": 2.5, "y": 4.5, "z": 4.5}
    assert novelty(["p", "x"], ranks) == pytest.approx(1.75)
    assert novelty([], ranks) is None


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reading_counts_malformed_rows_and_never_raises(tmp_path: Path) -> None:
    log = write(
        tmp_path / "log.jsonl",
        '{"user": "u1", "item": "a", "timestamp": "2024-01-02T00:00:00Z", "rating": 4}\n'
        "not json\n"
        '["a", "list"]\n'
        '{"item": "a"}\n'
        '{"user": "u1"}\n'
        '{"user": "u1", "item": "b", "timestamp": "yesterday"}\n'
        '{"user": "u1", "item": "b", "rating": "lots"}\n'
        '{"user_id": "u2", "item_id": "c", "ts": 1700000000000, "event": "Dislike"}\n'
        '{"user": "u2", "query": "red shoes"}\n'
        "\n",
    )
    rows, report = read_interactions(log)
    assert report.rows == 9 and report.malformed == 6 and len(report.examples) == 5
    assert "line 2: invalid JSON" in report.examples
    first, second, third = rows
    assert (first.user, first.item, first.weight, first.timestamp) == ("u1", "a", 4.0, 1704153600.0)
    assert (second.user, second.item, second.event, second.timestamp) == ("u2", "c", "dislike", 1700000000.0)
    assert (third.item, third.text) == (None, "red shoes")


def test_reading_csv(tmp_path: Path) -> None:
    log = write(tmp_path / "log.csv", "user,item,rating\nu1,a,5\nu1,,\nu2,b,x\n")
    rows, report = read_interactions(log)
    assert [(row.user, row.item, row.weight) for row in rows] == [("u1", "a", 5.0)]
    assert report.malformed == 2


def rows_of(*specs: tuple[str, str | None, float | None]) -> list[Interaction]:
    return [Interaction(user, item, timestamp, position=index) for index, (user, item, timestamp) in enumerate(specs)]


def test_leave_last_out_by_timestamp_else_by_log_order() -> None:
    rows = rows_of(
        ("timed", "b", 2.0),
        ("timed", "c", 3.0),
        ("timed", "a", 1.0),
        ("untimed", "x", None),
        ("untimed", "y", 5.0),
        ("untimed", "z", 1.0),
        ("one", "a", 1.0),
        ("repeat", "a", 1.0),
        ("repeat", "a", 2.0),
    )
    cases, report = split_log(rows, SplitSpec(), Feedback())
    by_user = {case.user: case for case in cases}
    assert [row.item for row in by_user["timed"].history] == ["a", "b"] and by_user["timed"].held_out == ["c"]
    assert [row.item for row in by_user["untimed"].history] == ["x", "y"] and by_user["untimed"].held_out == ["z"]
    assert report.users == 4 and report.evaluated == 2 and report.too_few == 2 and report.repeated_rows == 1


def test_dislikes_are_never_held_out_and_weigh_against() -> None:
    feedback = Feedback(dislike_below=3)
    rows = [
        Interaction("u", "a", 1.0, weight=5.0),
        Interaction("u", "b", 2.0, weight=4.0),
        Interaction("u", "c", 3.0, event="skip"),
        Interaction("u", "d", 4.0, weight=1.0),
        Interaction("u", None, 2.5, text="quiet fridge"),
        Interaction("u", "e", 0.5, event="seen"),
    ]
    cases, _ = split_log(rows, SplitSpec(), feedback)
    (case,) = cases
    assert case.held_out == ["b"] and [row.item for row in case.history] == ["e", "a"]
    built = build_profile(rows, feedback, ProfileLimits())
    assert built.item_weights == {"a": 5.0, "b": 4.0, "c": -1.0, "d": -1.0} and built.texts == ["quiet fridge"]
    assert built.positives == ["a", "b"] and built.excluded == ["e"]
    request = user_profile(built, 10, UserProfile(exclude_ids=["x"], rerank=True)).to_request()
    assert list(request.exclude_ids) == ["x", "e"] and request.exclude_history and request.ignore_unknown_items
    assert request.HasField("rerank") and [(item.id, item.weight) for item in request.items][2] == ("c", -1.0)


def test_profiles_keep_the_most_recent_rows_within_the_limits() -> None:
    rows = [Interaction("u", f"i{n}", float(n)) for n in range(5)] + [Interaction("u", None, 9.0, text="t")]
    built = build_profile(rows, Feedback(), ProfileLimits(max_history_items=3, max_texts=0))
    assert list(built.item_weights) == ["i2", "i3", "i4"] and built.texts == [] and built.dropped == 3


def test_time_cutoff_and_quantile_splits() -> None:
    rows = rows_of(
        ("u", "a", 1.0), ("u", "b", 5.0), ("u", "c", 6.0), ("v", "a", 7.0), ("v", "b", 8.0), ("w", "c", None)
    )
    cases, report = split_log(rows, SplitSpec.parse("time:4"), Feedback())
    assert [(case.user, case.held_out) for case in cases] == [("u", ["b", "c"])]
    assert report.no_history == 1 and report.untimed_rows == 1 and report.too_few == 1
    cases, _ = split_log(rows, SplitSpec.parse("quantile:0.5"), Feedback())
    assert [(case.user, case.held_out) for case in cases] == [("u", ["c"])]
    with pytest.raises(ValueError, match="use last"):
        SplitSpec.parse("tomorrow")


def test_sampling_users_is_seeded() -> None:
    rows = [Interaction(f"u{n}", item, float(t)) for n in range(20) for t, item in enumerate("ab")]
    first, report = split_log(rows, SplitSpec(), Feedback(), max_users=5, seed=3)
    again, _ = split_log(rows, SplitSpec(), Feedback(), max_users=5, seed=3)
    assert [case.user for case in first] == [case.user for case in again] and report.sampled_out == 15


def data_of(liked: list[set[str]], items: list[str]) -> TrainingData:
    return TrainingData(items, [dict.fromkeys(user, 1.0) for user in liked], [set(user) for user in liked])


def test_popularity_ranks_by_training_count_without_the_users_history() -> None:
    data = data_of([{"a"}, {"a", "b"}, {"a", "c"}, {"c"}], ["d", "c", "b", "a"])
    assert popularity(data, 3) == [["c", "b", "d"], ["c", "d"], ["b", "d"], ["a", "b", "d"]]


def test_random_items_are_seeded_and_skip_the_history() -> None:
    items = [f"i{n}" for n in range(50)]
    data = data_of([{"i1", "i2"}] * 30, items)
    first = random_items(data, 10, seed=1)
    assert first == random_items(data, 10, seed=1) and first != random_items(data, 10, seed=2)
    assert all(len(set(found)) == 10 and not {"i1", "i2"} & set(found) for found in first)
    assert len({tuple(found) for found in first}) > 1  # each user its own draw


def test_als_recommends_from_the_users_own_cluster() -> None:
    rng = np.random.default_rng(0)
    clusters = [[f"a{n}" for n in range(6)], [f"b{n}" for n in range(6)]]
    liked = [set(rng.choice(clusters[user % 2], 4, replace=False).tolist()) for user in range(60)]
    data = data_of(liked, clusters[0] + clusters[1])
    found = als(data, 2, seed=0, factors=4, iterations=10)
    assert all(found[user][0][0] == "ab"[user % 2] for user in range(60))
    assert all(not set(found[user]) & liked[user] for user in range(60))


def test_an_unknown_baseline_is_named() -> None:
    with pytest.raises(ValueError, match="the baselines are popularity, random, als"):
        run_baseline("oracle", data_of([], []), 1)


def test_paired_difference_intervals() -> None:
    same = paired_difference({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    assert (same.mean, same.low, same.high, same.significant, same.p_value) == (0.0, 0.0, 0.0, False, 1.0)
    shifted = paired_difference({"a": 0.0, "b": 0.5}, {"a": 1.0, "b": 1.5})
    assert (shifted.mean, shifted.low, shifted.high, shifted.significant) == (1.0, 1.0, 1.0, True)
    rng = np.random.default_rng(0)
    users = [f"u{n}" for n in range(400)]
    reference = {user: float(rng.random() < 0.3) for user in users}
    better = {user: max(reference[user], float(rng.random() < 0.3)) for user in users}
    found = paired_difference(reference, better, seed=1)
    true_mean = np.mean([better[user] - reference[user] for user in users])
    assert found.low < true_mean < found.high and found.significant and found.p_value < 0.01
    noise = paired_difference(reference, {user: float(rng.random() < 0.3) for user in users}, seed=1)
    assert noise.low < 0 < noise.high and not noise.significant
    with pytest.raises(ValueError, match="share no user"):
        paired_difference({"a": 1.0}, {"b": 1.0})


def test_compare_targets_pairs_every_target_with_the_reference() -> None:
    per_user = {"ref": {"u": {"m": 1.0}}, "x": {"u": {"m": 0.0}}, "y": {"u": {"m": 1.0}}}
    found = compare_targets(per_user, "ref", ["m"])
    assert [(d.target, d.mean) for d in found] == [("x", -1.0), ("y", 0.0)]


def test_target_specs() -> None:
    base = UserProfile(where=["price<100"])
    label, address, options = parse_target("rerank=127.0.0.1:1;rerank=true;rerank_candidates=20;where=brand=a|b", base)
    assert (label, address, options.rerank, options.rerank_candidates) == ("rerank", "127.0.0.1:1", True, 20)
    assert list(options.where) == ["price<100", "brand=a|b"]
    assert parse_target("127.0.0.1:1", base)[:2] == ("127.0.0.1:1", "127.0.0.1:1")
    assert parse_target("x=h:1;diversity=brand=2;filter_values=a|b", base)[2].diversity == ("brand", 2)
    for bad, message in [
        ("x=h:1;ef=many", "not a number"),
        ("x=h:1;speed=9", "not OPTION=VALUE"),
        ("x=h:1;where=price", "not a condition"),
        ("=h:1", "LABEL"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_target(bad, base)
