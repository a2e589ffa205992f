"""Recommend through the real server: batched users, category filter, explanations (on both item
stores: the memory-mapped matrix and Milvus Lite), hot reload."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import ChannelConfig, EmbedrecClient, EmbedrecClientError
from tests.e2e.conftest import CATALOG_ROWS, milvus_settings, server_settings
from tests.e2e.server_thread import ServerThread, start_server

CATEGORY_OF = {row["id"]: row["category"] for row in CATALOG_ROWS}
IDS = [row["id"] for row in CATALOG_ROWS]


def unit(seed: int, dim: int) -> np.ndarray:
    vector = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vector / np.linalg.norm(vector)


def brute_force_ids(matrix: np.ndarray, profile: np.ndarray, k: int, allowed: set[int]) -> list[str]:
    scores = matrix.astype(np.float64) @ profile.astype(np.float64)
    order = [row for row in np.lexsort((np.arange(len(scores)), -scores)) if row in allowed]
    return [IDS[row] for row in order[:k]]


@pytest.fixture(params=["mmap", "milvus"])
def store_client(request: pytest.FixtureRequest) -> Iterator[EmbedrecClient]:
    """A client of a server on the test catalog, from each item store."""
    server = request.getfixturevalue("tiny_server" if request.param == "mmap" else "milvus_tiny_server")
    with EmbedrecClient(server.target, timeout=30) as connected:
        yield connected


def test_recommend_batch_answers_each_user_as_recommend_would(store_client: EmbedrecClient) -> None:
    dim = store_client.info().dim
    users = [
        {"k": 3, "vector": unit(1, dim)},
        {"k": 5, "texts": ["coffee for the kitchen"], "exclude_ids": ["coffee-1"]},
        {"k": 2, "item_ids": ["shoes-1"], "filter_values": ["shoes", "media"]},
        {"k": 12, "vector": unit(2, dim), "item_ids": {"ac-1": 2.0}, "explain": True},
    ]
    batched = store_client.recommend_batch(users)
    one_by_one = [store_client.recommend(**user) for user in users]  # type: ignore[arg-type]
    assert [[item.id for item in found] for found in batched] == [[item.id for item in found] for found in one_by_one]
    for found, alone in zip(batched, one_by_one, strict=True):
        # One matrix product for all users vs one vector product each: equal up to float rounding.
        np.testing.assert_allclose([item.score for item in found], [item.score for item in alone], atol=1e-6)
        assert [item.contribution for item in found] == [item.contribution for item in alone] or all(
            a.contribution is not None for a in found
        )
    assert [len(found) for found in batched] == [3, 5, 2, 11]


def test_recommend_batch_embeds_every_users_texts_in_shared_batches_and_scans_once(
    tiny_server: ServerThread, client: EmbedrecClient
) -> None:
    service = tiny_server.app.state.service
    assert service is not None
    inference_before, searches_before = (
        service.models.default.batcher.stats.batches,
        service.search_batcher.stats.batches,
    )
    users = [{"k": 2, "texts": [f"coffee {user}", f"red shoes {user}"]} for user in range(5)]
    found = client.recommend_batch(users)
    assert [len(one) for one in found] == [2] * 5
    assert service.models.default.batcher.stats.batches - inference_before == 1  # 10 texts, one inference batch
    assert service.search_batcher.stats.batches - searches_before == 1  # 5 users, one pass


def test_recommend_batch_names_the_user_and_field_of_a_bad_request(store_client: EmbedrecClient) -> None:
    dim = store_client.info().dim
    with pytest.raises(EmbedrecClientError) as error:
        store_client.recommend_batch([{"k": 3, "vector": unit(1, dim)}, {"k": 0, "vector": unit(2, dim)}])
    assert error.value.code.name == "INVALID_ARGUMENT"
    assert "users[1].k must be an integer from 1 to 1000 (max_k), got 0 (an unset k reads as 0" in error.value.message
    with pytest.raises(EmbedrecClientError, match="users is empty"):
        store_client.recommend_batch([])
    with pytest.raises(EmbedrecClientError, match="users has more than 64 entries; the limit is max_batch_users=64"):
        store_client.recommend_batch([{"k": 1, "vector": unit(1, dim)}] * 65)


def test_a_category_filter_is_exact_and_fills_k_when_enough_items_are_eligible(
    store_client: EmbedrecClient, tiny_items_dir: Path
) -> None:
    matrix = np.load(tiny_items_dir / "items.npy")
    info = store_client.info()
    assert info.items_filter_field == "category"
    for seed in range(5):
        profile = unit(seed, info.dim)
        found = store_client.recommend(4, vector=profile, filter_values=["appliances", "food"])
        allowed = {row for row, item_id in enumerate(IDS) if CATEGORY_OF[item_id] in ("appliances", "food")}
        assert [item.id for item in found] == brute_force_ids(matrix, profile, 4, allowed)
    only_shoes = store_client.recommend(10, vector=unit(9, info.dim), filter_values=["shoes", "no-such-category"])
    assert sorted(item.id for item in only_shoes) == ["shoes-1", "shoes-2"]
    assert store_client.recommend(3, vector=unit(9, info.dim), filter_values=["no-such-category"]) == []


def test_explain_names_the_part_that_contributed_most_and_shares_sum_to_the_score(
    store_client: EmbedrecClient, tiny_items_dir: Path
) -> None:
    matrix = np.load(tiny_items_dir / "items.npy")
    found = store_client.recommend(5, item_ids={"ac-1": 1.0, "shoes-1": 3.0}, texts=["coffee"], explain=True)
    history = {"ac-1": (1.0, matrix[IDS.index("ac-1")]), "shoes-1": (3.0, matrix[IDS.index("shoes-1")])}
    text_vector = store_client.embed(["coffee"], normalize=True)[0]
    parts = [("item", 0, "ac-1", *history["ac-1"]), ("item", 1, "shoes-1", *history["shoes-1"])]
    parts.append(("text", 0, None, 1.0, text_vector))
    combined = sum(weight * vector for *_, weight, vector in parts)
    norm = float(np.linalg.norm(combined))
    for item in found:
        assert item.contribution is not None
        row = matrix[IDS.index(item.id)]
        shares = [weight / norm * float(vector @ row) for *_, weight, vector in parts]
        best = int(np.argmax(shares))
        assert (item.contribution.part, item.contribution.index, item.contribution.item_id) == parts[best][:3]
        assert item.contribution.score == pytest.approx(shares[best], abs=1e-5)
        assert sum(shares) == pytest.approx(item.score, abs=1e-5)
    assert all(item.contribution is None for item in store_client.recommend(3, texts=["coffee"]))


def test_filter_values_without_a_filter_field_are_refused_by_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    from embedrec.export.items import build_items

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in CATALOG_ROWS))
    build_items(catalog, tiny_model_dir, tmp_path / "items", progress=False)
    for settings in (
        server_settings(tiny_model_dir, tmp_path / "items"),
        milvus_settings(tiny_model_dir, tmp_path / "items", tmp_path, "plain"),
    ):
        refuse_filter_values(start_server(settings))


def refuse_filter_values(server: ServerThread) -> None:
    try:
        with EmbedrecClient(server.target, timeout=30) as client, pytest.raises(EmbedrecClientError) as error:
            client.recommend(3, texts=["coffee"], filter_values=["food"])
        assert error.value.code.name == "INVALID_ARGUMENT"
        assert "filter_values given, but the served items have no filter field" in error.value.message
    finally:
        server.close()


# Hot reload ---------------------------------------------------------------------------------------


@pytest.fixture()
def second_items_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """Another catalog (other ids) built with the same model."""
    from embedrec.export.items import build_items

    catalog = tmp_path / "second.jsonl"
    rows = [{"id": f"new-{row['id']}", "text": row["text"] + " new", "category": "new"} for row in CATALOG_ROWS[:7]]
    catalog.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    output = tmp_path / "second-items"
    build_items(catalog, tiny_model_dir, output, filter_field="category", progress=False)
    return output


@pytest.fixture()
def linked_server(tiny_model_dir: Path, tiny_items_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerThread, Path]]:
    """A server started on a symlink to the session's items; yields (server, symlink)."""
    link = tmp_path / "current"
    link.symlink_to(tiny_items_dir)
    server = start_server(server_settings(tiny_model_dir, link))
    yield server, link
    server.close()


def repoint(link: Path, target: Path) -> None:
    """Atomically re-point `link` at `target` (what a deployment does)."""
    temporary = link.with_name(link.name + ".new")
    temporary.symlink_to(target)
    temporary.replace(link)


def test_reload_items_swaps_in_the_repointed_matrix_and_info_reports_it(
    linked_server: tuple[ServerThread, Path], tiny_items_dir: Path, second_items_dir: Path
) -> None:
    server, link = linked_server
    with EmbedrecClient(server.target, timeout=30) as client:
        before = client.info()
        assert client.reload_items().changed is False
        repoint(link, second_items_dir)
        result = client.reload_items()
        after = client.info()
        assert result.changed and result.previous_items_sha256 == before.items_sha256
        assert (after.item_count, after.items_sha256) == (7, result.items_sha256)
        assert after.items_sha256 != before.items_sha256
        assert all(item.id.startswith("new-") for item in client.recommend(3, texts=["coffee"]))
        with pytest.raises(EmbedrecClientError) as error:
            client.recommend(3, item_ids=["ac-1"])  # an id of the old catalog
        assert error.value.code.name == "NOT_FOUND"


def test_a_matrix_of_another_model_is_refused_and_the_old_one_keeps_serving(
    linked_server: tuple[ServerThread, Path], tmp_path: Path
) -> None:
    server, link = linked_server
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    for path in Path(os.readlink(link)).iterdir():
        (foreign / path.name).write_bytes(path.read_bytes())
    manifest = json.loads((foreign / "items_manifest.json").read_text())
    manifest.update(model_name="another-model", model_onnx_sha256="0" * 64, items_sha256="f" * 64)
    (foreign / "items_manifest.json").write_text(json.dumps(manifest))
    with EmbedrecClient(server.target, timeout=30) as client:
        before = client.info()
        repoint(link, foreign)
        with pytest.raises(EmbedrecClientError) as error:
            client.reload_items()
        assert error.value.code.name == "FAILED_PRECONDITION"
        assert "still serving the previous items" in error.value.message
        assert "another-model" in error.value.message
        assert client.info().items_sha256 == before.items_sha256
        assert len(client.recommend(3, texts=["coffee"])) == 3
    registry = server.app.metrics.registry
    assert registry.get_sample_value("embedrec_items_reloads_total", {"result": "refused"}) == 1


def test_no_call_fails_while_the_matrix_is_swapped_under_load(
    linked_server: tuple[ServerThread, Path], tiny_items_dir: Path, second_items_dir: Path
) -> None:
    server, link = linked_server
    outcomes: Counter[str] = Counter()
    seen_ids: set[str] = set()
    stop = threading.Event()
    config = ChannelConfig(retry=None)

    def load() -> None:
        with EmbedrecClient(server.target, timeout=30, channel=config) as client:
            while not stop.is_set():
                try:
                    found = client.recommend(3, texts=["coffee for the family"])
                    batch = client.recommend_batch([{"k": 2, "texts": ["shoes"]}, {"k": 2, "texts": ["phone"]}])
                    seen_ids.update(item.id for item in found + batch[0] + batch[1])
                    outcomes["OK"] += 1
                except EmbedrecClientError as error:
                    outcomes[error.code.name] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        with EmbedrecClient(server.target, timeout=30) as admin:
            for swap in range(6):
                time.sleep(0.15)
                repoint(link, second_items_dir if swap % 2 == 0 else tiny_items_dir)
                assert admin.reload_items().changed
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert set(outcomes) == {"OK"}, outcomes
    assert outcomes["OK"] > 20
    # Both matrices answered during the run.
    assert any(item_id.startswith("new-") for item_id in seen_ids)
    assert any(not item_id.startswith("new-") for item_id in seen_ids)


def test_sighup_to_the_supervisor_reloads_the_items_in_every_worker(
    tiny_model_dir: Path, tiny_items_dir: Path, second_items_dir: Path, tmp_path: Path
) -> None:
    from tests.e2e.test_scale_out import free_port, serve, stop, wait_ready

    link = tmp_path / "current"
    link.symlink_to(tiny_items_dir)
    port = free_port()
    process = serve(tiny_model_dir, link, port, "--workers", "2")
    target = f"127.0.0.1:{port}"
    try:
        wait_ready(target)
        repoint(link, second_items_dir)
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while True:
            counts = set()
            for _ in range(12):  # separate connections reach both workers
                with EmbedrecClient(target, channel=ChannelConfig(separate_connection=True)) as client:
                    counts.add(client.info(timeout=10).item_count)
            if counts == {7}:
                break
            assert time.monotonic() < deadline, f"workers still serve {counts} items after SIGHUP"
            time.sleep(0.2)
        assert process.poll() is None
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr


def test_searches_over_the_queue_bound_are_refused_at_once_naming_the_limit(
    tiny_model_dir: Path, tiny_items_dir: Path
) -> None:
    server = start_server(server_settings(tiny_model_dir, tiny_items_dir, max_queued_searches=2))
    try:
        with EmbedrecClient(server.target, timeout=30, channel=ChannelConfig(retry=None)) as client:
            dim = client.info().dim
            assert len(client.recommend_batch([{"k": 1, "vector": unit(1, dim)}] * 2)) == 2
            with pytest.raises(EmbedrecClientError) as error:
                client.recommend_batch([{"k": 1, "vector": unit(1, dim)}] * 3)
        assert error.value.code.name == "RESOURCE_EXHAUSTED"
        assert "limit max_queued_searches=2" in error.value.message
    finally:
        server.close()


def test_a_filter_value_no_item_has_is_warned_and_the_answer_stays_exact(store_client: EmbedrecClient) -> None:
    """`filter_values` and `where` values no item has: the same exact answer as without them (empty
    when they were all there was), and on the memory-mapped store a warning naming the field, the
    value and a near spelling; Milvus sends none (a query per value would cost too much)."""
    on_mmap = store_client.info().items_engine == ""
    found = store_client.recommend(3, texts=["coffee"], filter_values=["Food", "food"])
    assert [item.id for item in found] == [
        item.id for item in store_client.recommend(3, texts=["coffee"], filter_values=["food"])
    ]
    expected = (
        "filter_values: no item has 'Food' in 'category' (values match exactly, case included); did you mean 'food'?"
    )
    assert found.warnings == ([expected] if on_mmap else [])
    empty = store_client.recommend(3, texts=["coffee"], where=["category=toys"])
    assert list(empty) == [] and len(empty.warnings) == on_mmap
    assert all(warning.startswith("where[0].any_of: no item has 'toys'") for warning in empty.warnings)
    users = [{"k": 2, "texts": ["x"]}, {"k": 2, "texts": ["x"], "filter_values": [f"v{i}" for i in range(30)]}]
    first, second = store_client.recommend_batch(users)
    assert first.warnings == [] and list(second) == []
    if on_mmap:  # at most 10 warnings, the last one counting the rest
        assert len(second.warnings) == 10 and second.warnings[0].startswith("users[1].filter_values: no item has 'v0'")
        assert second.warnings[-1] == "and 21 more values no item has"
    assert store_client.recommend(3, texts=["coffee"], filter_values=["food"]).warnings == []
