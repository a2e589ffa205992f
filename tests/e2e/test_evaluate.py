"""`embedrec evaluate` end to end: real servers on the tiny exported BERT, the real client, a log
whose answer is known (each user's held-out item is the nearest neighbour of their history),
the same log shuffled (chance), the baselines, comparisons of servers that differ in a known way,
and the CLI."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from embedrec.client.evaluate import EvaluationConfig, EvaluationError, ServerTarget, evaluate
from embedrec.client.evaluate.cli import main as evaluate_main
from embedrec.client.models import UserProfile
from embedrec.server.manifest import ITEMS_IDS, ITEMS_MATRIX
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.tiny_models import ENGLISH_WORDS

ITEMS = 120
KS = (1, 5, 10)


def catalog_rows(seed: int = 0) -> list[dict[str, str]]:
    """ITEMS distinct texts of 3-6 words of the tiny vocabulary, with a category each."""
    rng = random.Random(seed)
    texts: dict[str, None] = {}
    while len(texts) < ITEMS:
        texts[" ".join(rng.sample(ENGLISH_WORDS[13:], rng.randint(3, 6)))] = None
    return [{"id": f"item-{n:03d}", "text": text, "category": "ab"[n % 2]} for n, text in enumerate(texts)]


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Served:
    """A server on a catalog, the catalog file, and its item vectors as built."""

    server: ServerThread
    catalog: Path
    ids: list[str]
    matrix: np.ndarray

    def target(self, label: str, **options: object) -> ServerTarget:
        return ServerTarget(label, self.server.target, UserProfile(**options), batch_users=16)  # type: ignore[arg-type]


def serve_catalog(directory: Path, model_dir: Path, rows: list[dict[str, str]]) -> Served:
    from embedrec.export.items import build_items

    catalog = write_jsonl(directory / "catalog.jsonl", rows)  # type: ignore[arg-type]
    build_items(catalog, model_dir, directory / "items", filter_field="category", progress=False)
    ids = (directory / "items" / ITEMS_IDS).read_text(encoding="utf-8").split()
    matrix = np.load(directory / "items" / ITEMS_MATRIX)
    return Served(start_server(server_settings(model_dir, directory / "items")), catalog, ids, matrix)


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    built = serve_catalog(tmp_path_factory.mktemp("evaluate"), tiny_model_dir, catalog_rows())
    yield built
    built.server.close()


@pytest.fixture(scope="module")
def shuffled_ids(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The same texts under permuted ids: a server that differs from `served` in a known way
    (every id names another item's vector)."""
    rows = catalog_rows()
    ids = [row["id"] for row in rows]
    random.Random(7).shuffle(ids)
    built = serve_catalog(
        tmp_path_factory.mktemp("evaluate-shuffled"),
        tiny_model_dir,
        [dict(row, id=new_id) for row, new_id in zip(rows, ids, strict=True)],
    )
    yield built
    built.server.close()


def nearest_neighbour_log(served: Served) -> tuple[list[dict[str, object]], list[str]]:
    """One user per item with a clear nearest neighbour: history = that item (t=1), held out =
    its nearest neighbour by cosine (t=2). Returns the rows and the users."""
    scores = served.matrix.astype(np.float64) @ served.matrix.astype(np.float64).T
    np.fill_diagonal(scores, -np.inf)
    rows: list[dict[str, object]] = []
    users = []
    for row, item in enumerate(served.ids):
        first, second = np.sort(scores[row])[::-1][:2]
        if first - second < 1e-3:
            continue  # a near tie: rounding could decide it
        user = f"user-{item}"
        users.append(user)
        rows += [
            {"user": user, "item": item, "timestamp": 1},
            {"user": user, "item": served.ids[int(np.argmax(scores[row]))], "timestamp": 2},
        ]
    return rows, users


def test_the_nearest_neighbour_log_scores_hit_rate_1_and_bad_rows_are_counted(served: Served, tmp_path: Path) -> None:
    rows, users = nearest_neighbour_log(served)
    assert len(users) > ITEMS * 0.8
    bad = [
        {"user": "lonely", "item": served.ids[0], "timestamp": 1},
        {"user": "ghost", "item": "no-such-item", "timestamp": 1},
        {"user": "ghost", "item": served.ids[1], "timestamp": 2},
    ]
    log = write_jsonl(tmp_path / "log.jsonl", rows + bad)
    with log.open("a") as handle:
        handle.write("{not json\n")
    result = evaluate(log, [served.target("tiny")], EvaluationConfig(ks=KS, baselines=()))
    tiny = result.target("tiny")
    assert tiny.metrics["HitRate@1"] == 1.0 and tiny.metrics["MRR@10"] == 1.0 and tiny.metrics["NDCG@5"] == 1.0
    assert sorted(tiny.per_user) == sorted(users)
    assert result.data["malformed_rows"] == 1 and result.data["unknown_item_rows"] == 1
    assert result.data["unknown_item_examples"] == ["no-such-item"]
    assert result.data["users_too_few_interactions"] == 2  # lonely, and ghost once its unknown row is gone
    assert tiny.serving["calls"] == math.ceil(len(users) / 16) and tiny.serving["failed_users"] == 0
    assert 0 < tiny.coverage <= 1 and tiny.novelty is not None


def test_a_shuffled_log_scores_what_chance_predicts_as_do_the_baselines(served: Served, tmp_path: Path) -> None:
    rows, users = nearest_neighbour_log(served)
    held_out = [row["item"] for row in rows[1::2]]
    random.Random(3).shuffle(held_out)
    for row, item in zip(rows[1::2], held_out, strict=True):
        row["item"] = item
    rows = [
        row for pair in zip(rows[::2], rows[1::2], strict=True) if pair[0]["item"] != pair[1]["item"] for row in pair
    ]
    log = write_jsonl(tmp_path / "shuffled.jsonl", rows)
    result = evaluate(log, [served.target("tiny")], EvaluationConfig(ks=KS, catalog_ids=served.ids, seed=1))
    users = len(rows) // 2
    chance = 10 / (ITEMS - 1)  # one history item excluded
    bound = 4 * math.sqrt(chance * (1 - chance) / users)
    for name in ("tiny", "random", "popularity", "als"):
        target = result.target(name)
        assert len(target.per_user) == users
        assert abs(target.metrics["HitRate@10"] - chance) < bound, (name, target.metrics["HitRate@10"])
    assert result.target("random").coverage > 0.9  # each user its own draw over the whole catalog


def test_the_baselines_run_on_the_same_users_and_lose_to_the_nearest_neighbour(served: Served, tmp_path: Path) -> None:
    rows, users = nearest_neighbour_log(served)
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    result = evaluate(log, [served.target("tiny")], EvaluationConfig(ks=KS, catalog_ids=served.ids, resamples=500))
    assert [target.name for target in result.targets] == ["tiny", "popularity", "random", "als"]
    for name in ("popularity", "random", "als"):
        assert sorted(result.target(name).per_user) == sorted(users)
        (difference,) = [d for d in result.differences if d.target == name and d.metric == "HitRate@1"]
        assert difference.significant and difference.high < -0.8
    # Every history item is one user's; popularity ties are broken by catalog order, so it
    # recommends nearly the same list to all.
    assert result.target("popularity").coverage < 0.2


def test_comparing_servers_that_differ_in_a_known_way(served: Served, shuffled_ids: Served, tmp_path: Path) -> None:
    rows, _ = nearest_neighbour_log(served)
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    targets = [
        served.target("exact"),
        served.target("same"),
        shuffled_ids.target("permuted"),
        served.target("only-a", filter_values=["a"]),
    ]
    result = evaluate(log, targets, EvaluationConfig(ks=KS, baselines=(), resamples=1000))
    differences = {(d.target, d.metric): d for d in result.differences}
    same = differences["same", "HitRate@1"]
    assert (same.mean, same.low, same.high, same.significant) == (0.0, 0.0, 0.0, False)
    permuted = differences["permuted", "HitRate@1"]
    expected = result.target("permuted").metrics["HitRate@1"] - 1.0
    assert permuted.mean == pytest.approx(expected) and permuted.low <= expected <= permuted.high
    assert permuted.significant and permuted.high < -0.5
    # The filter keeps category "a" only: users whose neighbour is in "b" miss it, the others hit.
    category = {item: "ab"[int(item.split("-")[1]) % 2] for item in served.ids}
    neighbours = {row["user"]: row["item"] for row in rows[1::2]}
    in_a = sum(category[str(item)] == "a" for item in neighbours.values()) / len(neighbours)
    assert result.target("only-a").metrics["HitRate@1"] == pytest.approx(in_a)
    assert differences["only-a", "HitRate@1"].mean == pytest.approx(in_a - 1.0)


def test_a_catalog_that_does_not_match_the_server_is_a_clear_error(served: Served, tmp_path: Path) -> None:
    rows, _ = nearest_neighbour_log(served)
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    with pytest.raises(EvaluationError, match="the catalog has 121 items but tiny serves 120"):
        evaluate(log, [served.target("tiny")], EvaluationConfig(catalog_ids=[*served.ids, "extra"], baselines=()))
    renamed = [f"{item}-v2" if item == rows[0]["item"] else item for item in served.ids]
    with pytest.raises(EvaluationError, match="tiny does not know 1 of the catalog's 120 items"):
        evaluate(log, [served.target("tiny")], EvaluationConfig(catalog_ids=renamed, baselines=()))
    strangers = write_jsonl(tmp_path / "strangers.jsonl", [{"user": "u", "item": f"other-{n}"} for n in range(3)])
    with pytest.raises(EvaluationError, match="none of the 3 items named in the log is served by tiny"):
        evaluate(strangers, [served.target("tiny")])


def test_the_cli_prints_tables_writes_json_and_plots(
    served: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows, users = nearest_neighbour_log(served)
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    output, picture = tmp_path / "run.json", tmp_path / "run.png"
    arguments = [
        str(log),
        "--target",
        f"tiny={served.server.target}",
        "--compare",
        f"rerun={served.server.target};ef=0",
        "-k",
        "1,10",
        "--catalog",
        str(served.catalog),
        "--baselines",
        "popularity,random",
        "--output",
        str(output),
        "--plot",
        str(picture),
        "--resamples",
        "200",
    ]
    assert evaluate_main(arguments) == 0
    printed = capsys.readouterr()
    assert "HitRate" in printed.out and "paired bootstrap" in printed.out and "users" in printed.err
    document = json.loads(output.read_text())
    assert [target["name"] for target in document["targets"]] == ["tiny", "rerun", "popularity", "random"]
    assert document["targets"][0]["metrics"]["HitRate@1"] == 1.0 and len(document["targets"][0]["per_user"]) == len(
        users
    )
    assert picture.stat().st_size > 1000
    # An earlier run's per-user results compare with a new one on the same split.
    assert (
        evaluate_main(
            [
                str(log),
                "--target",
                served.server.target,
                "-k",
                "1,10",
                "--baselines",
                "none",
                "--against",
                str(output),
                "--json",
                "--no-progress",
            ]
        )
        == 0
    )
    again = json.loads(capsys.readouterr().out)
    assert {d["target"] for d in again["differences"]} == {
        "tiny (previous)",
        "rerun (previous)",
        "popularity (previous)",
        "random (previous)",
    }
    assert "per_user" not in again["targets"][0]


def test_the_cli_reports_an_unreachable_server(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from embedrec.ports import free_port

    log = write_jsonl(tmp_path / "log.jsonl", [{"user": "u", "item": "a"}, {"user": "u", "item": "b"}])
    assert evaluate_main([str(log), "--target", f"127.0.0.1:{free_port()}", "--timeout", "2", "--no-progress"]) == 1
    assert "embedrec evaluate:" in capsys.readouterr().err


def test_a_target_every_call_of_which_fails_is_an_error_naming_the_first(served: Served, tmp_path: Path) -> None:
    rows, _ = nearest_neighbour_log(served)
    log = write_jsonl(tmp_path / "log.jsonl", rows)
    with pytest.raises(EvaluationError, match="every RecommendBatch call failed; the first: InvalidArgument"):
        evaluate(log, [served.target("bad", where=["no_such_field<3"])], EvaluationConfig(baselines=()))
