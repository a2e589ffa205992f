"""What an evaluation found, in one JSON-ready shape: per target its mean metrics, coverage,
novelty, serving figures and per-user metrics; the paired differences; what the data dropped.

Per-user metrics are kept so two runs on the same split can be compared later (`--against`):
`split_sha256` names the split (users and held-out items), and only runs with the same one pair.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from embedrec.client.evaluate.compare import Difference

FORMAT = "embedrec-evaluate/1"


@dataclass
class TargetResult:
    """One target's results: `kind` is "server", "baseline" or "previous" (from an earlier run)."""

    name: str
    kind: str
    metrics: dict[str, float]
    coverage: float
    novelty: float | None
    per_user: dict[str, dict[str, float]]
    serving: dict[str, Any] = field(default_factory=dict)
    note: str = ""


@dataclass
class EvaluationResult:
    """The whole run: settings, what reading and splitting kept, each target, the differences."""

    ks: list[int]
    split: str
    split_sha256: str
    catalog_size: int
    data: dict[str, Any]
    targets: list[TargetResult]
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def target(self, name: str) -> TargetResult:
        """The target named `name`; KeyError when there is none."""
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)

    def as_dict(self, *, per_user: bool = True) -> dict[str, Any]:
        """The result as a JSON-ready mapping (without per-user metrics unless `per_user`)."""
        targets = [asdict(target) for target in self.targets]
        if not per_user:
            for target in targets:
                target.pop("per_user")
        return {
            "format": FORMAT,
            "ks": self.ks,
            "split": self.split,
            "split_sha256": self.split_sha256,
            "catalog_size": self.catalog_size,
            "data": self.data,
            "targets": targets,
            "differences": [difference.as_dict() for difference in self.differences],
            "notes": self.notes,
        }

    def write(self, path: Path) -> None:
        """Write the result (with per-user metrics) as JSON to `path`."""
        path.write_text(json.dumps(self.as_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def split_fingerprint(held_out: Mapping[str, Sequence[str]]) -> str:
    """A sha256 of the users and their held-out items: equal for runs on the same split."""
    digest = hashlib.sha256()
    for user in sorted(held_out):
        digest.update(json.dumps([user, sorted(held_out[user])], ensure_ascii=False).encode("utf-8"))
    return digest.hexdigest()


def previous_targets(path: Path, split_sha256: str) -> list[TargetResult]:
    """The targets of an earlier run's JSON at `path`, named "NAME (previous)", to compare on the
    same split. ValueError when the file is not such a result or its split differs."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: cannot read an earlier evaluation ({str(error)[:120]})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ValueError(f"{path}: not an `embedrec evaluate` result (format {FORMAT})")
    if document.get("split_sha256") != split_sha256:
        raise ValueError(
            f"{path}: its split differs from this run's (split_sha256 {str(document.get('split_sha256'))[:12]} "
            f"vs {split_sha256[:12]}): use the same log, split, seed and --max-users"
        )
    found = []
    for target in document.get("targets", []):
        if target.get("per_user"):
            target = dict(target, name=f"{target['name']} (previous)", kind="previous")
            found.append(TargetResult(**target))
    return found
