"""The tuning file: the inference configuration `embedrec tune` measured best for one machine,
kept next to the model's manifest and applied by `embedrec serve` when the machine matches.

A tuning is only valid where it was measured: the file records the CPU model, the core count,
the provider and the model's checksum, and `serve` ignores it (saying why) on any other machine
or model. Settings given explicitly (flag or environment variable) always win over the file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedrec.server.errors import ConfigurationError

TUNING_FILE = "tuning.json"
# The settings a tuning decides; everything else stays as configured.
TUNED_SETTINGS = ("instances", "sessions", "intra_op_threads", "max_batch_size", "max_batch_tokens")


@dataclass(frozen=True)
class Machine:
    """What a tuning is valid for."""

    cpu_model: str
    cores: int
    provider: str

    @classmethod
    def here(cls, provider: str) -> Machine:
        """This machine, running `provider` (e.g. CPUExecutionProvider)."""
        return cls(cpu_model(), os.cpu_count() or 1, provider)


@dataclass(frozen=True)
class Tuning:
    """A measured configuration: the winning setting values, where and when they were measured,
    and the measurements behind them (rows of the tune table)."""

    settings: dict[str, int]
    machine: Machine
    model_sha256: str
    measured_at: str = field(default_factory=lambda: datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
    measurements: list[dict[str, Any]] = field(default_factory=list)

    def describe(self, path: Path) -> str:
        """One line for logs and Info: the file, its date and its values."""
        values = ", ".join(f"{name}={value}" for name, value in self.settings.items())
        return f"tuning file {path} ({self.measured_at}): {values}"


def cpu_model() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def write_tuning(model_dir: Path, tuning: Tuning) -> Path:
    """Write `tuning` to MODEL_DIR/tuning.json atomically; return the path."""
    path = model_dir / TUNING_FILE
    temporary = path.with_name(f".{TUNING_FILE}.tmp")
    temporary.write_text(json.dumps(dataclasses.asdict(tuning), indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, path)
    return path


def read_tuning(model_dir: Path) -> Tuning | None:
    """The tuning file of `model_dir`, or None when there is none.

    Raises ConfigurationError when it exists but cannot be read or names unknown settings.
    """
    path = model_dir / TUNING_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        tuning = Tuning(
            settings={str(name): int(value) for name, value in raw["settings"].items()},
            machine=Machine(**raw["machine"]),
            model_sha256=str(raw["model_sha256"]),
            measured_at=str(raw["measured_at"]),
            measurements=list(raw.get("measurements", [])),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigurationError(f"tuning file {path} unreadable: {error}; re-run embedrec tune") from None
    unknown = set(tuning.settings) - set(TUNED_SETTINGS)
    if unknown:
        raise ConfigurationError(f"tuning file {path} sets unknown settings {sorted(unknown)}; re-run embedrec tune")
    return tuning


def mismatch(tuning: Tuning, machine: Machine, model_sha256: str) -> str:
    """Why `tuning` does not apply here ("" when it does)."""
    if tuning.model_sha256 != model_sha256:
        return "it was measured with another model"
    if (tuning.machine.cpu_model, tuning.machine.cores) != (machine.cpu_model, machine.cores):
        return (
            f"it was measured on {tuning.machine.cores} x {tuning.machine.cpu_model}, "
            f"this is {machine.cores} x {machine.cpu_model}"
        )
    if tuning.machine.provider != machine.provider:
        return f"it was measured on {tuning.machine.provider}, this server runs {machine.provider}"
    return ""


def tuned_values(tuning: Tuning, explicit: Iterable[str]) -> dict[str, int]:
    """The tuning's values for the settings not given explicitly."""
    given = set(explicit)
    return {name: value for name, value in tuning.settings.items() if name not in given}
