"""The `embedrec` command against a real server: readable output, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.server_thread import ServerThread

REPO_ROOT = Path(__file__).resolve().parent.parent


def embedrec(*arguments: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "embedrec.cli", *arguments],
        cwd=REPO_ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_help_lists_every_subcommand() -> None:
    completed = embedrec("--help")
    assert completed.returncode == 0
    names = ("serve", "export-model", "export-items", "embed", "similarity", "recommend", "info", "health")
    for name in (*names, "reload-items"):
        assert name in completed.stdout


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
    assert all("(mostly item ac-1:" in line or "(mostly text #1:" in line for line in lines)


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
