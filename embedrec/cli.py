"""The `embedrec` command: one entry point, subcommands imported only when run.

`embedrec serve` never imports torch or transformers; only `export-model` does.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name → (module:function taking argv and returning an exit code, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("embedrec.server.serve:main", "run the gRPC server"),
    "export-model": ("embedrec.export.cli:export_model_main", "export a Hugging Face model to validated ONNX"),
    "export-items": ("embedrec.export.cli:export_items_main", "embed a catalog into an item matrix"),
    "embed": ("embedrec.client.cli:embed_main", "embed texts"),
    "similarity": ("embedrec.client.cli:similarity_main", "cosine similarity of a query and candidates, or of pairs"),
    "rerank": ("embedrec.client.cli:rerank_main", "rank documents against a query with a served reranker"),
    "recommend": ("embedrec.client.cli:recommend_main", "recommend items for a user profile"),
    "info": ("embedrec.client.cli:info_main", "show the server's model, items and limits"),
    "health": ("embedrec.client.cli:health_main", "show the server's health status"),
    "reload-items": ("embedrec.client.cli:reload_items_main", "hot-reload the server's item matrix"),
    "hide": ("embedrec.client.cli:hide_main", "hide items from Recommend until restored (admin)"),
    "restore": ("embedrec.client.cli:restore_main", "show hidden items again (admin)"),
    "hidden": ("embedrec.client.cli:hidden_main", "list the hidden item ids (admin)"),
    "upsert": ("embedrec.client.cli:upsert_main", "insert or replace items in the served Milvus collection (admin)"),
    "delete": ("embedrec.client.cli:delete_main", "remove items from the served Milvus collection (admin)"),
    "tune": ("embedrec.tune:main", "measure the best instances/threads/batch for this machine; save it"),
    "loadtest": ("embedrec.client.loadtest.cli:main", "load-test a server: concurrency sweep or fixed rate"),
    "evaluate": ("embedrec.client.evaluate.cli:main", "measure recommendation quality on an interaction log"),
}

# What a newcomer needs before any subcommand's --help: where things listen and how to reach them.
GETTING_AROUND = (
    "ports: embedrec serve listens on 127.0.0.1:50051 (gRPC, --port), :8080 (HTTP, --http-port) and :9464",
    "       (metrics, --metrics-port); each flag has an EMBEDREC_* variable (EMBEDREC_PORT, ...)",
    "target: client commands call --target HOST:PORT, else EMBEDREC_TARGET, else 127.0.0.1:50051;",
    "       TLS with --tls (--ca CA.pem for a private CA), a bearer token with --token or EMBEDREC_TOKEN",
    "docs: docs/quickstart.md (the first hour), docs/errors.md (what each refusal says)",
)


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: embedrec <command> [options]   (embedrec <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<14}{help_text}" for name, (_, help_text) in SUBCOMMANDS.items()]
    lines += ["", *GETTING_AROUND]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch `argv` (default: sys.argv[1:]) to a subcommand; return its exit code."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] in ("-h", "--help"):
        print(usage())
        return 0 if arguments else 2
    if arguments[0] in ("-V", "--version"):
        from embedrec import __version__

        print(f"embedrec {__version__}")
        return 0
    name, rest = arguments[0], arguments[1:]
    if name not in SUBCOMMANDS:
        print(f"embedrec: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module_name, function_name = SUBCOMMANDS[name][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return int(function(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
