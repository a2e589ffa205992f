"""The Milvus store's client side without Milvus: an item with both a text and a vector is refused.
(The store on Milvus Lite and a real server: tests/e2e/test_milvus_store.py.)"""

from __future__ import annotations

import pytest

from embedrec.client import (
    NewItem,
)


def test_the_client_refuses_an_item_with_both_a_text_and_a_vector() -> None:
    from embedrec.client.models import upsert_request_of

    with pytest.raises(ValueError, match="not both"):
        upsert_request_of([NewItem("a", text="x", vector=[1.0])])
