"""Tokenisation with the `tokenizers` library, and padding of a batch to its longest text."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from embedrec.server.errors import InvalidArgument

IntArray = npt.NDArray[np.int64]


@dataclasses.dataclass(frozen=True, slots=True)
class TokenizedText:
    """One text's token ids and type ids (already truncated), ready to be batched."""

    input_ids: IntArray
    type_ids: IntArray

    @property
    def length(self) -> int:
        """Number of tokens, special tokens included."""
        return int(self.input_ids.shape[0])


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
        self.max_length = max_length
        self.pad_token_id = pad_token_id

    def tokenize(self, texts: Sequence[str], *, truncate: bool = True, field: str = "texts") -> list[TokenizedText]:
        """Tokenise `texts` in order.

        With `truncate=False` a text longer than `max_length` tokens raises InvalidArgument
        naming `field[i]` and the limit.
        """
        encodings = self._tokenizer.encode_batch(list(texts))
        tokenized = []
        for index, encoding in enumerate(encodings):
            if not truncate and encoding.overflowing:
                raise InvalidArgument(
                    f"{field}[{index}] is longer than the model's max length of {self.max_length} "
                    "tokens and truncate is false"
                )
            tokenized.append(
                TokenizedText(
                    input_ids=np.asarray(encoding.ids, dtype=np.int64),
                    type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
                )
            )
        return tokenized

    def tokenize_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[TokenizedText]:
        """Tokenise (query, document) pairs for a cross-encoder, in order: one sequence each with
        the model's separators and type ids, truncated longest-first to `max_length` (as
        transformers' tokenizer(queries, documents, truncation=True) does)."""
        encodings = self._tokenizer.encode_batch([(query, document) for query, document in pairs])
        return [
            TokenizedText(
                input_ids=np.asarray(encoding.ids, dtype=np.int64),
                type_ids=np.asarray(encoding.type_ids, dtype=np.int64),
            )
            for encoding in encodings
        ]

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
