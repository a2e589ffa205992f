"""The committed gRPC stubs are exactly what `make proto` generates from protos/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from embedrec.client import EmbedrecClient
from tests.support.paths import REPO_ROOT


def test_generated_stubs_are_up_to_date(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/generate_protos.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert generated, "protoc wrote nothing"
    for relative in generated:
        committed = REPO_ROOT / relative
        assert committed.is_file(), f"{relative} is not committed; run make proto"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), f"{relative} is stale; run make proto"


def test_info_has_one_field_list_the_proto_and_both_sides_follow_it(client: EmbedrecClient) -> None:
    import dataclasses

    from embedrec.client.models import ServerInfo
    from embedrec.server.limits import Limits
    from embedrec.server.service import ServiceInfo
    from embedrec.v1 import embedrec_pb2 as pb

    proto_fields = {field.name for field in pb.InfoResponse.DESCRIPTOR.fields}
    server_side = {field.name for field in dataclasses.fields(ServiceInfo)} - {"limits"}
    server_side |= {field.name for field in dataclasses.fields(Limits)}
    assert server_side == proto_fields
    info = client.info()
    client_side = {field.name for field in dataclasses.fields(ServerInfo)} - {"limits"} | set(info.limits)
    assert client_side == proto_fields
    assert all(name.startswith("max_") for name in info.limits)
    assert not set(info.limits) & {field.name for field in dataclasses.fields(ServerInfo)}  # each field once
    assert info.limits["max_batch_tokens"] > 0 and info.limits["max_queued_texts"] > 0


def test_the_sync_client_is_generated_from_the_async_one() -> None:
    """client/sync.py is written only by scripts/generate_sync_client.py (make clients): each
    client method is defined once, in client/aio.py."""
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts/generate_sync_client.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
