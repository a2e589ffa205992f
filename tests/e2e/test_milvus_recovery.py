"""A real Milvus server restarted (stopped, started again on its data) while embedrec serves
Recommend and Embed under load: Recommend answers UNAVAILABLE while Milvus is down and serves
again on its own once Milvus is back, without an embedrec restart; Embed never stops; health
(service "embedrec.items"), Info and the metrics tell the operator what is going on. And a
reload closes the old Milvus client once its calls are done.

(The failures a proxy can fake, for Lite and the server alike, are in test_milvus_store.py.)
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient, EmbedrecClientError, Unavailable
from embedrec.export.milvus_sync import sync_to_milvus
from embedrec.server.catalog.milvus.store import MilvusItems
from tests.e2e.conftest import server_settings
from tests.e2e.milvus_process import MilvusServerProcess
from tests.e2e.server_thread import ServerThread, start_server

COLLECTION = "restarted"


@pytest.fixture(scope="module")
def milvus(milvus_server: MilvusServerProcess, tiny_items_dir: Path) -> MilvusServerProcess:
    """The session's Milvus server holding the test catalog. (One Milvus standalone per machine at a
    time: its embedded etcd listens on 2379 whatever its flags say. After this module restarts it,
    it serves the same collections on the same port to the modules that follow.)"""
    sync_to_milvus(tiny_items_dir, milvus_server.uri, COLLECTION, progress=False)
    return milvus_server


@pytest.fixture(scope="module")
def served(milvus: MilvusServerProcess, tiny_model_dir: Path) -> Iterator[ServerThread]:
    settings = server_settings(
        tiny_model_dir,
        None,
        items_store="milvus",
        milvus_uri=milvus.uri,
        milvus_collection=COLLECTION,
        milvus_timeout_s=2.0,
        milvus_probe_s=0.5,
    )
    server = start_server(settings)
    yield server
    server.close()


def metric(server: ServerThread, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.app.metrics_port}/metrics", timeout=5).read().decode()
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0])


def wait_for(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until `condition` held; AssertionError past `timeout_s`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.1)
    return time.monotonic() - started


class Load:
    """Recommend and Embed in a loop from two threads, every answer's status counted."""

    def __init__(self, target: str, vector: np.ndarray) -> None:
        self.codes: dict[str, Counter[str]] = {"recommend": Counter(), "embed": Counter()}
        self.last_ok = {"recommend": 0.0, "embed": 0.0}
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(target, "recommend", vector)),
            threading.Thread(target=self._run, args=(target, "embed", vector)),
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, target: str, rpc: str, vector: np.ndarray) -> None:
        with EmbedrecClient(target, timeout=5) as client:
            while not self._stop.is_set():
                try:
                    if rpc == "recommend":
                        client.recommend(3, vector=vector, timeout=3.0)
                    else:
                        client.embed(["still embedding"], timeout=3.0)
                    self.codes[rpc]["OK"] += 1
                    self.last_ok[rpc] = time.monotonic()
                except EmbedrecClientError as error:
                    self.codes[rpc][type(error).__name__] += 1
                time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_recommend_recovers_on_its_own_after_a_milvus_restart_under_load(
    milvus: MilvusServerProcess, served: ServerThread
) -> None:
    with EmbedrecClient(served.target, timeout=30) as client:
        (vector,) = client.embed(["running shoes"])
        before = client.recommend(3, vector=vector)
        assert client.health("embedrec.items") == "SERVING"
        assert metric(served, "embedrec_items_store_up") == 1.0
        assert client.info().items_store_error == ""
        load = Load(served.target, vector)
        try:
            time.sleep(1.0)
            milvus.stop()
            stopped = time.monotonic()
            with pytest.raises(Unavailable, match="item store unavailable"):
                client.recommend(3, vector=vector, timeout=5.0)
            wait_for(lambda: client.health("embedrec.items") == "NOT_SERVING", 10.0)
            assert client.health() == "SERVING"  # Embed works: the replica stays in rotation
            assert metric(served, "embedrec_items_store_up") == 0.0
            assert metric(served, "embedrec_items_store_failures_total") >= 1
            assert client.info().items_store_error.startswith("unavailable for ")

            milvus.start()  # the same data directory and ports
            listening = time.monotonic()
            recovered_s = wait_for(lambda: load.last_ok["recommend"] > listening, 10.0)
            wait_for(lambda: client.health("embedrec.items") == "SERVING", 5.0)
            assert client.recommend(3, vector=vector) == before
            assert metric(served, "embedrec_items_store_up") == 1.0
            assert client.info().items_store_error == ""
            assert load.last_ok["embed"] > stopped + 1.0  # Embed answered while Milvus was down
        finally:
            load.stop()
        print(f"Recommend served again {recovered_s:.1f} s after Milvus listened again; answers: {load.codes}")
        assert set(load.codes["recommend"]) <= {"OK", "Unavailable", "DeadlineExceeded"}
        assert load.codes["recommend"]["Unavailable"] >= 1
        assert set(load.codes["embed"]) == {"OK"}


def test_a_reload_closes_the_old_milvus_client_once_its_calls_are_done(served: ServerThread) -> None:
    old = served.app.state.service.items  # type: ignore[union-attr]
    assert isinstance(old, MilvusItems)
    with EmbedrecClient(served.target, timeout=30) as client:
        (vector,) = client.embed(["coffee"])
        before = client.recommend(3, vector=vector)
        assert client.reload_items().changed
        wait_for(lambda: not old.probe(2.0), 10.0)  # its client closed: it no longer reaches Milvus
        assert served.app.state.service.items.probe(2.0)  # type: ignore[union-attr]
        assert client.recommend(3, vector=vector) == before  # the new store's connection is open
