"""The e2e layer's fixtures: a tiny BERT exported through export/ (torch, optimum), its item
matrix, real servers, Milvus (Lite and a real server), the bundled MiniLM."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# torch first, before pymilvus and Milvus Lite load: imported after them (as the tiny BERT's build
# would), the real Milvus server's calls all fail with an empty MilvusException (measured). The
# single layer imported it at start-up through the TracerWarning filter; the unit layer never does.
import torch  # noqa: F401  # isort: skip
from embedrec.client import EmbedrecClient
from embedrec.server.settings import Settings
from tests.e2e.milvus_process import MilvusServerProcess, milvus_server_executable
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.tiny_models import build_tiny_bert, build_tiny_cross_encoder
from tests.support.paths import REPO_ROOT

# Emitted by torch while optimum traces a model for export; not our code. Added here, to e2e
# items only, rather than in pyproject.toml's filterwarnings: pytest resolves a warning class by
# importing its module, and the unit layer runs without torch.
TRACER_WARNING = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in item.path.resolve().parents:
            item.add_marker(TRACER_WARNING)


CATALOG_ROWS = [
    {"id": "ac-1", "text": "energy saving air conditioner for the home", "category": "appliances"},
    {"id": "ac-2", "text": "quiet air conditioner for a small room", "category": "appliances"},
    {"id": "ac-zh", "text": "这是一款高效节能的空调，适合家庭使用。", "category": "appliances"},
    {"id": "shoes-1", "text": "running shoes, light and fast", "category": "shoes"},
    {"id": "shoes-2", "text": "red running shoes for the family", "category": "shoes"},
    {"id": "coffee-1", "text": "coffee and tea for the kitchen", "category": "food"},
    {"id": "coffee-zh", "text": "我喜欢喝咖啡", "category": "food"},
    {"id": "book-1", "text": "a new novel, a good book", "category": "media"},
    {"id": "phone-1", "text": "phone with a large screen", "category": "electronics"},
    {"id": "laptop-1", "text": "small laptop, fast and light", "category": "electronics"},
    {"id": "fridge-1", "text": "large fridge for the family kitchen", "category": "appliances"},
    {"id": "music-1", "text": "music and game for the cat and dog", "category": "media"},
]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BERT with its own WordPiece vocab (some CJK), saved like a hub model."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny BERT exported to ONNX by export/ (validated against PyTorch)."""
    from embedrec.export.onnx_model import export_model

    output = tmp_path_factory.mktemp("exports") / "tiny"
    export_model(str(tiny_bert_dir), output)
    return output


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random cross-encoder (BertForSequenceClassification, one label) in transformers' format."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="session")
def tiny_reranker_dir(tiny_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cross-encoder exported by export/ with --task rerank (validated against PyTorch)."""
    from embedrec.export.onnx_model import export_model

    output = tmp_path_factory.mktemp("exports") / "reranker"
    export_model(str(tiny_cross_encoder), output, task="rerank")
    return output


@pytest.fixture(scope="session")
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("catalog") / "catalog.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in CATALOG_ROWS), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_items_dir(tiny_model_dir: Path, catalog_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test catalog embedded by the tiny model, with its category as the filter field."""
    from embedrec.export.items import build_items

    output = tmp_path_factory.mktemp("items") / "tiny"
    build_items(catalog_path, tiny_model_dir, output, filter_field="category", progress=False)
    return output


def server_settings(model_dir: Path, items_dir: Path | None, **overrides: object) -> Settings:
    """Settings for a test server on a free loopback port."""
    values: dict[str, object] = {
        "model_dir": model_dir,
        "items_dir": items_dir,
        "port": 0,
        "provider": "cpu",
        "intra_op_threads": 1,
        "drain_seconds": 1.0,
        "metrics_port": 0,
        "http_port": 0,
    }
    values.update(overrides)
    return Settings.of(**values)


# The Milvus item store runs on Milvus Lite (embedded) and on a real Milvus server (`milvus-server`
# from the `milvus` package, in the dev extra): the standalone Milvus with its C++ engine.
MILVUS_BACKENDS = ("lite", "server")
_collection_numbers = itertools.count()


@dataclass(frozen=True)
class MilvusBackend:
    """Where a test's collections live: a Milvus Lite file in the test's directory, or the
    session's Milvus server (each collection named uniquely there: the server is shared)."""

    kind: str
    server_uri: str = ""

    def uri(self, directory: Path) -> str:
        """The URI of this backend for a test working in `directory`."""
        return self.server_uri if self.kind == "server" else str(directory / "milvus.db")

    def collection(self, name: str) -> str:
        """A collection name for `name`, unique on a shared server."""
        return f"{name}_{next(_collection_numbers)}" if self.kind == "server" else name


LITE = MilvusBackend("lite")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusServerProcess]:
    """A real Milvus server (standalone, `milvus-server`) on free ports in a fresh directory, for
    the session; skipped when the `milvus` package is not installed."""
    if milvus_server_executable() is None:
        pytest.skip("milvus-server not installed (pip install milvus==2.3.5; the dev extra has it)")
    server = MilvusServerProcess(tmp_path_factory.mktemp("milvus-server"))
    try:
        server.start()
        yield server
    finally:
        server.kill()  # a fresh directory each session: nothing to keep


@pytest.fixture(scope="session")
def milvus_server_uri(milvus_server: MilvusServerProcess) -> str:
    """The session's Milvus server's URI."""
    return milvus_server.uri


@pytest.fixture(scope="module", params=MILVUS_BACKENDS)
def milvus_backend(request: pytest.FixtureRequest) -> MilvusBackend:
    """Each Milvus backend in turn: a module using it runs on both."""
    if request.param == "server":
        return MilvusBackend("server", request.getfixturevalue("milvus_server_uri"))
    return LITE


def milvus_copy(items_dir: Path, directory: Path, collection: str, backend: MilvusBackend = LITE) -> str:
    """Sync the build in `items_dir` into `collection` on `backend` (a Milvus Lite file in
    `directory`, or the session's server): what export-items --store milvus does; returns the URI."""
    from embedrec.export.milvus_sync import sync_to_milvus

    uri = backend.uri(directory)
    sync_to_milvus(items_dir, uri, collection, progress=False)
    return uri


def milvus_settings(
    model_dir: Path,
    items_dir: Path,
    directory: Path,
    collection: str,
    backend: MilvusBackend = LITE,
    **overrides: object,
) -> Settings:
    """Settings for a test server on the items of `items_dir` copied into `collection` on
    `backend` (named uniquely there)."""
    name = backend.collection(collection)
    uri = milvus_copy(items_dir, directory, name, backend)
    return server_settings(model_dir, None, items_store="milvus", milvus_uri=uri, milvus_collection=name, **overrides)


@pytest.fixture(scope="module")
def milvus_tiny_server(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """A real server on the test catalog copied into Milvus Lite: one per test module (its own
    collection, so a module may change it)."""
    server = start_server(milvus_settings(tiny_model_dir, tiny_items_dir, tmp_path_factory.mktemp("milvus"), "tiny"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def minilm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled all-MiniLM-L6-v2 exported once per session (~10-20 s), as `make serve` does."""
    from embedrec.export.onnx_model import export_model

    output = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    export_model(output_dir=output)
    return output


@pytest.fixture(scope="session")
def demo_items_dir(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/demo_catalog.jsonl embedded by the bundled MiniLM, its category the filter field (as
    `make serve` builds it)."""
    from embedrec.export.items import build_items

    output = tmp_path_factory.mktemp("demo-items") / "demo"
    catalog = REPO_ROOT / "data/demo_catalog.jsonl"
    build_items(catalog, minilm_dir, output, filter_field="category", progress=False)
    return output


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[ServerThread]:
    """A real server (SERVING) on the tiny export and its items."""
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir))
    yield server
    server.close()


@pytest.fixture()
def client(tiny_server: ServerThread) -> Iterator[EmbedrecClient]:
    """The real synchronous client connected to `tiny_server`."""
    with EmbedrecClient(tiny_server.target, timeout=30) as connected:
        yield connected
