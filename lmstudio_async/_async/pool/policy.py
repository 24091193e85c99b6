"""Eviction policies of a model pool: which idle instance to unload first."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from ...errors import LMStudioValueError

if TYPE_CHECKING:
    from .state import _Instance

__all__ = ["Eviction", "LfuAgingPolicy", "LruPolicy", "make_policy"]

Eviction: TypeAlias = Literal["lfu", "lru"]

_AGING_WINDOW: Final = 128


class _Policy:
    """Orders idle instances for eviction, first victim first."""

    def record(self, key: str) -> None:
        """One lease request for ``key`` (hit or miss)."""

    def rank(self, inst: _Instance) -> tuple[float, float]:
        raise NotImplementedError

    def hotter(self, victim: str, key: str) -> bool:
        """Whether ``victim`` is worth more than ``key`` (then a load of ``key`` that would
        evict it may wait a little for a colder victim; see ``core._DRAIN_AFTER``)."""
        return False


class LruPolicy(_Policy):
    """Least recently used first (kept for comparison; see docs/pool.md)."""

    def rank(self, inst: _Instance) -> tuple[float, float]:
        return (inst.last_used, 0.0)


class LfuAgingPolicy(_Policy):
    """Least frequently requested first, over the request history of every key (loaded or
    not), with every count halved each ``window`` requests so that popularity can change;
    ties go to the least recently used. On equal-size models this is GDSF without size
    weighting and the counting half of W-TinyLFU (measured in ``benchmarks/pool.py``)."""

    def __init__(self, window: int = _AGING_WINDOW) -> None:
        self.window = window
        self.counts: Counter[str] = Counter()
        self._seen = 0

    def record(self, key: str) -> None:
        self.counts[key] += 1
        self._seen += 1
        if self._seen >= self.window:
            self._seen = 0
            for name in list(self.counts):
                halved = self.counts[name] // 2
                if halved:
                    self.counts[name] = halved
                else:
                    del self.counts[name]

    def rank(self, inst: _Instance) -> tuple[float, float]:
        return (float(self.counts.get(inst.key, 0)), inst.last_used)

    def hotter(self, victim: str, key: str) -> bool:
        return self.counts.get(victim, 0) > self.counts.get(key, 0)


def make_policy(name: Eviction) -> _Policy:
    if name == "lfu":
        return LfuAgingPolicy()
    if name == "lru":
        return LruPolicy()
    raise LMStudioValueError(f"eviction must be 'lfu' or 'lru', got {name!r}")
