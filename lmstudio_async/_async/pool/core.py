"""The pool itself: :class:`AsyncModelPool` (see the package docstring for an overview).

Everything here runs in one event loop and changes shared state only between ``await``
points, so no lock is needed; unloads and loads run outside every such critical section.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, TypeAlias, TypeVar, cast

import msgspec
import msgspec.structs

from ..._protocol.endpoints import check_key
from ..._protocol.info import ModelInfo
from ..._protocol.kvconfig import Domain, coerce_load_config, load_config_stack
from ...config import EmbeddingLoadConfig, LlmLoadConfig, is_int, is_number
from ...errors import (
    ClientClosedError,
    DomainMismatchError,
    HostDownError,
    IdentifierTakenError,
    InsufficientMemoryError,
    LMStudioConnectionError,
    LMStudioError,
    LMStudioTimeoutError,
    LMStudioValueError,
    ModelNotFoundError,
    ModelUnloadedError,
    PoolFullError,
    PoolTimeoutError,
    ServerError,
)
from ...types import Timeouts
from ..client import LLM, AsyncClient, EmbeddingModel
from ..handle import log
from .lease import PoolLease
from .policy import Eviction, make_policy
from .state import _HandleAny, _Host, _Instance, _State, _Target, _Waiter
from .stats import PoolStats, TargetKey, _Counts

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_MAX_WAITING",
    "AsyncModelPool",
    "MemoryBudget",
]

MemoryBudget: TypeAlias = (
    "float | Sequence[float | None] | Mapping[tuple[int, str | None], float | None] | None"
)
"""``memory_budget``: bytes for every host, one entry per client, or per ``(client, device)``."""

DEFAULT_LEASE_TIMEOUT: Final = 120.0
"""Default ``timeout`` of :meth:`AsyncModelPool.use`: seconds to wait for memory and the load."""

DEFAULT_MAX_WAITING: Final = 10_000
"""Default bound of the wait queue; a lease beyond it raises :class:`PoolFullError`."""

_DEFAULT_LOAD_TIMEOUT: Final = 600.0
_DEFAULT_RECONCILE_SECONDS: Final = 5.0
_UNLOAD_TIMEOUT: Final = 30.0
_PROBE_TIMEOUT: Final = 5.0
_RECONNECT_FIRST: Final = 0.05
_RECONNECT_MAX: Final = 2.0
_LEARNED_SECONDS: Final = 30.0
_DRAIN_AFTER: Final = 1.0
"""Seconds a caller waits for memory before busy instances stop taking new leases for it:
until then it waits for instances to fall idle on their own (see docs/pool.md)."""
_TTL_CHECK_FRACTION: Final = 0.8  # idle this share of the TTL: ask before handing it out


class AsyncModelPool:
    """Leases model instances to concurrent tasks within a memory budget, on one or more hosts.

    ``clients`` is one :class:`AsyncClient` or a sequence of them (one per LM Studio
    host). ``memory_budget`` is per placement target (a host, or one LM Link device of a
    host): an int (bytes) for every host, a sequence with one entry per client, or a
    mapping ``{(client_index, device_or_None): bytes}``, whose keys are then the targets
    (list the devices of a host there to spread over them). ``None``: no client-side
    budget; the pool relies on the server refusing loads for memory.
    ``memory_estimates`` maps model keys (case-insensitive) to the bytes to count for an
    instance of that key instead of LM Studio's estimate, for a model whose estimate is
    far off (see docs/pool.md); keys need not be downloaded yet.

    ::

        async with AsyncModelPool(client, memory_budget=8 * 10**9) as pool:
            async with pool.llm("qwen2.5-7b-instruct-1m") as model:
                reply = await model.respond("Hello")

    Loads use explicit ``load`` calls with pool-unique identifiers (never JIT, so
    LM Studio's JIT auto-evict never takes a pooled model), ``ttl`` (idle seconds before
    LM Studio unloads an instance, ``None``: never) and ``load_timeout``.
    ``max_waiting`` bounds the callers waiting for memory or a slot
    (:class:`PoolFullError` beyond it); ``max_concurrent_per_instance`` bounds the
    leases of one instance (``None``: no limit); ``max_replicas`` lets a busy key get
    more instances while the budget has room. ``eviction`` picks idle instances to
    unload: ``"lfu"`` (frequency with aging, the default) or ``"lru"``.
    ``reconcile_interval`` is how often (seconds) the pool compares its view with each
    host's ``list_loaded`` (``None``: only when something fails).
    """

    def __init__(
        self,
        clients: AsyncClient | Sequence[AsyncClient],
        *,
        memory_budget: MemoryBudget = None,
        memory_estimates: Mapping[str, int] | None = None,
        max_waiting: int = DEFAULT_MAX_WAITING,
        max_concurrent_per_instance: int | None = None,
        max_replicas: int = 1,
        ttl: float | None = None,
        load_timeout: float | None = _DEFAULT_LOAD_TIMEOUT,
        reconcile_interval: float | None = _DEFAULT_RECONCILE_SECONDS,
        eviction: Eviction = "lfu",
    ) -> None:
        client_list = pool_clients(clients, AsyncClient, "AsyncModelPool", "an AsyncClient")
        _check_int("max_waiting", max_waiting, minimum=0)
        if max_concurrent_per_instance is not None:
            _check_int("max_concurrent_per_instance", max_concurrent_per_instance, minimum=1)
        _check_int("max_replicas", max_replicas, minimum=1)
        for name, value in (
            ("ttl", ttl),
            ("load_timeout", load_timeout),
            ("reconcile_interval", reconcile_interval),
        ):
            if value is not None and not (_is_finite(value) and value > 0):
                raise LMStudioValueError(f"{name} must be a positive number or None, got {value!r}")
        self._policy = make_policy(eviction)
        self._hosts = [_Host(i, c) for i, c in enumerate(client_list)]
        self._targets = self._make_targets(memory_budget)
        self._overrides = _check_estimates(memory_estimates)
        self._max_waiting = max_waiting
        self._max_concurrent = max_concurrent_per_instance
        self._max_replicas = max_replicas
        self._ttl = ttl
        self._load_timeout = load_timeout
        self._reconcile_interval = reconcile_interval
        self._pinned: set[str] = set()
        self._token = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        self._waiters: dict[int, _Waiter] = {}  # insertion order is FIFO order
        # Loads waiting for memory to free, leases waiting for a host to come up.
        self._internal: list[asyncio.Future[None]] = []
        self._counts = _Counts()
        self._key_counts: dict[str, _Counts] = {}
        self._estimates: dict[tuple[TargetKey, str, bytes | None], int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancellable: set[asyncio.Task[Any]] = set()
        self._reconciler: asyncio.Task[None] | None = None
        self._drain_after = _DRAIN_AFTER
        self._last_placed: _Instance | None = None
        self._closed = False
        self._closing: asyncio.Future[None] | None = None

    # --- construction helpers --------------------------------------------------------------

    def _make_targets(self, budget: MemoryBudget) -> list[_Target]:
        hosts = self._hosts
        if budget is None or isinstance(budget, int | float):
            every = None if budget is None else _check_budget("memory_budget", budget)
            return [_Target(h, None, every) for h in hosts]
        if isinstance(budget, Mapping):
            targets = []
            for key, value in budget.items():
                if not (
                    isinstance(key, tuple)
                    and len(key) == 2
                    and is_int(key[0])
                    and (key[1] is None or isinstance(key[1], str))
                ):
                    raise LMStudioValueError(
                        f"memory_budget keys must be (client_index, device_or_None), got {key!r}"
                    )
                index, device = key
                if not 0 <= index < len(hosts):
                    raise LMStudioValueError(
                        f"memory_budget key {key!r}: client_index must be 0..{len(hosts) - 1}"
                    )
                if device is not None:
                    check_key(device, "device")
                nbytes = None if value is None else _check_budget(f"memory_budget[{key!r}]", value)
                targets.append(_Target(hosts[index], device, nbytes))
            missing = {h.index for h in hosts} - {t.host.index for t in targets}
            if missing:
                raise LMStudioValueError(
                    f"memory_budget names no target for client(s) {sorted(missing)}"
                )
            return targets
        if isinstance(budget, Sequence) and not isinstance(budget, str | bytes):
            values = list(budget)
            if len(values) != len(hosts):
                raise LMStudioValueError(
                    f"memory_budget has {len(values)} entries for {len(hosts)} clients"
                )
            return [
                _Target(h, None, None if v is None else _check_budget(f"memory_budget[{i}]", v))
                for i, (h, v) in enumerate(zip(hosts, values, strict=True))
            ]
        raise LMStudioValueError(
            "memory_budget must be bytes (int), a sequence with one entry per client, a mapping "
            f"{{(client_index, device): bytes}} or None, got {type(budget).__name__}"
        )

    # --- public API ---------------------------------------------------------------------------

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<AsyncModelPool {len(self._hosts)} host(s) {state} {self.stats()!r}>"

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has started."""
        return self._closed

    async def __aenter__(self) -> AsyncModelPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def use(
        self,
        key: str,
        *,
        config: LlmLoadConfig | EmbeddingLoadConfig | Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_LEASE_TIMEOUT,
    ) -> PoolLease[LLM | EmbeddingModel]:
        """``async with pool.use(key) as model:`` lease an instance of ``key`` (an
        :class:`LLM` or :class:`EmbeddingModel`, as the host's catalogue says).

        Loads it if no instance is free (one load however many callers ask), keeps it
        loaded while any lease holds it, and releases the lease on exit, also on error or
        cancellation. ``config`` is the load config: instances loaded with another config
        are not shared with this lease. ``timeout`` bounds the wait for memory, a free
        slot and the load (:class:`PoolTimeoutError`); ``None`` waits without deadline.
        """
        return self._lease(key, config, timeout, None)

    def llm(
        self,
        key: str,
        *,
        config: LlmLoadConfig | Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_LEASE_TIMEOUT,
    ) -> PoolLease[LLM]:
        """:meth:`use` for an LLM: the handle is an :class:`LLM` (an embedding model's key
        raises :class:`DomainMismatchError`, an :class:`LMStudioValueError`)."""
        return cast(PoolLease[LLM], self._lease(key, config, timeout, "llm"))

    def embedding(
        self,
        key: str,
        *,
        config: EmbeddingLoadConfig | Mapping[str, Any] | None = None,
        timeout: float | None = DEFAULT_LEASE_TIMEOUT,
    ) -> PoolLease[EmbeddingModel]:
        """:meth:`use` for an embedding model: the handle is an :class:`EmbeddingModel`."""
        return cast(PoolLease[EmbeddingModel], self._lease(key, config, timeout, "embedding"))

    def pin(self, key: str) -> None:
        """Never evict instances of ``key`` (they still count against the budget).

        A key may be pinned before anything loaded it; pinning does not load it.
        """
        check_key(key, "key")
        self._pinned.add(key.lower())

    def unpin(self, key: str) -> None:
        """Let instances of ``key`` be evicted again (no error if it was not pinned)."""
        check_key(key, "key")
        self._pinned.discard(key.lower())
        self._changed()

    def stats(self) -> PoolStats:
        """A snapshot of the pool's counters, per key and per placement target."""
        in_flight_key: Counter[str] = Counter()
        in_flight_target: Counter[TargetKey] = Counter()
        for target in self._targets:
            for inst in target.instances:
                if inst.leases:
                    in_flight_key[inst.key] += inst.leases
                    in_flight_target[target.key] += inst.leases
        by_key = {
            key: c.freeze(in_flight_key[key], c.queued)
            for key, c in sorted(self._key_counts.items())
        }
        by_target = {t.key: t.counts.freeze(in_flight_target[t.key], 0) for t in self._targets}
        total = self._counts
        return PoolStats(
            total.loads,
            total.evictions,
            total.hits,
            total.waits,
            sum(in_flight_key.values()),
            len(self._waiters),
            by_key=MappingProxyType(by_key),
            by_target=MappingProxyType(by_target),
            used_bytes=MappingProxyType({t.key: t.committed() for t in self._targets}),
            budget_bytes=MappingProxyType({t.key: t.budget for t in self._targets}),
        )

    async def aclose(self) -> None:
        """Stop the pool: pending leases fail with :class:`ClientClosedError`, loads in
        progress are cancelled, and every instance the pool loaded is unloaded, those whose
        unload failed before included; then every host it loaded on is searched for
        anything of its own still loaded (best effort: one attempt each, bounded by the
        unload and list timeouts). Instances it did not load stay. The clients stay open."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closed = True
        self._closing = asyncio.get_running_loop().create_future()
        try:
            self._changed()  # waiters see the pool closed
            for task in list(self._cancellable):
                task.cancel()
            while self._tasks:  # evictions finish their unloads
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
            unloads = []
            for target in self._targets:
                for inst in target.instances:
                    if (
                        inst.owned
                        and inst.state in ("ready", "evicting", "stranded")
                        and inst.identifier
                    ):
                        unloads.append(self._unload(inst))
                    inst.state = "gone"
                target.instances.clear()
            await asyncio.gather(*unloads, return_exceptions=True)
            # Then what may be left: unloads that failed (again), loads whose outcome was
            # lost with their connection. Bounded: one list and one unload per instance.
            await asyncio.gather(
                *(self._sweep(h) for h in self._hosts if h.touched), return_exceptions=True
            )
        finally:
            self._closing.set_result(None)

    # --- leasing ------------------------------------------------------------------------------

    def _lease(
        self, key: str, config: Any, timeout: float | None, domain: str | None
    ) -> PoolLease[Any]:
        check_key(key, "key")
        if timeout is not None and not (_is_finite(timeout) and timeout > 0):
            raise LMStudioValueError(f"timeout must be a positive number or None, got {timeout!r}")
        return PoolLease(self, key, config, timeout, domain)

    def _key_stats(self, key: str) -> _Counts:
        counts = self._key_counts.get(key)
        if counts is None:
            counts = self._key_counts[key] = _Counts()
        return counts

    def _bump(self, name: str, key: str, target: _Target | None) -> None:
        setattr(self._counts, name, getattr(self._counts, name) + 1)
        counts = self._key_stats(key)
        setattr(counts, name, getattr(counts, name) + 1)
        if target is not None:
            setattr(target.counts, name, getattr(target.counts, name) + 1)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the model pool is closed")

    async def _acquire(
        self, key: str, config: Any, timeout: float | None, want: str | None
    ) -> _Instance:
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._start_reconciler()
        info = await self._model_info(key, deadline, timeout)
        key = info.model_key
        domain = str(info.type)
        if want is not None and domain != want:
            raise DomainMismatchError.client_side(
                key, domain, want, suggestion=f"use pool.{domain}() or pool.use()"
            )
        dom = cast(Domain, domain)
        cfg = coerce_load_config(dom, cast(object, config))
        if cfg is not None and cfg.context_length == "max":
            cfg = msgspec.structs.replace(cfg, context_length=info.max_context_length)
        signature = msgspec.json.encode(load_config_stack(dom, cfg))
        default_sig = msgspec.json.encode(load_config_stack(dom, None))
        plain = signature == default_sig
        await self._prepare_estimates(key, domain, cfg, signature, deadline, timeout)
        self._policy.record(key)
        waiter: _Waiter | None = None
        waited = False
        last_error: BaseException | None = None
        counts = self._key_stats(key)
        try:
            while True:
                self._check_open()
                if waiter is not None and waiter.future is not None:
                    waiter.future = None
                await self._sync_hosts(deadline, timeout, key)
                # Fair queueing: a caller that needs to wait keeps its place in line.
                ahead = waiter is None and bool(self._waiters)
                self._last_placed = None  # set by _place if this call starts a load
                step = self._try(
                    key,
                    domain,
                    cfg,
                    signature,
                    plain,
                    info,
                    place=not ahead,
                    drain_for=(
                        waiter.seq
                        if waiter is not None and loop.time() >= waiter.since + self._drain_after
                        else None
                    ),
                    patient=waiter is None or loop.time() < waiter.since + self._drain_after,
                )
                if isinstance(step, _Instance):
                    if step.state == "ready":
                        if self._maybe_expired(step) and not await self._still_loaded(
                            step, deadline, timeout, key
                        ):
                            continue
                        self._bump("hits", key, step.target)
                        return step
                    # A load this caller started, or joined: wait for it to land.
                    joined = step is not self._last_placed
                    try:
                        inst = await self._await_load(step, deadline, timeout, key)
                    except _Retry as retry:
                        last_error = retry.cause
                        continue
                    if inst is not None:
                        if joined:
                            self._bump("hits", key, inst.target)
                        return inst
                    continue
                if isinstance(step, BaseException):
                    raise step
                # Nothing free: queue (FIFO) until something changes.
                if waiter is None:
                    if len(self._waiters) >= self._max_waiting:
                        raise PoolFullError(
                            f"model pool: {len(self._waiters)} callers are already waiting "
                            f"(max_waiting={self._max_waiting}); lease of {key!r} refused"
                        )
                    waiter = _Waiter(next(self._seq), loop.time())
                    self._waiters[waiter.seq] = waiter
                    counts.queued += 1
                    if not waited:
                        waited = True
                        self._bump("waits", key, None)
                    if ahead:
                        self._changed()  # let the callers ahead try first, in order
                fut = waiter.future = loop.create_future()
                patience = waiter.since + self._drain_after
                await self._wait(fut, deadline, timeout, key, last_error, patience)
        finally:
            if waiter is not None:
                self._waiters.pop(waiter.seq, None)
                counts.queued -= 1
                for target in self._targets:
                    for inst in target.instances:
                        if inst.draining == waiter.seq:
                            inst.draining = None
                self._changed()

    async def _wait(
        self,
        fut: asyncio.Future[None],
        deadline: float | None,
        timeout: float | None,
        key: str,
        cause: BaseException | None,
        patience: float,
    ) -> None:
        """Wait for a change, the deadline (an error) or, once, the end of ``patience``."""
        now = asyncio.get_running_loop().time()
        remaining = None if deadline is None else deadline - now
        if remaining is not None and remaining <= 0:
            raise self._timeout(key, timeout, cause)
        wake = remaining
        if patience > now and (wake is None or patience - now < wake):
            wake = patience - now
        # Not asyncio.wait_for: on Python 3.11 it returns the result of a future that is
        # already done when the task is cancelled, so a caller cancelled in the same step
        # as a release woke it would go on and take a lease. asyncio.wait raises.
        await asyncio.wait((fut,), timeout=wake)
        if fut.done() or wake != remaining:
            return  # a change, or patience is over: try again, now allowed to drain
        raise self._timeout(key, timeout, cause)

    def _timeout(
        self, key: str, timeout: float | None, cause: BaseException | None, *, show: bool = True
    ) -> LMStudioError:
        """The error of a lease of ``key`` past its ``timeout``; ``cause`` is named in the
        message (``show``) and is its ``__cause__``."""
        if all(not h.up for h in self._hosts):
            names = ", ".join(h.name for h in self._hosts)
            error: LMStudioError = HostDownError(
                f"model pool: no host is up to lease {key!r} (down: {names})",
                host=self._hosts[0].name if len(self._hosts) == 1 else None,
            )
            if cause is None:  # say why the first of them went down
                cause = next((h.down_cause for h in self._hosts if h.down_cause), None)
        else:
            detail = f" (last: {cause})" if cause is not None and show else ""
            error = PoolTimeoutError(
                f"model pool: no instance of {key!r} became available within {timeout or 0:g}s"
                f"{detail}",
                timeout=timeout,
                kind="total",
                operation=f"pool lease of {key!r}",
            )
        error.__cause__ = cause
        return error

    def _changed(self) -> None:
        """Something was freed or landed: wake every waiter, in FIFO order."""
        for fut in self._internal:
            if not fut.done():
                fut.set_result(None)
        for waiter in list(self._waiters.values()):
            fut = waiter.future  # type: ignore[assignment]
            if fut is not None and not fut.done():
                fut.set_result(None)

    # --- the decision (no await inside) ---------------------------------------------------

    def _try(
        self,
        key: str,
        domain: str,
        cfg: Any,
        signature: bytes,
        plain: bool,
        info: ModelInfo,
        *,
        place: bool = True,
        drain_for: int | None = None,
        patient: bool = False,
    ) -> _Instance | BaseException | None:
        """Lease a ready instance, join a load in progress, or start one; None: wait.

        ``drain_for``: the waiter may mark leased instances as draining (no new leases)
        so that they can be evicted for it once their leases end.
        """
        limit = self._max_concurrent
        matching = [
            inst
            for target in self._targets
            if target.host.up
            for inst in target.instances
            if inst.key == key
            and inst.state in ("ready", "loading")
            and (inst.signature == signature or (inst.signature is None and plain))
        ]
        ready = [i for i in matching if i.state == "ready"]
        free = [
            i
            for i in ready
            if i.draining is None
            and not i.checking
            and (limit is None or i.leases + i.reserved < limit)
        ]
        loading = [i for i in matching if i.state == "loading"]
        if free:
            inst = min(free, key=lambda i: (i.leases + i.reserved, -i.last_used))
            if place and inst.leases and len(matching) < self._max_replicas:
                replica = self._place(key, domain, cfg, signature, info, evict=False)
                if isinstance(replica, _Instance):
                    return replica
            self._take(inst)
            return inst
        if loading:
            inst = min(loading, key=lambda i: i.reserved)
            if limit is None or inst.reserved < limit:
                inst.reserved += 1
                return inst
        if not place or (matching and len(matching) >= self._max_replicas):
            return None  # every instance is busy and no replica may be added
        return self._place(
            key,
            domain,
            cfg,
            signature,
            info,
            evict=not matching,
            drain_for=drain_for,
            patient=patient,
        )

    def _take(self, inst: _Instance) -> None:
        inst.leases += 1

    def _maybe_expired(self, inst: _Instance) -> bool:
        """Whether the server's idle TTL may have unloaded ``inst`` since its last lease."""
        if self._ttl is None or inst.leases != 1 or not inst.owned:
            return False
        idle = asyncio.get_running_loop().time() - inst.last_used
        return idle >= self._ttl * _TTL_CHECK_FRACTION

    async def _still_loaded(
        self, inst: _Instance, deadline: float | None, timeout: float | None, key: str
    ) -> bool:
        """Ask the server about ``inst`` (leased by the caller), within the lease's
        deadline; if gone, release and forget it. False also when its host did not answer
        (then marked down, as for the lease's other metadata calls): the caller tries
        again elsewhere or waits for a host; a lease whose deadline cut the question
        short ends with its usual timeout error."""
        assert inst.handle is not None
        limit = _bounded(deadline, _PROBE_TIMEOUT, inst.target.host.client.timeouts)
        try:
            await inst.handle.get_info(timeout=limit)
        except ModelNotFoundError:
            inst.leases -= 1
            self._gone(inst)
            return False
        except LMStudioConnectionError as exc:
            inst.leases -= 1
            self._mark_down(inst.target.host, exc)
            self._changed()
            return False
        except LMStudioTimeoutError as exc:
            inst.leases -= 1
            self._changed()
            self._unanswered(inst.target.host, exc, limit, key, timeout)
            return False
        except BaseException:
            inst.leases -= 1
            self._changed()
            raise
        return True

    def _evictable(self, target: _Target) -> list[_Instance]:
        victims = [
            i
            for i in target.instances
            if i.state == "ready" and i.owned and i.idle and i.key.lower() not in self._pinned
        ]
        victims.sort(key=self._policy.rank)
        return victims

    def _place(
        self,
        key: str,
        domain: str,
        cfg: Any,
        signature: bytes,
        info: ModelInfo,
        *,
        evict: bool,
        drain_for: int | None = None,
        patient: bool = False,
    ) -> _Instance | BaseException | None:
        """Start a load of ``key`` on the best target (evicting idle instances if allowed).

        ``patient``: while other leases are active on a target, do not evict an instance
        worth more than ``key`` there (it is likely wanted again soon; meanwhile more
        callers of ``key`` gather and share its load).
        """
        best: tuple[tuple[float, ...], _Target, list[_Instance]] | None = None
        too_big: list[str] = []
        now = asyncio.get_running_loop().time()
        for target in self._targets:
            if not target.host.up or not self._serves(target, key):
                continue
            need = self._bytes(target, key, signature, info)
            limit = target.limit(now)
            candidate: tuple[tuple[float, ...], _Target, list[_Instance]]
            if limit is None:
                committed = sum(1 for i in target.instances if i.state in ("loading", "ready"))
                candidate = ((0, committed), target, [])  # the least loaded host
            else:
                if target.budget is not None and need > target.budget:
                    too_big.append(f"{_where(target)} ({target.budget / 1e9:.2f} GB)")
                    continue
                free = limit - target.committed()
                if need <= free:
                    candidate = ((0, -(free - need)), target, [])
                elif not evict:
                    continue
                else:
                    victims = self._victims(self._evictable(target), free, need)
                    if victims is None:
                        continue
                    if (
                        patient
                        and any(i.leases for i in target.instances)
                        and any(self._policy.hotter(v.key, key) for v in victims)
                    ):
                        continue
                    cost = sum(self._policy.rank(v)[0] for v in victims)
                    candidate = ((1, cost, len(victims)), target, victims)
            if best is None or candidate[0] < best[0]:
                best = candidate
        if best is None:
            if too_big and len(too_big) == sum(1 for t in self._targets if t.host.up):
                return LMStudioValueError(
                    f"model pool: {key!r} needs more memory than the budget of {', '.join(too_big)}"
                )
            if evict and drain_for is not None:
                self._drain(key, signature, info, now, drain_for)
            return None
        _, target, victims = best
        for victim in victims:
            self._evict(victim)
        inst = _Instance(
            key, domain, signature, target, self._bytes(target, key, signature, info), owned=True
        )
        inst.reserved = 1
        self._last_placed = inst
        target.instances.append(inst)
        inst.done = asyncio.get_running_loop().create_future()
        self._spawn(self._load(inst, cfg), f"lmstudio-pool-load-{key}", cancel=True)
        return inst

    @staticmethod
    def _victims(candidates: list[_Instance], free: int, need: int) -> list[_Instance] | None:
        """The first of ``candidates`` (in eviction order) that make ``need`` fit, sparing
        those that later, more valuable ones made unnecessary; None if all are not enough."""
        victims: list[_Instance] = []
        for victim in candidates:
            if free >= need:
                break
            victims.append(victim)
            free += victim.bytes
        if free < need:
            return None
        for victim in victims[-2::-1]:
            if free - victim.bytes >= need:
                victims.remove(victim)
                free -= victim.bytes
        return victims

    def _drain(self, key: str, signature: bytes, info: ModelInfo, now: float, seq: int) -> None:
        """Nothing idle can make room: stop leasing the instances whose eviction would
        (the fewest busy ones, least valuable first), so that this waiter is served once
        their leases end instead of waiting behind a stream of hits."""
        best: tuple[tuple[float, ...], list[_Instance]] | None = None
        for target in self._targets:
            for inst in target.instances:
                if inst.draining == seq:
                    inst.draining = None
        for target in self._targets:
            limit = target.limit(now)
            if not target.host.up or limit is None or not self._serves(target, key):
                continue
            candidates = [
                i
                for i in target.instances
                if i.state == "ready"
                and i.owned
                and i.draining is None  # not promised to another waiter
                and i.key.lower() not in self._pinned
            ]
            candidates.sort(key=lambda i: (not i.idle, *self._policy.rank(i)))
            need = self._bytes(target, key, signature, info)
            victims = self._victims(candidates, limit - target.committed(), need)
            if victims is None:
                continue
            busy = [v for v in victims if not v.idle]
            score = (len(busy), sum(self._policy.rank(v)[0] for v in busy))
            if best is None or score < best[0]:
                best = (score, busy)
        if best is not None:
            for victim in best[1]:
                victim.draining = seq

    def _serves(self, target: _Target, key: str) -> bool:
        catalog = target.host.catalog
        return catalog is None or key.lower() in catalog

    def _bytes(self, target: _Target, key: str, signature: bytes | None, info: ModelInfo) -> int:
        override = self._overrides.get(key.lower())
        if override is not None:
            return override
        cached = self._estimates.get((target.key, key, signature))
        return cached if cached is not None else int(info.size_bytes)

    # --- loads and unloads (run as tasks, outside the decision) -----------------------------

    async def _await_load(
        self, inst: _Instance, deadline: float | None, timeout: float | None, key: str
    ) -> _Instance | None:
        """Wait for ``inst`` to land; the lease it promised becomes a real one."""
        assert inst.done is not None
        try:
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            if remaining is not None and remaining <= 0:
                raise self._timeout(key, timeout, None)
            # asyncio.wait, not wait_for (see _wait); it leaves inst.done alone.
            await asyncio.wait((inst.done,), timeout=remaining)
            if not inst.done.done():
                raise self._timeout(key, timeout, None)
        except BaseException:
            inst.reserved -= 1
            self._changed()
            raise
        inst.reserved -= 1
        error = inst.done.exception()
        if error is not None:
            self._changed()
            if isinstance(error, _Retry):
                raise _Retry(error.cause)
            raise error
        if inst.state != "ready":
            self._changed()
            return None
        self._take(inst)
        return inst

    async def _load(self, inst: _Instance, cfg: Any) -> None:
        target = inst.target
        host = target.host
        assert inst.done is not None
        try:
            await self._memory_free(inst)
            while not (host.up and host.synced):
                if not host.up:
                    # Down since the load was placed (never load on a host whose memory
                    # the pool does not know): the callers place it again, or wait.
                    down = HostDownError(
                        f"model pool: {host.name} is down", host=host.client.api_host
                    )
                    raise _Retry(host.down_cause or down)
                # The host came back from a drop or a restart, or an unload failed there:
                # learn what is really loaded (instances it lost, orphans, instances whose
                # unload failed) before adding to it.
                await self._sync_hosts(None, None, inst.key)
                await self._memory_free(inst)
            inst.started = True
            host.touched = True
            namespace = host.client.llm if inst.domain == "llm" else host.client.embedding
            handle: _HandleAny | None = None
            for attempt in range(3):
                inst.identifier = f"{inst.key}@pool-{self._token}-{next(self._ids)}"
                try:
                    handle = await namespace.load(
                        inst.key,
                        inst.identifier,
                        config=cfg,
                        ttl=self._ttl,
                        timeout=self._load_timeout,
                        **self._device_kwargs(target),
                    )
                    break
                except IdentifierTakenError:
                    if attempt == 2:
                        raise
            assert handle is not None
        except BaseException as exc:
            inst.state = "gone"
            self._forget(inst)
            if isinstance(exc, asyncio.CancelledError):
                inst.done.set_exception(ClientClosedError("the model pool is closed"))
                inst.done.exception()
                self._changed()
                raise
            error: BaseException = exc
            if isinstance(exc, InsufficientMemoryError) and target.committed() == 0:
                # Nothing of ours there: orphans of failed loads, or someone else's models?
                try:
                    if await self._reconcile(host):
                        error = _Retry(exc)
                except BaseException as late:
                    inst.done.set_exception(late)
                    inst.done.exception()
                    self._changed()
                    raise
            elif isinstance(exc, InsufficientMemoryError):
                # The server has less room than we thought (someone else's models, or a
                # wrong estimate): place against what fits now for a while, and retry.
                capacity = target.committed() + inst.bytes - 1  # an upper bound, now
                if target.learned is None or capacity < target.learned:
                    target.learned = capacity
                target.learned_until = asyncio.get_running_loop().time() + _LEARNED_SECONDS
                self._spawn(
                    self._reconcile(host), f"lmstudio-pool-reconcile-{host.index}", cancel=True
                )
                error = _Retry(exc)
            elif isinstance(exc, _Retry):
                error = exc
            elif isinstance(exc, LMStudioConnectionError) and not self._closed:
                self._mark_down(host, exc)
                error = _Retry(exc)
            inst.done.set_exception(error)
            inst.done.exception()  # retrieved by the waiters
            self._changed()
            return
        inst.handle = handle
        inst.reference = handle.instance_reference
        inst.state = "ready"
        inst.last_used = asyncio.get_running_loop().time()
        self._bump("loads", inst.key, target)
        inst.done.set_result(None)
        self._changed()

    async def _memory_free(self, inst: _Instance) -> None:
        """Wait until ``inst`` fits in what may really be in memory now (its victims'
        unloads and other loads finished); a :class:`_Retry` if waiting cannot help."""
        target = inst.target
        budget = target.budget
        if budget is None:
            return
        loop = asyncio.get_running_loop()
        while target.resident() + inst.bytes > budget:
            busy = any(
                i.state == "evicting" or (i.state == "loading" and i.started)
                for i in target.instances
            )
            if not busy:
                raise _Retry(
                    InsufficientMemoryError(
                        f"{_where(target)} has no room for {inst.key!r} yet",
                        operation="pool load",
                    )
                )
            fut: asyncio.Future[None] = loop.create_future()
            self._internal.append(fut)
            try:
                await fut
            finally:
                self._internal.remove(fut)

    async def _prepare_estimates(
        self,
        key: str,
        domain: str,
        cfg: Any,
        signature: bytes,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        """Estimate (once, cached) the memory of ``key`` with ``cfg`` on every target
        (not if ``memory_estimates`` gives a figure for the key: LM Studio's is not used)."""
        if key.lower() in self._overrides:
            return
        todo = [
            t for t in self._targets if t.host.up and (t.key, key, signature) not in self._estimates
        ]
        if todo:
            await asyncio.gather(
                *(
                    self._estimate(t, key, domain, cfg, signature, deadline, timeout)
                    for t in todo
                )
            )

    async def _estimate(
        self,
        target: _Target,
        key: str,
        domain: str,
        cfg: Any,
        signature: bytes,
        deadline: float | None,
        timeout: float | None,
    ) -> None:
        client = target.host.client
        namespace = client.llm if domain == "llm" else client.embedding
        limit = _bounded(deadline, _PROBE_TIMEOUT, client.timeouts)
        try:
            estimate = await namespace.estimate(
                key, config=cfg, timeout=limit, **self._device_kwargs(target)
            )
        except LMStudioConnectionError as exc:
            self._mark_down(target.host, exc)
            return
        except LMStudioTimeoutError as exc:
            self._unanswered(target.host, exc, limit, key, timeout)
            return
        except ServerError as exc:
            log.info("pool: no estimate for %r on %s (%s)", key, _where(target), exc)
            return
        self._estimates[(target.key, key, signature)] = math.ceil(estimate.total_bytes)

    def _device_kwargs(self, target: _Target) -> dict[str, Any]:
        return {} if target.device is None else {"device": target.device}

    def _evict(self, inst: _Instance) -> None:
        inst.state = "evicting"
        self._bump("evictions", inst.key, inst.target)
        self._spawn(self._evict_task(inst), f"lmstudio-pool-evict-{inst.identifier}")

    async def _evict_task(self, inst: _Instance) -> None:
        unloaded = False
        try:
            unloaded = await self._unload(inst)
        finally:
            if unloaded:
                inst.state = "gone"
                self._forget(inst)
            else:
                self._strand(inst)
            self._changed()

    async def _unload(self, inst: _Instance) -> bool:
        """Unload ``inst``: True once it is known to be gone (unloaded, or no longer there),
        False if it may still be loaded (the connection dropped, no answer, an error)."""
        host = inst.target.host
        namespace = host.client.llm if inst.domain == "llm" else host.client.embedding
        try:
            device = inst.handle.device if inst.handle is not None else inst.target.device
            # Only where the instance is (also when that is the local machine).
            await namespace._unload(inst.identifier, device, _UNLOAD_TIMEOUT, exact=True)
        except ModelNotFoundError:
            return True  # gone already (a TTL, or someone else)
        except (LMStudioConnectionError, LMStudioTimeoutError) as exc:
            # Dropped, or no answer (a hung host, as for the metadata calls): down until its
            # probe gets an answer; the reconciliation when it returns settles the instance.
            log.warning("pool: unloading %r failed: %s", inst.identifier, exc)
            if not self._closed:
                self._mark_down(host, exc)
            return False
        except LMStudioError as exc:
            log.warning("pool: unloading %r failed: %s", inst.identifier, exc)
            return False
        return True

    def _strand(self, inst: _Instance) -> None:
        """An unload of ``inst`` failed, so it may still be in memory: it keeps counting
        against its target's budget until the host's list says it is gone or an unload
        succeeds, both at the host's next reconciliation (before its next lease or load)."""
        if inst.state == "gone":
            return  # found gone meanwhile
        inst.state = "stranded"
        inst.target.host.synced = False

    async def _unload_again(self, inst: _Instance) -> None:
        """Unload a stranded instance (one attempt; it stays stranded if that fails)."""
        inst.checking = True
        try:
            unloaded = await self._unload(inst)
        finally:
            inst.checking = False
        if unloaded and inst.state == "stranded":
            log.info("pool: unloaded %r", inst.identifier)
            inst.state = "gone"
            self._forget(inst)

    def _forget(self, inst: _Instance) -> None:
        with contextlib.suppress(ValueError):
            inst.target.instances.remove(inst)

    # --- releasing ------------------------------------------------------------------------

    def _release(self, inst: _Instance, exc: BaseException | None) -> BaseException | None:
        inst.leases -= 1
        inst.last_used = asyncio.get_running_loop().time()
        replacement: BaseException | None = None
        if isinstance(exc, ModelUnloadedError):
            self._gone(inst)
        elif isinstance(exc, ModelNotFoundError) and inst.state == "ready" and not self._closed:
            if not inst.checking:  # not handed out again until the server has answered
                inst.checking = True
                name = f"lmstudio-pool-verify-{inst.identifier}"
                self._spawn(self._verify(inst), name, cancel=True)
        elif isinstance(exc, LMStudioConnectionError) and not isinstance(exc, HostDownError):
            host = inst.target.host
            if not (isinstance(exc, ClientClosedError) and self._closed):
                self._mark_down(host, exc)
                replacement = HostDownError(
                    f"model pool: the connection to {host.name} dropped while "
                    f"{inst.identifier!r} was leased ({exc})",
                    host=host.client.api_host,
                )
        self._changed()
        return replacement

    def _gone(self, inst: _Instance) -> None:
        """``inst`` is no longer loaded (TTL, someone else): never hand it out again."""
        if inst.state in ("ready", "evicting"):
            log.info("pool: %r is no longer loaded; the next lease reloads it", inst.identifier)
            inst.state = "gone"
            self._forget(inst)
            self._changed()

    async def _verify(self, inst: _Instance) -> None:
        """Ask the server whether ``inst`` is still loaded (a call in a lease said it is
        not); until it answers, ``inst`` is not handed out."""
        try:
            if inst.handle is not None:
                await inst.handle.get_info(timeout=_PROBE_TIMEOUT)
        except ModelNotFoundError:
            self._gone(inst)
        except LMStudioError:
            pass
        finally:
            inst.checking = False
            self._changed()

    # --- hosts: catalogue, reconciliation, down and up -----------------------------------

    async def _model_info(
        self, key: str, deadline: float | None, timeout: float | None
    ) -> ModelInfo:
        """The catalogue entry of ``key`` (from the first host that lists it)."""
        low = key.lower()
        for host in self._hosts:  # catalogues already read, also of hosts down for now
            found = None if host.catalog is None else host.catalog.get(low)
            if found is not None:
                return found
        cause: BaseException | None = None
        while True:
            answered = False
            for refresh in (False, True):
                for host in self._hosts:
                    if not host.up:
                        continue
                    if host.catalog is None or refresh:
                        limit = _bounded(deadline, _PROBE_TIMEOUT, host.client.timeouts)
                        try:
                            models = await host.client.system.list_downloaded(timeout=limit)
                        except LMStudioConnectionError as exc:
                            self._mark_down(host, exc)
                            cause = exc
                            continue
                        except LMStudioTimeoutError as exc:
                            self._unanswered(host, exc, limit, key, timeout)
                            cause = exc
                            continue
                        host.catalog = {m.model_key.lower(): m for m in models}
                    answered = True
                    found = host.catalog.get(low)
                    if found is not None:
                        return found
            if answered:
                break
            # No host up to ask: wait for one to come back (its probe reports a change),
            # as a lease does when every host is down, until the deadline (HostDownError).
            self._check_open()
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._internal.append(fut)
            try:
                await self._wait(fut, deadline, timeout, key, cause, patience=0.0)
            finally:
                self._internal.remove(fut)
        hosts = [h for h in self._hosts if h.catalog is not None]
        keys = sorted({m.model_key for h in hosts for m in (h.catalog or {}).values()})
        raise ModelNotFoundError.client_side(
            f"model pool: no host has a downloaded model {key!r} "
            f"(available: {', '.join(keys[:10]) or 'none'})",
            subject=key,
            operation="pool lease",
        )

    async def _sync_hosts(self, deadline: float | None, timeout: float | None, key: str) -> None:
        """Reconcile (once, shared) hosts that came up since their last reconciliation."""
        pending = []
        for host in self._hosts:
            if host.up and not host.synced:
                if host.syncing is None or host.syncing.done():
                    host.syncing = self._spawn(
                        self._reconcile(host), f"lmstudio-pool-sync-{host.index}", cancel=True
                    )
                pending.append(host.syncing)
        if pending:
            remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
            done, _ = await asyncio.wait([asyncio.shield(t) for t in pending], timeout=remaining)
            if len(done) < len(pending):
                raise self._timeout(key, timeout, None)

    def _start_reconciler(self) -> None:
        if self._reconciler is None and self._reconcile_interval is not None:
            self._reconciler = self._spawn(
                self._reconcile_loop(), "lmstudio-pool-reconcile", cancel=True
            )

    async def _reconcile_loop(self) -> None:
        assert self._reconcile_interval is not None
        while True:
            await asyncio.sleep(self._reconcile_interval)
            for host in self._hosts:
                if host.up:
                    await self._reconcile(host)

    async def _reconcile(self, host: _Host) -> bool:
        """Compare the pool's view of ``host`` with its ``list_loaded``; unload orphans
        (instances of this pool it no longer tracks, e.g. a load whose connection dropped
        as it completed). Returns whether memory it did not know about was found."""
        targets = [t for t in self._targets if t.host is host]
        before = {i.reference for t in targets for i in t.instances if i.state == "ready"}
        try:
            loaded = await _list_loaded(host)
        except LMStudioConnectionError as exc:
            if not self._closed:
                self._mark_down(host, exc)
            return False
        except LMStudioError as exc:
            log.warning("pool: list_loaded on %s failed: %s", host.name, exc)
            host.synced = True
            return False
        if self._closed:
            return False
        found = False
        # Also those whose unload failed while the list was on its way: present or not,
        # the list says where they stand now.
        stranded = [i for t in targets for i in t.instances if i.state == "stranded"]
        present: dict[str, _HandleAny] = {h.instance_reference: h for h in loaded}
        known: set[str] = set()
        for target in targets:
            for inst in list(target.instances):
                if inst.state == "loading":
                    known.add(inst.identifier)
                    continue
                known.add(inst.reference)
                if inst.state == "ready" and inst.reference in before - present.keys():
                    self._gone(inst)
        for ref, handle in present.items():
            if ref in known or handle.identifier in known:
                continue  # ours: loaded, being unloaded, or a load that is landing
            found = True
            target = self._target_for(targets, handle.info.device_identifier)
            if self._ours(handle.identifier):
                if ref in {i.reference for t in targets for i in t.instances}:
                    continue  # taken up by a reconciliation that ran meanwhile
                log.info("pool: unloading %r, an orphan of a failed load", handle.identifier)
                # Tracked as an instance whose unload failed: it counts against the budget
                # until an unload succeeds (now, below, or at a later reconciliation).
                nbytes = self._orphan_bytes(target, handle)
                stranded.append(_track(target, handle, nbytes, owned=True, state="stranded"))
                continue
            nbytes = await self._foreign_bytes(host, target, handle)
            if self._closed or ref in {i.reference for i in target.instances}:
                continue
            _track(target, handle, nbytes, owned=False, state="ready")
            log.info("pool: using %r, loaded by someone else, on %s", handle.identifier, host.name)
        # Instances whose unload failed: forgotten if the list no longer has them, else
        # unloaded again (they count against the budget until then).
        again: list[_Instance] = []
        for inst in stranded:
            if inst.state != "stranded" or inst.checking:
                continue
            if inst.reference in present:
                again.append(inst)
            else:
                log.info("pool: %r, whose unload had failed, is gone", inst.identifier)
                inst.state = "gone"
                self._forget(inst)
        if again:
            await asyncio.gather(*(self._unload_again(i) for i in again), return_exceptions=True)
        if host.up:  # not if it went down meanwhile: reconciled again when it returns
            host.synced = True
        self._changed()
        return found

    async def _sweep(self, host: _Host) -> None:
        """At close: unload whatever of this pool's is still loaded on ``host``."""
        try:
            loaded = await _list_loaded(host)
        except LMStudioError as exc:
            log.warning("pool: cannot check %s for instances left loaded: %s", host.name, exc)
            return
        left = [h for h in loaded if self._ours(h.identifier)]
        results = await asyncio.gather(
            *(h.unload(timeout=_UNLOAD_TIMEOUT) for h in left), return_exceptions=True
        )
        for handle, result in zip(left, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, ModelNotFoundError):
                log.warning(
                    "pool: %r may stay loaded on %s: %s", handle.identifier, host.name, result
                )

    def _orphan_bytes(self, target: _Target, handle: _HandleAny) -> int:
        """What to count for an orphan of ``handle``'s key (its config is unknown): the
        largest estimate cached for the key on ``target``, else the model's size."""
        key = handle.model_key
        override = self._overrides.get(key.lower())
        if override is not None:
            return override
        cached = [n for (t, k, _), n in self._estimates.items() if t == target.key and k == key]
        if cached:
            return max(cached)
        entry = None if target.host.catalog is None else target.host.catalog.get(key.lower())
        return int(entry.size_bytes) if entry is not None else 0

    def _ours(self, identifier: str) -> bool:
        return f"@pool-{self._token}-" in identifier

    @staticmethod
    def _target_for(targets: list[_Target], device: str | None) -> _Target:
        for target in targets:
            if target.device == device:
                return target
        return targets[0]

    async def _foreign_bytes(self, host: _Host, target: _Target, handle: _HandleAny) -> int:
        override = self._overrides.get(handle.model_key.lower())
        if override is not None:
            return override
        size = 0
        if host.catalog is not None:
            entry = host.catalog.get(handle.model_key.lower())
            size = int(entry.size_bytes) if entry is not None else 0
        namespace = host.client.llm if handle._domain == "llm" else host.client.embedding
        try:
            estimate = await namespace.estimate(
                handle.model_key,
                config={"context_length": handle.info.context_length},
                timeout=_PROBE_TIMEOUT,
                **self._device_kwargs(target),
            )
            return max(size, math.ceil(estimate.total_bytes))
        except LMStudioError:
            return size

    def _unanswered(
        self,
        host: _Host,
        exc: LMStudioTimeoutError,
        limit: Timeouts,
        key: str,
        timeout: float | None,
    ) -> None:
        """A lease's metadata call to ``host`` timed out. If the lease's deadline cut it
        short, the lease has timed out (its usual error, from ``exc``); otherwise the host
        is not answering (a hung server): it is down until its probe gets an answer."""
        if limit.total is not None and limit.total < _PROBE_TIMEOUT:
            # Not named in the message: its deadline was what was left of the lease's.
            error = self._timeout(key, timeout, exc, show=False)
            raise error from error.__cause__
        self._mark_down(host, exc)

    def _mark_down(self, host: _Host, exc: BaseException) -> None:
        if not host.up or self._closed:
            return
        log.warning("pool: host %s is down (%s)", host.name, exc)
        host.up = False
        host.down_cause = exc
        host.synced = False
        if host.probe is None or host.probe.done():
            host.probe = self._spawn(
                self._probe(host), f"lmstudio-pool-probe-{host.index}", cancel=True
            )
        self._changed()

    async def _probe(self, host: _Host) -> None:
        """Retry the host until a connection succeeds, then mark it up."""
        delay = _RECONNECT_FIRST
        while not self._closed:
            await asyncio.sleep(delay)
            try:
                await host.client.system.version(timeout=_PROBE_TIMEOUT)
            except LMStudioError:
                delay = min(delay * 2, _RECONNECT_MAX)
                continue
            # What it had loaded may be gone (a restart) or still there (a dropped
            # connection): the reconciliation before its next lease or load tells which
            # (host.synced is False since it went down), so nothing is forgotten here.
            host.up = True
            log.warning("pool: host %s is up again", host.name)
            self._changed()
            return

    def _spawn(self, coro: Any, name: str, *, cancel: bool = False) -> asyncio.Task[Any]:
        """Run ``coro`` as a pool task; ``cancel``: :meth:`aclose` cancels it (else awaits it)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        if cancel:
            self._cancellable.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._cancellable.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("pool task %s failed: %r", task.get_name(), task.exception())


class _Retry(Exception):
    """A load failed in a way another attempt may fix (memory, a host went down)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _where(target: _Target) -> str:
    name = target.host.name
    return name if target.device is None else f"{name} device {target.device!r}"


async def _list_loaded(host: _Host) -> list[_HandleAny]:
    """Every instance loaded on ``host``, LLMs and embedding models."""
    return [
        *await host.client.llm.list_loaded(timeout=_PROBE_TIMEOUT),
        *await host.client.embedding.list_loaded(timeout=_PROBE_TIMEOUT),
    ]


def _track(
    target: _Target, handle: _HandleAny, nbytes: int, *, owned: bool, state: _State
) -> _Instance:
    """Track the instance ``handle`` names, found in its host's list, on ``target`` from
    now on, counting ``nbytes`` against its budget."""
    inst = _Instance(handle.model_key, handle._domain, None, target, nbytes, owned=owned)
    inst.handle = handle
    inst.identifier = handle.identifier
    inst.reference = handle.instance_reference
    inst.state = state
    target.instances.append(inst)
    return inst


def _bounded(deadline: float | None, limit: float, base: Timeouts) -> Timeouts:
    """Deadlines of a metadata call made for a lease: ``limit`` seconds, or what is left
    until the lease's ``deadline`` if that is sooner (connecting included); the others
    (``connect``) are the host client's, ``base``."""
    seconds = limit
    if deadline is not None:
        seconds = max(0.001, min(limit, deadline - asyncio.get_running_loop().time()))
    return base.with_(idle=seconds, total=seconds)


def _is_finite(value: object) -> bool:
    """A real number (not a bool), neither infinite nor NaN."""
    return is_number(value) and math.isfinite(cast(float, value))


_ClientT = TypeVar("_ClientT")


def pool_clients(
    clients: _ClientT | Sequence[_ClientT], cls: type[_ClientT], owner: str, noun: str
) -> list[_ClientT]:
    """A pool's ``clients`` argument as a list: at least one, each a ``cls`` (``noun`` in
    the error), none twice. Shared by :class:`AsyncModelPool` and the sync ``ModelPool``."""
    items = list(clients) if isinstance(clients, Sequence) else [clients]
    if not items:
        raise LMStudioValueError(f"{owner} needs at least one client")
    for i, client in enumerate(items):
        if not isinstance(client, cls):
            raise LMStudioValueError(f"clients[{i}] must be {noun}, got {type(client).__name__}")
    if len({id(c) for c in items}) != len(items):
        raise LMStudioValueError("the same client appears twice in clients")
    return items


def _check_int(name: str, value: object, *, minimum: int) -> None:
    if not is_int(value) or value < minimum:  # type: ignore[operator]
        raise LMStudioValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_estimates(estimates: object) -> dict[str, int]:
    """``memory_estimates`` as ``{lowercase key: bytes}``: keys non-blank strings (a key
    not downloaded yet is fine: it is looked up when leased), values positive ints."""
    if estimates is None:
        return {}
    if not isinstance(estimates, Mapping):
        raise LMStudioValueError(
            "memory_estimates must be a mapping {model_key: bytes} or None, "
            f"got {type(estimates).__name__}"
        )
    checked: dict[str, int] = {}
    for key, nbytes in estimates.items():
        check_key(key, "memory_estimates key")
        if not is_int(nbytes) or nbytes <= 0:
            raise LMStudioValueError(
                f"memory_estimates[{key!r}] must be a positive int (bytes), got {nbytes!r}"
            )
        low = key.lower()
        if low in checked:
            raise LMStudioValueError(
                f"memory_estimates names {key!r} twice (keys are case-insensitive)"
            )
        checked[low] = nbytes
    return checked


def _check_budget(name: str, value: object) -> int:
    if not _is_finite(value) or int(cast(float, value)) <= 0:
        raise LMStudioValueError(f"{name} must be a positive number of bytes, got {value!r}")
    return int(cast(float, value))
