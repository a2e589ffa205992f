"""The suite's two layers; `make test` runs both, `make test-fast` the first.

- tests/unit/ mirrors the packages (unit/server/catalog/, unit/server/batching/, unit/client/,
  unit/export/, ...): tests that start no server or process of the project, open no socket, and
  import neither torch, transformers nor optimum (tests/unit/conftest.py fails a unit run that
  did; tests/unit/test_layout.py checks every unit module's imports). The whole layer runs in
  well under a minute.
- tests/e2e/ holds everything else: real servers and clients, model exports (its conftest's tiny
  BERT and the bundled MiniLM), Milvus Lite and a real Milvus server, subprocesses, ruff and mypy.
  Its fixtures are in tests/e2e/conftest.py.
- tests/support/ holds the helpers both layers may import (pure: no torch, nothing started).

A module whose tests are mixed is split: its pure tests in a unit module of the same name.
Nothing is defined here: a fixture in this file would be loaded by both layers.
"""
