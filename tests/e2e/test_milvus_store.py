"""The Milvus item store, on Milvus Lite and on a real Milvus server (`milvus-server`, one for the
session): the same answers as the memory-mapped matrix, the build and live updates end to end
through the client, and what happens when Milvus fails (through a proxy in front of Lite).

(Every Recommend behaviour of tests/e2e/test_live_catalog.py also runs on both stores.)
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedrec.client import (
    ChannelConfig,
    DeadlineExceeded,
    EmbedrecClient,
    FailedPrecondition,
    InvalidArgument,
    NewItem,
    NotFound,
    Unavailable,
)
from embedrec.server.catalog.fields import ConditionSpec
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.profiles import BestScore, ProfilePart
from embedrec.server.catalog.store import ItemStore, Query
from embedrec.server.errors import ConfigurationError
from tests.e2e.conftest import MilvusBackend, milvus_copy, milvus_settings, server_settings
from tests.e2e.server_thread import ServerThread, start_server

WORDS = [
    "energy",
    "saving",
    "air",
    "conditioner",
    "running",
    "shoes",
    "coffee",
    "tea",
    "kitchen",
    "novel",
    "book",
    "phone",
    "screen",
    "fridge",
]
BRANDS = ["acme", "zenith", "orbit", "nova"]


def catalog_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    return [
        {
            "id": f"p{row:04d}",
            "text": " ".join(rng.choice(WORDS, size=4 + row % 5)) + f" {row}",
            "brand": BRANDS[row % len(BRANDS)],
            "tags": [tag for bit, tag in enumerate(["new", "sale", "eco"]) if (row >> bit) & 1],
            "price": None if row % 17 == 3 else float((row * 37) % 200),
        }
        for row in range(count)
    ]


def write_catalog(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def stores(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory, milvus_backend: MilvusBackend
) -> tuple[ItemIndex, MilvusItems]:
    """300 items with fields, as the matrix and as a collection on each Milvus backend."""
    from embedrec.export.items import build_items

    directory = tmp_path_factory.mktemp("both")
    items_dir = directory / "items"
    build_items(
        write_catalog(directory / "catalog.jsonl", catalog_rows(300)),
        tiny_model_dir,
        items_dir,
        filter_field="brand",
        fields=["tags"],
        numeric_fields=["price"],
        progress=False,
    )
    collection = milvus_backend.collection("both")
    uri = milvus_copy(items_dir, directory, collection, milvus_backend)
    return ItemIndex(items_dir), MilvusItems(uri, collection)


@pytest.fixture(scope="module")
def milvus_tiny_server(
    tiny_model_dir: Path,
    tiny_items_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
    milvus_backend: MilvusBackend,
) -> Iterator[ServerThread]:
    """A real server on the test catalog in a collection of each Milvus backend (overrides the
    Lite-only one of conftest for this module)."""
    directory = tmp_path_factory.mktemp("milvus")
    server = start_server(milvus_settings(tiny_model_dir, tiny_items_dir, directory, "tiny", milvus_backend))
    yield server
    server.close()


def search(store: ItemStore, profile: np.ndarray, k: int, **selection: Any) -> list[tuple[str, float]]:
    history_ids = selection.pop("history", [])
    history = store.history(history_ids, field="items", ignore_unknown=False)
    chosen = store.selection(
        history,
        selection.pop("exclude", []),
        selection.pop("filter_values", []),
        field="filter_values",
        conditions=selection.pop("where", []),
    )
    scorer = selection.pop("best_score", None)
    query = Query(profile.astype(np.float32), chosen, selection.pop("min_score", None))
    if scorer is not None:
        query = Query(
            scorer.vector, chosen, query.min_score, scorer.score, liked=scorer.liked, disliked=scorer.disliked
        )
    (found,) = store.search([query], k)
    return [(one.item_id, one.score) for one in found]


SELECTIONS: list[dict[str, Any]] = [
    {},
    {"exclude": ["p0001", "p0002", "no-such-id"], "history": ["p0010", "p0020"]},
    {"filter_values": ["acme", "nova"]},
    {"where": [ConditionSpec("tags", any_of=["sale"]), ConditionSpec("price", gte=50.0, lt=150.0)]},
    {"where": [ConditionSpec("tags", none_of=["new", "eco"]), ConditionSpec("brand", any_of=["orbit"])]},
    {"where": [ConditionSpec("price", gt=190.0)]},
    {"min_score": 0.2},
]


class TestSameAnswersAsTheMatrix:
    @pytest.mark.parametrize("selection", SELECTIONS, ids=lambda s: "+".join(s) or "plain")
    def test_ids_and_scores_equal_the_matrix_for_random_profiles(
        self, stores: tuple[ItemIndex, MilvusItems], selection: dict[str, Any]
    ) -> None:
        matrix, milvus = stores
        rng = np.random.default_rng(7)
        for _ in range(10):
            profile = rng.normal(size=matrix.manifest.dim)
            profile /= np.linalg.norm(profile)
            expected = search(matrix, profile, 15, **dict(selection))
            found = search(milvus, profile, 15, **dict(selection))
            assert [item_id for item_id, _ in found] == [item_id for item_id, _ in expected]
            np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)

    def test_best_score_with_dislikes_is_exact(self, stores: tuple[ItemIndex, MilvusItems]) -> None:
        matrix, milvus = stores
        vectors = matrix.vectors(np.asarray([3, 40, 77, 150, 200]))
        parts = [ProfilePart(vectors[i], weight, "item", i) for i, weight in enumerate([1, 1, 1, -1, -1])]
        for selection in ({}, {"filter_values": ["zenith"]}):
            expected = search(matrix, vectors[0], 12, best_score=BestScore(parts), **dict(selection))
            found = search(milvus, vectors[0], 12, best_score=BestScore(parts), **dict(selection))
            assert [item_id for item_id, _ in found] == [item_id for item_id, _ in expected]
            np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)

    def test_every_eligible_item_comes_back_when_k_exceeds_them(self, stores: tuple[ItemIndex, MilvusItems]) -> None:
        matrix, milvus = stores
        where = [ConditionSpec("price", gt=190.0)]
        profile = matrix.vectors(np.asarray([5]))[0]
        expected = search(matrix, profile, 300, where=where)
        assert 0 < len(expected) < 300
        found = search(milvus, profile, 300, where=where)
        assert [item_id for item_id, _ in found] == [item_id for item_id, _ in expected]

    def test_describe_reports_the_collection(self, stores: tuple[ItemIndex, MilvusItems]) -> None:
        matrix, milvus = stores
        mine, theirs = milvus.describe(), matrix.describe()
        assert (mine.kind, mine.item_count, mine.fields) == ("milvus", 300, theirs.fields)
        assert (mine.model_onnx_sha256, mine.items_sha256, mine.dim) == (
            theirs.model_onnx_sha256,
            theirs.items_sha256,
            theirs.dim,
        )
        assert theirs.engine_version == ""
        assert mine.engine_version == f"milvus {milvus.client.get_server_version()}"

    def test_info_names_the_engine_and_its_version(
        self, milvus_tiny_server: ServerThread, milvus_backend: MilvusBackend
    ) -> None:
        with EmbedrecClient(milvus_tiny_server.target, timeout=30) as client:
            engine = client.info().items_engine
        # Tested with: Milvus Lite 3.2.2 and the Milvus standalone server 2.3.5.
        expected = "milvus v2.3.5" if milvus_backend.kind == "server" else "milvus milvus_lite-3.2.2"
        assert engine.startswith(expected), engine


def export_items(*arguments: str) -> dict[str, Any]:
    from embedrec.cli import main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["export-items", "--no-progress", *arguments]) == 0
    result: dict[str, Any] = json.loads(printed.getvalue())
    return result


class TestBuildAndLiveUpdates:
    def test_build_upsert_delete_and_rebuild_end_to_end_through_the_client(
        self, tiny_model_dir: Path, tmp_path: Path, milvus_backend: MilvusBackend
    ) -> None:
        rows = catalog_rows(60, seed=1)
        catalog = write_catalog(tmp_path / "catalog.jsonl", rows)
        uri, shop = milvus_backend.uri(tmp_path), milvus_backend.collection("shop")
        build = [
            "--catalog", str(catalog), "--model-dir", str(tiny_model_dir), "--output", str(tmp_path / "staging"),
            "--store", "milvus", "--milvus-uri", uri, "--milvus-collection", shop,
            "--field", "tags", "--numeric-field", "price", "--filter-field", "brand",
        ]  # fmt: skip
        first = export_items(*build)
        assert (first["milvus_items"], first["upserted"], first["deleted"]) == (60, 60, 0)
        settings = server_settings(tiny_model_dir, None, items_store="milvus", milvus_uri=uri, milvus_collection=shop)
        server = start_server(settings)
        try:
            with EmbedrecClient(server.target, timeout=30) as client:
                info = client.info()
                assert (info.item_count, info.items_fields) == (
                    60,
                    {"brand": "categorical", "tags": "categorical", "price": "numeric"},
                )
                (novel,) = client.embed(["a quiet novel about the sea"])
                raw = np.random.default_rng(3).normal(size=info.dim)
                result = client.upsert_items(
                    [
                        NewItem("new-1", text="a quiet novel about the sea", fields={"tags": ["new"], "price": 9.5}),
                        {"id": "new-2", "vector": raw.tolist(), "fields": {"brand": "acme"}},
                        NewItem("p0003", text="a fridge for the cat", fields={"brand": "nova"}),
                    ]
                )
                assert (result.inserted, result.updated, result.item_count) == (2, 1, 62)
                top = client.recommend(1, vector=novel)[0]
                assert (top.id, round(top.score, 4)) == ("new-1", 1.0)
                top = client.recommend(1, vector=raw)[0]
                assert (top.id, round(top.score, 4)) == ("new-2", 1.0)
                (fridge,) = client.embed(["a fridge for the cat"])
                assert client.recommend(1, vector=fridge)[0].id == "p0003"
                cheap_new = {item.id for item in client.recommend(60, vector=novel, where=["price<10", "tags=new"])}
                expected = {row["id"] for row in rows if "new" in row["tags"] and (row["price"] or 99) < 10}
                assert cheap_new == expected | {"new-1"}
                assert client.recommend(1, vector=raw, filter_values=["acme"])[0].id == "new-2"

                deleted = client.delete_items(["new-2", "p0005", "nope"])
                assert (deleted.deleted, deleted.unknown_ids, deleted.item_count) == (2, ["nope"], 60)
                assert "new-2" not in [item.id for item in client.recommend(60, vector=raw)]
                with pytest.raises(NotFound, match="p0005"):
                    client.recommend(3, item_ids=["p0005"])

                changed = [dict(row) for row in rows if row["id"] != "p0002"]
                changed[0]["text"] = "an entirely new text for the first item"
                changed.append(
                    {"id": "p9999", "text": "music for the kitchen", "brand": "orbit", "tags": [], "price": 1.0}
                )
                write_catalog(catalog, changed)
                second = export_items(*build)
                # Upserted: p0000 changed, p9999 new, p0003 (changed live) and p0005 (deleted live) back
                # as the catalog has them. Deleted: p0002 left the catalog, new-1 was never in it.
                assert (second["upserted"], second["deleted"], second["milvus_items"]) == (4, 2, 60)
                assert second["unchanged"] == 56

                assert client.reload_items().item_count == 60
                staged = ItemIndex(tmp_path / "staging")
                for probe in ("p0000", "p9999", "p0040"):
                    vector = staged.vectors(staged.rows_of([probe], field="probe"))[0]
                    expected = search(staged, vector, 10)
                    found = client.recommend(10, vector=vector, exclude_history=False)
                    assert [item.id for item in found] == [item_id for item_id, _ in expected]
                    np.testing.assert_allclose([item.score for item in found], [s for _, s in expected], atol=1e-5)
        finally:
            server.close()

    def test_a_collection_of_another_model_is_refused_at_start_and_on_reload(
        self, tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path, milvus_backend: MilvusBackend
    ) -> None:
        settings = milvus_settings(tiny_model_dir, tiny_items_dir, tmp_path, "other", milvus_backend)
        server = start_server(settings)
        try:
            name = settings.milvus.milvus_collection
            other = MilvusItems(settings.milvus.milvus_uri, name)
            other.client.alter_collection_properties(name, properties={"embedrec.model_onnx_sha256": "0" * 64})
            with EmbedrecClient(server.target, timeout=30) as client:
                with pytest.raises(FailedPrecondition, match="built with model"):
                    client.reload_items()
                assert len(client.recommend(3, texts=["running shoes"])) == 3  # the old store keeps serving
            with pytest.raises(ConfigurationError, match="built with model"):
                start_server(settings)
        finally:
            server.close()

    def test_the_mmap_store_refuses_live_updates_naming_the_store(self, client: EmbedrecClient) -> None:
        with pytest.raises(FailedPrecondition, match=r"needs the milvus item store.*mmap"):
            client.upsert_items([NewItem("x", text="a text")])
        with pytest.raises(FailedPrecondition, match=r"needs the milvus item store.*mmap"):
            client.delete_items(["ac-1"])


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([], "items is empty"),
        ([{"id": "a"}], r"items\[0\]: give exactly one of text and vector"),
        ([{"id": " ", "text": "x"}], r"items\[0\]\.id is blank"),
        ([{"id": "a", "vector": [1.0, 2.0]}], r"items\[0\]\.vector"),
        ([{"id": "a", "text": "x"}, {"id": "a", "text": "y"}], "duplicate id 'a'"),
        ([{"id": "a", "text": "x", "fields": {"colour": "red"}}], r"items\[0\]\.fields\['colour'\]: not a categorical"),
        ([{"id": "a", "text": "x", "fields": {"category": 3.0}}], r"items\[0\]\.fields\['category'\]: not a numeric"),
        ([{"id": "a", "text": ""}], r"items\[0\]\.text"),
        ([{"id": str(i), "text": "x"} for i in range(65)], "max_texts_per_request"),
    ],
)
def test_bad_upserts_are_invalid_naming_the_field(
    milvus_tiny_server: ServerThread, items: list[dict[str, Any]], message: str
) -> None:
    with EmbedrecClient(milvus_tiny_server.target, timeout=30) as client, pytest.raises(InvalidArgument, match=message):
        client.upsert_items(items)


def test_the_upsert_and_delete_commands_change_the_served_collection(
    milvus_tiny_server: ServerThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from embedrec.cli import main

    items = tmp_path / "items.jsonl"
    rows = [
        {"id": "cli-1", "text": "a red kettle for the kitchen", "fields": {"category": "appliances"}},
        {"id": "ac-1", "text": "energy saving air conditioner for the home"},
    ]
    items.write_text("".join(json.dumps(row) + "\n" for row in rows))
    target = ["--target", milvus_tiny_server.target]
    assert main(["upsert", *target, "--file", str(items)]) == 0
    assert "1 inserted, 1 replaced; 13 items now" in capsys.readouterr().out
    with EmbedrecClient(milvus_tiny_server.target, timeout=30) as client:
        (kettle,) = client.embed(["a red kettle for the kitchen"])
        assert client.recommend(1, vector=kettle, filter_values=["appliances"])[0].id == "cli-1"
    assert main(["delete", *target, "cli-1", "no-such-id"]) == 0
    assert "1 deleted; 12 items now; unknown ids: no-such-id" in capsys.readouterr().out


async def test_the_async_client_upserts_and_deletes(milvus_tiny_server: ServerThread) -> None:
    from embedrec.client import AsyncEmbedrecClient

    async with AsyncEmbedrecClient(milvus_tiny_server.target, timeout=30) as client:
        vector = np.random.default_rng(5).normal(size=32).tolist()
        assert (await client.upsert_items([NewItem("async-1", vector=vector)])).inserted == 1
        assert (await client.recommend(1, vector=vector))[0].id == "async-1"
        assert (await client.delete_items(["async-1"])).deleted == 1


def test_a_field_value_with_neither_values_nor_number_is_no_value(milvus_tiny_server: ServerThread) -> None:
    import grpc

    from embedrec.v1 import embedrec_pb2 as pb
    from embedrec.v1 import embedrec_pb2_grpc as pb_grpc

    request = pb.UpsertItemsRequest()
    item = request.items.add(id="bare-1", text="a plain item")
    item.fields["category"].SetInParent()  # a third-party client's empty ItemFieldValue
    with grpc.insecure_channel(milvus_tiny_server.target) as channel:
        answer = pb_grpc.EmbedRecAdminStub(channel).UpsertItems(request, timeout=30)
        assert (answer.inserted, answer.updated) == (1, 0)
        pb_grpc.EmbedRecAdminStub(channel).DeleteItems(pb.DeleteItemsRequest(ids=["bare-1"]), timeout=30)


def test_an_empty_delete_is_invalid(milvus_tiny_server: ServerThread) -> None:
    with (
        EmbedrecClient(milvus_tiny_server.target, timeout=30) as client,
        pytest.raises(InvalidArgument, match="ids is empty"),
    ):
        client.delete_items([])


class TcpProxy:
    """A TCP forwarder to `target_port` that can hold the bytes (a Milvus that stopped
    answering) or drop every connection and refuse new ones (a Milvus that went away)."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.paused = threading.Event()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                return
            self._sockets += [downstream, upstream]
            for source, sink in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while self.paused.is_set():
                    time.sleep(0.01)
                sink.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # wakes the thread blocked in accept (close alone does not)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for one in self._sockets:
            with contextlib.suppress(OSError):
                one.shutdown(socket.SHUT_RDWR)
            one.close()


def lite_port(uri: str) -> int:
    from milvus_lite.server_manager import server_manager_instance

    served = server_manager_instance.start_and_get_uri(uri)
    assert served is not None
    return int(served.rsplit(":", 1)[1])


def milvus_port(backend: MilvusBackend, uri: str) -> int:
    """The port the Milvus of `uri` listens on (Lite: its embedded server's)."""
    return int(uri.rsplit(":", 1)[1]) if backend.kind == "server" else lite_port(uri)


@pytest.fixture()
def proxied(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path, milvus_backend: MilvusBackend
) -> Iterator[tuple[ServerThread, TcpProxy]]:
    """A server whose Milvus is reached through a TcpProxy (Milvus calls bounded by 2 s)."""
    collection = milvus_backend.collection("proxied")
    uri = milvus_copy(tiny_items_dir, tmp_path, collection, milvus_backend)
    proxy = TcpProxy(milvus_port(milvus_backend, uri))
    settings = server_settings(
        tiny_model_dir,
        None,
        items_store="milvus",
        milvus_uri=f"http://127.0.0.1:{proxy.port}",
        milvus_collection=collection,
        milvus_timeout_s=2.0,
    )
    server = start_server(settings)
    yield server, proxy
    proxy.paused.clear()
    server.close()
    proxy.close()


class TestFailures:
    def test_unreachable_at_start_stays_not_serving_then_serves_once_milvus_answers(
        self, tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path, milvus_backend: MilvusBackend
    ) -> None:
        later = milvus_backend.collection("later")
        uri = milvus_copy(tiny_items_dir, tmp_path, later, milvus_backend)
        with socket.create_server(("127.0.0.1", 0)) as reserved:
            port = reserved.getsockname()[1]  # closed again: nothing listens there yet
        settings = server_settings(
            tiny_model_dir, None, items_store="milvus", milvus_uri=f"http://127.0.0.1:{port}", milvus_collection=later
        )
        server = ServerThread(settings).start()
        loading = server.run_later(server.app.load())
        proxy = None
        try:
            # Without client-side health checking, to see the server's own answer while waiting.
            with EmbedrecClient(server.target, timeout=30, channel=ChannelConfig(health_check=False)) as client:
                for _ in range(3):
                    time.sleep(0.5)
                    assert client.health() == "NOT_SERVING"
                with pytest.raises(Unavailable, match="starting"):
                    client.embed(["hello"])
                proxy = TcpProxy(milvus_port(milvus_backend, uri), port)
                loading.result(60)
                assert client.health() == "SERVING"
                assert len(client.recommend(2, texts=["running shoes"])) == 2
        finally:
            server.close()
            if proxy is not None:
                proxy.close()

    def test_milvus_gone_later_answers_unavailable_for_recommend_while_embed_works(
        self, proxied: tuple[ServerThread, TcpProxy]
    ) -> None:
        server, proxy = proxied
        with EmbedrecClient(server.target, timeout=30) as client:
            assert len(client.recommend(2, texts=["running shoes"])) == 2
            proxy.close()
            with pytest.raises(Unavailable, match="item store unavailable"):
                client.recommend(2, texts=["running shoes"])
            with pytest.raises(Unavailable, match="item store unavailable"):
                client.recommend_batch([{"k": 2, "texts": ["coffee"]}])
            assert client.embed(["still embedding"]).shape[0] == 1
            assert client.health() == "SERVING"

    def test_milvus_back_after_an_outage_serves_again_without_a_restart(
        self, proxied: tuple[ServerThread, TcpProxy]
    ) -> None:
        server, proxy = proxied
        with EmbedrecClient(server.target, timeout=30) as client:
            (query,) = client.embed(["running shoes"])
            before = client.recommend(3, vector=query)
            port = proxy.port
            proxy.close()  # Milvus gone: every connection dropped, nothing listens
            with pytest.raises(Unavailable, match="item store unavailable"):
                client.recommend(3, vector=query)
            assert client.health() == "SERVING"  # Embed still works: the replica stays in rotation
            back = TcpProxy(proxy.target_port, port)  # Milvus listening again on the same address
            try:
                give_up, answer = time.monotonic() + 10.0, None
                while answer is None and time.monotonic() < give_up:
                    with contextlib.suppress(Unavailable):
                        answer = client.recommend(3, vector=query, timeout=2.0)
                    time.sleep(0.2)
                assert answer == before, "not serving again within 10 s of Milvus listening again"
            finally:
                back.close()

    def test_a_milvus_that_stops_answering_is_reported_down_by_the_probe(
        self, proxied: tuple[ServerThread, TcpProxy]
    ) -> None:
        server, proxy = proxied
        items = server.app.state.service.items  # type: ignore[union-attr]
        assert isinstance(items, MilvusItems)
        proxy.paused.set()
        assert not items.probe(0.5)
        state = items.health.state()
        assert not state.up and "no answer within 0.5 s" in state.error
        proxy.paused.clear()
        assert items.probe(10.0)
        assert items.health.state().up

    def test_a_milvus_that_stops_answering_is_bounded_by_the_call_deadline(
        self, proxied: tuple[ServerThread, TcpProxy]
    ) -> None:
        server, proxy = proxied
        with EmbedrecClient(server.target, timeout=30) as client:
            proxy.paused.set()
            with pytest.raises(DeadlineExceeded):
                client.recommend(2, vector=client.embed(["coffee"])[0], timeout=1.0)
            assert client.embed(["still embedding"], timeout=5.0).shape[0] == 1
