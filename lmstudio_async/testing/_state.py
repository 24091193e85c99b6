"""The stand-in's model state: catalogue, loaded instances, identifiers, TTL, JIT, memory,
simulated LM Link devices and the peak memory use.

Everything here is synchronous and is only ever touched from the server's event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from . import _errors as err
from ._files import FileStore
from ._kvconfig import BYTES_PER_GB, MemoryEstimate, context_key, estimate_memory
from ._logs import BoundedLog

# The notifications kept for inspection: the newest 1000, and at most 4 MiB of text.
NOTIFICATION_LOG_SIZE = 1000
NOTIFICATION_LOG_BYTES = 4 * 1024 * 1024


class Clock:
    """Wall clock in epoch milliseconds, with an adjustable offset for TTL tests."""

    def __init__(self) -> None:
        self.offset_ms = 0.0

    def now_ms(self) -> float:
        return time.time() * 1000.0 + self.offset_ms

    def advance(self, seconds: float) -> None:
        self.offset_ms += seconds * 1000.0


@dataclass
class Instance:
    identifier: str
    model: dict[str, Any]
    config: dict[str, Any]
    memory: MemoryEstimate
    jit: bool
    ttl_ms: int | None
    instance_reference: str = field(default_factory=lambda: str(uuid.uuid4()))
    last_used_time: float | None = None
    loaded: bool = False  # False while the load is still in progress (a reservation)
    # Simulated KV cache: the token ids of the last prediction (prompt + output).
    prompt_cache: list[int] = field(default_factory=list)
    # The simulated LM Link device it is loaded on; None is the local machine.
    device: str | None = None
    # Pieces of work in progress on it (predictions, HTTP requests): while any is, the
    # instance is not idle, so its TTL does not run and auto-evict waits for it (for at
    # most ``ModelState.jit_evict_grace`` seconds).
    work: int = 0
    # A just-in-time load waits for its work to end to auto-evict it; new HTTP requests and
    # getOrLoads then queue for a load of their own instead of prolonging the wait.
    evicting: bool = False

    @property
    def domain(self) -> str:
        return str(self.model["type"])

    @property
    def model_key(self) -> str:
        return str(self.model["modelKey"])

    @property
    def context_length(self) -> int:
        return int(self.config[context_key(self.domain)])

    def info(self) -> dict[str, Any]:
        model = self.model
        used = self.last_used_time
        return {
            **model,
            "identifier": self.identifier,
            "instanceReference": self.instance_reference,
            "ttlMs": self.ttl_ms,
            "lastUsedTime": None if used is None else int(used),
            "contextLength": self.context_length,
            "deviceIdentifier": self.device,
        }


@dataclass(frozen=True)
class InstanceSnapshot:
    """What tests see of a loaded instance (see ``loaded_instances()``)."""

    identifier: str
    model_key: str
    domain: str
    instance_reference: str
    jit: bool
    ttl_ms: int | None
    last_used_time: float | None
    context_length: int
    config: dict[str, Any]
    info: dict[str, Any]
    device: str | None = None


class WaitAbandoned(Exception):
    """The client of a waiting just-in-time load went away (see ``jit_turn``)."""


# How often a wait for the client (a just-in-time load's turn, another load) checks that
# the client is still there.
GONE_POLL_SECONDS = 0.05


async def wait_unless_gone(future: asyncio.Future[Any], gone: Callable[[], bool]) -> None:
    """Wait until ``future`` is done (never cancelling it); raises :class:`WaitAbandoned`
    if ``gone()`` turns true first."""
    while not future.done():
        await asyncio.wait({future}, timeout=GONE_POLL_SECONDS)
        if not future.done() and gone():
            raise WaitAbandoned


@dataclass
class PendingLoad:
    """A just-in-time load in progress; HTTP requests for the same model join it.

    ``http``: whether an HTTP request started it (a WebSocket ``getOrLoad`` joins only
    those). ``joiners``: the HTTP requests waiting for it; when it succeeds, each is granted
    one piece of work on the instance before any of them runs (so nothing can evict the
    instance between the load and their use of it).
    """

    future: asyncio.Future[Instance]
    http: bool
    joiners: int = 0


# LM Studio's default idle TTL for models loaded just in time by an HTTP request: 60 minutes.
DEFAULT_JIT_TTL_MS = 60 * 60 * 1000

# How long a just-in-time load waits for the work in progress on the JIT instances it
# auto-evicts before it evicts them anyway, cutting that work short (a guess: LM Studio's
# docs say nothing about it).
DEFAULT_JIT_EVICT_GRACE = 5.0


class ModelState:
    def __init__(
        self,
        catalog: list[dict[str, Any]],
        memory_gb: float,
        jit_evict: bool,
        *,
        jit_enabled: bool = True,
        jit_ttl_ms: int | None = DEFAULT_JIT_TTL_MS,
        devices: dict[str, float] | None = None,
    ) -> None:
        self.catalog = catalog
        self.memory_budget = int(memory_gb * BYTES_PER_GB)
        # Simulated LM Link: remote devices by name, each with its own memory budget (bytes).
        self.device_budgets: dict[str, int] = {
            name: int(gb * BYTES_PER_GB) for name, gb in (devices or {}).items()
        }
        # Peak memory in use (loaded instances plus loads in progress): overall and per device.
        self.peak_bytes = 0
        self.device_peak_bytes: dict[str | None, int] = dict.fromkeys(
            [None, *self.device_budgets], 0
        )
        self.jit_evict = jit_evict
        # HTTP requests naming a model that is not loaded load it just in time (when enabled),
        # with the request's ttl or this default; loads in progress, by (domain, model key).
        self.jit_enabled = jit_enabled
        self.jit_ttl_ms = jit_ttl_ms
        self.pending_jit: dict[tuple[str, str], PendingLoad] = {}
        # Just-in-time loads (HTTP and getOrLoad) run one at a time, in arrival order.
        self.jit_lock = asyncio.Lock()
        # How long a JIT load waits for the work on the instances it auto-evicts (seconds)
        # before it evicts them anyway.
        self.jit_evict_grace = DEFAULT_JIT_EVICT_GRACE
        # Stored chats of the stateful HTTP endpoints, by response id (oldest first).
        self.stored_chats: dict[str, list[dict[str, Any]]] = {}
        self.clock = Clock()
        # Loaded instances and in-progress loads, in load (start) order.
        self.instances: list[Instance] = []
        # Parameters of system.notify calls, the newest ones (see NOTIFICATION_LOG_*).
        self.notifications: BoundedLog[dict[str, Any]] = BoundedLog(
            NOTIFICATION_LOG_SIZE, NOTIFICATION_LOG_BYTES
        )
        self.experiment_flags: set[str] = set()
        self.files = FileStore()  # uploads, per client identifier
        # Futures resolved when some work ends or an instance is committed or removed.
        self._change_waiters: list[asyncio.Future[None]] = []

    # --- views --------------------------------------------------------------------------

    def loaded(self, domain: str | None = None) -> list[Instance]:
        self.expire()
        return [i for i in self.instances if i.loaded and (domain is None or i.domain == domain)]

    def snapshot(self) -> list[InstanceSnapshot]:
        return [
            InstanceSnapshot(
                identifier=i.identifier,
                model_key=i.model_key,
                domain=i.domain,
                instance_reference=i.instance_reference,
                jit=i.jit,
                ttl_ms=i.ttl_ms,
                last_used_time=i.last_used_time,
                context_length=i.context_length,
                config=dict(i.config),
                info=i.info(),
                device=i.device,
            )
            for i in self.loaded()
        ]

    # --- TTL ------------------------------------------------------------------------------

    def expire(self) -> list[Instance]:
        now = self.clock.now_ms()
        gone = [
            i
            for i in self.instances
            if i.loaded
            and i.work == 0  # an instance doing work is not idle
            and i.ttl_ms is not None
            and i.last_used_time is not None
            and now - i.last_used_time >= i.ttl_ms
        ]
        for inst in gone:
            self.instances.remove(inst)
        if gone:
            self._changed()
        return gone

    def is_loaded(self, inst: Instance) -> bool:
        """Whether ``inst`` is still loaded (not unloaded, expired or evicted meanwhile)."""
        self.expire()
        return inst.loaded and any(i is inst for i in self.instances)

    def touch(self, inst: Instance) -> None:
        inst.last_used_time = self.clock.now_ms()

    # --- work in progress -----------------------------------------------------------------

    def begin_work(self, inst: Instance) -> None:
        """A piece of work on ``inst`` starts: it is busy (never idle) until the matching
        :meth:`end_work`."""
        inst.work += 1
        self.touch(inst)

    def end_work(self, inst: Instance) -> None:
        """A piece of work on ``inst`` ended; the idle timer restarts when it was the last."""
        inst.work -= 1
        if inst.work == 0:
            self.touch(inst)
            self._changed()

    # --- just-in-time loads ------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def jit_turn(self, gone: Callable[[], bool]) -> AsyncIterator[None]:
        """Hold the just-in-time load lock (first come, first served); raises
        :class:`WaitAbandoned` if ``gone()`` turns true while waiting for it."""
        acquire = asyncio.ensure_future(self.jit_lock.acquire())
        try:
            await wait_unless_gone(acquire, gone)
        except BaseException:
            if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                self.jit_lock.release()
            else:
                acquire.cancel()
            raise
        try:
            yield
        finally:
            self.jit_lock.release()

    async def make_room_for_jit(
        self, gone: Callable[[], bool], *, device: str | None = None
    ) -> list[Instance]:
        """The JIT instances a just-in-time load auto-evicts (none with auto-evict off), once
        none of them has work in progress, or once ``jit_evict_grace`` seconds have passed
        (their work is then cut short, as by an explicit unload). They are marked
        ``evicting`` meanwhile: exactly the returned ones stay marked, and the caller unmarks
        them (:meth:`unmark_evicting`). Call with ``jit_turn`` held; raises
        :class:`WaitAbandoned` (nothing left marked) if ``gone()`` turns true."""
        marked: list[Instance] = []
        deadline = time.monotonic() + self.jit_evict_grace
        try:
            while True:
                victims = self.jit_to_evict(device=device)
                self.unmark_evicting([i for i in marked if i not in victims])
                for inst in victims:
                    inst.evicting = True
                marked = victims
                if all(inst.work == 0 for inst in victims) or time.monotonic() >= deadline:
                    return victims
                if gone():
                    raise WaitAbandoned
                left = max(0.0, deadline - time.monotonic())
                await self.wait_for_change(min(GONE_POLL_SECONDS, left))
        except BaseException:
            self.unmark_evicting(marked)
            raise

    @staticmethod
    def unmark_evicting(instances: list[Instance]) -> None:
        for inst in instances:
            inst.evicting = False

    def grant_joiners(self, pending: PendingLoad, inst: Instance) -> None:
        """Complete ``pending`` with ``inst``, with one piece of work per joiner."""
        for _ in range(pending.joiners):
            self.begin_work(inst)
        pending.future.set_result(inst)

    def _changed(self) -> None:
        waiters, self._change_waiters = self._change_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def wait_for_change(self, timeout: float) -> None:
        """Wait until some work ends or an instance is committed or removed, at most
        ``timeout`` seconds (callers re-check what they wait for either way)."""
        waiter = asyncio.get_running_loop().create_future()
        self._change_waiters.append(waiter)
        try:
            await asyncio.wait((waiter,), timeout=timeout)  # (never swallows a cancel)
        finally:
            if waiter in self._change_waiters:
                self._change_waiters.remove(waiter)

    # --- lookup ---------------------------------------------------------------------------

    def _match_loaded(self, text: str, candidates: list[Instance]) -> Instance | None:
        low = text.lower()
        for inst in candidates:
            if inst.identifier.lower() == low:
                return inst
        for inst in candidates:
            if inst.model_key.lower() == low:
                return inst
        return self._match_path(low, candidates)

    @staticmethod
    def _match_path(low: str, candidates: list[Instance]) -> Instance | None:
        if not low:  # an empty text is no path prefix
            return None
        for inst in candidates:
            path = str(inst.model["path"]).lower()
            indexed = str(inst.model.get("indexedModelIdentifier", "")).lower()
            if path.startswith(low) or indexed.startswith(low):
                return inst
        return None

    def find_by_query(self, query: dict[str, Any], domain: str) -> Instance | None:
        candidates = self.loaded(domain)
        qdomain = query.get("domain")
        if qdomain is not None and qdomain != domain:
            return None
        if "vision" in query:
            candidates = [
                c for c in candidates if bool(c.model.get("vision", False)) == query["vision"]
            ]
        if "deviceIdentifier" in query:  # null: local only; a name: that device only
            candidates = [c for c in candidates if c.device == query["deviceIdentifier"]]
        if "identifier" in query:
            found = self._match_loaded(query["identifier"], candidates)
            if found is None:
                return None
            candidates = [found]
        if "path" in query:
            return self._match_path(str(query["path"]).lower(), candidates)
        return candidates[0] if candidates else None

    def find_by_specifier(self, specifier: dict[str, Any], domain: str) -> Instance | None:
        """Resolve a ModelSpecifier; raises for stale instance references."""
        if specifier["type"] == "instanceReference":
            ref = specifier["instanceReference"]
            for inst in self.loaded(domain):
                if inst.instance_reference == ref:
                    return inst
            return None
        return self.find_by_query(specifier["query"], domain)

    def require(self, specifier: dict[str, Any], domain: str) -> Instance:
        inst = self.find_by_specifier(specifier, domain)
        if inst is not None:
            return inst
        if specifier["type"] == "instanceReference":
            raise err.specific_model_unloaded()
        raise err.no_model_matching_query(specifier["query"], self.loaded_identifiers(domain))

    def loaded_identifiers(self, domain: str) -> list[str]:
        return [i.identifier for i in self.loaded(domain)]

    def resolve_downloaded(self, text: str, domain: str) -> tuple[dict[str, Any], list[str]]:
        """Resolve a model key, path or path prefix among downloaded models.

        Returns the model and the list of ambiguous candidates (empty unless several matched).
        """
        low = text.lower()
        matches = [m for m in self.catalog if str(m["modelKey"]).lower() == low]
        if not matches:
            matches = [m for m in self.catalog if str(m["path"]).lower() == low]
        if not matches and low:  # (an empty text is no path prefix)
            matches = [
                m
                for m in self.catalog
                if str(m["path"]).lower().startswith(low)
                or str(m.get("indexedModelIdentifier", "")).lower().startswith(low)
            ]
        if not matches:
            raise err.path_not_found(text, [str(m["modelKey"]) for m in self.catalog])
        same_domain = [m for m in matches if m["type"] == domain]
        if not same_domain:
            raise err.domain_mismatch(text, str(matches[0]["type"]), domain)
        ambiguous = [str(m["modelKey"]) for m in same_domain] if len(same_domain) > 1 else []
        return same_domain[0], ambiguous

    # --- identifiers ----------------------------------------------------------------------

    def identifier_taken(self, identifier: str) -> bool:
        self.expire()
        low = identifier.lower()
        return any(i.identifier.lower() == low for i in self.instances)

    def auto_identifier(self, model_key: str) -> str:
        if not self.identifier_taken(model_key):
            return model_key
        n = 2
        while self.identifier_taken(f"{model_key}:{n}"):
            n += 1
        return f"{model_key}:{n}"

    # --- memory ---------------------------------------------------------------------------

    def check_device(self, device: Any) -> str | None:
        """The device a ``deviceIdentifier`` names (``None``: local); unknown ones raise."""
        if device is None:
            return None
        if device not in self.device_budgets:
            raise err.unknown_device(str(device), sorted(self.device_budgets))
        return str(device)

    def budget_of(self, device: str | None) -> int:
        return self.memory_budget if device is None else self.device_budgets[device]

    def used_bytes(
        self, excluding: list[Instance] | None = None, *, device: str | None = None
    ) -> int:
        """Memory in use on ``device`` (``None``: the local machine)."""
        self.expire()
        skip = {id(i) for i in excluding or []}
        mine = [i for i in self.instances if i.device == device]
        return sum(i.memory.total_bytes for i in mine if id(i) not in skip)

    def free_bytes(
        self, excluding: list[Instance] | None = None, *, device: str | None = None
    ) -> int:
        return self.budget_of(device) - self.used_bytes(excluding, device=device)

    def total_used_bytes(self) -> int:
        """Memory in use on every device together."""
        self.expire()
        return sum(i.memory.total_bytes for i in self.instances)

    def _record_peak(self, device: str | None) -> None:
        self.peak_bytes = max(self.peak_bytes, self.total_used_bytes())
        used = self.used_bytes(device=device)
        self.device_peak_bytes[device] = max(self.device_peak_bytes.get(device, 0), used)

    def reset_peak(self) -> None:
        """Start recording peaks afresh from the memory in use now."""
        self.peak_bytes = self.total_used_bytes()
        for device in self.device_peak_bytes:
            self.device_peak_bytes[device] = self.used_bytes(device=device)

    def estimate(self, model: dict[str, Any], config: dict[str, Any]) -> MemoryEstimate:
        return estimate_memory(str(model["type"]), model, config)

    def check_fits(
        self,
        model: dict[str, Any],
        memory: MemoryEstimate,
        freed: list[Instance],
        *,
        device: str | None = None,
    ) -> None:
        free = self.free_bytes(excluding=freed, device=device)
        if memory.total_bytes <= free:
            return
        raise err.insufficient_memory(
            str(model["modelKey"]),
            memory,
            free=max(free, 0),
            budget=self.budget_of(device),
            device=device,
        )

    # --- mutation -------------------------------------------------------------------------

    def reserve(
        self,
        *,
        identifier: str,
        model: dict[str, Any],
        config: dict[str, Any],
        memory: MemoryEstimate,
        jit: bool,
        ttl_ms: int | None,
        device: str | None = None,
    ) -> Instance:
        inst = Instance(identifier, model, config, memory, jit, ttl_ms, device=device)
        self.instances.append(inst)
        self._record_peak(device)
        return inst

    def commit(self, inst: Instance) -> None:
        inst.loaded = True
        self.touch(inst)
        self._changed()

    def discard(self, inst: Instance) -> None:
        if inst in self.instances:
            self.instances.remove(inst)
            self._changed()

    def jit_to_evict(
        self, keep: Instance | None = None, *, device: str | None = None
    ) -> list[Instance]:
        if not self.jit_evict:
            return []
        return [i for i in self.loaded() if i.jit and i is not keep and i.device == device]

    def unload(self, identifier: str, domain: str, device: Any = ...) -> Instance:
        """Unload ``identifier``; with ``device`` (``None``: local) only from that device."""
        low = identifier.lower()
        for inst in self.loaded(domain):
            if inst.identifier.lower() == low and (device is ... or inst.device == device):
                self.instances.remove(inst)
                self._changed()
                return inst
        raise err.no_model_matching_query(
            {"identifier": identifier}, self.loaded_identifiers(domain)
        )
