"""Item build: a catalog → L2-normalised float32 item matrix, ids, optional filter codes, manifest.

Rows are embedded with the server's own ONNX encoder (not PyTorch, so items and queries share
one embedding path) and written block by block into memory-mapped files: memory stays flat for
any catalog size. Everything is written into a hidden `.NAME.partial` directory beside the output,
with a checkpoint after every block; an interrupted build (Ctrl-C, kill) resumes from the last
completed block on re-run and ends byte-identical to an uninterrupted one. The finished directory
is renamed into place after its manifest, so a half-built matrix is never picked up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import sys
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedrec.export.atomic import replace_directory
from embedrec.export.catalog import CatalogError, CatalogRow, iter_catalog, validate_catalog
from embedrec.export.fields import write_columns
from embedrec.server.catalog.mmap.codes import write_codes
from embedrec.server.catalog.mmap.hidden import HIDDEN_FILE, read_hidden_ids
from embedrec.server.catalog.mmap.item_ids import ItemIds, write_id_index
from embedrec.server.catalog.mmap.item_texts import write_item_texts
from embedrec.server.errors import ConfigurationError, InvalidArgument
from embedrec.server.inference.encoder import OnnxEncoder
from embedrec.server.inference.prompts import document_prompt_name, prompt_text
from embedrec.server.manifest import (
    ITEMS_FILTER_CODES,
    ITEMS_FILTER_VALUES,
    ITEMS_IDS,
    ITEMS_LAYOUT,
    ITEMS_MANIFEST,
    ITEMS_MATRIX,
    ItemsManifest,
    read_items_manifest,
    read_model_manifest,
    sha256_file,
    write_json_atomically,
    write_manifest,
)

ROW_HASHES = "row_hashes.npy"  # uint64 content hash per row: what an incremental build compares
# Rows read, sorted by length and checkpointed together; batch_size rows per inference run.
READ_BLOCK_ROWS = 1024
DEFAULT_BATCH_SIZE = 32
CHECKPOINT = "build_checkpoint.json"
_Row = TypeVar("_Row")

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BuildPlan:
    """What a build makes; a partial build is resumed only when its plan is this one."""

    catalog_sha256: str
    model_onnx_sha256: str
    item_count: int
    dim: int
    id_field: str
    text_field: str
    filter_field: str
    batch_size: int
    block_rows: int = READ_BLOCK_ROWS
    prompt: str = ""
    # items_sha256 of the previous build whose unchanged rows are copied ("" for none).
    reuse_items_sha256: str = ""


class PreviousBuild:
    """The build being replaced, opened to copy its unchanged rows: a row is reused when its id
    is there with the same content hash (the prompted text's) and the build used the same model
    and prompt, so its vector is the one a full build computes (ONNX Runtime's CPU results do not
    depend on what else is in the batch: tested byte for byte)."""

    def __init__(self, directory: Path, manifest: ItemsManifest) -> None:
        self.manifest = manifest
        self.ids = ItemIds(directory, manifest.item_count)
        self.matrix = np.load(directory / ITEMS_MATRIX, mmap_mode="r")
        self.hashes = np.load(directory / ROW_HASHES, mmap_mode="r")

    @classmethod
    def open(cls, directory: Path, model_sha256: str, prompt: str) -> PreviousBuild | None:
        """The build in `directory` when its rows can be reused here, else None."""
        try:
            manifest = read_items_manifest(directory)
        except ConfigurationError:
            return None
        compatible = (
            manifest.model_onnx_sha256 == model_sha256
            and manifest.prompt == prompt
            and manifest.layout == ITEMS_LAYOUT
            and (directory / ROW_HASHES).is_file()
        )
        if not compatible:
            return None
        try:
            return cls(directory, manifest)
        except (OSError, ValueError, ConfigurationError):
            return None

    def rows_for(self, item_ids: list[str], hashes: np.ndarray) -> np.ndarray:
        """For each id, its row in the previous build when the content is unchanged, else -1."""
        rows = self.ids.find(item_ids)
        known = rows >= 0
        unchanged = np.zeros(rows.shape, dtype=np.bool_)
        unchanged[known] = np.asarray(self.hashes[rows[known]]) == hashes[known]
        return np.where(unchanged, rows, -1)


def content_hash(text: str) -> int:
    """A row's content hash: 64 bits of blake2b over the text as embedded (prompt included)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


@dataclasses.dataclass
class Checkpoint:
    """Progress of a partial build: rows done, bytes of ids.txt that hold them, filter values."""

    plan: BuildPlan
    rows_done: int = 0
    ids_bytes: int = 0
    filter_values: list[str] = dataclasses.field(default_factory=list)


def build_items(
    catalog: Path,
    model_dir: Path,
    output_dir: Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    id_field: str = "id",
    text_field: str = "text",
    filter_field: str = "",
    progress: bool = True,
    encoder: OnnxEncoder | None = None,
    force: bool = False,
    block_rows: int = READ_BLOCK_ROWS,
    prompt_name: str | None = None,
    fields: Sequence[str] = (),
    numeric_fields: Sequence[str] = (),
    reuse_from: Path | None = None,
) -> ItemsManifest:
    """Embed every row of `catalog` with the model in `model_dir` into `output_dir`.

    Writes items.npy (float32, (n, dim), unit rows), its int8 codes (server/catalog/mmap/codes.py),
    ids.txt and its index (server/catalog/mmap/item_ids.py),
    with `filter_field` its values (filter_codes.npy, filter_values.json), and
    items_manifest.json naming the model. Re-running with the same inputs is a no-op unless
    `force`; after an interruption it resumes from the last completed block of `block_rows` rows
    (the unit of checkpointing and of length sorting). Raises CatalogError listing bad rows before any
    embedding is done. `fields` (categorical) and `numeric_fields` become columns Recommend's
    conditions and diversity use (embedrec.export.fields). Unchanged rows of the build in
    `output_dir` (or in `reuse_from`, e.g. the build a deployment's symlink points at when each
    build goes to a new directory) are copied instead of embedded, unless `force`. Item texts
    are documents: embedded with the model's prompt `prompt_name` (None: its document prompt, see
    embedrec.server.inference.prompts; "": none), recorded in the manifest.
    """
    catalog_sha256 = sha256_file(catalog)
    model_sha256, chosen_prompt, prompt = _item_prompt(model_dir, prompt_name)
    kinds = {**dict.fromkeys(fields, "categorical"), **dict.fromkeys(numeric_fields, "numeric")}
    if not force and _is_up_to_date(
        output_dir, catalog_sha256, model_sha256, filter_field, chosen_prompt, prompt, kinds
    ):
        logger.info("items in %s are up to date", output_dir)
        return read_items_manifest(output_dir)
    columns = (id_field, text_field, filter_field)
    count = validate_catalog(
        catalog,
        id_field=id_field,
        text_field=text_field,
        filter_field=filter_field,
        fields=tuple(fields),
        numeric_fields=tuple(numeric_fields),
    )
    encoder = encoder or OnnxEncoder(model_dir, provider="auto")
    identity = (catalog_sha256, encoder.manifest.onnx_sha256, count, encoder.dim)
    plan = BuildPlan(*identity, *columns, batch_size, block_rows, prompt)
    source = reuse_from.resolve() if reuse_from is not None else output_dir
    previous = None if force else PreviousBuild.open(source, encoder.manifest.onnx_sha256, prompt)
    return _build(catalog, output_dir, encoder, plan, previous, progress, (fields, numeric_fields), chosen_prompt)


def _item_prompt(model_dir: Path, prompt_name: str | None) -> tuple[str, str, str]:
    """The model's ONNX sha256, the prompt name item texts are embedded with (None: its document
    prompt) and that prompt's text; ConfigurationError when the model has no such prompt."""
    model_manifest = read_model_manifest(model_dir)
    chosen = document_prompt_name(model_manifest) if prompt_name is None else prompt_name
    try:
        prompt = prompt_text(model_manifest, chosen, field="--prompt-name")
    except InvalidArgument as error:
        raise ConfigurationError(str(error)) from None
    return model_manifest.onnx_sha256, chosen, prompt


def _build(
    catalog: Path,
    output_dir: Path,
    encoder: OnnxEncoder,
    plan: BuildPlan,
    previous: PreviousBuild | None,
    progress: bool,
    columns: tuple[Sequence[str], Sequence[str]],
    prompt_name: str,
) -> ItemsManifest:
    """Run `plan`: resume or start its partial build, embed the rows not copied from `previous`,
    finish and swap it in (the pipeline: plan, resume, embed, finish)."""
    if previous is not None:
        plan = dataclasses.replace(plan, reuse_items_sha256=previous.manifest.items_sha256)
    partial = output_dir.parent / f".{output_dir.name}.partial"
    checkpoint = _resume_or_start(partial, plan)
    reused, embedded = _embed_remaining(catalog, encoder, partial, checkpoint, progress, previous)
    if plan.filter_field and checkpoint.filter_values == [""]:
        raise CatalogError(f"{catalog}: no row has a value in the filter field {plan.filter_field!r}")
    fields, numeric_fields = columns
    manifest = _finish_build(
        partial,
        output_dir,
        plan,
        encoder,
        catalog,
        fields=fields,
        numeric_fields=numeric_fields,
        prompt_name=prompt_name,
    )
    logger.info(
        "built %d items (dim %d) into %s: %d rows reused from the previous build, %d embedded",
        plan.item_count,
        encoder.dim,
        output_dir,
        reused,
        embedded,
    )
    return manifest


def _finish_build(
    partial: Path,
    output_dir: Path,
    plan: BuildPlan,
    encoder: OnnxEncoder,
    catalog: Path,
    *,
    fields: Sequence[str],
    numeric_fields: Sequence[str],
    prompt_name: str,
) -> ItemsManifest:
    """Complete the embedded build in `partial` (int8 codes, id index, item texts, carried-over
    hidden ids, field columns, manifest) and swap it in for `output_dir`; its manifest. Run again after an
    interruption, it redoes these steps (each rewrites its files whole)."""
    count = plan.item_count
    items_sha256 = sha256_file(partial / ITEMS_MATRIX)
    write_codes(partial, np.load(partial / ITEMS_MATRIX, mmap_mode="r"), items_sha256)
    write_id_index(partial, count)
    rows = iter_catalog(catalog, id_field=plan.id_field, text_field=plan.text_field)
    write_item_texts(partial, (row.text or "" for row in rows), count)
    _keep_hidden(output_dir, partial, count)
    stored = write_columns(
        catalog,
        partial,
        count,
        categorical=list(fields),
        numeric=list(numeric_fields),
        id_field=plan.id_field,
        text_field=plan.text_field,
    )
    manifest = ItemsManifest(
        item_count=count,
        dim=encoder.dim,
        dtype="float32",
        items_sha256=items_sha256,
        model_name=encoder.manifest.model_name,
        model_onnx_sha256=encoder.manifest.onnx_sha256,
        catalog=str(catalog),
        catalog_sha256=plan.catalog_sha256,
        filter_field=plan.filter_field,
        prompt_name=prompt_name,
        prompt=plan.prompt,
        fields=stored,
        layout=ITEMS_LAYOUT,
    )
    write_manifest(manifest, partial / ITEMS_MANIFEST)
    (partial / CHECKPOINT).unlink()
    replace_directory(partial, output_dir)
    return manifest


def _keep_hidden(previous: Path, partial: Path, count: int) -> None:
    """Carry the hidden ids of the build being replaced over to the new one, those still in the
    catalog (see embedrec.server.catalog.mmap.hidden)."""
    hidden = read_hidden_ids(previous) if previous.is_dir() else []
    if hidden:
        rows = ItemIds(partial, count).find(hidden)
        kept = sorted(item_id for item_id, row in zip(hidden, rows.tolist(), strict=True) if row >= 0)
        write_json_atomically(kept, partial / HIDDEN_FILE, ensure_ascii=False)


def _is_up_to_date(
    output_dir: Path,
    catalog_sha256: str,
    model_sha256: str,
    filter_field: str,
    prompt_name: str,
    prompt: str,
    fields: dict[str, str],
) -> bool:
    try:
        existing = read_items_manifest(output_dir)
    except ConfigurationError:
        return False
    return (
        existing.catalog_sha256 == catalog_sha256
        and existing.model_onnx_sha256 == model_sha256
        and existing.filter_field == filter_field
        and existing.prompt_name == prompt_name
        and existing.prompt == prompt
        and existing.fields == fields
        and existing.layout == ITEMS_LAYOUT
    )


def _resume_or_start(partial: Path, plan: BuildPlan) -> Checkpoint:
    """The checkpoint of a partial build of this very plan, or a fresh directory and checkpoint."""
    try:
        saved = json.loads((partial / CHECKPOINT).read_text())
        checkpoint = Checkpoint(BuildPlan(**saved.pop("plan")), **saved)
    except (OSError, ValueError, TypeError):
        checkpoint = None
    if checkpoint is not None and checkpoint.plan == plan:
        logger.info("resuming the item build at row %d of %d", checkpoint.rows_done, plan.item_count)
        return checkpoint
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    matrix = np.lib.format.open_memmap(
        partial / ITEMS_MATRIX, mode="w+", dtype=np.float32, shape=(plan.item_count, plan.dim)
    )
    del matrix
    if plan.filter_field:
        codes = np.lib.format.open_memmap(
            partial / ITEMS_FILTER_CODES, mode="w+", dtype=np.int32, shape=(plan.item_count,)
        )
        del codes
    hashes = np.lib.format.open_memmap(partial / ROW_HASHES, mode="w+", dtype=np.uint64, shape=(plan.item_count,))
    del hashes
    (partial / ITEMS_IDS).write_bytes(b"")
    checkpoint = Checkpoint(plan)
    _save(partial, checkpoint)
    return checkpoint


def _embed_remaining(
    catalog: Path,
    encoder: OnnxEncoder,
    partial: Path,
    checkpoint: Checkpoint,
    progress: bool,
    previous: PreviousBuild | None = None,
) -> tuple[int, int]:
    """Fill the partial build from checkpoint.rows_done on; (rows reused, rows embedded)."""
    plan = checkpoint.plan
    matrix = np.load(partial / ITEMS_MATRIX, mmap_mode="r+")
    hashes = np.load(partial / ROW_HASHES, mmap_mode="r+")
    codes = np.load(partial / ITEMS_FILTER_CODES, mmap_mode="r+") if plan.filter_field else None
    code_of = {value: code for code, value in enumerate(checkpoint.filter_values)}
    rows = iter_catalog(catalog, id_field=plan.id_field, text_field=plan.text_field, filter_field=plan.filter_field)
    rows = islice(rows, checkpoint.rows_done, None)
    bar = _progress_bar(plan.item_count, checkpoint.rows_done, progress)
    with (partial / ITEMS_IDS).open("r+b") as ids_file:
        ids_file.truncate(checkpoint.ids_bytes)
        ids_file.seek(checkpoint.ids_bytes)
        for block in _blocks(rows, plan.block_rows):
            start = checkpoint.rows_done
            _embed_block(encoder, block, matrix, hashes, start, plan, bar, previous)
            if codes is not None:
                for row in block:
                    code_of.setdefault(row.filter_value, len(code_of))
                codes[start : start + len(block)] = [code_of[row.filter_value] for row in block]
                codes.flush()
            ids_file.write("".join(f"{row.item_id}\n" for row in block).encode("utf-8"))
            ids_file.flush()
            matrix.flush()
            hashes.flush()
            checkpoint.rows_done += len(block)
            checkpoint.ids_bytes = ids_file.tell()
            checkpoint.filter_values = list(code_of)
            _save(partial, checkpoint)
    bar.close()
    counts = (bar.reused, bar.embedded)
    del matrix, codes, hashes
    if plan.filter_field:
        (partial / ITEMS_FILTER_VALUES).write_text(json.dumps(checkpoint.filter_values, ensure_ascii=False) + "\n")
    return counts


def _embed_block(
    encoder: OnnxEncoder,
    block: list[CatalogRow],
    matrix: np.ndarray,
    hashes: np.ndarray,
    start: int,
    plan: BuildPlan,
    bar: Any,
    previous: PreviousBuild | None,
) -> None:
    """Fill the block's rows: copied from `previous` when unchanged there, else embedded."""
    batch_size = plan.batch_size
    texts = [plan.prompt + (row.text or "") for row in block]
    block_hashes = np.asarray([content_hash(text) for text in texts], dtype=np.uint64)
    hashes[start : start + len(block)] = block_hashes
    todo = list(range(len(texts)))
    if previous is not None:
        old_rows = previous.rows_for([row.item_id or "" for row in block], block_hashes)
        reused = np.flatnonzero(old_rows >= 0)
        if reused.size:
            matrix[start + reused] = previous.matrix[old_rows[reused]]
        todo = np.flatnonzero(old_rows < 0).tolist()
        bar.reused += int(reused.size)
        bar.update(int(reused.size))
    # Longest first inside a block: neighbours in a batch have similar lengths.
    order = sorted(todo, key=lambda index: -len(texts[index]))
    for batch_start in range(0, len(order), batch_size):
        chosen = order[batch_start : batch_start + batch_size]
        vectors = encoder.encode([texts[index] for index in chosen], normalize=True)
        matrix[start + np.asarray(chosen)] = vectors
        bar.embedded += len(chosen)
        bar.update(len(chosen))
    bar.set_postfix(reused=bar.reused, embedded=bar.embedded, refresh=False)


def _save(partial: Path, checkpoint: Checkpoint) -> None:
    """Write the checkpoint atomically (after the data it describes is flushed)."""
    write_json_atomically(dataclasses.asdict(checkpoint), partial / CHECKPOINT, ensure_ascii=False)


def _blocks(iterator: Iterator[_Row], size: int) -> Iterator[list[_Row]]:
    while block := list(islice(iterator, size)):
        yield block


def _progress_bar(total: int, done: int, enabled: bool) -> Any:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=done, unit="item", desc="building items", disable=not enabled, file=sys.stderr)
    bar.reused = bar.embedded = 0  # rows copied from the previous build / run through the model
    return bar
