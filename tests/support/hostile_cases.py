"""The hostile-input cases both layers use: one valid request per method with every string field
set, and each of those requests with one string field made a megabyte (tests/unit/server/edge/
and tests/e2e/test_hostile_input.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from google.protobuf.message import Message

from embedrec.v1 import embedrec_pb2 as pb

MEGABYTE_ASCII = "a" * 1_000_000
MEGABYTE_WIDE = "界" * 1_000_000  # 3 MB of UTF-8
DIM = 32  # the tiny test model's

# One valid request per method (and form), each string field set, so a field made huge is what
# the server refuses. Admin requests are only sent made huge (their valid forms change state).
PROFILE = pb.RecommendRequest(
    k=3,
    texts=[pb.WeightedText(text="air conditioner")],
    items=[pb.WeightedItem(id="ac-1")],
    exclude_ids=["ac-2"],
    filter_values=["appliances"],
    where=[pb.Condition(field="category", any_of=["appliances"], none_of=["shoes"])],
    diversity=pb.Diversity(field="category", max_per_value=2),
)
VALID_REQUESTS: list[tuple[str, Message]] = [
    ("Embed", pb.EmbedRequest(texts=["hello"], prompt_name="")),
    ("Similarity", pb.SimilarityRequest(query="a", candidates=["b"])),
    ("Similarity", pb.SimilarityRequest(pairs=[pb.TextPair(a="a", b="b")])),
    ("Recommend", PROFILE),
    ("RecommendBatch", pb.RecommendBatchRequest(users=[PROFILE])),
]
ADMIN_REQUESTS: list[tuple[str, Message]] = [
    ("HideItems", pb.HideItemsRequest(ids=["ac-1"])),
    ("RestoreItems", pb.RestoreItemsRequest(ids=["ac-1"])),
    ("DeleteItems", pb.DeleteItemsRequest(ids=["ac-1"])),
    (
        "UpsertItems",
        pb.UpsertItemsRequest(
            items=[
                pb.ItemUpsert(
                    id="new",
                    text="a new item",
                    fields={"category": pb.ItemFieldValue(values=pb.StringList(values=["appliances"]))},
                )
            ]
        ),
    ),
]


def string_paths(message: Message, prefix: str = "") -> Iterator[tuple[str, Callable[[Message, str], None]]]:
    """(path, setter) for every string set in `message`, recursively: the setter puts a value
    there in a copy of `message` (repeated fields: the first entry; maps: the first key)."""
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key = next(iter(value))

            def set_key(target: Message, text: str, name: str = field.name, key: str = key) -> None:
                mapping = getattr(target, name)
                mapping[text].CopyFrom(mapping[key])
                del mapping[key]

            yield f"{name}[key]", set_key
            for path, setter in string_paths(value[key], f"{name}[{key}]."):
                yield path, _nested(setter, lambda target, n=field.name, k=key: getattr(target, n)[k])
        elif field.message_type is not None:
            first = value[0] if field.is_repeated else value
            getter: Callable[[Message], Message] = (
                (lambda target, n=field.name: getattr(target, n)[0])
                if field.is_repeated
                else (lambda target, n=field.name: getattr(target, n))
            )
            for path, setter in string_paths(first, f"{name}{'[0]' if field.is_repeated else ''}."):
                yield path, _nested(setter, getter)
        elif field.type == field.TYPE_STRING:
            if field.is_repeated:
                yield f"{name}[0]", lambda target, text, n=field.name: getattr(target, n).__setitem__(0, text)
            else:
                yield name, lambda target, text, n=field.name: setattr(target, n, text)


def _nested(
    setter: Callable[[Message, str], None], getter: Callable[[Message], Message]
) -> Callable[[Message, str], None]:
    return lambda target, text: setter(getter(target), text)


def huge_requests(requests: list[tuple[str, Message]]) -> list[tuple[str, str, bytes]]:
    """(method, field path and payload kind, request bytes) with 1 MB in one string field."""
    cases = []
    for method, base in requests:
        for path, setter in string_paths(base):
            for kind, text in (("ascii", MEGABYTE_ASCII), ("wide", MEGABYTE_WIDE)):
                request = type(base)()
                request.CopyFrom(base)
                setter(request, text)
                cases.append((method, f"{method}.{path}:{kind}", request.SerializeToString()))
    return cases


GRPC_CASES = huge_requests(VALID_REQUESTS) + huge_requests(ADMIN_REQUESTS)
