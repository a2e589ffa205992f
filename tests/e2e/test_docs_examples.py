"""Examples are tests: every block of README.md and of the docs pages in PAGES runs as a reader
would run it, against real servers on the bundled all-MiniLM-L6-v2 and data/ catalogs, and its
sample output is compared (`tests/support/doc_examples.py`: text exactly, scores within
SCORE_TOLERANCE); a block that cannot run here says why. docs/errors.md's bad-input table is sent
row by row over HTTP (and gRPC where it says so) and each message compared whole.

The page's commands see `make serve`'s server at 127.0.0.1:50051 / :8080 / :9464 (the ports are
rewritten to this test's free ones), run from a scratch directory holding `models/` (the exported
model), `items/demo` and `data/`, with `embedrec` on PATH running this checkout. `embedrec serve`
lines start an in-process server on free ports instead, which later lines reach by the ports the
page gave it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format

from embedrec.client import EmbedrecClient
from embedrec.server.settings import Settings
from embedrec.v1 import embedrec_pb2 as pb
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.support.doc_examples import Block, Command, blocks_of, line_matches, output_mismatch
from tests.support.paths import REPO_ROOT

PAGES = [
    "README.md",
    "docs/quickstart.md",
    "docs/errors.md",
    "docs/contract.md",
    "docs/http-dialects.md",
    "docs/models.md",
    "docs/live-catalogs.md",
    "docs/settings.md",
    "docs/batching.md",
    "docs/operations.md",
    "docs/scaling.md",
    "docs/exact-scan.md",
]
DEFAULT_PORTS = (50051, 8080, 9464)  # make serve's gRPC, HTTP and metrics ports
GRPC_LOG_LINE = re.compile(r"^[IWE]\d{4} ")  # gRPC core's own stderr lines (e.g. a TLS handshake)
SERVE = re.compile(r"^((?:[A-Z_]+=\S+\s+)*)embedrec serve\b(.*?)\s*&?\s*$", re.DOTALL)
PRINTS = re.compile(r"^(\s*)print\((.*)\)\s*#\s*prints:\s*(.*)$")


@pytest.fixture(scope="module")
def demo_server(minilm_dir: Path, demo_items_dir: Path) -> Iterator[ServerThread]:
    """`make serve`'s server: the bundled MiniLM and the demo catalog (category as filter field)."""
    server = start_server(server_settings(minilm_dir, demo_items_dir, intra_op_threads=0))
    yield server
    server.close()


@pytest.fixture()
def scratch(tmp_path: Path, minilm_dir: Path, demo_items_dir: Path) -> Path:
    """A reader's working directory: models/all-MiniLM-L6-v2, items/demo, data/, and `embedrec`
    (this checkout's) first on PATH."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models/all-MiniLM-L6-v2").symlink_to(minilm_dir)
    (tmp_path / "items").mkdir()
    (tmp_path / "items/demo").symlink_to(demo_items_dir)
    (tmp_path / "data").symlink_to(REPO_ROOT / "data")
    (tmp_path / "bin").mkdir()
    wrapper = tmp_path / "bin/embedrec"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m embedrec.cli "$@"\n')
    wrapper.chmod(0o755)
    return tmp_path


class PageRunner:
    """Runs one page's blocks in order in `work`, collecting what differs from the page."""

    def __init__(self, work: Path, demo: ServerThread) -> None:
        self.work = work
        self.demo = demo
        app = demo.app
        real = (app.port, app.http_port, app.metrics_port)
        self.ports = {port: bound for port, bound in zip(DEFAULT_PORTS, real, strict=True) if bound is not None}
        self.env = {
            **os.environ,
            "PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(REPO_ROOT),
            "EMBEDREC_TARGET": demo.target,
            "COLUMNS": "120",
        }
        self.env.pop("EMBEDREC_TOKEN", None)
        self.namespace: dict[str, Any] = {"__expect_print": self._expect_print}
        self.servers: list[ServerThread] = []
        self.failures: list[str] = []
        self._where = ""

    def close(self) -> None:
        for server in self.servers:
            server.close()
        with EmbedrecClient(self.demo.target, timeout=30) as client:  # a page's hides end with it
            hidden = client.hidden_items()
            if hidden:
                client.restore_items(hidden)

    def ported(self, text: str) -> str:
        """`text` with the ports the page names rewritten to the servers' real ones."""

        def real(match: re.Match[str]) -> str:
            port = self.ports.get(int(match.group(1)))
            return str(port) if port is not None else match.group(1)

        return re.sub(r"(?<=:)(\d{4,5})\b", real, text)

    def run(self, block: Block) -> None:
        if block.not_run is not None:
            self._check_not_run(block)
        elif block.language in ("console", "sh"):
            for command in block.commands():
                reason = block.skip_reason(command.text.replace(".venv/bin/embedrec", "embedrec"))
                if reason is None:
                    self._where = f"{block.page}:{command.line}"
                    self._command(command)
                elif not reason:
                    self.failures.append(f"{block.page}:{command.line}: a skip needs a reason")
        elif block.language == "python":
            self._where = block.where
            self._python(block)
        else:
            self.failures.append(f"{block.where}: a ```{block.language} block must run or say <!-- not run: why -->")

    def _check_not_run(self, block: Block) -> None:
        if not block.not_run:
            self.failures.append(f"{block.where}: <!-- not run --> needs a reason")
        if block.language == "python" and re.search(r"^(from|import) ", block.text, re.MULTILINE):
            # A stand-alone snippet must still name only what it imports.
            checked = subprocess.run(
                [sys.executable, "-m", "ruff", "check", "--select", "F821", "--stdin-filename", "example.py", "-"],
                input=block.text,
                capture_output=True,
                text=True,
                check=False,
            )
            if checked.returncode != 0:
                self.failures.append(f"{block.where}: undefined names\n{checked.stdout}")

    def _command(self, command: Command) -> None:
        text = self.ported(command.text).replace(".venv/bin/embedrec", "embedrec")
        exported = re.fullmatch(r"export (\w+)=(\S+)", text.strip())
        if exported:
            self.env[exported.group(1)] = exported.group(2)
            return
        serve = SERVE.match(text.strip())
        if serve:
            self._serve(serve.group(1), serve.group(2))
            return
        completed = subprocess.run(
            ["bash", "-c", text], cwd=self.work, env=self.env, capture_output=True, text=True, timeout=300, check=False
        )
        stderr = [line for line in completed.stderr.splitlines() if not GRPC_LOG_LINE.match(line)]
        printed = completed.stdout.splitlines() + stderr
        if completed.returncode != command.exit_status:
            self.failures.append(
                f"{self._where}: `{command.text}` exited {completed.returncode}, not {command.exit_status}:\n"
                + "\n".join(printed[-20:])
            )
        elif command.output:
            self._compare(printed, command.output)

    def _serve(self, environment: str, flags: str) -> None:
        """`embedrec serve FLAGS &`: the same settings, in process, on free ports."""
        environ = dict(part.split("=", 1) for part in shlex.split(environment))
        settings = Settings.from_args(shlex.split(flags), environ=environ)
        asked = (settings.server.port, settings.http.http_port, settings.observability.metrics_port)
        paths = {
            name: self.work / value
            for name, value in settings.values().items()
            if isinstance(value, Path) and not value.is_absolute()
        }
        ports = {name: 0 for name, port in zip(("port", "http_port", "metrics_port"), asked, strict=True) if port >= 0}
        settings = settings.replace(**ports, **paths)
        server = start_server(settings)
        self.servers.append(server)
        app = server.app
        real = (app.port, app.http_port, app.metrics_port)
        self.ports.update((port, bound) for port, bound in zip(asked, real, strict=True) if bound is not None)

    def _python(self, block: Block) -> None:
        lines = []
        for line in self.ported(block.text).splitlines():
            prints = PRINTS.match(line)
            lines.append(f"{prints[1]}__expect_print({prints[3]!r}, {prints[2]})" if prints else line)
        printed = io.StringIO()
        previous = Path.cwd()
        os.chdir(self.work)
        try:
            with contextlib.redirect_stdout(printed):
                exec(compile("\n".join(lines), block.where, "exec"), self.namespace)  # the page's own example
        except Exception as error:  # noqa: BLE001 - reported with the block it came from
            self.failures.append(f"{block.where}: {type(error).__name__}: {error}")
            return
        finally:
            os.chdir(previous)
        if block.output is not None:
            self._compare(printed.getvalue().splitlines(), block.output)

    def _expect_print(self, expected: str, *values: object) -> None:
        text = " ".join(str(value) for value in values)
        print(text)
        if not line_matches(text, self.ported(expected)):
            self.failures.append(f"{self._where}: printed {text!r}, the page says {expected!r}")

    def _compare(self, printed: list[str], expected: list[str]) -> None:
        mismatch = output_mismatch(printed, [self.ported(line) for line in expected])
        if mismatch is not None:
            self.failures.append(f"{self._where}: {mismatch}")


@pytest.mark.parametrize("page", PAGES)
def test_every_example_of_the_page_runs_as_shown(page: str, demo_server: ServerThread, scratch: Path) -> None:
    runner = PageRunner(scratch, demo_server)
    try:
        for block in blocks_of(REPO_ROOT / page, page):
            runner.run(block)
    finally:
        runner.close()
    assert not runner.failures, "\n\n".join(runner.failures)


def bad_input_rows() -> list[dict[str, str]]:
    """The rows of docs/errors.md's bad-input table (after `<!-- bad-input table -->`)."""
    text = (REPO_ROOT / "docs/errors.md").read_text(encoding="utf-8")
    table = text.split("<!-- bad-input table -->", 1)[1].strip().split("\n\n", 1)[0].splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    rows = []
    for line in table[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        rows.append({name: cell.replace("\\|", "|").strip("`") for name, cell in zip(header, cells, strict=True)})
    return rows


GRPC_METHODS = {
    "/v1/recommend": ("Recommend", pb.RecommendRequest),
    "/v1/recommend-batch": ("RecommendBatch", pb.RecommendBatchRequest),
    "/v1/embed": ("Embed", pb.EmbedRequest),
    "/v1/similarity": ("Similarity", pb.SimilarityRequest),
}


@pytest.mark.parametrize("row", bad_input_rows(), ids=lambda row: f"{row['route']} {row['body']}"[:60])
def test_each_bad_input_of_the_table_gets_the_message_shown(row: dict[str, str], demo_server: ServerThread) -> None:
    method, _, path = row["route"].partition(" ")
    no_content_type = path.endswith("(no content-type)")
    path = path.removesuffix("(no content-type)").strip()
    headers = {} if no_content_type else {"content-type": "application/json"}
    body = row["body"].encode() if row["body"] != "—" else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{demo_server.app.http_port}{path}", data=body, headers=headers, method=method
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    answer = json.loads(refused.value.read())["error"]
    assert (refused.value.code, answer["code"]) == (int(row["HTTP"]), row["code"])
    assert answer["message"] == row["message"]
    if row["gRPC"] == "same":
        name, message_class = GRPC_METHODS[path]
        message = json_format.Parse(row["body"], message_class())
        with grpc.insecure_channel(demo_server.target) as channel:
            call = channel.unary_unary(
                f"/embedrec.v1.EmbedRec/{name}",
                request_serializer=message_class.SerializeToString,
                response_deserializer=lambda data: data,
            )
            with pytest.raises(grpc.RpcError) as failed:
                call(message, timeout=60)
        assert (failed.value.code().name, failed.value.details()) == (row["code"], row["message"])
