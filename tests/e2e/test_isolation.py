"""What each role imports: the server never loads torch or transformers (nor pymilvus on the mmap
store); the client needs only grpcio, protobuf and numpy."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.e2e.server_thread import ServerThread
from tests.support.paths import REPO_ROOT

# pymilvus and Milvus Lite only with --items-store milvus.
HEAVY = ["torch", "transformers", "optimum", "sentence_transformers", "onnx", "pymilvus", "milvus_lite"]

SERVE_AND_REPORT = textwrap.dedent(
    """
    import json, os, signal, socket, sys, threading, time
    from embedrec import cli

    model_dir, items_dir, report = sys.argv[1:4]
    probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()

    def exercise():
        from embedrec.client import EmbedrecClient
        with EmbedrecClient(f"127.0.0.1:{port}", timeout=30) as client:
            for _ in range(300):
                try:
                    if client.health() == "SERVING":
                        break
                except Exception:
                    pass
                time.sleep(0.1)
            client.embed(["hello"]); client.similarity("a", ["b"]); client.recommend(2, texts=["coffee"])
        heavy = sorted(name for name in %(heavy)r if name in sys.modules)
        with open(report, "w") as handle:
            json.dump(heavy, handle)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=exercise, daemon=True).start()
    sys.exit(cli.main(["serve", "--model-dir", model_dir, "--items-dir", items_dir, "--port", str(port),
                       "--provider", "cpu"]))
    """
) % {"heavy": HEAVY}

BLOCK_AND_CALL = textwrap.dedent(
    """
    import sys
    BLOCKED = {"onnxruntime", "tokenizers", "torch", "transformers", "optimum", "grpc_reflection",
               "sentence_transformers", "prometheus_client", "onnx", "embedrec.server", "embedrec.export"}

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if any(name == blocked or name.startswith(blocked + ".") for blocked in BLOCKED):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    from embedrec.client import EmbedrecClient
    with EmbedrecClient(sys.argv[1], timeout=30) as client:
        print(client.info().dim, client.embed(["hello"]).shape, client.health())
    """
)


def test_the_served_process_never_imports_torch_or_transformers(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path
) -> None:
    report = tmp_path / "heavy.json"
    completed = subprocess.run(
        [sys.executable, "-c", SERVE_AND_REPORT, str(tiny_model_dir), str(tiny_items_dir), str(report)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert json.loads(report.read_text()) == []
    assert "stopped" in completed.stderr


def test_the_client_works_without_server_or_export_dependencies(tiny_server: ServerThread) -> None:
    completed = subprocess.run(
        [sys.executable, "-c", BLOCK_AND_CALL, tiny_server.target],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.split() == ["32", "(1,", "32)", "SERVING"]
