"""A real embedrec server on a free port, run on its own event loop in a background thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from embedrec.server.app import EmbedrecApp
from embedrec.server.settings import Settings

T = TypeVar("T")


class ServerThread:
    """Owns an event loop thread; `run` executes coroutines there and returns their result."""

    def __init__(self, settings: Settings) -> None:
        self.app = EmbedrecApp(settings)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="embedrec-test-server", daemon=True)
        self._thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.app.port}"

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float = 120.0) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def run_later(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Start `coroutine` on the server's loop; its future, not waited for."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def start(self) -> ServerThread:
        """Bind the port (health NOT_SERVING)."""
        self.run(self.app.start())
        return self

    def load(self) -> ServerThread:
        """Load the model and items; health SERVING."""
        self.run(self.app.load())
        return self

    def close(self) -> None:
        """Stop the server and the loop."""
        try:
            self.run(self.app.stop(grace=1.0))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()


def serve_command(model_dir: Path, *flags: str) -> list[str]:
    """The command line of `embedrec serve` on `model_dir` with `flags`, for a server process."""
    return [sys.executable, "-m", "embedrec.cli", "serve", "--model-dir", str(model_dir), *flags]


def start_server(settings: Settings) -> ServerThread:
    """A started and loaded ServerThread (port 0 in settings picks a free port)."""
    server = ServerThread(settings).start()
    try:
        return server.load()
    except BaseException:
        server.close()
        raise
