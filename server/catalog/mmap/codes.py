"""Int8 codes of the item matrix and what they guarantee: the first stage of the exact scan.

Each item vector x is coded per dimension: x_i ≈ x̂_i = lo_i + (c_i + 128)·Δ_i with c_i an int8,
lo_i the smallest value of dimension i over the catalog and Δ_i = (max_i - lo_i) / 255. Besides
the codes, a build records what the bound below needs, measured over every item (not assumed
from the rounding): per dimension the largest |x_i - x̂_i| and the largest |c_i|, and over the
rows the largest ‖x - x̂‖₂, ‖c‖₂ and ‖x‖₂.

The files (beside items.npy, written by export-items; built in memory at load when absent):
item_codes.npy (int8, (n, dim)) and item_codes.json (lo, Δ, the measured maxima, the sha256 of
the matrix they code and of the codes file). A code file that disagrees with the matrix (count,
dim, matrix checksum, its own checksum) is refused with a message naming it.

The bound (see `QueryCodes`): for a float32 query q the code score base(q) + s·D, with D the
int8 kernel's exact integer dot product of the query's codes with the item's codes, is within
ε(q) of the item's exact score (embedrec.server.catalog.exact.exact_scores), for every item.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from embedrec.server.catalog.exact import FLOAT32_ROUNDOFF, FLOAT64_ROUNDOFF, FLOAT64_SLACK, Float64Array
from embedrec.server.errors import ConfigurationError

ITEM_CODES = "item_codes.npy"
ITEM_CODES_META = "item_codes.json"
CODES_FORMAT = 1
# Rows coded at a time when building: bounded temporaries (a few float64 copies of a chunk).
BUILD_CHUNK_ROWS = 8_192

CodeMatrix = npt.NDArray[np.int8]


@dataclass(frozen=True)
class CodeBook:
    """The per-dimension affine map of the codes and the maxima measured over every item."""

    lo: Float64Array  # (dim,)
    delta: Float64Array  # (dim,), 0 for a constant dimension
    max_abs_error: Float64Array  # (dim,) largest |x_i - x̂_i| over the items
    max_abs_code: Float64Array  # (dim,) largest |c_i| over the items
    error_norm: float  # largest ‖x - x̂‖₂ over the items
    code_norm: float  # largest ‖c‖₂ over the items
    row_norm: float  # largest ‖x‖₂ over the items

    @property
    def dim(self) -> int:
        """The vectors' dimension."""
        return int(self.lo.shape[0])

    def to_json(self) -> dict[str, Any]:
        """The code book as JSON values (float64 round-trips exactly through Python's json)."""
        return {
            "lo": self.lo.tolist(),
            "delta": self.delta.tolist(),
            "max_abs_error": self.max_abs_error.tolist(),
            "max_abs_code": self.max_abs_code.tolist(),
            "error_norm": self.error_norm,
            "code_norm": self.code_norm,
            "row_norm": self.row_norm,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CodeBook:
        """The code book `to_json` wrote; KeyError/TypeError/ValueError when malformed."""
        names = ("lo", "delta", "max_abs_error", "max_abs_code")
        arrays = {name: np.asarray(data[name], dtype=np.float64) for name in names}
        if len({array.shape for array in arrays.values()}) != 1 or arrays["lo"].ndim != 1:
            raise ValueError("code book arrays differ in shape")
        return cls(
            **arrays,
            error_norm=float(data["error_norm"]),
            code_norm=float(data["code_norm"]),
            row_norm=float(data["row_norm"]),
        )


@dataclass(frozen=True)
class ItemCodes:
    """The codes of one item matrix (a memory map when read from a directory) and their book."""

    codes: CodeMatrix
    book: CodeBook


def build_codes(matrix: npt.NDArray[np.floating], out: CodeMatrix | None = None) -> tuple[CodeMatrix, CodeBook]:
    """The int8 codes of `matrix` (n, dim) and their code book, in bounded memory and on one
    thread per core: one pass for the per-dimension range, one that codes and measures. Writes
    into `out` (e.g. a memory map of the code file) when given. The result depends only on the
    matrix's values."""
    rows_total, dim = matrix.shape
    starts = range(0, rows_total, BUILD_CHUNK_ROWS)
    with ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="build-codes") as pool:
        ranges = list(pool.map(lambda start: _range_of(matrix[start : start + BUILD_CHUNK_ROWS]), starts))
        lo = np.min([low for low, _ in ranges], axis=0) if ranges else np.zeros(dim)
        hi = np.max([high for _, high in ranges], axis=0) if ranges else np.zeros(dim)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            raise ValueError("the item matrix holds non-finite values")
        delta = (hi - lo) / 255.0
        codes = np.empty((rows_total, dim), dtype=np.int8) if out is None else out
        measured = list(pool.map(lambda start: _code_chunk(matrix, codes, start, lo, delta), starts))
    # The maxima were computed in float64; round them up past its error so they stay upper bounds.
    grow = 1.0 + FLOAT64_SLACK
    book = CodeBook(
        lo=lo,
        delta=delta,
        max_abs_error=np.max([np.zeros(dim), *(one[0] for one in measured)], axis=0) * grow + 1e-300,
        max_abs_code=np.max([np.zeros(dim), *(one[1] for one in measured)], axis=0),
        error_norm=max((one[2] for one in measured), default=0.0) * grow + 1e-300,
        code_norm=max((one[3] for one in measured), default=0.0) * grow,
        row_norm=max((one[4] for one in measured), default=0.0) * grow,
    )
    return codes, book


def _range_of(block: npt.NDArray[np.floating]) -> tuple[Float64Array, Float64Array]:
    values = np.asarray(block, dtype=np.float32)
    return values.min(axis=0).astype(np.float64), values.max(axis=0).astype(np.float64)


def _code_chunk(
    matrix: npt.NDArray[np.floating], codes: CodeMatrix, start: int, lo: Float64Array, delta: Float64Array
) -> tuple[Float64Array, Float64Array, float, float, float]:
    """Code rows start..start+BUILD_CHUNK_ROWS into `codes`; their maxima: per dimension |x - x̂|
    and |c|, per row ‖x - x̂‖, ‖c‖, ‖x‖."""
    block = np.asarray(matrix[start : start + BUILD_CHUNK_ROWS], dtype=np.float32)
    # Codes are chosen in float32 (fast); what they guarantee is measured in float64 below.
    scale32 = np.where(delta > 0, 1.0 / np.where(delta > 0, delta, 1.0), 0.0).astype(np.float32)
    steps = block - lo.astype(np.float32)
    steps *= scale32
    np.rint(steps, out=steps)
    np.clip(steps, 0, 255, out=steps)
    chunk_codes = (steps - 128).astype(np.int8)
    codes[start : start + block.shape[0]] = chunk_codes
    exact = block.astype(np.float64)
    error = steps.astype(np.float64)
    error *= delta
    error += lo
    np.subtract(exact, error, out=error)
    np.abs(error, out=error)
    code_values = chunk_codes.astype(np.float64)
    return (
        error.max(axis=0),
        np.abs(code_values).max(axis=0),
        float(np.sqrt(np.einsum("ij,ij->i", error, error).max())),
        float(np.sqrt(np.einsum("ij,ij->i", code_values, code_values).max())),
        float(np.sqrt(np.einsum("ij,ij->i", exact, exact).max())),
    )


def write_codes(items_dir: Path, matrix: npt.NDArray[np.floating], items_sha256: str) -> CodeBook:
    """Write `matrix`'s codes and code book into `items_dir` (the codes file first, under a
    temporary name, then the book naming its checksum: a killed write leaves no book, so the
    directory reads as having no codes)."""
    (items_dir / ITEM_CODES_META).unlink(missing_ok=True)
    partial = items_dir / f".{ITEM_CODES}.partial"
    codes = np.lib.format.open_memmap(partial, mode="w+", dtype=np.int8, shape=matrix.shape)
    _, book = build_codes(matrix, out=codes)
    codes.flush()
    del codes
    os.replace(partial, items_dir / ITEM_CODES)
    meta = {
        "format": CODES_FORMAT,
        "item_count": int(matrix.shape[0]),
        "dim": int(matrix.shape[1]),
        "items_sha256": items_sha256,
        "codes_sha256": _sha256(items_dir / ITEM_CODES),
        "book": book.to_json(),
    }
    temporary = items_dir / f".{ITEM_CODES_META}.partial"
    temporary.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(temporary, items_dir / ITEM_CODES_META)
    return book


def read_codes(items_dir: Path, *, item_count: int, dim: int, items_sha256: str) -> ItemCodes | None:
    """The codes stored in `items_dir` (memory-mapped), or None when it has none. Raises
    ConfigurationError naming the file when they do not belong to the matrix described by
    `item_count`, `dim` and `items_sha256`, or are damaged (checksum)."""
    meta_path, codes_path = items_dir / ITEM_CODES_META, items_dir / ITEM_CODES
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        book = CodeBook.from_json(meta["book"])
        expected = (int(meta["format"]), int(meta["item_count"]), int(meta["dim"]), str(meta["items_sha256"]))
        recorded_sha256 = str(meta["codes_sha256"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"{meta_path} unreadable: {error}; rebuild the items or delete it") from None
    if expected != (CODES_FORMAT, item_count, dim, items_sha256) or book.dim != dim:
        raise ConfigurationError(
            f"{meta_path} describes format {expected[0]}, {expected[1]} x {expected[2]} codes of the matrix "
            f"{expected[3][:12]}, but the items are {item_count} x {dim} of {items_sha256[:12]} "
            f"(format {CODES_FORMAT}); rebuild the items or delete {meta_path.name}"
        )
    try:
        codes: CodeMatrix = np.load(codes_path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{codes_path} unreadable: {error}; rebuild the items") from None
    if codes.dtype != np.int8 or codes.shape != (item_count, dim):
        raise ConfigurationError(
            f"{codes_path} holds {codes.dtype} {codes.shape}, the items are int8 {(item_count, dim)}; rebuild the items"
        )
    if _sha256(codes_path) != recorded_sha256:
        raise ConfigurationError(f"{codes_path} does not match its checksum in {meta_path.name}; rebuild the items")
    return ItemCodes(codes, book)


def codes_for(items_dir: Path, matrix: npt.NDArray[np.floating], items_sha256: str, log: Any = None) -> ItemCodes:
    """The stored codes of `items_dir`'s matrix, or, when it has none, codes built in memory now
    (logged with the time it took). ConfigurationError as in read_codes."""
    stored = read_codes(items_dir, item_count=matrix.shape[0], dim=matrix.shape[1], items_sha256=items_sha256)
    if stored is not None:
        return stored
    started = time.perf_counter()
    codes, book = build_codes(matrix)
    if log is not None:
        log.info(
            "%s has no int8 codes (built before they existed): built %d x %d in memory in %.1f s; "
            "rebuild the items with export-items to store them",
            items_dir,
            matrix.shape[0],
            matrix.shape[1],
            time.perf_counter() - started,
        )
    return ItemCodes(codes, book)


@dataclass(frozen=True)
class QueryCodes:
    """Queries quantised for the int8 kernel, with each one's bound.

    For query q (float32, exact in float64) and an item x with codes c:
        q·x = Σ q_i x̂_i + Σ q_i (x_i - x̂_i)
        Σ q_i x̂_i = Σ q_i lo_i + 128 Σ w_i + Σ w_i c_i,   w_i = q_i Δ_i
        Σ w_i c_i = s Σ u_i c_i + Σ r_i c_i,              u = rint(w / s) int8, s = max|w| / 127, r = w - s u
    so q·x = base + s·D + R1 + R2 with base = Σ q_i lo_i + 128 Σ w_i, D = Σ u_i c_i computed exactly
    by the kernel in int32 (|D| ≤ 127·128·dim < 2^31), and
        |R1| ≤ min(Σ |q_i|·max_abs_error_i, ‖q‖₂·error_norm)     (Cauchy-Schwarz for the second)
        |R2| ≤ min(Σ |r_i|·max_abs_code_i,  ‖r‖₂·code_norm)
    The exact score is q·x rounded: float64 products (exact), a float64 sum (error ≤ dim·2^-53·Σ|q_i x_i|)
    rounded to float32 (≤ 2^-24·|q·x|), so it is within R3 = (2^-24 + dim·2^-52)·‖q‖₂·row_norm of q·x.
    base, s and the terms above are float64 computations: R4 bounds their error generously.
    ε = (R1 + R2 + R3 + R4)·(1 + 1e-9) and |exact - (base + s·D)| ≤ ε for every item.
    """

    codes: CodeMatrix  # (q, dim) int8: u
    scale: Float64Array  # (q,) s
    base: Float64Array  # (q,)
    epsilon: Float64Array  # (q,)

    @classmethod
    def of(cls, queries: npt.NDArray[np.float32], book: CodeBook) -> QueryCodes:
        """Quantise `queries` (q, dim) float32 against `book` and bound each one's error."""
        exact = np.asarray(queries, dtype=np.float32).astype(np.float64)
        weights = exact * book.delta
        scale = np.abs(weights).max(axis=1) / 127.0
        safe = np.where(scale > 0, scale, 1.0)
        codes = np.clip(np.rint(weights / safe[:, None]), -127, 127)
        codes[scale == 0] = 0
        residual = weights - scale[:, None] * codes
        base = exact @ book.lo + 128.0 * weights.sum(axis=1)
        magnitude = np.abs(exact)
        query_norm = np.sqrt((exact * exact).sum(axis=1))
        r1 = np.minimum(magnitude @ book.max_abs_error, query_norm * book.error_norm)
        residual_norm = np.sqrt((residual * residual).sum(axis=1))
        r2 = np.minimum(np.abs(residual) @ book.max_abs_code, residual_norm * book.code_norm)
        r3 = (FLOAT32_ROUNDOFF + book.dim * 2 * FLOAT64_ROUNDOFF) * query_norm * book.row_norm
        # Every float64 quantity above and the code score itself are sums of at most a few
        # thousand terms bounded by Σ|q_i|(|lo_i| + 255Δ_i) + Σ|w_i|·128.
        span = magnitude @ (np.abs(book.lo) + 255.0 * book.delta) + 128.0 * np.abs(weights).sum(axis=1)
        r4 = FLOAT64_SLACK * span
        epsilon = (r1 + r2 + r3 + r4) * (1.0 + FLOAT64_SLACK)
        return cls(codes.astype(np.int8), scale, base, epsilon)

    def thresholds(self, floors: Float64Array) -> npt.NDArray[np.int64]:
        """Per query, the smallest D worth rescoring: D below it means base + s·D + ε < floor,
        so the item's exact score is below `floors` (one per query; -inf keeps every item)."""
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            needed = (floors - self.epsilon - self.base) / np.where(self.scale > 0, self.scale, 1.0)
        needed = np.floor(needed) - 1.0  # the -1 absorbs this division's own rounding
        limit = float(2**40)
        out = np.where(np.isnan(needed), -limit, np.clip(needed, -limit, limit))
        # A zero query scores every item base: keep all or none.
        flat = self.scale == 0
        out[flat] = np.where(self.base[flat] + self.epsilon[flat] >= floors[flat], -limit, limit)
        return out.astype(np.int64)

    def lower_bounds(self, values: npt.NDArray[np.integer]) -> Float64Array:
        """A lower bound of the exact score of an item whose D is `values` (one per query)."""
        estimate = self.base + self.scale * np.asarray(values, dtype=np.float64)
        return estimate - self.epsilon - FLOAT64_SLACK * np.abs(estimate)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while block := stream.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
