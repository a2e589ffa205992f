"""The items: the item-store protocol, the memory-mapped store and the Milvus store, item ids,
hidden items, fields and conditions, exact top-k, user profiles."""
