"""The Milvus item store: a Milvus collection's schema, filters, index, readiness and searches."""
