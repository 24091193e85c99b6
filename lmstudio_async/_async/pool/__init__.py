"""A model pool: a safe working set of model instances shared by many concurrent tasks.

:class:`AsyncModelPool` leases instances (``async with pool.use(key) as model``), loads
them when needed (one load per key however many callers ask at once), keeps them loaded
while any lease holds them, and makes room within a memory budget by unloading idle
instances, chosen by a frequency-with-aging policy (see ``docs/pool.md`` for why and for
the measurements). It spreads instances over several hosts and over the LM Link devices
of a host, notices instances that expired or were unloaded by someone else, and marks a
host down when its connection drops.

The modules, lowest first: ``stats`` (the counters and their snapshots), ``policy``
(eviction order), ``state`` (the pool's records of hosts, targets, instances and
waiters), ``lease`` (the context manager of one lease) and ``core`` (the pool itself).
"""

from __future__ import annotations

from .core import DEFAULT_LEASE_TIMEOUT, DEFAULT_MAX_WAITING, AsyncModelPool, MemoryBudget
from .lease import PoolLease
from .policy import Eviction, LfuAgingPolicy, LruPolicy
from .stats import PoolCounters, PoolStats, TargetKey

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_MAX_WAITING",
    "AsyncModelPool",
    "Eviction",
    "LfuAgingPolicy",
    "LruPolicy",
    "MemoryBudget",
    "PoolCounters",
    "PoolLease",
    "PoolStats",
    "TargetKey",
]
