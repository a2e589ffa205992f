"""Score formulas through a real server: gRPC with the real client, HTTP JSON and the CLI, on
both exact scans; every answer equal to a float64 brute force of the formula over every admitted
item (an independent implementation of the terms here), with every Recommend feature on top."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from embedrec.client import EmbedrecClient, InvalidArgument
from embedrec.server.catalog.exact import exact_scores_of
from embedrec.server.catalog.mmap.store import ItemIndex
from embedrec.server.catalog.profiles import ProfilePart, combine_profile
from embedrec.v1 import embedrec_pb2 as pb
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server
from tests.e2e.test_cli import embedrec
from tests.e2e.test_http import call, http_base

WORDS = ["energy", "saving", "air", "conditioner", "running", "shoes", "coffee", "tea", "kitchen", "novel", "book"]
BRANDS = ["acme", "zenith", "orbit", "nova"]
DEFAULT = "0.05*log1p(popularity)"
FORMULAS = [
    "0.08*log1p(popularity)",
    "0.3*gauss(published, origin=1000, scale=200, offset=50, decay=0.4) - 0.002*value(price, missing=100)",
    "2*exp(published, origin=500, scale=300) + 0.1*linear(price, origin=0, scale=150, decay=0.2, missing=-1)",
    "-50*log1p(popularity, missing=3)",  # the prior decides, against popularity
]


def catalog_rows(count: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    return [
        {
            "id": f"p{row:03d}",
            "text": " ".join(rng.choice(WORDS, size=3 + row % 4)) + f" {row}",
            "brand": BRANDS[row % len(BRANDS)],
            "popularity": None if row % 11 == 4 else float(rng.integers(0, 500)),
            "published": float(rng.integers(0, 2000)),
            "price": None if row % 7 == 2 else float(rng.integers(1, 300)),
        }
        for row in range(count)
    ]


@pytest.fixture(scope="module")
def items_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from embedrec.export.items import build_items

    directory = tmp_path_factory.mktemp("formula")
    catalog = directory / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(row) + "\n" for row in catalog_rows(240)))
    build_items(
        catalog,
        tiny_model_dir,
        directory / "items",
        filter_field="brand",
        numeric_fields=["popularity", "published", "price"],
        progress=False,
    )
    return directory / "items"


@pytest.fixture(scope="module", params=["int8", "float32"])
def server(
    request: pytest.FixtureRequest, tiny_model_dir: Path, items_dir: Path, tiny_reranker_dir: Path
) -> Iterator[ServerThread]:
    """A server with a default formula and a reranker, on each scan."""
    settings = server_settings(
        tiny_model_dir, items_dir, scan=request.param, score_formula=DEFAULT, model=(f"ranker={tiny_reranker_dir}",)
    )
    started = start_server(settings)
    yield started
    started.close()


@pytest.fixture(scope="module")
def index(items_dir: Path) -> ItemIndex:
    return ItemIndex(items_dir, scan="float32")


def reference_term(function: str, x: float, p: dict[str, float]) -> float:
    """One term by the definitions of docs/score-formula.md (Elasticsearch's decays)."""
    if math.isnan(x) or (function == "log1p" and x <= -1):
        return p.get("missing", 0.0)
    if function == "log1p":
        return math.log1p(x)
    scale = p.get("scale", 1.0)
    if function == "value":
        return x / scale
    distance = max(0.0, abs(x - p["origin"]) - p.get("offset", 0.0)) / scale
    decay = p.get("decay", 0.5)
    if function == "gauss":
        return math.exp(math.log(decay) * distance * distance)
    if function == "exp":
        return math.exp(math.log(decay) * distance)
    return max(0.0, 1.0 - (1.0 - decay) * distance)


def reference_terms(text: str) -> list[tuple[float, str, str, dict[str, float]]]:
    """(weight, function, field, parameters) of the test formulas' text (their simple form)."""
    terms = []
    for sign, part in zip(*_split(text), strict=True):
        weight, _, rest = part.partition("*")
        function, _, inside = rest.partition("(")
        field, *options = [one.strip() for one in inside.rstrip(")").split(",")]
        parameters = {key: float(value) for key, value in (option.split("=") for option in options)}
        terms.append((sign * float(weight), function, field, parameters))
    return terms


def _split(text: str) -> tuple[list[float], list[str]]:
    signs, parts, current, sign = [], [], "", 1.0
    for token in text.replace(" - ", " -| ").replace(" + ", " +| ").split("| "):
        token = token.strip()
        if token.endswith(("+", "-")):
            current, next_sign = token[:-1].strip(), (-1.0 if token.endswith("-") else 1.0)
        else:
            current, next_sign = token, 1.0
        if current.startswith("-"):
            sign, current = -sign, current[1:]
        signs.append(sign)
        parts.append(current)
        sign = next_sign
    return signs, parts


def brute_force(index: ItemIndex, vector: np.ndarray, text: str, admitted: np.ndarray) -> tuple[list[str], np.ndarray]:
    """Every admitted item ranked by the formula in float64 (ties by row): ids and scores."""
    profile = combine_profile([ProfilePart(vector.astype(np.float32), 1.0, "user_vector")]).vector
    rows = np.flatnonzero(admitted).astype(np.int64)
    similarities = exact_scores_of(index.matrix, rows, profile).astype(np.float64)
    prior = np.zeros(rows.size)
    for weight, function, field, parameters in reference_terms(text):
        values = np.asarray(index.columns[field].values)[rows]
        prior = prior + np.asarray([weight * reference_term(function, x, parameters) for x in values.tolist()])
    totals = similarities + prior
    order = np.lexsort((rows, -totals))
    return index.ids.ids_at(rows[order]), totals[order]


def everything(index: ItemIndex) -> np.ndarray:
    return np.ones(len(index), dtype=bool)


def random_vectors(count: int, dim: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(dim) for _ in range(count)]


class TestExactUnderTheFormula:
    @pytest.mark.parametrize("text", FORMULAS)
    def test_ids_scores_and_terms_equal_the_brute_force(
        self, server: ServerThread, index: ItemIndex, text: str
    ) -> None:
        with EmbedrecClient(server.target, timeout=30) as client:
            for vector in random_vectors(4, index.manifest.dim, seed=len(text)):
                found = client.recommend(12, vector=vector, explain=True, score_formula=text)
                ids, totals = brute_force(index, vector, text, everything(index))
                assert [one.id for one in found] == ids[:12]
                if text.startswith("-50"):  # the prior decides: not the cosine's order
                    assert ids[:12] != brute_force(index, vector, "0*log1p(price)", everything(index))[0][:12]
                assert [one.score for one in found] == pytest.approx(totals[:12].tolist(), rel=1e-6, abs=1e-6)
                for one in found:
                    assert one.similarity is not None and len(one.score_terms) == len(reference_terms(text))
                    assert one.similarity + sum(one.score_terms) == pytest.approx(one.score, rel=1e-6, abs=1e-6)

    def test_the_default_formula_ranks_unless_a_request_overrides_or_disables_it(
        self, server: ServerThread, index: ItemIndex
    ) -> None:
        vector = random_vectors(1, index.manifest.dim, seed=1)[0]
        with EmbedrecClient(server.target, timeout=30) as client:
            assert client.info().score_formula == DEFAULT and client.info().limits["max_score_terms"] == 8
            default = client.recommend(10, vector=vector)
            assert [one.id for one in default] == brute_force(index, vector, DEFAULT, everything(index))[0][:10]
            assert all(one.similarity is not None for one in default)
            plain = client.recommend(10, vector=vector, score_formula="none")
            assert all(one.similarity is None for one in plain)
            cosine = brute_force(index, vector, "0*log1p(popularity)", everything(index))[0]
            assert [one.id for one in plain] == cosine[:10]
            assert [one.id for one in client.recommend(10, vector=vector, score_formula="")] == cosine[:10]

    def test_filters_exclusions_min_score_and_pages_apply_to_the_formula(
        self, server: ServerThread, index: ItemIndex
    ) -> None:
        text = FORMULAS[1]
        vector = random_vectors(1, index.manifest.dim, seed=2)[0]
        acme_or_nova = np.asarray([BRANDS[row % len(BRANDS)] in ("acme", "nova") for row in range(len(index))])
        prices = np.asarray(index.columns["price"].values)
        admitted = acme_or_nova & (prices < 200)
        admitted[index.ids.find(["p004", "p008"])] = False
        ids, totals = brute_force(index, vector, text, admitted)
        options: dict[str, Any] = {
            "vector": vector,
            "score_formula": text,
            "filter_values": ["acme", "nova"],
            "where": ["price<200"],
            "exclude_ids": ["p004", "p008"],
        }
        with EmbedrecClient(server.target, timeout=30) as client:
            assert [one.id for one in client.recommend(15, **options)] == ids[:15]
            pages = [one.id for page in range(3) for one in client.recommend(5, offset=5 * page, **options)]
            assert pages == ids[:15]
            floor = float(totals[6])
            above = [one.id for one in client.recommend(50, min_score=floor, **options)]
            assert above == [i for i, total in zip(ids, totals, strict=False) if total >= np.float32(floor)][:50]

    def test_diversity_walks_the_formula_ranking(self, server: ServerThread, index: ItemIndex) -> None:
        text = FORMULAS[0]
        vector = random_vectors(1, index.manifest.dim, seed=3)[0]
        ids, _ = brute_force(index, vector, text, everything(index))
        brand_of = {f"p{row:03d}": BRANDS[row % len(BRANDS)] for row in range(len(index))}
        taken: list[str] = []
        for item_id in ids:
            if sum(brand_of[one] == brand_of[item_id] for one in taken) < 2:
                taken.append(item_id)
        with EmbedrecClient(server.target, timeout=30) as client:
            found = client.recommend(8, vector=vector, score_formula=text, diversity=("brand", 2))
        assert [one.id for one in found] == taken[:8]

    def test_hidden_items_never_come_back_under_a_formula(self, server: ServerThread, index: ItemIndex) -> None:
        text = FORMULAS[3]
        vector = random_vectors(1, index.manifest.dim, seed=4)[0]
        ids, _ = brute_force(index, vector, text, everything(index))
        with EmbedrecClient(server.target, timeout=30) as client:
            client.hide_items(ids[:2])
            try:
                assert [one.id for one in client.recommend(5, vector=vector, score_formula=text)] == ids[2:7]
            finally:
                client.restore_items(ids[:2])

    def test_a_batch_with_different_formulas_answers_each_as_alone(
        self, server: ServerThread, index: ItemIndex
    ) -> None:
        vectors = random_vectors(len(FORMULAS) + 1, index.manifest.dim, seed=6)
        users = [{"k": 6, "vector": v, "score_formula": t} for v, t in zip(vectors, [*FORMULAS, None], strict=True)]
        with EmbedrecClient(server.target, timeout=30) as client:
            together = client.recommend_batch(users)
            alone = [client.recommend(6, vector=u["vector"], score_formula=u["score_formula"]) for u in users]
        assert [[one.id for one in found] for found in together] == [[one.id for one in found] for found in alone]
        assert [one.id for one in together[-1]] == brute_force(index, vectors[-1], DEFAULT, everything(index))[0][:6]

    def test_a_profile_with_dislikes_and_the_best_score_strategy_take_a_formula(
        self, server: ServerThread, index: ItemIndex
    ) -> None:
        text = FORMULAS[2]
        with EmbedrecClient(server.target, timeout=30) as client:
            disliked = client.recommend(
                8, item_ids={"p010": 1.0, "p020": -0.5}, score_formula=text, explain=True, exclude_history=False
            )
            best = client.recommend(8, item_ids=["p010", "p030"], strategy="best_score", score_formula=text)
        liked, unliked = (np.asarray(index.matrix[index.ids.find([i])[0]], dtype=np.float32) for i in ("p010", "p020"))
        profile = combine_profile(
            [ProfilePart(liked, 1.0, "item", 0, "p010"), ProfilePart(unliked, -0.5, "item", 1, "p020")]
        ).vector
        ids, _ = brute_force(index, profile, text, everything(index))
        assert [one.id for one in disliked] == ids[:8]
        assert all(one.contribution is not None and len(one.score_terms) == 2 for one in disliked)
        # best_score: the best cosine to a liked item, plus the prior; history excluded.
        rows = index.ids.find(["p010", "p030"])
        vectors = np.asarray(index.matrix[rows], dtype=np.float32)
        admitted = everything(index)
        admitted[rows] = False
        candidates = np.flatnonzero(admitted)
        scores = (np.asarray(index.matrix[candidates], np.float32) @ vectors.T).max(axis=1).astype(np.float32)
        prior = _prior(index, text, candidates)
        totals = scores.astype(np.float64) + prior
        expected = index.ids.ids_at(candidates[np.lexsort((candidates, -totals))][:8])
        assert [one.id for one in best] == list(expected)

    def test_the_rerank_stage_takes_the_best_candidates_by_the_formula(
        self, server: ServerThread, index: ItemIndex
    ) -> None:
        text = FORMULAS[3]
        vector = random_vectors(1, index.manifest.dim, seed=8)[0]
        ids, _ = brute_force(index, vector, text, everything(index))
        with EmbedrecClient(server.target, timeout=30) as client:
            found = client.recommend(
                6, vector=vector, score_formula=text, rerank_candidates=6, rerank_query="coffee tea", rerank=True
            )
        assert {one.id for one in found} == set(ids[:6])  # the formula chose them, the reranker ordered them
        assert all(one.rerank_score is not None for one in found)


def _prior(index: ItemIndex, text: str, rows: np.ndarray) -> np.ndarray:
    prior = np.zeros(rows.size)
    for weight, function, field, parameters in reference_terms(text):
        values = np.asarray(index.columns[field].values)[rows]
        prior = prior + np.asarray([weight * reference_term(function, x, parameters) for x in values.tolist()])
    return prior


class TestBadFormulas:
    @pytest.mark.parametrize(
        ("formula", "named"),
        [
            (pb.ScoreFormula(terms=[pb.ScoreTerm(field="nope", function=pb.SCORE_FUNCTION_LOG1P)]), "terms[0].field"),
            (pb.ScoreFormula(terms=[pb.ScoreTerm(field="brand", function=pb.SCORE_FUNCTION_LOG1P)]), "categorical"),
            (
                pb.ScoreFormula(terms=[pb.ScoreTerm(field="price", function=pb.SCORE_FUNCTION_VALUE, weight=math.nan)]),
                "terms[0].weight must be finite",
            ),
            (
                pb.ScoreFormula(terms=[pb.ScoreTerm(field="price", function=pb.SCORE_FUNCTION_VALUE, scale=0)]),
                "terms[0].scale must be > 0",
            ),
            (pb.ScoreFormula(terms=[pb.ScoreTerm(field="price")]), "terms[0].function: unknown function"),
            (
                pb.ScoreFormula(terms=[pb.ScoreTerm(field="price", function=pb.SCORE_FUNCTION_VALUE)] * 9),
                "max_score_terms=8",
            ),
            ("log1p(popularity", "score_formula.expression"),
        ],
    )
    def test_grpc_answers_invalid_argument_naming_the_term(
        self, server: ServerThread, formula: pb.ScoreFormula | str, named: str
    ) -> None:
        with EmbedrecClient(server.target, timeout=30) as client, pytest.raises(InvalidArgument) as raised:
            client.recommend(3, item_ids=["p001"], score_formula=formula)
        assert named in str(raised.value)

    def test_a_batch_names_the_user(self, server: ServerThread) -> None:
        users = [{"k": 2, "item_ids": ["p001"]}, {"k": 2, "item_ids": ["p002"], "score_formula": "log1p(brand)"}]
        with (
            EmbedrecClient(server.target, timeout=30) as client,
            pytest.raises(InvalidArgument, match=r"users\[1\].score_formula"),
        ):
            client.recommend_batch(users)


class TestOtherEdges:
    def test_http_json_takes_terms_or_an_expression_and_answers_400_naming_the_field(
        self, server: ServerThread, index: ItemIndex
    ) -> None:
        vector = random_vectors(1, index.manifest.dim, seed=9)[0]
        base = http_base(server)
        terms = {"terms": [{"field": "popularity", "function": "SCORE_FUNCTION_LOG1P", "weight": 0.08}]}
        for formula in (terms, {"expression": FORMULAS[0]}):
            body = {"k": 5, "user_vector": vector.tolist(), "score_formula": formula, "explain": True}
            status, answer, _ = call(base, "/v1/recommend", body)
            assert status == 200, answer
            assert [one["id"] for one in answer["items"]] == brute_force(index, vector, FORMULAS[0], everything(index))[
                0
            ][:5]
            assert all("similarity" in one and len(one["scoreTerms"]) == 1 for one in answer["items"])
        bad = {"k": 5, "user_vector": vector.tolist(), "score_formula": {"expression": "log1p(price) + value(brand)"}}
        status, answer, _ = call(base, "/v1/recommend", bad)
        assert status == 400 and answer["error"]["code"] == "INVALID_ARGUMENT"
        assert "score_formula.terms[1].field" in answer["error"]["message"]

    def test_the_cli_ranks_by_a_formula_and_shows_its_parts(self, server: ServerThread) -> None:
        arguments = ["recommend", "--target", server.target, "--item", "p001", "-k", "3", "--explain"]
        shown = embedrec(*arguments, "--score-formula", FORMULAS[0])
        assert shown.returncode == 0, shown.stderr
        assert all("(similarity " in line and " terms " in line for line in shown.stdout.splitlines())
        refused = embedrec(*arguments, "--score-formula", "log1p(nope)")
        assert refused.returncode == 1 and "INVALID_ARGUMENT" in refused.stderr and "nope" in refused.stderr


def test_a_default_formula_the_items_do_not_fit_refuses_to_start(tiny_model_dir: Path, items_dir: Path) -> None:
    from embedrec.server.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match=r"--score-formula.terms\[0\].field.*'nope'"):
        start_server(server_settings(tiny_model_dir, items_dir, score_formula="log1p(nope)"))


def test_a_default_formula_that_does_not_parse_is_refused_naming_the_flag(tiny_model_dir: Path) -> None:
    with pytest.raises(ValueError, match="--score-formula: expected"):
        server_settings(tiny_model_dir, None, score_formula="log1p(")
