"""The Milvus item store, on Milvus Lite and on a real Milvus server (`milvus-server`, one for the
session): the same answers as the memory-mapped matrix, the build and live updates end to end
through the client, and what happens when Milvus fails (through a proxy in front of Lite).

(Every Recommend behaviour of tests/e2e/test_live_catalog.py also runs on both stores.)
"""

from __future__ import annotations

import pytest

from embedrec.client import (
    NewItem,
)


def test_the_client_refuses_an_item_with_both_a_text_and_a_vector() -> None:
    from embedrec.client.models import upsert_request_of

    with pytest.raises(ValueError, match="not both"):
        upsert_request_of([NewItem("a", text="x", vector=[1.0])])
