"""Hostile input checks without a server: the generated cases cover every request field, the wire
check stops at the first field past its limit, the JSON structure check bounds depth, width and
values (ignoring brackets inside strings), accept failures are logged once per interval, and
quoted values stay short. (Against real servers: tests/e2e/test_hostile_input.py.)"""

from __future__ import annotations

import json
import logging
import sys

import pytest

from embedrec.server.edge.http_protocol import ACCEPT_FAILURE, rate_limited_accept_errors
from embedrec.server.edge.json_limits import check_json_structure
from embedrec.server.edge.request_limits import request_limits
from embedrec.server.edge.wire_limits import check_wire
from embedrec.server.errors import quoted
from embedrec.server.limits import Limits
from embedrec.v1 import embedrec_pb2 as pb
from tests.support.hostile_cases import (
    DIM,
    GRPC_CASES,
)


def test_every_request_field_is_covered_by_the_generated_cases() -> None:
    paths = {case_id.split(":")[0] for _, case_id, _ in GRPC_CASES}
    for expected in (
        "Embed.texts[0]",
        "Recommend.where[0].field",
        "Recommend.diversity.field",
        "RecommendBatch.users[0].where[0].any_of[0]",
        "UpsertItems.items[0].fields[key]",
        "UpsertItems.items[0].fields[category].values.values[0]",
    ):
        assert expected in paths
    assert len(paths) >= 25


# --- limits before per-element work ------------------------------------------------------------

LIMITS = Limits()
TABLE = request_limits(LIMITS, DIM)


def test_the_wire_check_stops_at_the_first_field_past_its_limit() -> None:
    users = pb.RecommendBatchRequest(users=[pb.RecommendRequest()] * 100_000).SerializeToString()
    with pytest.raises(Exception, match="users has more than 64 entries; the limit is max_batch_users=64"):
        check_wire(users, pb.RecommendBatchRequest.DESCRIPTOR, TABLE)
    nested_values = pb.RecommendBatchRequest(
        users=[pb.RecommendRequest(where=[pb.Condition(any_of=["v"] * 1001)])]
    ).SerializeToString()
    with pytest.raises(Exception, match=r"users\[0\]\.where\[0\]\.any_of has more than 1000"):
        check_wire(nested_values, pb.RecommendBatchRequest.DESCRIPTOR, TABLE)
    packed = pb.RecommendRequest(user_vector=[1.0] * (DIM + 1)).SerializeToString()
    with pytest.raises(Exception, match="user_vector has more than 32 entries"):
        check_wire(packed, pb.RecommendRequest.DESCRIPTOR, TABLE)
    long_id = pb.RecommendRequest(exclude_ids=["ok", "x" * 5000]).SerializeToString()
    with pytest.raises(Exception, match=r"exclude_ids\[1\] is longer than 4096 bytes"):
        check_wire(long_id, pb.RecommendRequest.DESCRIPTOR, TABLE)
    at_limits = pb.RecommendRequest(user_vector=[1.0] * DIM, exclude_ids=["x"] * LIMITS.max_exclude_ids)
    check_wire(at_limits.SerializeToString(), pb.RecommendRequest.DESCRIPTOR, TABLE)  # no error
    check_wire(b"\xff\xff\xff", pb.RecommendRequest.DESCRIPTOR, TABLE)  # malformed: the decoder's to report
    group_first = bytes([9 << 3 | 3, 9 << 3 | 4])  # an unknown group, which the decoder accepts
    with pytest.raises(Exception, match="users has more than 64 entries"):
        check_wire(group_first + users, pb.RecommendBatchRequest.DESCRIPTOR, TABLE)
    assert len(pb.RecommendBatchRequest.FromString(group_first + users[:20]).users) == 10


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"a": ' + b"[" * 40 + b"]" * 40 + b"}", "nests 41 levels deep; the limit is 32"),
        (b'{"a": [' + b",".join([b"1"] * 200) + b"]}", "array or object of 200 entries, past the 100"),
        (b'{"a": [' + b",".join([b"[]"] * 150) + b"]}", "holds about 302 JSON values, past the 300"),
    ],
)
def test_the_json_structure_check_bounds_depth_width_and_values(body: bytes, message: str) -> None:
    with pytest.raises(Exception, match=message):
        check_json_structure(body, max_entries=100, max_values=300)


def test_the_json_structure_check_ignores_brackets_and_commas_inside_strings() -> None:
    tricky = json.dumps({"texts": ["a,b,[[[{{,", 'quote \\" ] , [', "\\\\", ",,,,,"]}).encode()
    check_json_structure(tricky, max_entries=4, max_values=6)


# --- vectors -----------------------------------------------------------------------------------


# --- the HTTP connection under abuse ------------------------------------------------------------


def test_accept_failures_are_logged_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        rate_limited_accept_errors(loop, interval_s=60)
        with caplog.at_level(logging.ERROR):
            for _ in range(5000):
                loop.call_exception_handler(
                    {"message": ACCEPT_FAILURE, "exception": OSError(24, "Too many open files")}
                )
    finally:
        loop.close()
    lines = [record for record in caplog.records if "cannot accept connections" in record.getMessage()]
    assert len(lines) == 1


# --- auth, request ids, ports ------------------------------------------------------------------


def test_quoted_shows_a_short_prefix_and_never_contents_of_containers() -> None:
    assert quoted("short") == "'short'"
    assert quoted("x" * 1000).startswith("'" + "x" * 64 + "'") and "1000 characters" in quoted("x" * 1000)
    assert quoted([[1] * 10] * 10) == "a list of 10 entries"
    assert len(quoted(10**5000 if sys.version_info < (3, 11) else 1.5)) < 100
