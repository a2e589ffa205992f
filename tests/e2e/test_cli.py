"""The `embedrec` command against a real server: readable output, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.e2e.server_thread import ServerThread
from tests.support.paths import REPO_ROOT


def embedrec(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedrec.cli", *arguments],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_recommend_prints_a_ranked_list_and_json(tiny_server: ServerThread) -> None:
    readable = embedrec("recommend", "--target", tiny_server.target, "--text", "我喜欢喝咖啡", "-k", "3")
    assert readable.returncode == 0, readable.stderr
    assert readable.stdout.splitlines()[0].split()[-1] == "coffee-zh"
    as_json = json.loads(embedrec("recommend", "--target", tiny_server.target, "--item", "ac-1", "--json").stdout)
    assert len(as_json) == 10
    assert "ac-1" not in {item["id"] for item in as_json}
    assert as_json[0]["score"] >= as_json[-1]["score"]


def test_recommend_filters_by_category_and_explains_each_result(tiny_server: ServerThread) -> None:
    arguments = ["--target", tiny_server.target, "--item", "ac-1", "--text", "coffee", "--filter", "food"]
    readable = embedrec("recommend", *arguments, "--filter", "shoes", "--explain", "-k", "4")
    assert readable.returncode == 0, readable.stderr
    lines = readable.stdout.splitlines()
    assert {line.split()[2] for line in lines} == {"coffee-1", "coffee-zh", "shoes-1", "shoes-2"}
    assert all("(mostly item #0 ac-1:" in line or "(mostly text #0 'coffee':" in line for line in lines)


def test_explanations_count_parts_from_0_as_the_reply_does(tiny_server: ServerThread) -> None:
    arguments = ["--target", tiny_server.target, "--text", "coffee", "--text", "running shoes", "--explain", "-k", "6"]
    readable = embedrec("recommend", *arguments).stdout.splitlines()
    replied = json.loads(embedrec("recommend", *arguments, "--json").stdout)
    texts = ["coffee", "running shoes"]
    for line, item in zip(readable, replied, strict=True):
        index = item["contribution"]["index"]
        assert item["contribution"]["item_id"] is None  # only a history item's part has an id
        assert f"(mostly text #{index} {texts[index]!r}:" in line, line


def test_a_filter_value_no_item_has_is_warned_and_the_empty_answer_says_none(tiny_server: ServerThread) -> None:
    completed = embedrec("recommend", "--target", tiny_server.target, "--text", "coffee", "--filter", "Food")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == "(none)\n"
    assert "warning: filter_values: no item has 'Food' in 'category'" in completed.stderr
    assert "did you mean 'food'?" in completed.stderr
    where = embedrec("recommend", "--target", tiny_server.target, "--text", "x", "--where", "category=toys|food")
    assert "warning: where[0].any_of: no item has 'toys'" in where.stderr and "(none)" not in where.stdout


def test_hidden_prints_none_when_empty_and_hide_of_an_unknown_id_fails(tiny_server: ServerThread) -> None:
    target = ["--target", tiny_server.target]
    assert embedrec("hidden", *target).stdout == "(none)\n"
    unknown = embedrec("hide", *target, "ac-2", "no-such-id")
    assert unknown.returncode == 1
    assert "1 hidden; 1 hidden now; unknown ids: no-such-id" in unknown.stdout
    assert "--ignore-unknown" in unknown.stderr
    assert embedrec("hidden", *target).stdout == "ac-2\n"
    assert embedrec("restore", *target, "ac-2", "no-such-id", "--ignore-unknown").returncode == 0
    assert embedrec("hidden", *target).stdout == "(none)\n"
    assert "--ignore-unknown" in embedrec("hide", "--help").stdout


def test_info_prints_each_field_once(tiny_server: ServerThread) -> None:
    names = [line.split()[0] for line in embedrec("info", "--target", tiny_server.target).stdout.splitlines()]
    assert len(names) == len(set(names)) and "max_length" in names and "max_k" in names


def test_reload_items_reports_an_unchanged_matrix(tiny_server: ServerThread) -> None:
    completed = embedrec("reload-items", "--target", tiny_server.target)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("unchanged: 12 items, sha256 ")


def test_embed_reads_texts_from_stdin(tiny_server: ServerThread) -> None:
    completed = embedrec("embed", "--target", tiny_server.target, "--file", "-", "--json", stdin="hello\n\nworld\n")
    vectors = json.loads(completed.stdout)
    assert [len(vector) for vector in vectors] == [32, 32]


def test_info_and_health(tiny_server: ServerThread) -> None:
    info = json.loads(embedrec("info", "--target", tiny_server.target, "--json").stdout)
    assert info["dim"] == 32 and info["item_count"] == 12
    assert embedrec("health", "--target", tiny_server.target).stdout.strip() == "SERVING"


def test_a_failed_call_prints_the_status_and_exits_non_zero(tiny_server: ServerThread) -> None:
    completed = embedrec("recommend", "--target", tiny_server.target, "--item", "missing-item")
    assert completed.returncode == 1
    assert "NOT_FOUND" in completed.stderr and "missing-item" in completed.stderr
