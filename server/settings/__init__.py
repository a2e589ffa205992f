"""Server settings: frozen objects, one per concern, read once at the edge from flags and environment.

`Settings` is composed of the objects the server runs with: `BatchPolicy` and `Limits`
themselves, and one class per other concern (`groups`). Each of their fields is a `--flag` and
an `EMBEDREC_<NAME>` environment variable of the same name (a flag wins over the environment,
the environment over the default), declared once with its help text; `cli` generates the
argument groups from the classes. Core classes receive explicit values, never the environment.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from embedrec.server.batching.policy import BatchPolicy
from embedrec.server.catalog.score_formula import ScoreFormulaSpec, parse_formula
from embedrec.server.config import group
from embedrec.server.errors import InvalidArgument
from embedrec.server.limits import Limits
from embedrec.server.settings.cli import ENV_PREFIX, flag_of, parse_args, settings_groups, settings_table
from embedrec.server.settings.groups import (
    HttpSettings,
    LifecycleSettings,
    MilvusSettings,
    ModelSettings,
    ObservabilitySettings,
    SearchSettings,
    SecuritySettings,
    ServerSettings,
)

__all__ = [
    "ENV_PREFIX",
    "BatchPolicy",
    "HttpSettings",
    "LifecycleSettings",
    "Limits",
    "MilvusSettings",
    "ModelSettings",
    "ObservabilitySettings",
    "SearchSettings",
    "SecuritySettings",
    "ServerSettings",
    "Settings",
    "settings_groups",
    "settings_table",
]


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything `embedrec serve` can be told, by concern (the order of `--help`)."""

    model: ModelSettings = group(ModelSettings)
    batching: BatchPolicy = group(BatchPolicy)
    limits: Limits = group(Limits)
    search: SearchSettings = group(SearchSettings)
    milvus: MilvusSettings = group(MilvusSettings)
    server: ServerSettings = group(ServerSettings)
    http: HttpSettings = group(HttpSettings)
    security: SecuritySettings = group(SecuritySettings)
    lifecycle: LifecycleSettings = group(LifecycleSettings)
    observability: ObservabilitySettings = group(ObservabilitySettings)

    # Not a flag: the settings given explicitly (flag or environment), which a tuning file never
    # overrides. Settings built in code count every value that differs from its default.
    explicit: frozenset[str] | None = None

    def __post_init__(self) -> None:
        self.default_score_formula  # noqa: B018 (raises ValueError naming the flag when it does not parse)
        search, milvus = self.search, self.milvus
        if search.items_store == "milvus":
            if not milvus.milvus_uri:
                raise ValueError("--items-store milvus needs --milvus-uri (a Milvus Lite file or http(s)://host:port)")
            if search.items_dir is not None:
                raise ValueError("--items-dir is the mmap store's; with --items-store milvus leave it out")
            if self.server.workers > 1 and not milvus.milvus_uri.startswith(("http://", "https://", "tcp://")):
                raise ValueError(
                    "Milvus Lite is a file one process opens: --workers > 1 needs a Milvus server (http(s)://host:port)"
                )

    @classmethod
    def of(cls, **values: Any) -> Settings:
        """Settings from flat knob names (`max_k=5`, `port=0`), each routed to its group;
        TypeError for a name no group has, ValueError for a value out of range."""
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            if name == "explicit":
                continue
            grouped.setdefault(_owner(name), {})[name] = value
        groups = {group: _group_class(group)(**fields) for group, fields in grouped.items()}
        return cls(**groups, explicit=values.get("explicit"))

    def replace(self, **values: Any) -> Settings:
        """These settings with the flat knobs `values` changed (see `of`)."""
        grouped: dict[str, dict[str, Any]] = {}
        for name, value in values.items():
            grouped.setdefault(_owner(name), {})[name] = value
        changes = {group: dataclasses.replace(getattr(self, group), **fields) for group, fields in grouped.items()}
        return dataclasses.replace(self, **changes)

    def values(self) -> dict[str, Any]:
        """Every knob by its flat name."""
        return {f.name: getattr(group, f.name) for group in self._groups() for f in dataclasses.fields(group)}

    def explicitly_set(self) -> frozenset[str]:
        """Names of the settings given explicitly (see `explicit`)."""
        if self.explicit is not None:
            return self.explicit
        return frozenset(
            f.name for group in self._groups() for f in dataclasses.fields(group) if getattr(group, f.name) != f.default
        )

    def _groups(self) -> list[Any]:
        return [getattr(self, f.name) for f in dataclasses.fields(self) if "group" in f.metadata]

    @property
    def default_score_formula(self) -> ScoreFormulaSpec | None:
        """The default score formula's terms (None: none); ValueError naming the flag when it
        does not parse, has too many terms, or both flags are given."""
        search = self.search
        if search.score_formula and search.score_formula_file is not None:
            raise ValueError("give --score-formula or --score-formula-file, not both")
        flag, text = "--score-formula", search.score_formula
        if search.score_formula_file is not None:
            flag = "--score-formula-file"
            try:
                text = search.score_formula_file.read_text(encoding="utf-8")
            except OSError as error:
                raise ValueError(f"{flag} {search.score_formula_file}: {error.strerror or error}") from None
        if not text.strip():
            return None
        try:
            spec = parse_formula(text, field=flag)
        except InvalidArgument as error:
            raise ValueError(str(error)) from None
        if len(spec.terms) > self.limits.max_score_terms:
            limit = self.limits.max_score_terms
            raise ValueError(f"{flag} has {len(spec.terms)} terms; the limit is --max-score-terms={limit}")
        return spec if spec.terms else None

    @property
    def search_thread_count(self) -> int:
        """Threads of one search pass (0: ONNX Runtime's default, one per core)."""
        return self.search.search_threads or self.model.intra_op_threads * self.model.session_count

    @classmethod
    def from_args(cls, argv: Any = None, environ: Any = None) -> Settings:
        """Parse flags `argv` (default: sys.argv) over the environment `environ` (default:
        os.environ) over defaults; a value out of range exits with a usage error naming the flag."""
        return parse_args(cls, argv, environ)


def _group_classes() -> dict[str, type]:
    return {f.name: f.metadata["group"] for f in dataclasses.fields(Settings) if "group" in f.metadata}


def _group_class(group: str) -> Any:
    return _group_classes()[group]


def _owner(name: str) -> str:
    for owner, cls in _group_classes().items():
        if name in {f.name for f in dataclasses.fields(cls)}:
            return owner
    raise TypeError(f"Settings has no knob {name!r} (no {flag_of(name)})")
