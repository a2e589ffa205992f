"""CLI subcommands that call a running server: embed, similarity, recommend, info, health.

Readable output by default, `--json` for scripts. Texts come from arguments, or from a file or
standard input (one per line) with `--file` (`-` for stdin).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from embedrec.client.channel import DEFAULT_TARGET, DEFAULT_TIMEOUT_S, ChannelConfig
from embedrec.client.errors import EmbedrecClientError
from embedrec.client.models import NewItem, ProfileOptions, condition_of
from embedrec.client.sync import EmbedrecClient

GRPC_SCHEMES = ("ipv4:", "ipv6:", "dns:", "unix:", "unix-abstract:", "vsock:")
NONE = "(none)"  # what an empty answer prints: never a blank line


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"embedrec {prog}", description=description)
    add_connection_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--target, --timeout and the TLS, token and wait-for-ready flags of every client command."""
    parser.add_argument(
        "--target",
        default=os.environ.get("EMBEDREC_TARGET", DEFAULT_TARGET),
        help="server address, a gRPC target (dns:///name:port) or comma-separated host:port "
        "replicas balanced round-robin (env EMBEDREC_TARGET; default 127.0.0.1:50051)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="deadline per call, seconds")
    parser.add_argument("--wait-for-ready", action="store_true", help="wait for the server instead of failing fast")
    parser.add_argument("--tls", action="store_true", help="use TLS with the system's root certificates")
    parser.add_argument("--ca", type=Path, help="CA certificate (PEM) to verify the server; implies --tls")
    parser.add_argument("--cert", type=Path, help="client certificate (PEM) for mTLS; with --key")
    parser.add_argument("--key", type=Path, help="client private key (PEM) for mTLS; with --cert")
    parser.add_argument(
        "--token",
        default=os.environ.get("EMBEDREC_TOKEN"),
        help="bearer token sent as 'authorization: Bearer …' (env EMBEDREC_TOKEN)",
    )


def connect(arguments: argparse.Namespace) -> EmbedrecClient:
    """A client for the connection flags of `arguments`."""
    return EmbedrecClient(target_of(arguments.target), timeout=arguments.timeout, channel=channel_config(arguments))


def target_of(text: str) -> str | list[str]:
    """A --target value as the client takes it: comma-separated host:port replicas become a list."""
    if "," in text and not text.startswith(GRPC_SCHEMES):
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def channel_config(arguments: argparse.Namespace) -> ChannelConfig:
    """The channel settings (TLS, token, wait-for-ready) of the connection flags of `arguments`."""
    return ChannelConfig(
        wait_for_ready=arguments.wait_for_ready,
        tls=arguments.tls,
        root_certificates=arguments.ca,
        client_certificate=arguments.cert,
        client_key=arguments.key,
        bearer_token=arguments.token,
    )


def _texts(arguments: argparse.Namespace, name: str = "texts") -> list[str]:
    texts = list(getattr(arguments, name) or [])
    if arguments.file is not None:
        texts += [line for line in _lines(arguments.file) if line.strip()]
    return texts


def _lines(file: str) -> list[str]:
    """The lines of `file` ('-': stdin)."""
    if str(file) == "-":
        return sys.stdin.read().splitlines()
    return Path(file).read_text(encoding="utf-8").splitlines()


def _run(
    arguments: argparse.Namespace,
    action: Callable[[EmbedrecClient], Any],
    show: Callable[[Any], str],
    *,
    warnings: Callable[[Any], Sequence[str]] = lambda result: (),
) -> int:
    """Call `action`, print its result (`show`, or JSON) and its `warnings` (on stderr); exit
    status 1 with the error on stderr when the call fails."""
    try:
        with connect(arguments) as client:
            result = action(client)
    except EmbedrecClientError as error:
        print(f"embedrec: {error}", file=sys.stderr)
        return 1
    for warning in warnings(result):
        print(f"embedrec: warning: {warning}", file=sys.stderr)
    print(json.dumps(_jsonable(result), ensure_ascii=False, indent=2) if arguments.json else show(result))
    return 0


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [_jsonable(entry) for entry in value]
    if hasattr(value, "tolist"):
        return value.tolist()
    return value


def embed_main(argv: Sequence[str]) -> int:
    """`embedrec embed TEXT… [--file F]`: print each text's vector (first values) and norm."""
    parser = _parser("embed", "Embed texts.")
    parser.add_argument("texts", nargs="*", help="texts to embed")
    parser.add_argument("--file", help="read texts from a file, one per line ('-': stdin)")
    parser.add_argument("--no-normalize", action="store_true", help="return raw pooled vectors")
    parser.add_argument("--prompt-name", default=None, help="one of the model's prompts (see info); '' for none")
    parser.add_argument("--dimensions", type=int, default=None, help="keep the first N values (Matryoshka models)")
    arguments = parser.parse_args(argv)
    texts = _texts(arguments)
    normalize = False if arguments.no_normalize else None
    options = {"prompt_name": arguments.prompt_name, "dimensions": arguments.dimensions}

    def show(vectors: Any) -> str:
        rows = [f"{len(vectors)} vectors, dim {vectors.shape[1] if vectors.ndim == 2 else 0}"]
        for text, vector in zip(texts, vectors, strict=True):
            head = ", ".join(f"{value:+.4f}" for value in vector[:4])
            rows.append(f"[{head}, …] |v|={float((vector**2).sum()) ** 0.5:.3f}  {text[:60]}")
        return "\n".join(rows)

    return _run(arguments, lambda client: client.embed(texts, normalize=normalize, **options), show)


def similarity_main(argv: Sequence[str]) -> int:
    """`embedrec similarity QUERY CANDIDATE…`: cosine similarity of the query with each."""
    parser = _parser("similarity", "Cosine similarity of a query and candidate texts.")
    parser.add_argument("query", help="the query text")
    parser.add_argument("candidates", nargs="*", help="texts compared with the query")
    parser.add_argument("--file", help="read candidates from a file, one per line ('-': stdin)")
    arguments = parser.parse_args(argv)
    candidates = _texts(arguments, "candidates")

    def show(scores: Any) -> str:
        return "\n".join(f"{score:+.4f}  {text[:70]}" for text, score in zip(candidates, scores, strict=True))

    return _run(arguments, lambda client: client.similarity(arguments.query, candidates), show)


def rerank_main(argv: Sequence[str]) -> int:
    """`embedrec rerank QUERY DOCUMENT…`: the documents by a served reranker's score, best first."""
    parser = _parser("rerank", "Rank documents against a query with a served cross-encoder.")
    parser.add_argument("query", help="the query text")
    parser.add_argument("documents", nargs="*", help="texts to rank")
    parser.add_argument("--file", help="read documents from a file, one per line ('-': stdin)")
    parser.add_argument("--top-n", type=int, default=None, help="keep the N best (default: all)")
    parser.add_argument("--model", default="", help="the reranker (Info's models; default: the first)")
    arguments = parser.parse_args(argv)
    documents = _texts(arguments, "documents")

    def show(hits: Any) -> str:
        return "\n".join(f"{hit.score:+.4f}  #{hit.index}  {documents[hit.index][:70]}" for hit in hits)

    return _run(
        arguments,
        lambda client: client.rerank(arguments.query, documents, top_n=arguments.top_n, model=arguments.model),
        show,
    )


def recommend_main(argv: Sequence[str]) -> int:
    """`embedrec recommend --text T… --item ID… [-k N]`: top-k items for that profile."""
    parser = _recommend_parser()
    arguments = parser.parse_args(argv)
    if not arguments.text and not arguments.item:
        parser.error("give at least one --text or --item")
    options = request_options(arguments, parser)
    texts = {text: 1.0 for text in arguments.text} | {text: -1.0 for text in arguments.dislike}
    item_ids = {item: 1.0 for item in arguments.item} | {item: -1.0 for item in arguments.dislike_item}
    options.update(
        {
            "texts": texts or None,
            "item_ids": item_ids or None,
            "exclude_history": not arguments.include_history,
            "explain": arguments.explain,
            "offset": arguments.offset,
            "ignore_unknown_items": arguments.ignore_unknown_items,
        }
    )
    return _run(
        arguments,
        lambda client: client.recommend(arguments.k, **options),
        lambda found: _recommendations_text(found, first_rank=1 + arguments.offset, texts=list(texts)),
        warnings=lambda found: found.warnings,
    )


def request_options(arguments: argparse.Namespace, parser: argparse.ArgumentParser) -> ProfileOptions:
    """The Recommend options of `add_request_options`' flags, checked (parser.error on a bad
    --where or --max-per): exclude_ids, filter_values, min_score, where, diversity, strategy,
    ef, nprobe and the rerank stage's."""
    for condition in arguments.where:
        try:
            condition_of(condition)
        except ValueError as error:
            parser.error(f"--where {error}")
    diversity = None
    if arguments.max_per:
        name, _, limit = arguments.max_per.partition("=")
        if not name or not limit.isdigit():
            parser.error("--max-per takes FIELD=N, e.g. brand=2")
        diversity = (name, int(limit))
    return ProfileOptions(
        exclude_ids=arguments.exclude,
        filter_values=arguments.filter,
        min_score=arguments.min_score,
        where=arguments.where,
        diversity=diversity,
        strategy=arguments.strategy,
        ef=arguments.ef,
        nprobe=arguments.nprobe,
        rerank=arguments.rerank,
        rerank_candidates=arguments.rerank_candidates,
        rerank_model=arguments.rerank_model,
        rerank_query=arguments.rerank_query,
        score_formula=arguments.score_formula,
    )


def _recommendations_text(found: Any, *, first_rank: int, texts: Sequence[str]) -> str:
    """One line per recommended item (rank, score, id, and what drove it when explained: the
    part's index counts from 0, as the reply's `index` does), or "(none)"."""

    def because(item: Any) -> str:
        top = item.contribution
        formula = ""
        if item.similarity is not None:
            terms = "".join(f" {part:+.4f}" for part in item.score_terms)
            formula = f"  (similarity {item.similarity:+.4f}{' terms' + terms if terms else ''})"
        if top is None:
            return formula
        if top.part == "item":
            source = f"item #{top.index} {top.item_id}"
        elif top.part == "text":
            source = f"text #{top.index} {texts[top.index][:40]!r}" if top.index < len(texts) else f"text #{top.index}"
        else:
            source = top.part
        return f"{formula}  (mostly {source}: {top.score:+.4f})"

    lines = [
        f"{rank:>3}. {item.score:+.4f}  {item.id}{because(item)}" for rank, item in enumerate(found, start=first_rank)
    ]
    if found.unknown_item_ids:
        lines.append(f"skipped unknown history ids: {', '.join(found.unknown_item_ids)}")
    return "\n".join(lines) or NONE


def _recommend_parser() -> argparse.ArgumentParser:
    parser = _parser("recommend", "Recommend catalog items for a user profile.")
    parser.add_argument("-k", type=int, default=10, help="how many items (default 10)")
    parser.add_argument("--text", action="append", default=[], help="interest, history or query text (repeatable)")
    parser.add_argument("--item", action="append", default=[], help="id of an item the user liked (repeatable)")
    parser.add_argument("--include-history", action="store_true", help="allow --item ids in the results")
    parser.add_argument(
        "--explain",
        action="store_true",
        help="show which --text or --item drove each result (#0 is the first, as the reply's index counts)",
    )
    parser.add_argument("--dislike", action="append", default=[], help="a text the user dislikes (repeatable)")
    parser.add_argument("--dislike-item", action="append", default=[], help="id of an item the user disliked")
    parser.add_argument("--offset", type=int, default=0, help="skip this many results (the next page: offset=k)")
    parser.add_argument(
        "--ignore-unknown-items", action="store_true", help="skip --item ids the catalog lacks instead of failing"
    )
    add_request_options(parser)
    return parser


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """The Recommend options that do not describe the user (exclusions, filters, conditions,
    diversity, strategy, approximate effort, rerank stage): `recommend`'s and `evaluate`'s."""
    parser.add_argument("--exclude", action="append", default=[], help="item id never to recommend (repeatable)")
    parser.add_argument(
        "--filter", action="append", default=[], help="only items with this filter-field value, e.g. a category"
    )
    parser.add_argument(
        "--min-score", type=float, default=None, help="only items scoring at least this (the cosine, or the formula's)"
    )
    parser.add_argument(
        "--score-formula",
        default=None,
        metavar="FORMULA",
        help="rank by similarity + weighted terms of numeric fields, e.g. '0.08*log1p(popularity) + "
        "0.2*gauss(published, origin=now, scale=604800)'; 'none': similarity alone (default: the server's)",
    )
    parser.add_argument(
        "--where",
        action="append",
        default=[],
        help="a condition on a catalog field, all ANDed (repeatable): price<100, price>=10, brand=acme|zenith, "
        "brand!=acme",
    )
    parser.add_argument(
        "--max-per", default=None, metavar="FIELD=N", help="diversity: at most N results per value of FIELD"
    )
    parser.add_argument(
        "--strategy",
        choices=("average_vector", "best_score"),
        default="average_vector",
        help="how the profile ranks items (see Strategy in the proto)",
    )
    parser.add_argument(
        "--ef", type=int, default=0, help="an HNSW Milvus index's search effort for this call (0: the server's)"
    )
    parser.add_argument(
        "--nprobe", type=int, default=0, help="an IVF_FLAT Milvus index's clusters searched (0: the server's)"
    )
    parser.add_argument(
        "--rerank", action="store_true", help="order the best candidates by a served cross-encoder (a second stage)"
    )
    parser.add_argument(
        "--rerank-candidates", type=int, default=0, help="candidates the cross-encoder scores (0: max(50, offset + k))"
    )
    parser.add_argument("--rerank-model", default="", help="the reranker (default: the first served)")
    parser.add_argument("--rerank-query", default="", help="the text items are scored against (default: the --text's)")


def _visibility_main(argv: Sequence[str], *, hide: bool) -> int:
    name = "hide" if hide else "restore"
    verb = "hidden" if hide else "restored"
    description = "Hide items from Recommend until restored." if hide else "Show hidden items again."
    parser = _parser(name, f"{description} Exits 1 when an id is not in the catalog (the others are {verb}).")
    parser.add_argument("ids", nargs="*", help="item ids")
    parser.add_argument("--file", help="read ids from a file, one per line ('-': stdin)")
    parser.add_argument(
        "--ignore-unknown", action="store_true", help="exit 0 even when some ids are not in the catalog"
    )
    arguments = parser.parse_args(argv)
    item_ids = _texts(arguments, "ids")
    if not item_ids:
        parser.error("give at least one item id (or --file)")

    def show(result: Any) -> str:
        unknown = f"; unknown ids: {', '.join(result.unknown_ids)}" if result.unknown_ids else ""
        return f"{result.changed} {verb}; {result.hidden_count} hidden now{unknown}"

    results: list[Any] = []

    def change(client: EmbedrecClient) -> Any:
        results.append((client.hide_items if hide else client.restore_items)(item_ids))
        return results[0]

    code = _run(arguments, change, show)
    if code == 0 and results[0].unknown_ids and not arguments.ignore_unknown:
        print(
            f"embedrec: {len(results[0].unknown_ids)} id(s) not in the catalog (check the spelling; "
            "--ignore-unknown to exit 0)",
            file=sys.stderr,
        )
        return 1
    return code


def hide_main(argv: Sequence[str]) -> int:
    """`embedrec hide ID… [--file F]`: never recommend these items until restored."""
    return _visibility_main(argv, hide=True)


def restore_main(argv: Sequence[str]) -> int:
    """`embedrec restore ID… [--file F]`: recommend these items again."""
    return _visibility_main(argv, hide=False)


def upsert_main(argv: Sequence[str]) -> int:
    """`embedrec upsert --file ITEMS.jsonl`: insert or replace items in the served Milvus
    collection, one JSON object per line: {"id", "text" or "vector", "fields": {...}}."""
    parser = _parser("upsert", "Insert or replace items in the served Milvus collection (admin).")
    parser.add_argument("--file", required=True, help="JSON Lines of items ('-': stdin)")
    parser.add_argument("--batch", type=int, default=64, help="items per UpsertItems call")
    arguments = parser.parse_args(argv)
    items = []
    for number, line in enumerate(_lines(arguments.file), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
            items.append(NewItem(**value))
        except (ValueError, TypeError) as error:
            parser.error(f"--file line {number}: {error}")

    def upsert_all(client: Any) -> list[Any]:
        size = max(1, arguments.batch)
        return [client.upsert_items(items[start : start + size]) for start in range(0, len(items), size)]

    def show(results: list[Any]) -> str:
        inserted = sum(result.inserted for result in results)
        updated = sum(result.updated for result in results)
        count = results[-1].item_count if results else 0
        return f"{inserted} inserted, {updated} replaced; {count} items now"

    return _run(arguments, upsert_all, show)


def delete_main(argv: Sequence[str]) -> int:
    """`embedrec delete ID… [--file F]`: remove items from the served Milvus collection."""
    parser = _parser("delete", "Remove items from the served Milvus collection (admin).")
    parser.add_argument("ids", nargs="*", help="item ids")
    parser.add_argument("--file", help="read ids from a file, one per line ('-': stdin)")
    arguments = parser.parse_args(argv)
    item_ids = _texts(arguments, "ids")

    def show(result: Any) -> str:
        unknown = f"; unknown ids: {', '.join(result.unknown_ids)}" if result.unknown_ids else ""
        return f"{result.deleted} deleted; {result.item_count} items now{unknown}"

    return _run(arguments, lambda client: client.delete_items(item_ids), show)


def hidden_main(argv: Sequence[str]) -> int:
    """`embedrec hidden`: the ids hidden now, one per line."""
    arguments = _parser("hidden", "List the hidden item ids.").parse_args(argv)
    return _run(arguments, lambda client: client.hidden_items(), lambda ids: "\n".join(ids) or NONE)


def reload_items_main(argv: Sequence[str]) -> int:
    """`embedrec reload-items`: the server re-opens its --items-dir and serves the matrix there."""
    arguments = _parser("reload-items", "Hot-reload the server's item matrix from its --items-dir.").parse_args(argv)

    def show(result: Any) -> str:
        if not result.changed:
            return f"unchanged: {result.item_count} items, sha256 {result.items_sha256[:12]}"
        return (
            f"swapped: {result.item_count} items, sha256 {result.items_sha256[:12]} "
            f"(was {result.previous_items_sha256[:12] or 'none'})"
        )

    return _run(arguments, lambda client: client.reload_items(), show)


def info_main(argv: Sequence[str]) -> int:
    """`embedrec info`: the server's model, provider, items and limits."""
    arguments = _parser("info", "Show what the server runs.").parse_args(argv)

    def show(info: Any) -> str:
        fields = dataclasses.asdict(info)
        limits = fields.pop("limits")
        return "\n".join(
            [f"{name:<22}{value}" for name, value in fields.items()]
            + [f"{name:<22}{value}" for name, value in limits.items()]
        )

    return _run(arguments, lambda client: client.info(), show)


def health_main(argv: Sequence[str]) -> int:
    """`embedrec health [--service NAME]`: SERVING or NOT_SERVING; exit 0 only when SERVING."""
    parser = _parser("health", "Show the server's health status.")
    parser.add_argument("--service", default="", help="service name ('' for the whole server)")
    arguments = parser.parse_args(argv)
    status: list[str] = []

    def check(client: EmbedrecClient) -> str:
        status.append(client.health(arguments.service))
        return status[0]

    code = _run(arguments, check, str)
    return code if code or status == ["SERVING"] else 1
