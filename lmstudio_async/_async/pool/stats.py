"""Counters of a model pool: the public snapshots and the mutable tallies behind them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

__all__ = ["PoolCounters", "PoolStats", "TargetKey"]

TargetKey: TypeAlias = tuple[int, "str | None"]
"""A placement target: ``(client_index, device)``; ``device`` is ``None`` for the host itself."""


@dataclass(frozen=True)
class PoolCounters:
    """Counters of a pool, of one key or of one placement target (all integers).

    ``loads``: instances the pool loaded; ``evictions``: idle instances it unloaded to make
    room; ``hits``: leases that did not start a load (the instance was loaded, or another
    caller's load of it was under way); ``waits``: leases that had to queue for memory or
    for a free slot; ``in_flight``: leases held now; ``queued``: callers waiting now.
    """

    loads: int = 0
    evictions: int = 0
    hits: int = 0
    waits: int = 0
    in_flight: int = 0
    queued: int = 0

    def _text(self) -> str:
        return (
            f"loads={self.loads} evictions={self.evictions} hits={self.hits} "
            f"waits={self.waits} in_flight={self.in_flight} queued={self.queued}"
        )

    def __repr__(self) -> str:
        return f"PoolCounters({self._text()})"


@dataclass(frozen=True, repr=False)
class PoolStats(PoolCounters):
    """A snapshot of :meth:`AsyncModelPool.stats`: the pool's counters, the same per key
    (``by_key[key]``) and per placement target (``by_target[(client_index, device)]``),
    and the bytes in use and budget of each target (``None`` without a budget)."""

    by_key: Mapping[str, PoolCounters] = field(default_factory=dict)
    by_target: Mapping[TargetKey, PoolCounters] = field(default_factory=dict)
    used_bytes: Mapping[TargetKey, int] = field(default_factory=dict)
    budget_bytes: Mapping[TargetKey, int | None] = field(default_factory=dict)

    def __repr__(self) -> str:
        parts = []
        for target, used in self.used_bytes.items():
            budget = self.budget_bytes.get(target)
            where = f"{target[0]}" if target[1] is None else f"{target[0]}/{target[1]}"
            limit = "-" if budget is None else f"{budget / 1e9:.2f}"
            parts.append(f"{where}:{used / 1e9:.2f}/{limit}GB")
        memory = f" memory=[{' '.join(parts)}]" if parts else ""
        return f"PoolStats({self._text()}{memory})"


class _Counts:
    __slots__ = ("evictions", "hits", "loads", "queued", "waits")

    def __init__(self) -> None:
        self.loads = self.evictions = self.hits = self.waits = self.queued = 0

    def freeze(self, in_flight: int, queued: int) -> PoolCounters:
        """A snapshot; ``in_flight`` and ``queued`` are counted by the caller."""
        return PoolCounters(self.loads, self.evictions, self.hits, self.waits, in_flight, queued)
