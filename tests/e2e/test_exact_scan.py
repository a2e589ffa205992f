"""The exact scan through the server: both scans answer every Recommend alike, Info and the
metrics name the serving scan, codes of another matrix are refused on reload, and a missing int8
kernel is refused naming the package. (The scan's own properties, on catalogs built to break its
bound: tests/unit/server/catalog/test_exact_scan.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedrec.server.catalog.mmap.codes import (
    ITEM_CODES,
    ITEM_CODES_META,
    write_codes,
)
from embedrec.server.errors import ConfigurationError


def unit_rows(count: int, dim: int, seed: int) -> np.ndarray:
    matrix = np.random.default_rng(seed).standard_normal((count, dim)).astype(np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def synthetic_items(source: Path, directory: Path, count: int, seed: int) -> Path:
    """`count` random rows (some exact duplicates) as an item directory of `source`'s model, without
    codes (a directory built before they existed)."""
    from embedrec.server.catalog.mmap.item_ids import write_id_index
    from embedrec.server.manifest import sha256_file

    manifest = json.loads((source / "items_manifest.json").read_text())
    directory.mkdir()
    matrix = unit_rows(count, manifest["dim"], seed)
    matrix[count // 2 :: 7] = matrix[0]  # exact ties
    np.save(directory / "items.npy", matrix)
    (directory / "ids.txt").write_text("".join(f"item-{row}\n" for row in range(count)))
    write_id_index(directory, count)
    manifest.update(item_count=count, items_sha256=sha256_file(directory / "items.npy"), filter_field="", fields={})
    (directory / "items_manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture(scope="module")
def scan_servers(tiny_model_dir: Path, tiny_items_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from tests.e2e.conftest import server_settings
    from tests.e2e.server_thread import start_server

    directory = synthetic_items(tiny_items_dir, tmp_path_factory.mktemp("scan") / "items", 20_000, seed=19)
    servers = {
        scan: start_server(server_settings(tiny_model_dir, directory, scan=scan)) for scan in ("int8", "float32")
    }
    yield servers
    for server in servers.values():
        server.close()


def test_both_scans_answer_every_recommend_identically_through_the_server(scan_servers) -> None:  # type: ignore[no-untyped-def]
    from embedrec.client import EmbedrecClient

    answers = {}
    for scan, server in scan_servers.items():
        with EmbedrecClient(server.target, timeout=30) as client:
            dim = client.info().dim
            rng = np.random.default_rng(20)
            users = [
                {"k": int(k), "vector": unit_rows(1, dim, seed)[0]} for seed, k in enumerate(rng.integers(1, 200, 12))
            ]
            users += [
                {
                    "k": 10,
                    "vector": unit_rows(1, dim, 30)[0],
                    "exclude_ids": [f"item-{row}" for row in range(0, 900, 3)],
                },
                {"k": 10, "vector": unit_rows(1, dim, 31)[0], "min_score": 0.3},
                {"k": 7, "vector": unit_rows(1, dim, 32)[0], "offset": 40},
                {"k": 5, "item_ids": ["item-0", "item-17"]},  # the history's exact ties included
                {"k": 9, "item_ids": {"item-3": 1.0, "item-4": -0.5}},  # a negative
                {"k": 6, "item_ids": ["item-5", "item-6"], "strategy": "best_score"},
            ]
            batched = client.recommend_batch(users)
            alone = [client.recommend(**user) for user in users]  # type: ignore[arg-type]
            answers[scan] = [[(item.id, item.score) for item in found] for found in batched + alone]
    assert answers["int8"] == answers["float32"]
    assert all(answers["int8"][:12])


def test_info_and_metrics_say_which_scan_serves(scan_servers) -> None:  # type: ignore[no-untyped-def]
    from embedrec.client import EmbedrecClient

    for scan, server in scan_servers.items():
        with EmbedrecClient(server.target, timeout=30) as client:
            info = client.info()
            client.recommend(3, vector=unit_rows(1, info.dim, 40)[0])
        assert info.items_scan == scan
        assert (info.items_code_bytes >= 20_000 * info.dim) == (scan == "int8")
        stats = server.app.metrics.scan_stats.snapshot()
        assert stats["passes"][scan] >= 1
        scraped = server.app.metrics.registry.get_sample_value("embedrec_scan_passes_total", {"scan": scan})
        assert scraped is not None and scraped >= 1


def test_a_reload_onto_codes_of_another_matrix_is_refused_and_the_old_items_keep_serving(
    tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from embedrec.client import EmbedrecClient, EmbedrecClientError
    from tests.e2e.conftest import server_settings
    from tests.e2e.server_thread import start_server

    first = synthetic_items(tiny_items_dir, tmp_path / "first", 500, seed=21)
    second = synthetic_items(tiny_items_dir, tmp_path / "second", 500, seed=22)
    write_codes(
        first,
        np.load(first / "items.npy", mmap_mode="r"),
        json.loads((first / "items_manifest.json").read_text())["items_sha256"],
    )
    for name in (ITEM_CODES, ITEM_CODES_META):  # the first build's codes beside the second's matrix
        shutil.copy(first / name, second / name)
    link = tmp_path / "current"
    link.symlink_to(first)
    server = start_server(server_settings(tiny_model_dir, link))
    try:
        with EmbedrecClient(server.target, timeout=30) as client:
            before = client.recommend(5, vector=unit_rows(1, client.info().dim, 23)[0])
            temporary = tmp_path / "next"
            temporary.symlink_to(second)
            temporary.replace(link)
            with pytest.raises(EmbedrecClientError) as error:
                client.reload_items()
            assert error.value.code.name == "FAILED_PRECONDITION"
            assert ITEM_CODES_META in error.value.message and "still serving the previous items" in error.value.message
            assert client.recommend(5, vector=unit_rows(1, client.info().dim, 23)[0]) == before
    finally:
        server.close()


def test_without_the_int8_kernel_the_items_are_refused_naming_the_package_and_the_float32_scan(
    tiny_items_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from embedrec.server.catalog.mmap.store import ItemIndex

    monkeypatch.setitem(sys.modules, "numkong", None)  # import numkong raises ImportError
    with pytest.raises(ConfigurationError) as error:
        ItemIndex(tiny_items_dir, scan="int8")
    assert "numkong" in str(error.value) and "--scan float32" in str(error.value)
    assert ItemIndex(tiny_items_dir, scan="float32").describe().scan == "float32"
