"""`embedrec serve`: settings from the command line, then one server process (or a supervisor
of several) until SIGTERM or SIGINT; SIGHUP reloads tokens and items. Exit status 2 when the
server cannot start (a port taken, unusable artefacts), with one line saying why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import signal
import sys
from collections.abc import Sequence

from embedrec.server.app import EmbedrecApp
from embedrec.server.errors import ConfigurationError
from embedrec.server.observability import tracing
from embedrec.server.observability.logs import configure_logging
from embedrec.server.settings import Settings

logger = logging.getLogger(__name__)


def raise_descriptor_limit() -> None:
    """Raise this process's open-file limit to its hard limit: every connection costs a
    descriptor, and the soft limit (often 1,024) would be reached long before the HTTP
    connection cap or gRPC's own limits apply."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as error:  # e.g. an unlimited hard limit some kernels refuse
        logger.warning("open-file limit left as it is: %s", error)


async def serve(settings: Settings) -> int:
    """Run until SIGTERM or SIGINT, then drain; return the process exit code."""
    sys.setswitchinterval(settings.server.gil_switch_interval_ms / 1000.0)
    try:
        logger.info("tracing %s", tracing.configure(os.environ))
    except ConfigurationError as error:
        logger.error("cannot start: %s", error)
        return 2
    app = EmbedrecApp(settings)
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop_requested.set)
    reloads: set[asyncio.Task[None]] = set()
    reload_waiting = asyncio.Event()

    def reload_on_sighup() -> None:
        if app.state.service is None:
            # Still loading: the items may already have been opened from before the change the
            # signal announces. Reload once loaded, rather than lose the request.
            reload_waiting.set()
            return
        task = loop.create_task(app.operations.reload_on_signal())
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, reload_on_sighup)
    raise_descriptor_limit()
    try:
        await app.start()
    except ConfigurationError as error:
        logger.error("cannot start: %s", error)
        return 2
    # Loading may wait (e.g. for Milvus to answer): a stop request meanwhile ends it.
    loading = asyncio.create_task(app.load())
    stopping = asyncio.create_task(stop_requested.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
        logger.info("stopped before the server was loaded")
        await app.stop(grace=0)
        return 0
    try:
        loading.result()
    except ConfigurationError as error:
        logger.error("cannot start: %s", error)
        stopping.cancel()
        await app.stop(grace=0)
        return 2
    if reload_waiting.is_set():
        logger.info("SIGHUP arrived while loading: reloading now")
        reload_on_sighup()
    await stopping
    logger.info("stopping: draining in-flight calls for up to %.1f s", settings.lifecycle.drain_seconds)
    await app.stop()
    _ignore_stop_signals(loop)
    logger.info("stopped")
    return 0


def _ignore_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Already stopped: a repeated signal during the interpreter's exit (threads joined, sessions
    freed) must not turn a clean exit into death by signal."""
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signal_number)
        signal.signal(signal_number, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """`embedrec serve`: parse settings, configure logging, serve until told to stop."""
    settings = Settings.from_args(argv)
    configure_logging(settings.observability.log_level, settings.observability.log_format)
    if settings.server.workers > 1:
        from embedrec.server.workers import supervise

        return supervise(settings, list(argv if argv is not None else sys.argv[2:]))
    return asyncio.run(serve(settings))
