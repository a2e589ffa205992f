"""The tests' Milvus server helper (tests/e2e/milvus_process.py): two servers on one machine at
once, each on ports of its own (its embedded etcd listened on 2379 and 2380 whatever the flags)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.milvus_process import MilvusServerProcess


def test_a_second_milvus_server_starts_beside_the_sessions(milvus_server: MilvusServerProcess, tmp_path: Path) -> None:
    from pymilvus import MilvusClient

    second = MilvusServerProcess(tmp_path / "second")
    try:
        second.start()  # before: etcd's 2380 taken, Milvus exited or never answered
        assert MilvusClient(uri=second.uri, timeout=10).get_server_version()
        assert MilvusClient(uri=milvus_server.uri, timeout=10).get_server_version()
    finally:
        second.kill()
