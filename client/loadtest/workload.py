"""What the load generator sends: which RPCs, how many texts, how long, and k."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedrec.v1 import embedrec_pb2 as pb

RPC_NAMES = ("embed", "recommend", "similarity", "info")
# Common English words: texts of n words are about 1.2 n tokens for a BERT WordPiece vocabulary.
_WORD_LIST = """
the of and to in is for on with as by at from this that it be are was an or have not can will all
home energy saving air conditioner quiet room family kitchen coffee tea book novel music game phone
laptop screen battery light fast small large price quality delivery review customer service order
return size color red blue green black white running shoes jacket winter summer travel hotel flight
city beach mountain river garden dog cat child school work office meeting project report data model
search result recommend similar item product brand new old best great good bad easy simple
comfortable modern classic
"""
WORDS = tuple(_WORD_LIST.split())


@dataclass(frozen=True)
class TextLengths:
    """Words per generated text: fixed (low == high) or uniform in [low, high]."""

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> TextLengths:
        """'20' → fixed 20 words; '5-120' → uniform 5..120 words."""
        low, _, high = text.partition("-")
        lengths = cls(int(low), int(high or low))
        if lengths.low < 1 or lengths.high < lengths.low:
            raise ValueError(f"word range must be N or A-B with 1 <= A <= B, got {text!r}")
        return lengths


@dataclass(frozen=True)
class Workload:
    """The request mix and shapes of a load test."""

    rpc_weights: dict[str, float]
    texts_per_request: int = 1
    lengths: TextLengths = TextLengths(20, 20)
    texts_file: Path | None = None
    k: int = 10
    recommend_by: str = "vector"
    # "grpc", or "http": the HTTP/JSON edge (Embed as OpenAI /v1/embeddings for `model`).
    protocol: str = "grpc"
    model: str = ""

    @staticmethod
    def parse_mix(text: str) -> dict[str, float]:
        """'embed' or 'embed=3,recommend=1' → {rpc: weight}."""
        weights: dict[str, float] = {}
        for part in text.split(","):
            name, _, weight = part.strip().partition("=")
            if name not in RPC_NAMES:
                raise ValueError(f"unknown rpc {name!r}; choose from {', '.join(RPC_NAMES)}")
            weights[name] = float(weight or 1)
        if not weights or sum(weights.values()) <= 0:
            raise ValueError("the rpc mix needs a positive weight")
        return weights


class RequestPool:
    """Pre-built requests (so building them costs nothing during the run), drawn by weight."""

    def __init__(self, workload: Workload, *, dim: int, seed: int = 0, size: int = 512) -> None:
        """Build `size` requests per RPC of the mix; `dim` sizes Recommend's user vectors."""
        rng = random.Random(seed)
        corpus = _read_texts(workload.texts_file) if workload.texts_file else None
        self.names = list(workload.rpc_weights)
        self.weights = [workload.rpc_weights[name] for name in self.names]
        self._rng = rng
        self.requests: dict[str, list[tuple[object, int]]] = {}
        vectors = np.random.default_rng(seed).standard_normal((size, dim)).astype(np.float32)
        for name in self.names:
            built = []
            for index in range(size):
                texts = [_text(rng, workload.lengths, corpus) for _ in range(workload.texts_per_request)]
                built.append(_build(name, texts, vectors[index], workload))
            self.requests[name] = built

    def draw(self) -> tuple[str, object, int]:
        """(rpc name, request message, texts in it), chosen by the mix weights."""
        name = self._rng.choices(self.names, self.weights)[0] if len(self.names) > 1 else self.names[0]
        request, texts = self._rng.choice(self.requests[name])
        return name, request, texts


def _read_texts(path: Path) -> list[str]:
    texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not texts:
        raise ValueError(f"{path} has no texts")
    return texts


def _text(rng: random.Random, lengths: TextLengths, corpus: Sequence[str] | None) -> str:
    if corpus is not None:
        return rng.choice(corpus)
    return " ".join(rng.choices(WORDS, k=rng.randint(lengths.low, lengths.high)))


def _build(name: str, texts: list[str], vector: np.ndarray, workload: Workload) -> tuple[object, int]:
    if name == "embed":
        return pb.EmbedRequest(texts=texts), len(texts)
    if name == "similarity":
        return pb.SimilarityRequest(query=texts[0], candidates=texts[1:] or texts), len(texts) + (len(texts) == 1)
    if name == "recommend":
        if workload.recommend_by == "text":
            request = pb.RecommendRequest(k=workload.k, texts=[pb.WeightedText(text=text) for text in texts])
            return request, len(texts)
        return pb.RecommendRequest(k=workload.k, user_vector=vector.tolist()), 0
    return pb.InfoRequest(), 0
