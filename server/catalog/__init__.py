"""The items: a store-neutral core (the item-store protocol, fields and conditions, profiles,
search, Recommend, the rerank stage, score formulas) and one package per store: `mmap` (the
memory-mapped matrix) and `milvus` (a Milvus collection)."""
