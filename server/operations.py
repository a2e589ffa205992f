"""The admin operations of a serving process: reload the items, hide and restore items,
upsert and delete them (Milvus), reload the token files. The admin gRPC service and SIGHUP call
these; each keeps serving the previous state when it is refused."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence

from embedrec.results import DeleteResult, ReloadResult, UpsertResult, VisibilityResult
from embedrec.server.catalog.live import ItemUpsert
from embedrec.server.catalog.milvus.store import MilvusItems
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.edge.auth import TokenGuard
from embedrec.server.edge.calls import ServingState
from embedrec.server.errors import ConfigurationError, FailedPrecondition, Unavailable
from embedrec.server.limits import check_count
from embedrec.server.loading import open_items
from embedrec.server.observability.metrics import ServerMetrics
from embedrec.server.service import NO_ITEMS, EmbeddingService
from embedrec.server.settings import Settings

logger = logging.getLogger(__name__)
# How long a reloaded Milvus store's calls may still run before its client is closed anyway.
OLD_CLIENT_WAIT_S = 60.0


class Operations:
    """Admin operations on the service `state` serves (one change at a time: `_reload_lock`)."""

    def __init__(self, settings: Settings, state: ServingState, tokens: TokenGuard, metrics: ServerMetrics) -> None:
        """`settings`: where the items and token files are (tuning never changes those)."""
        self.settings = settings
        self.state = state
        self.tokens = tokens
        self.metrics = metrics
        self._reload_lock = asyncio.Lock()

    async def reload_items(self) -> ReloadResult:
        """Re-open --items-dir (re-resolving a symlink), or the Milvus collection, and serve it
        from now on.

        Calls already running finish on the old matrix. Raises FailedPrecondition, keeping the old
        matrix, when the directory is unusable or belongs to another model.
        """
        service = self.state.service
        if service is None:
            raise FailedPrecondition("the server is still starting; reload once it is SERVING")
        if self.settings.search.items_dir is None and self.settings.search.items_store != "milvus":
            raise FailedPrecondition(NO_ITEMS)
        async with self._reload_lock:
            previous = service.items
            try:
                items = await asyncio.to_thread(
                    open_items,
                    self.settings,
                    service.models.encoder,
                    self.metrics.scan_stats,
                    self.metrics.store_health,
                )
            except ConfigurationError as error:
                self.metrics.items_reloads.labels(result="refused").inc()
                logger.error("items reload refused, still serving the previous items: %s", error)
                raise FailedPrecondition(f"items reload refused, still serving the previous items: {error}") from None
            assert items is not None
            new = items.describe()
            previous_sha = previous.describe().items_sha256 if previous is not None else ""
            # A collection changes in place: reopening it is always "changed" (new counts, properties).
            changed = new.items_sha256 != previous_sha or new.kind == "milvus"
            if changed:
                # The serving hidden set wins over the new directory's file (Milvus keeps its own flags).
                if isinstance(previous, ItemIndex) and isinstance(items, ItemIndex):
                    try:
                        await asyncio.to_thread(items.hidden.carry_over, previous.hidden.snapshot.ids)
                    except ConfigurationError as error:  # e.g. a read-only directory: keep serving the old one
                        self.metrics.items_reloads.labels(result="refused").inc()
                        logger.error("items reload refused, still serving the previous items: %s", error)
                        raise FailedPrecondition(
                            f"items reload refused, still serving the previous items: {error}"
                        ) from None
                    new = items.describe()  # the carried-over hidden count
                service.replace_items(items)
                if isinstance(previous, MilvusItems) and previous is not items:
                    # Its calls still running finish on it; then its client is closed.
                    threading.Thread(target=previous.close_when_idle, args=(OLD_CLIENT_WAIT_S,), daemon=True).start()
                self.metrics.items.set(new.item_count)
                self.metrics.hidden_items.set(new.hidden_count)
            result = "swapped" if changed else "unchanged"
            self.metrics.items_reloads.labels(result=result).inc()
            logger.info(
                "items reload from %s: %s (%d items, sha256 %s…)",
                new.location,
                result,
                new.item_count,
                new.items_sha256[:12],
            )
            return ReloadResult(new.items_sha256, new.item_count, previous_sha, changed)

    async def change_visibility(self, item_ids: Sequence[str], *, hide: bool) -> VisibilityResult:
        """Hide (or restore) `item_ids` in the served catalog from the next Recommend on, and
        persist the hidden set beside the items. Raises FailedPrecondition without items,
        InvalidArgument past max_exclude_ids ids."""
        service = self._service_with_items()
        check_count(len(item_ids), service.limits.max_exclude_ids, field="ids", limit_name="max_exclude_ids")
        async with self._reload_lock:  # one change at a time, never during a reload's swap
            items = service.items
            assert items is not None
            change = items.hide if hide else items.restore
            try:
                result = await asyncio.to_thread(change, list(item_ids))
            except ConfigurationError as error:
                raise FailedPrecondition(f"hidden items not changed: {error}") from None
        self.metrics.hidden_items.set(result.hidden_count)
        logger.info("%s %d item(s); %d hidden now", "hid" if hide else "restored", result.changed, result.hidden_count)
        return result

    async def hidden_ids(self) -> Sequence[str]:
        """The ids hidden now, sorted."""
        items = self._service_with_items().items
        return await asyncio.to_thread(items.hidden_ids) if items is not None else ()

    async def upsert_items(self, upserts: Sequence[ItemUpsert], *, timeout: float | None) -> UpsertResult:
        """Embed (texts, with the items' document prompt) or take (vectors) each item and
        insert or replace it in the served Milvus collection. FailedPrecondition on the mmap
        store (read-only: rebuild it) or without items."""
        service = self._service_with_items()
        async with self._reload_lock:
            result = await service.upsert_items(upserts, timeout=timeout)
        self._count_items(service)
        logger.info("upserted %d item(s): %d new, %d replaced", len(upserts), result.inserted, result.updated)
        return result

    async def delete_items(self, item_ids: Sequence[str], *, timeout: float | None) -> DeleteResult:
        """Remove `item_ids` from the served Milvus collection (unknown ids reported).
        FailedPrecondition on the mmap store or without items."""
        service = self._service_with_items()
        async with self._reload_lock:
            result = await service.delete_items(item_ids, timeout=timeout)
        self._count_items(service)
        logger.info("deleted %d item(s)", result.deleted)
        return result

    def _count_items(self, service: EmbeddingService) -> None:
        if service.items is not None:
            described = service.items.describe()
            self.metrics.items.set(described.item_count)
            self.metrics.hidden_items.set(described.hidden_count)

    def _service_with_items(self) -> EmbeddingService:
        service = self.state.service
        if service is None:
            raise Unavailable("the server is still starting; retry once it is SERVING")
        if service.items is None:
            raise FailedPrecondition(NO_ITEMS)
        return service

    async def reload_tokens(self) -> bool:
        """Re-read the token files (off the event loop) and put them in force for the next call;
        calls already admitted are not affected. False, keeping the old tokens, when a file is
        unreadable or empty."""
        if self.settings.security.auth_tokens_file is None and self.settings.security.admin_tokens_file is None:
            return True
        try:
            await asyncio.to_thread(self.tokens.reload)
        except ConfigurationError as error:
            logger.error("token reload refused, the previous tokens stay in force: %s", error)
            return False
        logger.info("bearer tokens reloaded")
        return True

    async def reload_on_signal(self) -> None:
        """SIGHUP: reload the token files and the items (each failure logged; the old ones stay)."""
        await self.reload_tokens()
        with contextlib.suppress(FailedPrecondition):  # logged by reload_items; the old matrix serves on
            await self.reload_items()
