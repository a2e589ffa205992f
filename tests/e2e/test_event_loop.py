"""The event loop never computes: a search or a tokenisation held in its thread delays no other
call, and searches that arrive while one runs share the next pass over the matrix. Timing is
controlled by events (a held thread), never by wall-clock thresholds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from embedrec.client import EmbedrecClient
from embedrec.server.batching.offload import INLINE_TOKENIZE_MAX_CHARS
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server


class Held:
    """Wraps a blocking function: each call signals `entered`, then waits for `release`."""

    def __init__(self, function: Callable[..., Any], only_if: Callable[..., bool] = lambda *a, **k: True) -> None:
        self.function, self.only_if = function, only_if
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.only_if(*args, **kwargs):
            self.calls += 1
            self.entered.release()
            assert self.release.wait(30), "the test never released the held call"
        return self.function(*args, **kwargs)


@pytest.fixture()
def server(tiny_model_dir: Path, tiny_items_dir: Path) -> Iterator[ServerThread]:
    running = start_server(server_settings(tiny_model_dir, tiny_items_dir))
    yield running
    running.close()


def call_in_background(function: Callable[[], Any]) -> tuple[Future[Any], ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(8)
    return pool.submit(function), pool


def test_info_answers_while_a_search_is_running(server: ServerThread) -> None:
    search_batcher = server.app.state.service.search_batcher  # type: ignore[union-attr]
    held = Held(search_batcher._infers[0])
    search_batcher._infers[0] = held
    with EmbedrecClient(server.target, timeout=30) as client:
        recommending, pool = call_in_background(lambda: client.recommend(3, texts=["coffee"]))
        assert held.entered.acquire(timeout=30)
        # The search is still running (held in its thread): Info is answered all the same.
        assert client.info().item_count == 12
        assert client.health() == "SERVING"
        assert not recommending.done()
        held.release.set()
        assert len(recommending.result(30)) == 3
        pool.shutdown()


def test_concurrent_searches_share_one_pass_even_on_a_tiny_catalog(server: ServerThread) -> None:
    search_batcher = server.app.state.service.search_batcher  # type: ignore[union-attr]
    held = Held(search_batcher._infers[0])
    search_batcher._infers[0] = held
    before = (search_batcher.stats.batches, search_batcher.stats.items_run)
    with EmbedrecClient(server.target, timeout=30) as client:
        first, pool = call_in_background(lambda: client.recommend(2, texts=["coffee"]))
        assert held.entered.acquire(timeout=30)
        others = [
            pool.submit(client.recommend, 2, item_ids=[item]) for item in ("ac-1", "shoes-1", "book-1", "phone-1")
        ]
        while search_batcher.queued_items < 4:  # all four wait behind the running pass
            threading.Event().wait(0.01)
        held.release.set()
        assert len(first.result(30)) == 2
        assert all(len(other.result(30)) == 2 for other in others)
        pool.shutdown()
    batches, items_run = search_batcher.stats.batches - before[0], search_batcher.stats.items_run - before[1]
    assert (batches, items_run) == (2, 5), "the four waiting searches should have shared one pass"


def test_tokenising_a_long_request_happens_off_the_event_loop(server: ServerThread) -> None:
    encoder = server.app.state.service.models.encoder  # type: ignore[union-attr]
    long_text = "a long text about air conditioners " * 10
    assert len(long_text) > INLINE_TOKENIZE_MAX_CHARS
    held = Held(encoder.tokenize, only_if=lambda texts, **_: texts[0] == long_text)
    encoder.tokenize = held
    with EmbedrecClient(server.target, timeout=30) as client:
        embedding, pool = call_in_background(lambda: client.embed([long_text]))
        assert held.entered.acquire(timeout=30)
        assert client.info().dim == 32  # answered while the long text is being tokenised
        assert client.embed(["short"]).shape == (1, 32)  # short texts are tokenised inline
        held.release.set()
        assert embedding.result(30).shape == (1, 32)
        pool.shutdown()
    assert held.calls == 1
