"""Tokenisation with the `tokenizers` library, and padding of a batch to its longest text."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedrec.server.errors import InvalidArgument

IntArray = npt.NDArray[np.int64]
# Which end of a text too long for the model is cut: "right" keeps its start (the default, as
# sentence-transformers does), "left" keeps its end (TEI's truncation_direction Left, Cohere's
# truncate START).
TruncationSide = Literal["right", "left"]


@dataclasses.dataclass(frozen=True, slots=True)
class TokenizedText:
    """One text's token ids and type ids (already truncated), ready to be batched."""

    input_ids: IntArray
    type_ids: IntArray

    @property
    def length(self) -> int:
        """Number of tokens, special tokens included."""
        return int(self.input_ids.shape[0])


@dataclasses.dataclass(frozen=True, slots=True)
class TokenSpan:
    """One token of a text: its id, its text (the token itself for a special token), and the
    UTF-8 byte span [start, stop) of the text it covers (None for a special token)."""

    id: int
    text: str
    special: bool
    start: int | None
    stop: int | None


class TextTokenizer:
    """Turns texts into `TokenizedText` and batches of them into padded model inputs."""

    def __init__(self, tokenizer_file: Path, *, max_length: int, pad_token_id: int) -> None:
        """Load `tokenizer_file` (tokenizer.json) truncating to `max_length` tokens.

        Any padding baked into the file is removed: the batch is padded to its longest text by
        `pad_batch`, not to a fixed length (all-MiniLM-L6-v2 ships with padding to 128).
        """
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_length)
        # A second copy cutting on the left: truncation is the tokenizer's state, and changing it
        # per call would race between the threads that tokenise at once.
        self._left_tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._left_tokenizer.no_padding()
        self._left_tokenizer.enable_truncation(max_length=max_length, direction="left")
        self.max_length = max_length
        self.pad_token_id = pad_token_id

    def tokenize(
        self,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        field: str = "texts",
        side: TruncationSide = "right",
        max_tokens: int | None = None,
    ) -> list[TokenizedText]:
        """Tokenise `texts` in order, each cut to `max_length` tokens (or `max_tokens`, when
        smaller; special tokens included) on `side`.

        With `truncate=False` a text longer than that raises InvalidArgument naming `field[i]`
        and the limit.
        """
        tokenizer = self._left_tokenizer if side == "left" else self._tokenizer
        limit = self.max_length if max_tokens is None else min(max_tokens, self.max_length)
        if limit < self.max_length:
            encodings = self._capped(tokenizer, texts, limit, side)
        else:
            encodings = tokenizer.encode_batch(list(texts))
        tokenized = []
        for index, encoding in enumerate(encodings):
            if not truncate and encoding.overflowing:
                what = "the model's max length" if limit == self.max_length else "max_tokens"
                raise InvalidArgument(
                    f"{field}[{index}] is longer than {what} of {limit} tokens and truncate is false",
                    field=f"{field}[{index}]",
                )
            tokenized.append(
                TokenizedText(
                    input_ids=np.asarray(encoding.ids, dtype=np.int64),
                    type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
                )
            )
        return tokenized

    @staticmethod
    def _capped(tokenizer: Tokenizer, texts: Sequence[str], limit: int, side: TruncationSide) -> list[Any]:
        """Encodings of `texts` cut to `limit` tokens with the special tokens (cut before they
        are added, so the separators stay)."""
        budget = max(1, limit - tokenizer.num_special_tokens_to_add(False))
        encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for encoding in encodings:
            if len(encoding.ids) > budget:
                encoding.truncate(budget, direction=side)
        return [tokenizer.post_process(encoding) for encoding in encodings]

    def token_spans(self, text: str, *, add_special_tokens: bool = True) -> list[TokenSpan]:
        """The tokens of `text` (cut to `max_length`) with the UTF-8 byte span each covers in it
        (None for special tokens), as TEI's /tokenize reports them."""
        encoding = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        spans = []
        for token_id, token, (start, stop), special in zip(
            encoding.ids, encoding.tokens, encoding.offsets, encoding.special_tokens_mask, strict=True
        ):
            if special:
                spans.append(TokenSpan(token_id, token, True, None, None))
                continue
            byte_start = len(text[:start].encode("utf-8", "surrogatepass"))
            piece = text[start:stop]
            spans.append(
                TokenSpan(token_id, piece, False, byte_start, byte_start + len(piece.encode("utf-8", "surrogatepass")))
            )
        return spans

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]], *, max_document_tokens: int = 0) -> list[TokenizedText]:
        """Tokenise (query, document) pairs for a cross-encoder, in order: one sequence each with
        the model's separators and type ids, truncated longest-first to `max_length` (as
        transformers' tokenizer(queries, documents, truncation=True) does), each document first
        cut to `max_document_tokens` tokens when that is positive (Cohere's max_tokens_per_doc)."""
        if max_document_tokens > 0:
            encodings = self._pairs_with_short_documents(pairs, max_document_tokens)
        else:
            encodings = self._tokenizer.encode_batch([(query, document) for query, document in pairs])
        return [
            TokenizedText(
                input_ids=np.asarray(encoding.ids, dtype=np.int64),
                type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
            )
            for encoding in encodings
        ]

    def _pairs_with_short_documents(self, pairs: Sequence[tuple[str, str]], max_document_tokens: int) -> list[Any]:
        tokenizer = self._tokenizer
        queries = tokenizer.encode_batch([query for query, _ in pairs], add_special_tokens=False)
        documents = tokenizer.encode_batch([document for _, document in pairs], add_special_tokens=False)
        for document in documents:
            if len(document.ids) > max_document_tokens:
                document.truncate(max_document_tokens)
        return [tokenizer.post_process(query, document) for query, document in zip(queries, documents, strict=True)]

    def pad_batch(self, batch: Sequence[TokenizedText]) -> dict[str, IntArray]:
        """Pad `batch` to its longest text: input_ids, attention_mask, token_type_ids (int64)."""
        longest = max(item.length for item in batch)
        input_ids = np.full((len(batch), longest), self.pad_token_id, dtype=np.int64)
        type_ids = np.zeros((len(batch), longest), dtype=np.int64)
        attention_mask = np.zeros((len(batch), longest), dtype=np.int64)
        for row, item in enumerate(batch):
            input_ids[row, : item.length] = item.input_ids
            type_ids[row, : item.length] = item.type_ids
            attention_mask[row, : item.length] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": type_ids}
