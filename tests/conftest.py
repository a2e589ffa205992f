"""The suite's two layers: tests/unit/ (no server, no torch, no network: `make test-fast`) and
tests/e2e/ (real servers, exports, Milvus, the real model; its fixtures in tests/e2e/conftest.py).
Nothing here: a fixture in this file would be loaded by both layers."""
