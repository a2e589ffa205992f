"""The client library without a server: every gRPC status maps to one exception, and the
Recommend options are the UserProfile's fields. (Against real servers: tests/e2e/test_client.py.)"""

from __future__ import annotations

import grpc
import pytest

from embedrec.client import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from embedrec.client.errors import Cancelled, FailedPrecondition, from_rpc_error


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "exception"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
        (grpc.StatusCode.OUT_OF_RANGE, InvalidArgument),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Overloaded),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.CANCELLED, Cancelled),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
    ],
)
def test_every_status_code_maps_to_one_exception_keeping_the_message(code: grpc.StatusCode, exception: type) -> None:
    error = from_rpc_error(FakeRpcError(code, "k must be between 1 and max_k=1000"))
    assert type(error) is exception
    assert error.code == code
    assert error.message == "k must be between 1 and max_k=1000"


def test_recommend_options_are_listed_once_as_user_profile_fields() -> None:
    """The keyword form of recommend (both clients) takes exactly UserProfile's fields but k."""
    import dataclasses
    import typing

    from embedrec.client.models import ProfileOptions, UserProfile

    fields = {field.name for field in dataclasses.fields(UserProfile)} - {"k"}
    assert set(typing.get_type_hints(ProfileOptions)) == fields
