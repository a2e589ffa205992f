"""The manifests that tie an exported model and an item matrix together.

`export/` writes them, the server reads them and refuses to start when they disagree
(different model, different dim): mixing embedding spaces gives garbage recommendations.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from embedrec.server.errors import ConfigurationError

MODEL_MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
ITEMS_MANIFEST = "items_manifest.json"
ITEMS_MATRIX = "items.npy"
ITEMS_IDS = "ids.txt"
ITEMS_FILTER_CODES = "filter_codes.npy"
ITEMS_FILTER_VALUES = "filter_values.json"
# Layout 2 added the memory-mapped id index and the optional filter field (server/catalog/mmap/item_ids.py).
ITEMS_LAYOUT = 2
FORMAT_VERSION = 1

PoolingName = Literal["mean", "cls"]
_Manifest = TypeVar("_Manifest", "ModelManifest", "ItemsManifest")


@dataclasses.dataclass(frozen=True)
class ModelManifest:
    """What the server needs to know about an exported model (written by export/onnx_model.py)."""

    model_name: str
    source_sha256: str
    dim: int
    max_length: int
    pooling: PoolingName
    normalize: bool
    onnx_sha256: str
    opset: int
    input_names: tuple[str, ...]
    pad_token_id: int
    library_versions: dict[str, str]
    validation: dict[str, Any]
    export_options: dict[str, Any]
    variant: str = "fp32"
    # Prompts by name (sentence-transformers `prompts`, or given at export) and the one used when
    # a request names none ("" for none).
    prompts: dict[str, str] = dataclasses.field(default_factory=dict)
    default_prompt_name: str = ""
    # "embed": a bi-encoder (token vectors, pooled to `dim`); "rerank": a cross-encoder scoring
    # (query, document) pairs with one logit (`dim` 1), turned into the score by `activation`
    # ("sigmoid", or "none" for the raw logit).
    task: str = "embed"
    activation: str = ""
    # An int8 model: the CPU target it was quantised for ("avx2", "vnni"; "" otherwise), the
    # recipe (export.quantization), and the onnx sha256 of the fp32 export it was quantised from:
    # items built with that base may be served with this model (queries int8, items fp32).
    int8_target: str = ""
    quantization: dict[str, Any] = dataclasses.field(default_factory=dict)
    base_onnx_sha256: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def agreement(self) -> dict[str, Any]:
        """The export's measured agreement with its fp32 base ({} for an fp32 model)."""
        measured = self.validation.get("agreement", {})
        return measured if isinstance(measured, dict) else {}


@dataclasses.dataclass(frozen=True)
class ItemsManifest:
    """What the server needs to know about an item matrix (written by export/items.py)."""

    item_count: int
    dim: int
    dtype: str
    items_sha256: str
    model_name: str
    model_onnx_sha256: str
    catalog: str
    catalog_sha256: str
    # The catalog field whose values Recommend can filter on ("" when none was stored).
    filter_field: str = ""
    # The model prompt the item texts were embedded with ("" for none) and its text.
    prompt_name: str = ""
    prompt: str = ""
    # Fields stored as columns for Recommend's conditions: name -> "categorical" | "numeric".
    fields: dict[str, str] = dataclasses.field(default_factory=dict)
    layout: int = 1
    format_version: int = FORMAT_VERSION


def write_manifest(manifest: ModelManifest | ItemsManifest, path: Path) -> None:
    """Write `manifest` as indented JSON to `path` (atomically: temp file, then rename)."""
    write_json_atomically(dataclasses.asdict(manifest), path, indent=2, sort_keys=True)


def write_json_atomically(data: Any, path: Path, **dump_options: Any) -> None:
    """Write `data` as JSON to `path` through a temporary file and a rename, so a reader (or a
    resumed build after a kill) sees the old file or the new one, never half of one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(data, **dump_options) + "\n", encoding="utf-8")
    temporary.replace(path)


def read_model_manifest(model_dir: Path) -> ModelManifest:
    """Read `model_dir/manifest.json`.

    Raises ConfigurationError when it is missing, unreadable or of another format version.
    """
    data = _read_json(model_dir / MODEL_MANIFEST, what="model manifest")
    data["input_names"] = tuple(data.get("input_names", ()))
    return _build(ModelManifest, data, model_dir / MODEL_MANIFEST)


def read_items_manifest(items_dir: Path) -> ItemsManifest:
    """Read `items_dir/items_manifest.json`; raises ConfigurationError like read_model_manifest."""
    return _build(
        ItemsManifest, _read_json(items_dir / ITEMS_MANIFEST, what="items manifest"), items_dir / ITEMS_MANIFEST
    )


class BuiltWith(Protocol):
    """What items record of the model that embedded them (an items manifest, a store's description)."""

    @property
    def dim(self) -> int: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_onnx_sha256(self) -> str: ...


def items_precision(items: BuiltWith, model: ModelManifest) -> str:
    """How the items relate to `model` (after check_items_match_model): "same" when this very
    model built them, "fp32 base" when the fp32 export it was quantised from did."""
    return "same" if items.model_onnx_sha256 == model.onnx_sha256 else "fp32 base"


def check_items_match_model(items: BuiltWith, model: ModelManifest) -> None:
    """Raise ConfigurationError unless the items were embedded with this very model, or with the
    fp32 export an int8 `model` was quantised from (its manifest's base checksum): the same
    embedding space, measured in the manifest's agreement."""
    if items.dim != model.dim:
        raise ConfigurationError(
            f"item matrix has dim {items.dim} but the model has dim {model.dim}; "
            "rebuild the items with this model (embedrec export-items)"
        )
    if items.model_onnx_sha256 not in (model.onnx_sha256, model.base_onnx_sha256 or model.onnx_sha256):
        raise ConfigurationError(
            f"item matrix was built with model {items.model_name!r} "
            f"(onnx sha256 {items.model_onnx_sha256[:12]}…) but the server runs "
            f"{model.model_name!r} (onnx sha256 {model.onnx_sha256[:12]}…); "
            "rebuild the items with this model (embedrec export-items)"
        )


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks (memory flat for any size)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path, *, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigurationError(f"{what} not found: {path}") from None
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"{what} unreadable: {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{what} is not a JSON object: {path}")
    return data


def _build(cls: type[_Manifest], data: dict[str, Any], path: Path) -> _Manifest:
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigurationError(
            f"{path} has format_version {version!r}; this server reads {FORMAT_VERSION}: re-export"
        )
    names = {field.name for field in dataclasses.fields(cls)}
    try:
        return cls(**{key: value for key, value in data.items() if key in names})
    except TypeError as error:
        raise ConfigurationError(f"{path} is missing fields: {error}") from None
