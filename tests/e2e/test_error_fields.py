"""A refusal names its request field as data: gRPC's google.rpc.BadRequest status details, HTTP's
`param`, the client's `.field` (docs/errors.md, "The field an error is about")."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from embedrec.client import AsyncEmbedrecClient, EmbedrecClient, InvalidArgument, NotFound
from embedrec.server.edge.calls import Refusal
from embedrec.server.edge.grpc_servicer import STATUS_DETAILS_KEY, status_details
from embedrec.server.edge.http_api import error_body
from embedrec.server.errors import MAX_FIELD_CHARS
from embedrec.server.errors import InvalidArgument as DomainInvalidArgument
from embedrec.server.limits import Limits, check_k, check_texts
from embedrec.v1 import embedrec_pb2 as pb
from embedrec.v1 import embedrec_pb2_grpc as pb_grpc
from tests.e2e.server_thread import ServerThread
from tests.e2e.test_http import call, http_base


def test_the_domain_error_carries_field_and_limit_beside_its_message() -> None:
    with pytest.raises(DomainInvalidArgument) as raised:
        check_k(0, Limits(), field="users[1].k")
    assert (raised.value.field, raised.value.limit) == ("users[1].k", 1000)
    assert str(raised.value).startswith("users[1].k must be an integer from 1 to 1000")
    with pytest.raises(DomainInvalidArgument) as raised:
        check_texts(["x", " "], Limits(), field="texts")
    assert (raised.value.field, raised.value.limit) == ("texts[1]", None)


# The refusals about no single field: the whole body, or the profile all its parts make.
ABOUT_NO_FIELD = ("request ", "the user profile", "give either", "{quoted(name)} is not a numeric field")


def test_every_invalid_argument_about_a_request_field_names_it_as_data() -> None:
    server = Path(__file__).resolve().parents[1] / "server"
    unnamed = []
    for path in server.rglob("*.py"):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            call = node.exc
            if getattr(call.func, "id", None) != "InvalidArgument" or any(k.arg == "field" for k in call.keywords):
                continue
            text = ast.get_source_segment(source, call.args[0]) or "" if call.args else ""
            if not text.lstrip("(\n f\"'").startswith(ABOUT_NO_FIELD):
                unnamed.append(f"{path.relative_to(server)}:{node.lineno}: {text[:60]}")
    assert not unnamed, "raise InvalidArgument(..., field=PATH) (docs/errors.md):\n" + "\n".join(unnamed)


def test_a_refusal_about_no_field_sends_no_details_and_a_null_param() -> None:
    assert status_details(Refusal("UNAVAILABLE", "server is starting; retry shortly")) == ()
    assert json.loads(error_body("UNAVAILABLE", "starting"))["error"]["param"] is None
    assert json.loads(error_body("INVALID_ARGUMENT", "k must be", "k"))["error"]["param"] == "k"


def test_a_field_path_built_from_a_callers_key_is_bounded() -> None:
    refusal = Refusal("INVALID_ARGUMENT", "x is not a field", "k" * 1_000_000)
    assert refusal.field is not None and len(refusal.field) == MAX_FIELD_CHARS


def _violations(error: grpc.RpcError) -> list[tuple[str, str]]:
    """The field violations a raw gRPC caller finds in the status details trailer."""
    trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
    status = status_pb2.Status.FromString(trailers[STATUS_DETAILS_KEY])
    assert status.code == error.code().value[0]  # type: ignore[attr-defined]
    found = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        assert detail.Unpack(bad_request)
        found += [(one.field, one.description) for one in bad_request.field_violations]
    return found


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("Recommend", pb.RecommendRequest(k=0, texts=[pb.WeightedText(text="mouse")]), "k"),
        ("Embed", pb.EmbedRequest(texts=["x", ""]), "texts[1]"),
        (
            "RecommendBatch",
            pb.RecommendBatchRequest(
                users=[pb.RecommendRequest(k=1, texts=[pb.WeightedText(text="a")]), pb.RecommendRequest(k=0)]
            ),
            "users[1].k",
        ),
    ],
)
def test_a_grpc_caller_reading_only_the_status_details_gets_the_field(
    tiny_server: ServerThread, method: str, request_message: object, field: str
) -> None:
    with grpc.insecure_channel(tiny_server.target) as channel:
        stub = pb_grpc.EmbedRecStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            getattr(stub, method)(request_message, timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert _violations(raised.value) == [(field, raised.value.details())]  # type: ignore[attr-defined]
    trailers = dict(raised.value.trailing_metadata())  # type: ignore[attr-defined]
    assert trailers["x-request-id"]  # the request id still travels beside the details


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/recommend", {"k": 0, "texts": [{"text": "x"}]}, "k"),
        ("/v1/recommend", {"k": 2, "bogus": 1}, "bogus"),
        ("/v1/recommend", {"k": 2, "texts": [{"text": "x", "weight": "2"}]}, "texts[0].weight"),
        ("/v1/recommend", {"k": 2, "items": [{"id": "no-such-item"}]}, "items"),
        ("/v1/embed", {"texts": ["x"], "pooling": "POOLING_NONSENSE"}, "pooling"),
        ("/v1/embed", [1, 2], None),
        ("/v1/recommend", {"k": 2, "texts": ["mouse"]}, "texts[0]"),
    ],
)
def test_http_names_the_field_in_param(tiny_server: ServerThread, path: str, body: object, param: str | None) -> None:
    _, answer, _ = call(http_base(tiny_server), path, body)
    assert answer["error"]["param"] == param


def test_the_clients_expose_the_field_on_their_exceptions(tiny_server: ServerThread) -> None:
    with EmbedrecClient(tiny_server.target, timeout=30) as client:
        with pytest.raises(InvalidArgument) as raised:
            client.recommend(0, texts=["mouse"])
        assert raised.value.field == "k"
        with pytest.raises(NotFound) as not_found:
            client.recommend(3, item_ids=["no-such-item"])
        assert not_found.value.field == "items"

    async def asynchronous() -> str | None:
        async with AsyncEmbedrecClient(tiny_server.target, timeout=30) as aclient:
            try:
                await aclient.embed(["x", ""])
            except InvalidArgument as error:
                return error.field
        return None

    assert asyncio.run(asynchronous()) == "texts[1]"
