"""Tiny random BERT models built in the test session (no hub): fast to export and to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embedrec.server.inference.encoder import OnnxEncoder

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ENGLISH_WORDS = [
    "the",
    "a",
    "an",
    "and",
    "of",
    "for",
    "to",
    "in",
    "with",
    "is",
    "are",
    "this",
    "that",
    "air",
    "conditioner",
    "energy",
    "saving",
    "home",
    "quiet",
    "room",
    "running",
    "shoes",
    "coffee",
    "tea",
    "book",
    "novel",
    "phone",
    "laptop",
    "fridge",
    "cool",
    "warm",
    "fast",
    "light",
    "dark",
    "red",
    "blue",
    "hello",
    "world",
    "good",
    "bad",
    "new",
    "old",
    "small",
    "large",
    "cat",
    "dog",
    "family",
    "kitchen",
    "music",
    "game",
    "water",
]
WORD_PIECES = ["##s", "##ing", "##ed", "##er", "##ly"]
CJK_CHARACTERS = list("这是一款高效节能的空调适合家庭使用我喜欢喝咖啡读书跑步鞋子手机电脑冰箱")
PUNCTUATION = list(".,!?;:'\"-()#@$%&*0123456789，。！？")


def write_vocab(path: Path) -> int:
    """Write a WordPiece vocab with English words, sub-words, CJK characters; return its size."""
    letters = [chr(code) for code in range(ord("a"), ord("z") + 1)]
    tokens = SPECIAL_TOKENS + ENGLISH_WORDS + WORD_PIECES + letters + [f"##{c}" for c in letters]
    tokens += CJK_CHARACTERS + PUNCTUATION
    unique = list(dict.fromkeys(tokens))
    path.write_text("\n".join(unique) + "\n", encoding="utf-8")
    return len(unique)


def save_tokenizer(directory: Path, *, max_length: int) -> Any:
    """Write the test vocabulary and a fast WordPiece tokenizer over it into `directory`."""
    from transformers import BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    write_vocab(directory / "vocab.txt")
    tokenizer = BertTokenizerFast(
        vocab_file=str(directory / "vocab.txt"), do_lower_case=True, model_max_length=max_length
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def build_tiny_bert(directory: Path, *, max_length: int = 48, seed: int = 0) -> Path:
    """Save a 2-layer, hidden-32 random BertModel and its fast tokenizer in `directory`.

    A plain transformers model: the export gives it CLS pooling.
    """
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = save_tokenizer(directory, max_length=max_length)
    vocab_size = tokenizer.vocab_size
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        # A wide init spreads the random model's embeddings (at 0.02 every CLS vector is
        # nearly the same), so rankings in tests are not decided by rounding.
        initializer_range=0.5,
    )
    BertModel(config).eval().save_pretrained(directory)
    return directory


def build_tiny_roberta(directory: Path, *, max_length: int = 40, seed: int = 0) -> Path:
    """A 2-layer random RobertaModel (no token type ids in its graph) with a WordPiece tokenizer.

    The tokenizer is BERT's (a BPE vocabulary cannot be made without training data here); what
    the RoBERTa family changes for export and serving — no token_type_ids input, positions offset
    by padding_idx + 1 — comes from the model.
    """
    import torch
    from transformers import RobertaConfig, RobertaModel

    tokenizer = save_tokenizer(directory, max_length=max_length)
    vocab_size = tokenizer.vocab_size
    torch.manual_seed(seed)
    config = RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_length + 2,
        pad_token_id=tokenizer.pad_token_id,
        type_vocab_size=1,
        initializer_range=0.5,
    )
    RobertaModel(config).eval().save_pretrained(directory)
    return directory


def build_tiny_cross_encoder(directory: Path, *, max_length: int = 48, seed: int = 0, labels: int = 1) -> Path:
    """Save a 2-layer random BertForSequenceClassification with `labels` outputs (a reranker has
    one) and its fast tokenizer in `directory`: what a MiniLM cross-encoder looks like."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = save_tokenizer(directory, max_length=max_length)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        initializer_range=0.5,  # spread scores, as build_tiny_bert does
        num_labels=labels,
    )
    BertForSequenceClassification(config).eval().save_pretrained(directory)
    return directory


class CountingEncoder(OnnxEncoder):
    """The real ONNX encoder, counting the texts it embeds (to see what a build re-embeds)."""

    embedded = 0

    def encode(self, texts, **options):  # type: ignore[no-untyped-def]
        self.embedded += len(texts)
        return super().encode(texts, **options)
