"""Samples per (workload, client), kept per round so ratios compare neighbouring batches."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of a non-empty list."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


@dataclass
class Series:
    """Durations in seconds, one list per round (one sample per operation or burst)."""

    rounds: list[list[float]] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """Client-process CPU seconds (all threads) spent in each round's batch."""

    def add(self, samples: list[float], cpu: float) -> None:
        self.rounds.append(samples)
        self.cpu.append(cpu)

    def extend(self, other: Series) -> None:
        """Append ``other``'s rounds (a client measured in several pairings)."""
        self.rounds.extend(other.rounds)
        self.cpu.extend(other.cpu)

    def scaled(self, factor: float) -> Series:
        """A copy with every duration (and CPU time) multiplied by ``factor``; e.g. burst
        times divided by the burst size give per-call times."""
        return Series(
            [[x * factor for x in r] for r in self.rounds], [c * factor for c in self.cpu]
        )

    def cpu_per_sample(self) -> float:
        """Median over rounds of CPU seconds per sample."""
        return statistics.median(c / len(r) for c, r in zip(self.cpu, self.rounds, strict=True))

    @property
    def samples(self) -> list[float]:
        return [s for r in self.rounds for s in r]

    @property
    def n(self) -> int:
        return sum(len(r) for r in self.rounds)

    def median(self) -> float:
        return statistics.median(self.samples)

    def p95(self) -> float:
        return percentile(self.samples, 95)

    def round_medians(self) -> list[float]:
        return [statistics.median(r) for r in self.rounds if r]


def paired_ratio(a: Series, b: Series, scale: float = 1.0) -> float:
    """Median over rounds of (a's round median / b's round median) * scale.

    Both series were measured in the same rounds, side by side, so each per-round
    ratio compares neighbouring measurements and slow drifts of the machine cancel out.
    """
    ratios = [x / y * scale for x, y in zip(a.round_medians(), b.round_medians(), strict=True)]
    return statistics.median(ratios)
