"""The pool's internal view of its hosts, placement targets, instances and waiters.

Plain mutable records: :mod:`.core` makes every decision and changes them between
``await`` points.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from ..._protocol.info import ModelInfo
from ..handle import _ModelHandle
from .stats import TargetKey, _Counts

if TYPE_CHECKING:
    from ..client import AsyncClient

_HandleAny: TypeAlias = _ModelHandle[Any, Any]


class _Host:
    __slots__ = (
        "catalog",
        "client",
        "down_cause",
        "index",
        "probe",
        "synced",
        "syncing",
        "touched",
        "up",
    )

    def __init__(self, index: int, client: AsyncClient) -> None:
        self.index = index
        self.client = client
        self.up = True
        self.down_cause: BaseException | None = None  # why it was last marked down
        self.synced = False  # reconciled with list_loaded since it (last) came up
        self.catalog: dict[str, ModelInfo] | None = None
        self.probe: asyncio.Task[None] | None = None
        self.syncing: asyncio.Task[None] | None = None
        self.touched = False  # the pool has sent a load here (aclose looks for leftovers)

    @property
    def name(self) -> str:
        return self.client.api_host or f"client #{self.index}"


class _Target:
    __slots__ = (
        "budget",
        "counts",
        "device",
        "host",
        "instances",
        "key",
        "learned",
        "learned_until",
    )

    def __init__(self, host: _Host, device: str | None, budget: int | None) -> None:
        self.host = host
        self.device = device
        self.budget = budget
        self.key: TargetKey = (host.index, device)
        self.instances: list[_Instance] = []
        self.counts = _Counts()
        # After the server refused a load for memory: less than what was asked fits.
        self.learned: int | None = None
        self.learned_until = 0.0

    def limit(self, now: float) -> int | None:
        """The budget to place against: the configured one, or less after a refusal."""
        if self.learned is not None and now >= self.learned_until:
            self.learned = None
        if self.learned is None:
            return self.budget
        return self.learned if self.budget is None else min(self.budget, self.learned)

    def committed(self) -> int:
        """Bytes of instances loaded, being loaded, or whose unload failed here (evictions
        in progress excluded: their memory is about to be free)."""
        return sum(i.bytes for i in self.instances if i.state in ("loading", "ready", "stranded"))

    def resident(self) -> int:
        """Bytes that may be in the server's memory right now."""
        return sum(
            i.bytes
            for i in self.instances
            if i.state in ("ready", "evicting", "stranded")
            or (i.state == "loading" and i.started)
        )


_State: TypeAlias = Literal["loading", "ready", "evicting", "stranded", "gone"]
"""``stranded``: its unload failed (a dropped connection, no answer, an error), so it may
still be in the server's memory: it counts against the budget, is never handed out, and is
unloaded again at its host's next reconciliation (or forgotten if the host's list no longer
has it), and by :meth:`AsyncModelPool.aclose`."""


class _Instance:
    __slots__ = (
        "bytes",
        "checking",
        "domain",
        "done",
        "draining",
        "handle",
        "identifier",
        "key",
        "last_used",
        "leases",
        "owned",
        "reference",
        "reserved",
        "signature",
        "started",
        "state",
        "target",
    )

    def __init__(
        self,
        key: str,
        domain: str,
        signature: bytes | None,
        target: _Target,
        nbytes: int,
        *,
        owned: bool,
    ) -> None:
        self.key = key
        self.domain = domain
        self.signature = signature  # the load config's wire form; None: unknown (not ours)
        self.target = target
        self.bytes = nbytes
        self.owned = owned
        self.state: _State = "loading"
        self.started = False  # the load request has been sent
        self.identifier = ""
        self.reference = ""
        self.handle: _HandleAny | None = None
        self.leases = 0
        self.reserved = 0  # callers of the load, promised a lease when it lands
        # No new leases: the waiter with this number needs its memory once it is idle.
        self.draining: int | None = None
        # No new leases: a call in a lease said it is not loaded; the server is being asked.
        self.checking = False
        self.last_used = 0.0
        self.done: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<pool instance {self.identifier or self.key!r} {self.state} leases={self.leases}>"

    @property
    def idle(self) -> bool:
        return self.leases == 0 and self.reserved == 0


class _Waiter:
    __slots__ = ("future", "seq", "since")

    def __init__(self, seq: int, since: float) -> None:
        self.seq = seq
        self.since = since
        self.future: asyncio.Future[None] | None = None
