"""Results of one load step: raw latency samples by status code, merged exactly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99.9": 99.9}


@dataclass
class StepResult:
    """One step's samples: latency (seconds) per answered call, keyed by status code name."""

    label: str
    mode: str
    level: float
    duration_s: float
    sent: int = 0
    texts: int = 0
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def record(self, code: str, latency_s: float, texts: int) -> None:
        """Add one answered call."""
        self.latencies.setdefault(code, []).append(latency_s)
        if code == "OK":
            self.texts += texts

    @property
    def answered(self) -> dict[str, int]:
        """Calls answered, by status code name."""
        return {code: len(samples) for code, samples in sorted(self.latencies.items())}

    def ok_latencies(self) -> npt.NDArray[np.float64]:
        """Latencies of the successful calls, seconds."""
        return np.asarray(self.latencies.get("OK", []), dtype=np.float64)

    def summary(self) -> dict[str, Any]:
        """Throughput, percentiles (ms, successful calls) and answers by code, JSON-ready."""
        ok = self.ok_latencies()
        latency_ms = {name: float(np.percentile(ok, q) * 1000) if ok.size else None for name, q in PERCENTILES.items()}
        latency_ms["max"] = float(ok.max() * 1000) if ok.size else None
        latency_ms["mean"] = float(ok.mean() * 1000) if ok.size else None
        return {
            "label": self.label,
            "mode": self.mode,
            "level": self.level,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "answered": self.answered,
            "unanswered": self.sent - sum(self.answered.values()),
            "requests_per_s": ok.size / self.duration_s if self.duration_s else 0.0,
            "texts_per_s": self.texts / self.duration_s if self.duration_s else 0.0,
            "latency_ms": latency_ms,
        }


def merge(parts: Iterable[StepResult]) -> StepResult:
    """One StepResult holding every sample of `parts` (same step run by several processes)."""
    parts = list(parts)
    merged = StepResult(parts[0].label, parts[0].mode, sum(p.level for p in parts), max(p.duration_s for p in parts))
    for part in parts:
        merged.sent += part.sent
        merged.texts += part.texts
        for code, samples in part.latencies.items():
            merged.latencies.setdefault(code, []).extend(samples)
    return merged
