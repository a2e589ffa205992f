"""The embedrec Python client: synchronous and asyncio, numpy in and out.

Needs only grpcio (with gRPC's generated health stubs, grpcio-health-checking), protobuf and numpy.

    from embedrec.client import EmbedrecClient
    with EmbedrecClient("127.0.0.1:50051") as embedrec:
        vectors = embedrec.embed(["energy-saving air conditioner"])
        for item in embedrec.recommend(5, texts=["quiet air conditioner for a bedroom"]):
            print(item.id, item.score)
"""

from embedrec.client.aio import AsyncEmbedrecClient
from embedrec.client.channel import ChannelConfig, RetryPolicy
from embedrec.client.errors import (
    Cancelled,
    DeadlineExceeded,
    EmbedrecClientError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    PermissionDenied,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from embedrec.client.models import (
    Contribution,
    DeleteResult,
    ModelInfo,
    NewItem,
    Recommendation,
    Recommendations,
    ReloadResult,
    RerankHit,
    ServerInfo,
    UpsertResult,
    UserProfile,
)
from embedrec.client.sync import EmbedrecClient

__all__ = [
    "AsyncEmbedrecClient",
    "Cancelled",
    "ChannelConfig",
    "Contribution",
    "DeadlineExceeded",
    "DeleteResult",
    "EmbedrecClient",
    "EmbedrecClientError",
    "FailedPrecondition",
    "InvalidArgument",
    "ModelInfo",
    "NewItem",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "Recommendation",
    "Recommendations",
    "ReloadResult",
    "RerankHit",
    "RetryPolicy",
    "ServerError",
    "ServerInfo",
    "Unauthenticated",
    "Unavailable",
    "UpsertResult",
    "UserProfile",
]
