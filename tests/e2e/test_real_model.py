"""The bundled all-MiniLM-L6-v2, exported by export/ and served: it matches sentence-transformers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from embedrec.client import EmbedrecClient
from tests.e2e.conftest import server_settings
from tests.e2e.server_thread import ServerThread, start_server

ENGLISH = [
    "energy-saving air conditioner for home",
    "The weather is lovely today.",
    "He drove to the stadium.",
    "A man is playing a guitar.",
    "How do I reset my password?",
    "Best noise-cancelling headphones for flights",
    "Recipe for a quick vegetarian curry",
    "Quarterly revenue grew by 12 percent.",
    "cat",
    "dog",
    "Python is a programming language.",
    "The mitochondria is the powerhouse of the cell.",
    "I need running shoes for a marathon",
    "Cheap flights to Tokyo in April",
    "What's the capital of France?",
    "Refund policy for damaged items",
    "Turn left at the second traffic light.",
    "Machine learning models need data.",
    "She sells sea shells by the sea shore.",
    "Waterproof hiking boots, size 42",
]
CHINESE = [
    "这是一款高效节能的空调，适合家庭使用。",
    "今天天气很好。",
    "我想买一双跑步鞋。",
    "北京是中国的首都。",
    "这本书很有意思。",
    "请问最近的地铁站在哪里？",
    "我喜欢喝绿茶。",
    "机器学习需要大量数据。",
    "空调",
    "手机电池续航时间长",
    "周末去爬山吧",
    "这家餐厅的川菜很正宗。",
]
OTHER = [
    "Running shoes 🏃‍♀️ with extra cushioning ✨",
    "🔥🔥🔥",
    "I ❤️ coffee ☕",
    "Der Zug fährt um 8 Uhr ab.",
    "¿Dónde está la biblioteca?",
    "Je voudrais un café, s'il vous plaît.",
    "Москва — столица России.",
    "東京タワーはどこですか",
    "서울은 한국의 수도입니다",
    "a",
    "!!!",
    "1234567890",
    "x" * 300,
    "mixed 中文 and English text",
    "   leading and trailing spaces   ",
    "UPPER CASE SHOUTING TEXT",
]
LONG = [
    " ".join(["This sentence is repeated to exceed the maximum sequence length of the model."] * 40),
    "长文本" * 400,
    " ".join(f"word{i}" for i in range(600)),
]
TEXTS = ENGLISH + CHINESE + OTHER + LONG


@pytest.fixture(scope="module")
def minilm_server(minilm_dir: Path, demo_items_dir: Path) -> Iterator[ServerThread]:
    server = start_server(server_settings(minilm_dir, demo_items_dir, intra_op_threads=0))
    yield server
    server.close()


def test_served_embeddings_match_sentence_transformers(minilm_server: ServerThread) -> None:
    from sentence_transformers import SentenceTransformer

    from embedrec.export.source import BUNDLED_MODEL, resolve_model_source

    assert len(TEXTS) >= 50
    with EmbedrecClient(minilm_server.target, timeout=60) as client:
        info = client.info()
        served = np.vstack([client.embed(TEXTS[start : start + 16]) for start in range(0, len(TEXTS), 16)])
    reference_model = SentenceTransformer(str(resolve_model_source(BUNDLED_MODEL).directory), device="cpu")
    reference_model.max_seq_length = info.max_length
    reference = reference_model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    cosines = np.sum(served * reference, axis=1) / np.linalg.norm(served, axis=1) / np.linalg.norm(reference, axis=1)
    assert (info.dim, info.max_length, info.pooling) == (384, 256, "mean")
    assert cosines.min() >= 0.9999, f"worst text #{int(cosines.argmin())}: cosine {cosines.min():.6f}"


def test_recommends_air_conditioners_for_an_air_conditioner_query(minilm_server: ServerThread) -> None:
    with EmbedrecClient(minilm_server.target, timeout=60) as client:
        found = client.recommend(5, texts=["energy-saving air conditioner for home"])
    assert all(item.id.startswith("ac-") for item in found), found


def test_the_openai_client_against_the_make_serve_configuration(minilm_server: ServerThread) -> None:
    """The bundled MiniLM and the demo catalog, as `make serve` runs them: the `openai` package,
    with the model name the README uses, gets the vectors gRPC gets (which match
    sentence-transformers, above), and Recommend's JSON mirror the same ranking."""
    import json
    import urllib.request

    import openai

    api = openai.OpenAI(base_url=f"http://127.0.0.1:{minilm_server.app.http_port}/v1", api_key="unused", max_retries=0)
    result = api.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:16])
    with EmbedrecClient(minilm_server.target, timeout=60) as client:
        np.testing.assert_array_equal(np.float32([item.embedding for item in result.data]), client.embed(TEXTS[:16]))
        expected = [item.id for item in client.recommend(5, texts=["energy-saving air conditioner for home"])]
    body = json.dumps({"texts": [{"text": "energy-saving air conditioner for home"}], "k": 5}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{minilm_server.app.http_port}/v1/recommend",
        data=body,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert [item["id"] for item in json.loads(response.read())["items"]] == expected
