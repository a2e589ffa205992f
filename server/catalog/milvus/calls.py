"""The calls of the Milvus store to Milvus: the client, each call bounded by a deadline and
recorded in the store's health, Milvus's failures as Unavailable."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from embedrec.server.catalog.milvus.schema import ID
from embedrec.server.catalog.store_health import StoreHealth
from embedrec.server.errors import ConfigurationError, DeadlineExpired, Unavailable

# Ids per query/upsert/delete request.
ID_BATCH = 4_096
_T = TypeVar("_T")


def connect(uri: str, token: str, timeout: float) -> Any:
    """A MilvusClient on `uri` (a file path: Milvus Lite; http(s)://: a server). Raises
    MilvusUnreachableError when it cannot be reached, ConfigurationError when pymilvus is missing."""
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise ConfigurationError("the milvus item store needs pymilvus (pip install 'embedrec[milvus]')") from None
    try:
        return MilvusClient(uri=uri, token=token, timeout=timeout)
    except milvus_errors() as error:
        raise MilvusUnreachableError(f"Milvus at {uri} unreachable: {error_message(error)}") from None


@functools.cache
def milvus_errors() -> tuple[type[BaseException], ...]:
    """What a failing Milvus call raises: pymilvus's exceptions, gRPC's, socket errors."""
    # pymilvus speaks gRPC to Milvus and lets grpc.RpcError through: the Milvus client's transport,
    # imported with pymilvus (this is not embedrec's own gRPC, which only the edge speaks).
    import grpc
    from pymilvus.exceptions import MilvusException

    return (MilvusException, grpc.RpcError, OSError)


class MilvusUnreachableError(ConfigurationError):
    """Milvus did not answer (at start: the server waits and retries, NOT_SERVING meanwhile)."""


class MilvusCalls:
    """One collection's calls: each bounded by its deadline (else `timeout`), its outcome recorded
    in `health`; the calls running are counted, so a replaced store closes its client once idle."""

    def __init__(self, client: Any, collection: str, location: str, timeout: float, health: StoreHealth) -> None:
        self.client = client
        self.collection = collection
        self.location = location
        self.timeout = timeout
        self.health = health
        self._in_flight = 0
        self._idle = threading.Condition()

    def close_when_idle(self, timeout: float) -> None:
        """Close the client once the calls running now are done (at most `timeout` seconds)."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
        self.client.close()

    def rows(self, item_ids: Sequence[str], fields: list[str], deadline: float | None) -> dict[str, dict[str, Any]]:
        """The rows of the `item_ids` the collection has, by id, with `fields`."""
        found: dict[str, dict[str, Any]] = {}
        unique = list(dict.fromkeys(item_ids))
        for start in range(0, len(unique), ID_BATCH):
            batch = unique[start : start + ID_BATCH]
            rows = self.call(
                functools.partial(self.client.query, self.collection, ids=batch, output_fields=[ID, *fields]), deadline
            )
            found.update({row[ID]: row for row in rows})
        return found

    def scan(self, expression: str, fields: list[str], deadline: float | None) -> Iterable[dict[str, Any]]:
        """Every row matching `expression`, with `fields`."""
        iterator = self.call(
            lambda timeout: self.client.query_iterator(
                self.collection, batch_size=ID_BATCH, filter=expression, output_fields=fields, timeout=timeout
            ),
            deadline,
        )
        rows: list[dict[str, Any]] = []
        while True:
            batch = self.call(lambda timeout: iterator.next(), deadline)
            if not batch:
                iterator.close()
                return rows
            rows.extend(batch)

    def first(self, expression: str, fields: list[str], limit: int, deadline: float | None) -> list[dict[str, Any]]:
        """At most `limit` rows matching `expression`, with `fields`, in one call (no iterator)."""
        return list(
            self.call(
                lambda timeout: self.client.query(
                    self.collection, filter=expression, output_fields=fields, limit=limit, timeout=timeout
                ),
                deadline,
            )
        )

    def count(self, expression: str, deadline: float | None) -> int:
        rows = self.call(
            lambda timeout: self.client.query(
                self.collection, filter=expression, output_fields=["count(*)"], timeout=timeout
            ),
            deadline,
        )
        return int(rows[0]["count(*)"])

    def flush(self, deadline: float | None) -> None:
        # Sealed segments are searched ~30x faster than growing ones (measured with Milvus Lite).
        self.call(lambda timeout: self.client.flush(self.collection, timeout=timeout), deadline)

    def call(self, operation: Callable[..., _T], deadline: float | None) -> _T:
        """Run one Milvus call bounded by `deadline` (else the store's timeout); Milvus errors
        become Unavailable, a passed deadline DeadlineExpired."""
        timeout = self.timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise DeadlineExpired("the deadline passed before the item store answered")
        with self._idle:
            self._in_flight += 1
        try:
            answer = operation(timeout=timeout)
        except milvus_errors() as error:
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExpired("the deadline passed before the item store answered") from None
            self.health.failed(error_message(error))
            raise Unavailable(f"item store unavailable ({self.location}): {error_message(error)}") from None
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()
        self.health.succeeded()
        return answer


def error_message(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return " ".join(str(message).split())[:300]
