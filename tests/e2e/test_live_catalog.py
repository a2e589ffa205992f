"""Recommend for live catalogs, against a float64 brute force with exact ties: negative feedback,
a score floor, pages, and lenient history."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient, InvalidArgument, NotFound
from embedrec.server.settings import Settings
from tests.e2e.conftest import LITE, MilvusBackend, milvus_settings, server_settings
from tests.e2e.server_thread import ServerThread, start_server

# Eight distinct texts, each under five ids: rows with equal text are equal, so scores tie exactly.
TEXTS = [
    "energy saving air conditioner",
    "red running shoes",
    "coffee and tea for the kitchen",
    "a new novel, a good book",
    "phone with a large screen",
    "large fridge for the family",
    "music and game for the cat",
    "small laptop, fast and light",
]
BRANDS = ["acme", "zenith", "orbit"]
TAGS = ["new", "sale", "eco"]
ROWS = [
    {
        "id": f"item-{row:02d}",
        "text": TEXTS[row % len(TEXTS)],
        "brand": BRANDS[row % len(BRANDS)],
        "price": None if row % 13 == 5 else float(10 + (row * 7) % 50),
        "tags": [TAGS[t] for t in range(3) if (row >> t) & 1],
    }
    for row in range(40)
]
IDS = [row["id"] for row in ROWS]


@pytest.fixture(scope="module")
def tied_items_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from embedrec.export.items import build_items

    catalog = tmp_path_factory.mktemp("tied") / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    output = tmp_path_factory.mktemp("tied-items") / "items"
    build_items(
        catalog, tiny_model_dir, output, filter_field="brand", fields=["tags"], numeric_fields=["price"], progress=False
    )
    return output


def milvus_backend_of(request: pytest.FixtureRequest) -> MilvusBackend:
    """Milvus Lite for the "milvus" parameter, the session's Milvus server for "milvus-server"."""
    if request.param == "milvus-server":
        return MilvusBackend("server", request.getfixturevalue("milvus_server_uri"))
    return LITE


@pytest.fixture(scope="module", params=["mmap", "milvus", "milvus-server"])
def tied_server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tied_items_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """The tied catalog served from each item store (Milvus: Lite and a real server): every test
    of this module runs on each."""
    if request.param.startswith("milvus"):
        backend = milvus_backend_of(request)
        settings = milvus_settings(tiny_model_dir, tied_items_dir, tmp_path_factory.mktemp("milvus"), "tied", backend)
    else:
        settings = server_settings(tiny_model_dir, tied_items_dir)
    server = start_server(settings)
    yield server
    server.close()


@pytest.fixture()
def tied(tied_server: ServerThread) -> Iterator[EmbedrecClient]:
    with EmbedrecClient(tied_server.target, timeout=30) as connected:
        yield connected


@pytest.fixture(scope="module")
def matrix(tied_items_dir: Path) -> np.ndarray:
    return np.load(tied_items_dir / "items.npy").astype(np.float64)


def ranked(matrix: np.ndarray, profile: np.ndarray, excluded: set[int] = frozenset()) -> list[tuple[str, float]]:  # type: ignore[assignment]
    """Every eligible (id, score), best first, equal scores in catalog order (float64)."""
    scores = matrix @ (profile / np.linalg.norm(profile))
    order = np.lexsort((np.arange(len(scores)), -np.round(scores, 6)))
    return [(IDS[row], float(scores[row])) for row in order if row not in excluded]


def ids(found: list) -> list[str]:  # type: ignore[type-arg]
    return [item.id for item in found]


class TestNegativeFeedback:
    def test_disliked_texts_and_items_pull_the_profile_away_exactly(
        self, tied: EmbedrecClient, matrix: np.ndarray
    ) -> None:
        liked, disliked = tied.embed([TEXTS[0], TEXTS[1]])
        disliked_item = matrix[IDS.index("item-02")]
        profile = 1.0 * liked - 0.5 * disliked - 0.8 * disliked_item
        found = tied.recommend(12, texts={TEXTS[0]: 1.0, TEXTS[1]: -0.5}, item_ids={"item-02": -0.8})
        expected = ranked(matrix, profile, excluded={IDS.index("item-02")})[:12]
        assert ids(found) == [item_id for item_id, _ in expected]
        np.testing.assert_allclose([item.score for item in found], [score for _, score in expected], atol=1e-5)

    def test_explanations_still_sum_to_the_score_with_negative_shares(
        self, tied: EmbedrecClient, matrix: np.ndarray
    ) -> None:
        liked, disliked = tied.embed([TEXTS[2], TEXTS[3]])
        combined = 2.0 * liked - 1.0 * disliked
        norm = float(np.linalg.norm(combined))
        for item in tied.recommend(6, texts={TEXTS[2]: 2.0, TEXTS[3]: -1.0}, explain=True):
            row = matrix[IDS.index(item.id)]
            shares = [2.0 / norm * float(liked @ row), -1.0 / norm * float(disliked @ row)]
            assert sum(shares) == pytest.approx(item.score, abs=1e-5)
            assert item.contribution is not None and item.contribution.index == int(np.argmax(shares))

    def test_a_profile_of_dislikes_only_is_refused(self, tied: EmbedrecClient) -> None:
        with pytest.raises(InvalidArgument, match="no part with a positive weight"):
            tied.recommend(3, texts={TEXTS[0]: -1.0})


class TestScoreFloorAndPages:
    def test_min_score_returns_exactly_the_items_at_or_above_it(self, tied: EmbedrecClient, matrix: np.ndarray) -> None:
        (query,) = tied.embed([TEXTS[4]])
        everything = ranked(matrix, query)
        floor = everything[12][1]  # a score held by a group of tied rows
        found = tied.recommend(40, vector=query, min_score=floor)
        expected = [item_id for item_id, score in everything if score >= floor - 1e-6]
        assert ids(found) == expected and all(item.score >= floor - 1e-6 for item in found)
        assert tied.recommend(5, vector=query, min_score=1.0) == [] or everything[0][1] >= 1.0 - 1e-6

    def test_pages_are_the_slices_of_one_long_call_ties_included(self, tied: EmbedrecClient) -> None:
        (query,) = tied.embed([TEXTS[5]])
        one_call = ids(tied.recommend(35, vector=query, exclude_ids=["item-07"]))
        pages: list[str] = []
        for page in range(5):
            pages += ids(tied.recommend(7, vector=query, exclude_ids=["item-07"], offset=7 * page))
        assert pages == one_call
        assert tied.recommend(7, vector=query, offset=39) == [] or len(tied.recommend(7, vector=query, offset=39)) == 1

    def test_pages_work_per_user_in_a_batch(self, tied: EmbedrecClient) -> None:
        (query,) = tied.embed([TEXTS[6]])
        first, second = tied.recommend_batch([{"k": 5, "vector": query}, {"k": 5, "vector": query, "offset": 5}])
        assert ids(first) + ids(second) == ids(tied.recommend(10, vector=query))

    @pytest.mark.parametrize(
        ("options", "named"),
        [
            ({"offset": 10_001}, r"offset must be an integer from 0 to 10000 \(max_offset\)"),
            ({"min_score": 1.5}, r"min_score must be a cosine in \[-1, 1\]"),
            ({"min_score": float("nan")}, "min_score must be a cosine"),
        ],
    )
    def test_out_of_range_is_invalid_naming_the_field(
        self, tied: EmbedrecClient, options: dict[str, float], named: str
    ) -> None:
        with pytest.raises(InvalidArgument, match=named):
            tied.recommend(3, texts=[TEXTS[0]], **options)  # type: ignore[arg-type]


class TestLenientHistory:
    def test_unknown_history_ids_are_skipped_and_reported(self, tied: EmbedrecClient) -> None:
        history = {"item-01": 1.0, "gone-1": 1.0, "item-09": 0.5, "gone-2": 2.0}
        found = tied.recommend(5, item_ids=history, ignore_unknown_items=True)
        assert found.unknown_item_ids == ["gone-1", "gone-2"]
        assert ids(found) == ids(tied.recommend(5, item_ids={"item-01": 1.0, "item-09": 0.5}))
        with pytest.raises(NotFound, match="gone-1"):
            tied.recommend(5, item_ids=history)

    def test_a_history_of_unknown_ids_only_is_an_empty_profile(self, tied: EmbedrecClient) -> None:
        with pytest.raises(InvalidArgument, match="profile is empty"):
            tied.recommend(5, item_ids=["gone-1"], ignore_unknown_items=True)


@pytest.fixture(params=["mmap", "milvus", "milvus-server"])
def hiding_server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, tied_items_dir: Path, tmp_path: Path
) -> Iterator[tuple[ServerThread, Settings]]:
    """A server on a private copy of the tied items (hides write into the directory, or the
    collection), from each store; yields it and its settings (to start another on the same items)."""
    import shutil

    if request.param.startswith("milvus"):
        settings = milvus_settings(tiny_model_dir, tied_items_dir, tmp_path, "hiding", milvus_backend_of(request))
    else:
        items = tmp_path / "items"
        shutil.copytree(tied_items_dir, items)
        settings = server_settings(tiny_model_dir, items)
    server = start_server(settings)
    yield server, settings
    server.close()


class TestHiddenItems:
    def test_hidden_items_never_come_back_and_the_rest_is_exact(
        self, hiding_server: tuple[ServerThread, Settings], matrix: np.ndarray
    ) -> None:
        server, _ = hiding_server
        with EmbedrecClient(server.target, timeout=30) as client:
            (query,) = client.embed([TEXTS[0]])
            hidden = ["item-00", "item-08", "item-16", "item-03"]
            result = client.hide_items([*hidden, "no-such-id"])
            assert (result.changed, result.unknown_ids, result.hidden_count) == (4, ["no-such-id"], 4)
            expected = [item_id for item_id, _ in ranked(matrix, query, {IDS.index(h) for h in hidden})][:10]
            assert ids(client.recommend(10, vector=query)) == expected
            batched = client.recommend_batch([{"k": 10, "vector": query}, {"k": 3, "texts": [TEXTS[3]]}])
            assert ids(batched[0]) == expected and not set(ids(batched[1])) & set(hidden)
            assert client.hidden_items() == sorted(hidden)
            assert client.info().hidden_item_count == 4
            restored = client.restore_items(["item-00", "item-01"])
            assert (restored.changed, restored.hidden_count) == (1, 3)
            assert "item-00" in ids(client.recommend(10, vector=query))

    def test_the_hidden_set_survives_a_restart_and_a_reload(
        self, hiding_server: tuple[ServerThread, Settings], tiny_model_dir: Path
    ) -> None:
        server, settings = hiding_server
        with EmbedrecClient(server.target, timeout=30) as client:
            client.hide_items(["item-05", "item-06"])
            client.reload_items()  # the same items: still hidden
            assert client.hidden_items() == ["item-05", "item-06"]
        restarted = start_server(settings)
        try:
            with EmbedrecClient(restarted.target, timeout=30) as client:
                assert client.hidden_items() == ["item-05", "item-06"]
                found = client.recommend(40, texts=[TEXTS[5]])
                assert not {"item-05", "item-06"} & set(ids(found)) and len(found) == 38
        finally:
            restarted.close()

    def test_hides_under_concurrent_recommends_are_exact_for_every_call(
        self, hiding_server: tuple[ServerThread, Settings], matrix: np.ndarray
    ) -> None:
        import threading

        server, _ = hiding_server
        with EmbedrecClient(server.target, timeout=30) as client:
            (query,) = client.embed([TEXTS[2]])
            order = [item_id for item_id, _ in ranked(matrix, query)]
            stop = threading.Event()
            hidden_before: list[set[str]] = []
            answers: list[tuple[set[str], list[str], set[str]]] = []

            def recommender() -> None:
                while not stop.is_set():
                    before = set(client.hidden_items())
                    found = ids(client.recommend(8, vector=query))
                    answers.append((before, found, set(client.hidden_items())))

            threads = [threading.Thread(target=recommender) for _ in range(3)]
            for thread in threads:
                thread.start()
            for item_id in order[:12]:
                client.hide_items([item_id])
                hidden_before.append(set(client.hidden_items()))
            stop.set()
            for thread in threads:
                thread.join(30)
        assert len(answers) > 5
        for before, found, after in answers:
            # Hidden before the call started: never returned; the answer is the top 8 of what was
            # visible under some state between the call's start and end.
            assert not before & set(found)
            candidates = [[i for i in order if i not in state][:8] for state in (before, after, *hidden_before)]
            assert found in candidates

    def test_a_rebuild_into_the_same_directory_keeps_hidden_ids_still_in_the_catalog(
        self, tiny_model_dir: Path, tmp_path: Path
    ) -> None:
        from embedrec.export.items import build_items
        from embedrec.server.catalog.mmap.hidden import read_hidden_ids

        catalog = tmp_path / "catalog.jsonl"
        catalog.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
        output = tmp_path / "items"
        build_items(catalog, tiny_model_dir, output, progress=False)
        (output / "hidden_ids.json").write_text(json.dumps(["item-01", "item-39"]))
        catalog.write_text("".join(json.dumps(row) + "\n" for row in ROWS[:30]))  # item-39 leaves
        build_items(catalog, tiny_model_dir, output, progress=False)
        assert read_hidden_ids(output) == ["item-01"]

    def test_hiding_needs_an_admin_token_when_tokens_are_on(
        self, tiny_model_dir: Path, tied_items_dir: Path, tmp_path: Path
    ) -> None:
        import shutil

        from embedrec.client import ChannelConfig, PermissionDenied

        items = tmp_path / "items"
        shutil.copytree(tied_items_dir, items)
        (tmp_path / "clients").write_text("client-token\n")
        (tmp_path / "admins").write_text("admin-token\n")
        settings = server_settings(
            tiny_model_dir, items, auth_tokens_file=tmp_path / "clients", admin_tokens_file=tmp_path / "admins"
        )
        server = start_server(settings)
        try:
            with EmbedrecClient(server.target, timeout=30, channel=ChannelConfig(bearer_token="client-token")) as c:
                with pytest.raises(PermissionDenied):
                    c.hide_items(["item-01"])
            with EmbedrecClient(server.target, timeout=30, channel=ChannelConfig(bearer_token="admin-token")) as c:
                assert c.hide_items(["item-01"]).hidden_count == 1
        finally:
            server.close()


@pytest.fixture(params=["scan", "prefilter"])
def search_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test on both search paths: the scan that checks candidates, and the prefilter that
    scores only the eligible rows (chosen for selective filters; forced here for every filter)."""
    import embedrec.server.catalog.mmap.store

    monkeypatch.setattr(
        embedrec.server.catalog.mmap.store, "PREFILTER_FRACTION", 0.0 if request.param == "scan" else 2.0
    )
    return str(request.param)


def eligible(predicate: object) -> set[int]:
    return {row for row, values in enumerate(ROWS) if predicate(values)}  # type: ignore[operator]


@pytest.mark.usefixtures("search_path")
class TestFieldConditions:
    CASES = [  # noqa: RUF012
        (["brand=acme|orbit"], lambda r: r["brand"] in ("acme", "orbit")),
        (["brand!=acme"], lambda r: r["brand"] != "acme"),
        (["price<30"], lambda r: r["price"] is not None and r["price"] < 30),
        (["price>=20", "price<=40"], lambda r: r["price"] is not None and 20 <= r["price"] <= 40),
        (["price>44"], lambda r: r["price"] is not None and r["price"] > 44),
        (["tags=sale"], lambda r: "sale" in r["tags"]),
        (["tags!=new|eco"], lambda r: not {"new", "eco"} & set(r["tags"])),
        (
            ["tags=eco", "brand=zenith", "price<50"],
            lambda r: "eco" in r["tags"] and r["brand"] == "zenith" and r["price"] is not None and r["price"] < 50,
        ),
        (["tags=no-such-tag"], lambda r: False),
    ]

    @pytest.mark.parametrize(("where", "predicate"), CASES)
    def test_conditions_are_anded_and_exact_against_brute_force(
        self, tied: EmbedrecClient, matrix: np.ndarray, where: list[str], predicate: object
    ) -> None:
        (query,) = tied.embed([TEXTS[3]])
        allowed = eligible(predicate)
        expected = [item_id for item_id, _ in ranked(matrix, query, set(range(40)) - allowed)][:7]
        assert ids(tied.recommend(7, vector=query, where=where)) == expected

    def test_info_lists_the_fields_and_their_kinds(self, tied: EmbedrecClient) -> None:
        assert tied.info().items_fields == {"brand": "categorical", "tags": "categorical", "price": "numeric"}

    @pytest.mark.parametrize(
        ("where", "named"),
        [
            ([{"field": "colour", "any_of": ["red"]}], r"where\[0\]: the items have no field 'colour'"),
            ([{"field": "price", "any_of": ["10"]}], r"where\[0\]: 'price' is numeric"),
            ([{"field": "brand", "lt": 3}], r"where\[0\]: 'brand' is categorical"),
            (["price<50", {"field": "price", "gte": 30, "lt": 30}], r"where\[1\]: the range of 'price' is empty"),
            ([{"field": "price", "gt": 5, "gte": 6}], "at most one lower bound"),
            ([{"field": "price"}], r"where\[0\]: give a range"),
            ([{"field": "tags"}], r"where\[0\]: give any_of or none_of"),
            (["price<1"] * 33, "where has more than 32 entries; the limit is max_conditions=32"),
        ],
    )
    def test_bad_conditions_are_invalid_naming_the_condition(
        self, tied: EmbedrecClient, where: list[object], named: str
    ) -> None:
        with pytest.raises(InvalidArgument, match=named):
            tied.recommend(3, texts=[TEXTS[0]], where=where)  # type: ignore[arg-type]

    def test_conditions_apply_per_user_in_a_batch(self, tied: EmbedrecClient) -> None:
        (query,) = tied.embed([TEXTS[1]])
        cheap, acme = tied.recommend_batch(
            [{"k": 5, "vector": query, "where": ["price<25"]}, {"k": 5, "vector": query, "where": ["brand=acme"]}]
        )
        assert ids(cheap) == ids(tied.recommend(5, vector=query, where=["price<25"]))
        assert ids(acme) == ids(tied.recommend(5, vector=query, filter_values=["acme"]))


@pytest.mark.usefixtures("search_path")
class TestDiversity:
    @pytest.mark.parametrize(("field", "limit"), [("brand", 1), ("brand", 2), ("tags", 2)])
    def test_at_most_n_per_value_by_a_greedy_walk_of_the_ranking(
        self, tied: EmbedrecClient, matrix: np.ndarray, field: str, limit: int
    ) -> None:
        (query,) = tied.embed([TEXTS[0]])
        expected: list[str] = []
        counts: dict[str, int] = {}
        for item_id, _ in ranked(matrix, query):
            row = ROWS[IDS.index(item_id)]
            values = row[field] if isinstance(row[field], list) else [row[field]]
            if any(counts.get(value, 0) >= limit for value in values):
                continue
            for value in values:
                counts[value] = counts.get(value, 0) + 1
            expected.append(item_id)
        found = tied.recommend(10, vector=query, diversity=(field, limit))
        assert ids(found) == expected[:10]
        page = tied.recommend(2, vector=query, diversity=(field, limit), offset=2)
        assert ids(page) == expected[2:4]

    def test_a_bad_diversity_field_or_limit_is_invalid(self, tied: EmbedrecClient) -> None:
        with pytest.raises(InvalidArgument, match=r"diversity\.field: 'price' is not a categorical field"):
            tied.recommend(3, texts=[TEXTS[0]], diversity=("price", 2))
        with pytest.raises(InvalidArgument, match=r"diversity\.max_per_value must be at least 1"):
            tied.recommend(3, texts=[TEXTS[0]], diversity=("brand", 0))


@pytest.mark.usefixtures("search_path")
class TestBestScore:
    def test_best_liked_minus_best_disliked_exactly_as_brute_force(
        self, tied: EmbedrecClient, matrix: np.ndarray
    ) -> None:
        tent, coffee, shoes = tied.embed([TEXTS[0], TEXTS[2], TEXTS[1]]).astype(np.float64)
        scores = np.maximum(matrix @ tent, matrix @ coffee) - matrix @ shoes
        order = np.lexsort((np.arange(len(scores)), -np.round(scores, 6)))
        expected = [IDS[row] for row in order[:15]]
        found = tied.recommend(
            15, texts={TEXTS[0]: 1.0, TEXTS[2]: 3.0, TEXTS[1]: -1.0}, strategy="best_score", explain=True
        )
        assert ids(found) == expected
        np.testing.assert_allclose([item.score for item in found], scores[order[:15]], atol=1e-5)
        for item in found:  # the explanation: the liked text it is closest to, and that cosine
            row = matrix[IDS.index(item.id)]
            similarities = {0: float(row @ tent), 1: float(row @ coffee)}
            best = max(similarities, key=lambda index: similarities[index])
            assert item.contribution is not None and item.contribution.index == best
            assert item.contribution.score == pytest.approx(similarities[best], abs=1e-5)

    def test_best_score_works_with_conditions_hidden_pages_and_batches(
        self, tied: EmbedrecClient, matrix: np.ndarray
    ) -> None:
        profile = {"texts": {TEXTS[4]: 1.0, TEXTS[7]: 1.0}, "strategy": "best_score", "where": ["price<40"]}
        one_call = ids(tied.recommend(12, **profile))  # type: ignore[arg-type]
        pages = ids(tied.recommend(6, **profile)) + ids(tied.recommend(6, offset=6, **profile))  # type: ignore[arg-type]
        assert pages == one_call
        batched = tied.recommend_batch([{"k": 12, **profile}, {"k": 3, "texts": [TEXTS[4]]}])
        assert ids(batched[0]) == one_call and ids(batched[1]) == ids(tied.recommend(3, texts=[TEXTS[4]]))
        assert all(ROWS[IDS.index(item_id)]["price"] < 40 for item_id in one_call)  # type: ignore[operator]

    def test_best_score_needs_a_liked_part(self, tied: EmbedrecClient) -> None:
        with pytest.raises(InvalidArgument, match="best_score needs at least one part with a positive weight"):
            tied.recommend(3, texts={TEXTS[0]: -1.0}, strategy="best_score")


def test_a_reload_carries_the_hidden_set_over_or_refuses_and_keeps_serving(
    tiny_model_dir: Path, tied_items_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from embedrec.client import FailedPrecondition
    from embedrec.export.items import build_items
    from embedrec.server.catalog.mmap.hidden import read_hidden_ids

    first = tmp_path / "first"
    shutil.copytree(tied_items_dir, first)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({**row, "text": f"{row['text']} v2"}) + "\n" for row in ROWS))
    second = tmp_path / "second"
    build_items(catalog, tiny_model_dir, second, progress=False)
    link = tmp_path / "current"
    link.symlink_to(first)
    server = start_server(server_settings(tiny_model_dir, link))
    try:
        with EmbedrecClient(server.target, timeout=30) as client:
            client.hide_items(["item-03"])
            blocker = second / "hidden_ids.json.tmp"  # the new directory cannot take the hidden set
            blocker.mkdir()
            link.unlink()
            link.symlink_to(second)
            with pytest.raises(FailedPrecondition, match="still serving the previous items"):
                client.reload_items()
            assert "item-03" not in ids(client.recommend(40, texts=[TEXTS[3]]))
            blocker.rmdir()
            assert client.reload_items().changed
            assert client.hidden_items() == ["item-03"] and read_hidden_ids(second) == ["item-03"]
            assert "item-03" not in ids(client.recommend(40, texts=[TEXTS[3]]))
    finally:
        server.close()
