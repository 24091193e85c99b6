"""The asyncio client: :class:`AsyncClient`, its namespaces and model handles.

This is the one real implementation of the API; the sync :class:`~lmstudio_async.Client`
runs these same coroutines in a shared loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, ClassVar, Final, Generic, Literal, TypeAlias

import msgspec
from msgspec import UNSET, Raw

from .._io.transport import ChannelStream, RemoteError, SSLOption, Transport, bounded
from .._protocol.endpoints import (
    LOAD_PACKET_DECODER,
    AlreadyLoaded,
    LoadProgress,
    LoadSuccess,
    Progress,
    StartLoading,
    Success,
    UnloadingOtherJitModel,
    check_key,
    ttl_ms,
    unload_param,
)
from .._protocol.errors import LOAD_OPERATION, map_server_error
from .._protocol.info import (
    EmbeddingModelInfo,
    EmbeddingModelInstanceInfo,
    EstimateResult,
    LlmInfo,
    LlmInstanceInfo,
    ModelInfo,
    ModelInstanceInfo,
    decode_estimate_result,
    decode_instance_info,
    decode_instance_info_list,
    decode_model_info_list,
    resolve_model_key,
)
from .._protocol.kvconfig import (
    KvConfig,
    coerce_load_config,
    config_differences,
    load_config_stack,
)
from ..config import EmbeddingLoadConfig, LlmLoadConfig
from ..errors import (
    ConfigMismatchError,
    ConfigMismatchWarning,
    DomainMismatchError,
    IdentifierTakenError,
    LMStudioError,
    LMStudioTimeoutError,
    LMStudioValueError,
    ModelNotFoundError,
    ProtocolError,
    ServerError,
)
from ..types import DEFAULT_TIMEOUTS, Timeouts, resolve_timeouts
from .agent import AgentMethods
from .files import FilesNamespace
from .handle import (
    USE_CLIENT_DEFAULT,
    TimeoutParam,
    _ConfigT,
    _HandleT,
    _InfoT,
    _InstanceT,
    _UseClientDefault,
    log,
)
from .inference import EmbeddingMethods
from .notices import warn_caller
from .repository import RepositoryNamespace

__all__ = [
    "LLM",
    "USE_CLIENT_DEFAULT",
    "AsyncClient",
    "ConfigMismatchError",
    "ConfigMismatchWarning",
    "EmbeddingModel",
    "EmbeddingNamespace",
    "LlmNamespace",
    "ProgressCallback",
    "SystemNamespace",
]

_CLOSE_GRACE_SECONDS: Final = 2.0
# How many times a "reload" caller reloads when concurrent callers keep loading the key
# with other settings before it gets its own (the last attempt then only warns).
_RELOAD_ATTEMPTS: Final = 3

LOAD_CANCEL_GRACE_SECONDS: Final = 2.0
"""How long a cancelled or timed-out load / ``model(key)`` waits, before raising, for the
server to acknowledge the cancel (or for an instance the load produced anyway to be
unloaded), so that an immediate retry finds the identifier free and nothing left loaded.
Cleanup that takes longer goes on in the background."""

ProgressCallback: TypeAlias = Callable[[float], Any]
"""``on_progress(fraction)``: a plain function or a coroutine function."""

MismatchPolicy: TypeAlias = Literal["warn", "raise", "reload"]

_KV_CONFIG_DECODER: Final = msgspec.json.Decoder(KvConfig)




# --- progress reporting ------------------------------------------------------------------


class _Progress:
    """Delivers non-decreasing fractions in [0, 1] to callbacks, ending with 1.0.

    ``active`` is the loop time of the last report, repeated values included: the
    last sign of life of the load, which each caller of a shared get-or-load measures
    its own idle deadline from. The callers of a shared load call their own callbacks
    with the ``values`` so far (see :func:`_wait_for_flight`), woken by :meth:`changed`."""

    __slots__ = ("_watchers", "active", "callbacks", "values")

    def __init__(self) -> None:
        self.callbacks: list[ProgressCallback] = []
        self.active = 0.0
        self.values: list[float] = []
        self._watchers: list[asyncio.Future[None]] = []

    def changed(self) -> asyncio.Future[None]:
        """A future that is done at the next new value."""
        watcher: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._watchers.append(watcher)
        return watcher

    async def report(self, value: float) -> None:
        self.active = asyncio.get_running_loop().time()
        value = min(max(float(value), 0.0), 1.0)
        values = self.values
        if values and value <= values[-1]:
            return
        values.append(value)
        watchers, self._watchers = self._watchers, []
        for watcher in watchers:
            if not watcher.done():
                watcher.set_result(None)
        for callback in self.callbacks:
            await _call_back(callback, value)

    async def finish(self) -> None:
        if self.callbacks:
            await self.report(1.0)


async def _call_back(callback: ProgressCallback, value: float) -> None:
    result = callback(value)
    if inspect.isawaitable(result):
        await result


def _check_callback(on_progress: object) -> ProgressCallback | None:
    if on_progress is not None and not callable(on_progress):
        raise LMStudioValueError(
            f"on_progress must be a function taking a float, got {type(on_progress).__name__}"
        )
    return on_progress  # type: ignore[return-value,unused-ignore]


async def _closed(stream: ChannelStream) -> None:
    """Wait (briefly) for the channelClose that follows a terminal packet.

    Returning only once the channel has ended means no channel outlives the call, and,
    for the sync facade, that the loop thread is idle when the caller wakes up.
    """
    if stream.finished:
        return
    try:
        while await stream.receive(_CLOSE_GRACE_SECONDS, None) is not None:
            pass
    except (RemoteError, LMStudioError):
        pass
    finally:
        stream.socket.forget_channel(stream)


async def _within_grace(task: asyncio.Future[Any], extra: float = 0.0) -> None:
    """Wait up to :data:`LOAD_CANCEL_GRACE_SECONDS` for a cleanup task to finish.

    The task is never cancelled from here: if the grace runs out, or the waiting caller is
    cancelled again, it goes on in the background.
    """
    if not task.done():
        await asyncio.wait({task}, timeout=LOAD_CANCEL_GRACE_SECONDS + extra)


async def _wait_for_flight(
    flight: _Flight,
    task: asyncio.Task[ModelInstanceInfo],
    timeouts: Timeouts,
    what: str,
    callback: ProgressCallback | None,
    started: float | None = None,
) -> ModelInstanceInfo:
    """Wait for a shared get-or-load within one caller's deadlines: ``idle`` counts from
    the load's last progress report (or from joining, if later), ``total`` from joining
    (from ``started``, loop time, if the call began earlier).
    Raises :class:`LMStudioTimeoutError` when one expires; the load goes on for others.

    The caller's own ``callback`` runs here, in the caller's task, with every value from
    the one current when it joined, ending with ``1.0`` once the load is done: a slow
    callback delays only its own caller, and one that raises fails only its caller."""
    idle, total = timeouts.idle, timeouts.total
    if idle is None and total is None and callback is None:
        return await asyncio.shield(task)
    progress = flight.progress
    values = progress.values
    loop = asyncio.get_running_loop()
    joined = loop.time() if started is None else started
    seen = max(len(values) - 1, 0)  # how many values this caller's callback has had
    while not task.done():
        if callback is not None and seen < len(values):
            seen += 1
            await _call_back(callback, values[seen - 1])
            continue
        now = loop.time()
        left, kind, wait = float("inf"), "", 0.0
        if total is not None:
            left, kind, wait = joined + total - now, "total", total
        if idle is not None:
            idle_left = max(progress.active, joined) + idle - now
            if idle_left < left:
                left, kind, wait = idle_left, "idle", idle
        if left <= 0:
            if kind == "total":
                text = f"{what} did not finish within the total deadline ({wait:g} s)"
            else:
                text = f"{what}: no progress from LM Studio within the idle deadline ({wait:g} s)"
            raise LMStudioTimeoutError(text, timeout=wait, kind=kind)
        if callback is None:
            await asyncio.wait({task}, timeout=None if kind == "" else left)
            continue
        changed = progress.changed()
        try:
            pending: set[asyncio.Future[Any]] = {task, changed}
            await asyncio.wait(
                pending, timeout=None if kind == "" else left, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            changed.cancel()
    info = task.result()
    if callback is not None:
        for value in values[seen:]:
            await _call_back(callback, value)
        if not values or values[-1] < 1.0:
            await _call_back(callback, 1.0)
    return info


def _names_instance(key: str, info: ModelInstanceInfo) -> bool:
    """``key`` is ``info``'s identifier and not its model key (``model(key)`` matched
    the instance by identifier)."""
    return key.casefold() == info.identifier.casefold() != info.model_key.casefold()


class _Flight:
    """One shared get-or-load of a model key, awaited by every concurrent ``model(key)``
    caller whatever its TTL or config; ``params`` are the ttl / config stack / mismatch
    policy of the caller that started it. The load itself has no deadline: each caller
    waits for it within its own deadlines, and the last one to give up stops it."""

    __slots__ = ("delivered", "joined", "loaded_now", "params", "progress", "task", "waiters")

    def __init__(self, params: tuple[Any, ...]) -> None:
        self.progress = _Progress()
        self.waiters = 0
        self.joined = 0  # every caller that ever waited for it
        self.delivered = 0  # the callers it gave the instance to
        self.loaded_now = False
        self.params = params
        self.task: asyncio.Task[ModelInstanceInfo] | None = None


# --- the client --------------------------------------------------------------------------------


class AsyncClient:
    """Asynchronous LM Studio client.

    ``api_host`` takes ``host:port``, ``http://host:port`` or ``ws://host:port``;
    without it, ``$LMSTUDIO_API_HOST`` is used, else localhost's LM Studio ports
    are probed concurrently on first use. ``api_token`` defaults to
    ``$LMSTUDIO_API_TOKEN`` (guest access when neither is set). ``timeout`` is the
    idle deadline in seconds, a :class:`Timeouts`, or ``None`` for no idle deadline.
    ``ssl`` applies to ``wss://``/``https://`` hosts: ``None`` or ``True`` verify the
    server's certificate against the system trust store, an :class:`ssl.SSLContext`
    is used as given (e.g. one trusting a private CA), ``False`` skips verification.

    Nothing is connected until the first call; each namespace (``llm``,
    ``embedding``, ``system``) then opens one WebSocket, shared by all its calls::

        async with AsyncClient("localhost:1234") as client:
            model = await client.llm.model("llama-3.2-1b-instruct")
    """

    def __init__(
        self,
        api_host: str | None = None,
        *,
        api_token: str | None = None,
        timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
        ssl: SSLOption = None,
    ) -> None:
        self._timeouts = resolve_timeouts(timeout, DEFAULT_TIMEOUTS)
        self._transport = Transport(api_host, api_token, self._timeouts, ssl)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unloads: set[asyncio.Task[Any]] = set()  # loaded() exits' (see aclose)
        self.llm = LlmNamespace(self)
        """LLM model management."""
        self.embedding = EmbeddingNamespace(self)
        """Embedding model management."""
        self.system = SystemNamespace(self)
        """Server-wide queries (downloaded models, version)."""
        self.files = FilesNamespace(self)
        """Files for predictions (``prepare_image``)."""
        self.repository = RepositoryNamespace(self)
        """Model search and download."""

    def __repr__(self) -> str:
        state = "closed" if self._transport.closed else "open"
        return f"<AsyncClient host={self._transport.host or 'auto'!s} {state}>"

    @property
    def api_host(self) -> str | None:
        """``host:port`` of the server, or ``None`` until auto-discovery has run."""
        return self._transport.host

    @property
    def timeouts(self) -> Timeouts:
        """The client-wide default deadlines."""
        return self._timeouts

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` has run."""
        return self._transport.closed

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every socket; calls still in flight fail with ``ClientClosedError``.

        The unload of a ``loaded()`` block whose exit was cancelled gets up to
        ``_CLOSE_GRACE_SECONDS`` to finish first: it needs the sockets. (Other clean-up,
        such as a cancelled load's wait for the server's acknowledgement, is cut short.)"""
        if self._transport.closed:
            return
        if self._unloads:
            await asyncio.wait(list(self._unloads), timeout=_CLOSE_GRACE_SECONDS)
        tasks = list(self._tasks)
        await self._transport.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- internals shared by the namespaces ---------------------------------------

    def _timeouts_for(self, timeout: TimeoutParam) -> Timeouts:
        if isinstance(timeout, _UseClientDefault):
            return self._timeouts
        return resolve_timeouts(timeout, self._timeouts)

    def _deadlines_for(self, timeout: TimeoutParam) -> tuple[Timeouts, float | None]:
        """The deadlines of a call starting now, and where its total one ends (loop time;
        None: no total), for a call made of several requests that the total bounds whole."""
        timeouts = self._timeouts_for(timeout)
        total = timeouts.total
        return timeouts, None if total is None else asyncio.get_running_loop().time() + total

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("background task %s failed: %r", task.get_name(), task.exception())

    def _server_error(
        self, exc: RemoteError, operation: str, subject: str | None, namespace: str | None = None
    ) -> ServerError:
        """``namespace``: where the call was made (its model domain, for llm/embedding)."""
        return map_server_error(
            exc.error,
            operation=operation,
            subject=subject,
            secrets=self._transport.identity,
            domain=namespace if namespace in ("llm", "embedding") else None,
        )

    async def _rpc(
        self,
        namespace: str,
        endpoint: str,
        parameter: Any = UNSET,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        deadline: float | None = None,
        operation: str | None = None,
        subject: str | None = None,
    ) -> Raw | None:
        sock = self._transport.socket(namespace)
        try:
            return await sock.rpc(endpoint, parameter, self._timeouts_for(timeout), deadline)
        except RemoteError as exc:
            raise self._server_error(exc, operation or endpoint, subject, namespace) from None

    async def _load_channel(
        self,
        namespace: str,
        endpoint: str,
        creation: dict[str, Any],
        progress: _Progress,
        timeouts: Timeouts,
        *,
        operation: str,
        subject: str,
        deadline: float | None = None,
    ) -> tuple[ModelInstanceInfo, bool]:
        """Run a loadModel/getOrLoad channel; returns (instance, loaded_now). ``deadline``
        (loop time): where the total deadline ends, if the call began before the channel."""
        loop = asyncio.get_running_loop()
        if deadline is None and timeouts.total is not None:
            deadline = loop.time() + timeouts.total
        sock = self._transport.socket(namespace)
        stream = await sock.open_channel(
            endpoint, creation, deadline, timeouts.total, timeouts.connect
        )
        try:
            what = f"{operation} of {subject!r}"
            while True:
                packet = await stream.next_packet(
                    LOAD_PACKET_DECODER, timeouts.idle, deadline, timeouts.total, what
                )
                kind = type(packet)
                if kind is Progress or kind is LoadProgress:
                    await progress.report(packet.progress)  # type: ignore[union-attr]
                elif isinstance(packet, Success | LoadSuccess):
                    result = packet.info, True
                    break
                elif isinstance(packet, AlreadyLoaded):
                    result = packet.info, False
                    break
                elif kind is StartLoading:
                    await progress.report(0.0)
                elif kind is UnloadingOtherJitModel:
                    log.info(
                        "%s of %r: LM Studio is evicting JIT-loaded %r",
                        operation,
                        subject,
                        packet.info.identifier,  # type: ignore[union-attr]
                    )
        except RemoteError as exc:
            raise self._server_error(exc, operation, subject, namespace) from None
        except BaseException:
            # Cancelled, timed out, or a callback failed: stop the load on the server, and
            # raise only once it acknowledged (or the grace ran out), so that a retry right
            # away finds the identifier free and nothing of this load left behind.
            if not stream.finished:
                stream.send({"type": "cancel"})
                reaper = self._spawn(self._reap(stream, namespace), f"lmstudio-reap-{subject}")
                await _within_grace(reaper)
            raise
        try:
            await _closed(stream)
            await progress.finish()
        except BaseException:
            # The load is done but its caller is gone (cancelled in the last callback).
            if result[1]:
                await _within_grace(self._disown(namespace, result[0]))
            raise
        return result

    def _disown(self, namespace: str, info: ModelInstanceInfo) -> asyncio.Task[Any]:
        """Unload, in the background, an instance loaded for a caller that is gone."""
        log.info("unloading %r: the call that loaded it was cancelled", info.identifier)
        return self._spawn(
            self._unload_quietly(namespace, info), f"lmstudio-disown-{info.identifier}"
        )

    async def _unload_quietly(self, namespace: str, info: ModelInstanceInfo) -> None:
        """Unload the instance ``info`` describes, on its own device only; errors ignored."""
        param = unload_param(info.identifier, info.device_identifier, exact=True)
        with contextlib.suppress(LMStudioError):
            await self._rpc(namespace, "unloadModel", param)

    async def _reap(self, stream: ChannelStream, namespace: str) -> None:
        """After a cancel: drain the channel; unload an instance the load finished anyway."""
        packet = await stream.settle(LOAD_PACKET_DECODER, (Success, LoadSuccess))
        if packet is not None:
            info = packet.info
            log.info("cancelled load of %r completed anyway; unloading it", info.identifier)
            await self._unload_quietly(namespace, info)




class LLM(AgentMethods):
    """Handle of a loaded LLM instance: management (``get_info``, ``unload``…) and
    inference (``respond``, ``respond_stream``, ``complete``, ``tokenize``…)."""

    _domain = "llm"


class EmbeddingModel(EmbeddingMethods):
    """Handle of a loaded embedding-model instance: management and ``embed``, ``tokenize``."""

    _domain = "embedding"


class _ModelNamespace(Generic[_HandleT, _InfoT, _InstanceT, _ConfigT]):
    """Model management for one domain (``client.llm`` / ``client.embedding``)."""

    _name: ClassVar[Literal["llm", "embedding"]]
    _noun: ClassVar[str]
    _handle_cls: type[_HandleT]

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._flights: dict[str, _Flight] = {}  # by key, case-folded
        # By key (case-folded): a load whose callers all gave up, being cancelled, or the
        # unload of an instance such a load finished anyway. A new get-or-load of the key
        # waits for it (bounded), so it neither joins a dying load nor gets a dying instance.
        self._settling: dict[str, asyncio.Future[Any]] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._client!r}>"

    def _handle(self, info: ModelInstanceInfo) -> _HandleT:
        return self._handle_cls(self, info)

    def _config(self, config: object) -> Any:
        return coerce_load_config(self._name, config)

    async def _concrete(
        self, key: str, cfg: Any, timeouts: Timeouts, deadline: float | None, operation: str
    ) -> Any:
        """``cfg`` with ``context_length="max"`` replaced by the largest context length
        of the model ``key`` names (a model key, path or loaded identifier): one
        ``listDownloadedModels`` call, only for ``"max"``, within the call's deadlines
        (``deadline``: where its total one ends). ``operation`` names the call in errors."""
        if cfg is None or cfg.context_length != "max":
            return cfg
        rpc = functools.partial(self._client._rpc, timeout=timeouts, deadline=deadline)
        raw = await rpc("system", "listDownloadedModels")
        everything = [] if raw is None else decode_model_info_list(raw)
        models = [m for m in everything if m.type == self._name]
        model = resolve_model_key(models, key)
        if model is None:  # an instance identifier: the model it is an instance of
            raw = await rpc(self._name, "listLoaded")
            low = key.casefold()
            for info in [] if raw is None else decode_instance_info_list(raw):
                if info.identifier.casefold() == low:
                    model = resolve_model_key(models, info.model_key)
                    break
        if model is None:
            try:
                other = resolve_model_key([m for m in everything if m.type != self._name], key)
            except LMStudioValueError:  # a prefix of several: no one model is meant
                other = None
            if other is not None:  # as LM Studio would say of the load itself
                raise DomainMismatchError.client_side(
                    other.model_key, str(other.type), self._name, operation=operation
                )
            raise ModelNotFoundError.client_side(
                f"context_length='max': no downloaded {self._name} model matches {key!r}, "
                "so its largest context length is unknown",
                subject=key,
                operation=operation,
                domain=self._name,
            )
        return msgspec.structs.replace(cfg, context_length=model.max_context_length)

    # --- get / load ---------------------------------------------------------------

    async def model(
        self,
        key: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        on_config_mismatch: MismatchPolicy = "warn",
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> _HandleT:
        """Any loaded model (no ``key``), or the instance matching ``key``, loading it if needed.

        ``key`` matches an instance identifier, a model key or a path prefix. If
        nothing matches, the model is loaded just in time (reporting progress to
        ``on_progress``) with ``ttl`` (idle seconds before auto-unload; ``None``:
        none) and ``config``. Concurrent calls for the same ``key`` (spelled the same
        way, case aside) share one load whatever their ``ttl`` or ``config`` (the first
        caller's arguments load it; each caller waits within its own deadlines); the
        load is cancelled only when every caller waiting for it has given up, and then
        raises only once the server acknowledged the cancel (see
        :data:`LOAD_CANCEL_GRACE_SECONDS`). A call that arrives while such a load is
        being cancelled waits for that, then loads afresh.

        When the instance a caller gets differs from its explicit ``config`` or
        ``ttl`` (``None`` for either means "any"), ``on_config_mismatch`` decides:
        ``"warn"`` (:class:`ConfigMismatchWarning`, the default), ``"raise"``
        (:class:`ConfigMismatchError`) or ``"reload"`` (unload it, load anew). The
        warning or error names each differing field, ``ttl`` included.
        """
        handle, _ = await self._model(
            key,
            ttl=ttl,
            config=config,
            on_progress=on_progress,
            on_config_mismatch=on_config_mismatch,
            timeout=timeout,
        )
        return handle

    async def _model(
        self,
        key: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        on_config_mismatch: MismatchPolicy = "warn",
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> tuple[_HandleT, bool]:
        """:meth:`model`, and whether this call loaded the instance for itself alone (a
        load of its own that no other caller joined): the sync client unloads such an
        instance when its caller is interrupted just as the call returns."""
        timeouts = self._client._timeouts_for(timeout)
        if key is None:
            if ttl is not None or config is not None or on_progress is not None:
                raise LMStudioValueError(
                    f"{self._name}.model() without a key returns an already loaded model; "
                    "ttl, config and on_progress need a key"
                )
            return await self._any(timeouts), False
        check_key(key, "key")
        ttl_value = ttl_ms(ttl)
        cfg = self._config(config)
        callback = _check_callback(on_progress)
        if on_config_mismatch not in ("warn", "raise", "reload"):
            raise LMStudioValueError(
                "on_config_mismatch must be 'warn', 'raise' or 'reload', "
                f"got {on_config_mismatch!r}"
            )
        started = asyncio.get_running_loop().time()
        total = timeouts.total
        deadline = None if total is None else started + total
        cfg = await self._concrete(key, cfg, timeouts, deadline, "Get-or-load")
        stack = load_config_stack(self._name, cfg)
        params = (ttl_value, msgspec.json.encode(stack), on_config_mismatch)
        folded = key.casefold()  # keys match case-insensitively
        flight = self._flights.get(folded)  # single flight per model key
        if flight is None:
            flight = _Flight(params)
            shared = timeouts.with_(idle=None, total=None)  # see _Flight
            flight.task = asyncio.ensure_future(
                self._get_or_load(
                    key,
                    ttl_value,
                    cfg,
                    stack,
                    on_config_mismatch,
                    flight,
                    shared,
                    after=self._settling.get(folded),
                )
            )
            self._flights[folded] = flight
            flight.task.add_done_callback(functools.partial(self._landed, folded, flight))
        task = flight.task
        assert task is not None
        flight.waiters += 1
        flight.joined += 1
        try:
            info = await _wait_for_flight(
                flight, task, timeouts, f"Get-or-load of {key!r}", callback, started
            )
        except BaseException:
            # Cancelled, timed out, its callback failed, or the load failed (then the
            # task is done and nothing below applies).
            flight.waiters -= 1
            if flight.waiters == 0:
                if self._flights.get(folded) is flight:
                    del self._flights[folded]  # later callers must not join it
                if not task.done():
                    # Stop the load; raise once the server acknowledged (bounded).
                    self._settle(folded, task)
                    task.cancel()
                    await _within_grace(task, extra=_CLOSE_GRACE_SECONDS)
                elif (
                    flight.loaded_now
                    and not flight.delivered
                    and not task.cancelled()
                    and task.exception() is None
                ):
                    # Finished just as its last caller gave up, and no caller got it:
                    # nobody owns it.
                    orphan = task.result()
                    await _within_grace(
                        self._settle(folded, self._client._disown(self._name, orphan))
                    )
            raise
        flight.waiters -= 1
        flight.delivered += 1
        if flight.params[:2] == params[:2] and (
            flight.loaded_now or flight.params[2] == "reload"
        ):
            # Loaded (or reloaded) with exactly our ttl and config.
            return self._handle(info), flight.loaded_now and flight.joined == 1
        # Already loaded, or loaded for a caller with another ttl / config: check ours,
        # within what is left of this call's total deadline (a reload is several calls).
        reconciling = self._reconcile(
            key, info, ttl_value, cfg, on_config_mismatch, timeouts, loaded_now=False
        )
        if deadline is not None:
            reconciling = bounded(
                reconciling,
                deadline,
                lambda: LMStudioTimeoutError(
                    f"Get-or-load of {key!r} did not finish within the total deadline "
                    f"({total:g} s)",
                    timeout=total,
                    kind="total",
                ),
            )
        info = await reconciling
        return self._handle(info), False

    async def _reconcile(
        self,
        key: str,
        info: ModelInstanceInfo,
        ttl_value: int | None,
        cfg: Any,
        policy: MismatchPolicy,
        timeouts: Timeouts,
        *,
        loaded_now: bool,
    ) -> ModelInstanceInfo:
        """Apply ``policy`` if ``info`` differs from the caller's explicit ttl / config."""
        if loaded_now:
            return info
        differences: dict[str, tuple[Any, Any]] = {}
        if cfg is not None:
            effective = await self._handle(info).get_load_config(timeout=timeouts)
            differences.update(config_differences(cfg, effective))
        if ttl_value is not None and info.ttl_ms != ttl_value:
            differences["ttl"] = (ttl_value / 1000.0, info.ttl)
        if not differences:
            return info
        detail = ", ".join(
            f"{name}: asked {want!r}, loaded with {got!r}"
            for name, (want, got) in differences.items()
        )
        what = "TTL" if list(differences) == ["ttl"] else "config"
        message = f"{info.identifier!r} is already loaded with a different {what} ({detail})"
        if policy == "raise":
            raise ConfigMismatchError(message, identifier=info.identifier, differences=differences)
        if policy == "warn":
            warn_caller(
                f"{message}; pass on_config_mismatch='reload' to reload it with yours",
                ConfigMismatchWarning,
            )
            return info
        # "reload": unload it, then get-or-load with ours. A concurrent caller may load
        # this key with other settings in between; then reload that one too, a bounded
        # number of times (the last reload wins, as it would have one after the other).
        identifier = info.identifier
        device: str | None = info.device_identifier  # where it is (None: here)
        exact = True  # (False: an instance named only by a ConfigMismatchError below)
        ttl = None if ttl_value is None else ttl_value / 1000.0
        for attempt in range(1, _RELOAD_ATTEMPTS + 1):
            with contextlib.suppress(ModelNotFoundError):  # someone else may have unloaded it
                await self._unload(identifier, device, timeouts, exact=exact)
            if _names_instance(key, info):
                try:
                    return await self._load_again(info, ttl_value, cfg, _Progress(), timeouts)
                except IdentifierTakenError:
                    if attempt == _RELOAD_ATTEMPTS:
                        raise
                    continue  # loaded again meanwhile: unload that one too
            try:
                handle = await self.model(
                    key,
                    ttl=ttl,
                    config=cfg,
                    on_config_mismatch="raise" if attempt < _RELOAD_ATTEMPTS else "warn",
                    timeout=timeouts,
                )
            except ConfigMismatchError as exc:
                identifier, device, exact = exc.identifier, None, False
                continue
            reloaded: ModelInstanceInfo = handle.info
            return reloaded
        raise AssertionError("unreachable")  # pragma: no cover

    def _landed(self, folded: str, flight: _Flight, task: asyncio.Task[Any]) -> None:
        if self._flights.get(folded) is flight:
            del self._flights[folded]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter re-raises it

    def _settle(self, folded: str, work: asyncio.Future[Any]) -> asyncio.Future[Any]:
        """Make new get-or-loads of ``folded`` wait for ``work`` (see ``_settling``)."""
        self._settling[folded] = work

        def done(_: asyncio.Future[Any]) -> None:
            if self._settling.get(folded) is work:
                del self._settling[folded]

        work.add_done_callback(done)
        return work

    async def _any(self, timeouts: Timeouts) -> _HandleT:
        operation = f"{self._name}.model()"
        try:
            raw = await self._client._rpc(
                self._name,
                "getModelInfo",
                {"specifier": {"type": "query", "query": {}}, "throwIfNotFound": True},
                timeout=timeouts,
                operation=operation,
            )
        except ModelNotFoundError:
            raise ModelNotFoundError.nothing_loaded(self._name, operation=operation) from None
        if raw is None:
            raise ModelNotFoundError.nothing_loaded(self._name, operation=operation)
        return self._handle(decode_instance_info(raw))

    async def _get_or_load(
        self,
        key: str,
        ttl_value: int | None,
        cfg: Any,
        stack: dict[str, Any],
        policy: MismatchPolicy,
        flight: _Flight,
        timeouts: Timeouts,
        *,
        after: asyncio.Future[Any] | None = None,
    ) -> ModelInstanceInfo:
        if after is not None:  # see _settling
            await _within_grace(after, extra=_CLOSE_GRACE_SECONDS)
        creation: dict[str, Any] = {"identifier": key, "loadConfigStack": stack}
        if ttl_value is not None:
            creation["loadTtlMs"] = ttl_value
        for attempt in range(2):
            info, loaded_now = await self._client._load_channel(
                self._name,
                "getOrLoad",
                creation,
                flight.progress,
                timeouts,
                operation="Get-or-load",
                subject=key,
            )
            flight.loaded_now = loaded_now
            if loaded_now or attempt == 1 or policy != "reload":
                return info  # each caller checks an instance already loaded against its own
            # "reload" (its caller's): check without acting, then unload and get-or-load
            # again, so that the callers sharing this load get the reloaded instance.
            try:
                await self._reconcile(
                    key, info, ttl_value, cfg, "raise", timeouts, loaded_now=False
                )
            except ConfigMismatchError:
                with contextlib.suppress(ModelNotFoundError):
                    await self._unload(
                        info.identifier, info.device_identifier, timeouts, exact=True
                    )
                if _names_instance(key, info):
                    flight.loaded_now = True
                    return await self._load_again(info, ttl_value, cfg, flight.progress, timeouts)
                continue
            return info
        raise AssertionError("unreachable")  # pragma: no cover

    async def _load_again(
        self,
        info: ModelInstanceInfo,
        ttl_value: int | None,
        cfg: Any,
        progress: _Progress,
        timeouts: Timeouts,
    ) -> ModelInstanceInfo:
        """Load ``info``'s model anew under its identifier, on its device (a reload of an
        instance that the caller's key named by its identifier, which names nothing once
        the instance is unloaded)."""
        return await self._load_new(
            info.model_key,
            info.identifier,
            ttl_value,
            cfg,
            info.device_identifier,
            progress,
            timeouts,
        )

    async def load(
        self,
        key: str,
        identifier: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        device: str | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> _HandleT:
        """Load a new instance of ``key`` (always a new one).

        Without ``identifier`` the server names it (the model key, then
        ``key:2``, ``key:3``…); a taken ``identifier`` raises
        :class:`IdentifierTakenError`, too little memory :class:`InsufficientMemoryError`.
        ``ttl`` is the idle time in seconds before LM Studio unloads it (``None``:
        never). ``device`` loads it on that LM Link device (the protocol's
        ``deviceIdentifier``; ``None``: the server's default, normally this machine);
        an unknown device raises :class:`DeviceNotFoundError`. Cancelling the call (or
        its deadline) cancels the load on the server and raises once the server
        acknowledged it (see :data:`LOAD_CANCEL_GRACE_SECONDS`), so a retry with the same
        identifier can follow at once.
        """
        check_key(key, "key")
        if identifier is not None:
            check_key(identifier, "identifier")
        if device is not None:
            check_key(device, "device")
        ttl_value = ttl_ms(ttl)
        cfg = self._config(config)
        callback = _check_callback(on_progress)
        timeouts, deadline = self._client._deadlines_for(timeout)
        cfg = await self._concrete(key, cfg, timeouts, deadline, LOAD_OPERATION)
        progress = _Progress()
        if callback is not None:
            progress.callbacks.append(callback)
        info = await self._load_new(
            key, identifier, ttl_value, cfg, device, progress, timeouts, deadline
        )
        return self._handle(info)

    async def _load_new(
        self,
        key: str,
        identifier: str | None,
        ttl_value: int | None,
        cfg: Any,
        device: str | None,
        progress: _Progress,
        timeouts: Timeouts,
        deadline: float | None = None,
    ) -> ModelInstanceInfo:
        creation: dict[str, Any] = {
            "modelKey": key,
            "loadConfigStack": load_config_stack(self._name, cfg),
        }
        if identifier is not None:
            creation["identifier"] = identifier
        if ttl_value is not None:
            creation["ttlMs"] = ttl_value
        if device is not None:
            creation["deviceIdentifier"] = device
        info, _ = await self._client._load_channel(
            self._name,
            "loadModel",
            creation,
            progress,
            timeouts,
            operation=LOAD_OPERATION,
            subject=identifier or key,
            deadline=deadline,
        )
        return info

    @contextlib.asynccontextmanager
    async def loaded(
        self,
        key: str,
        identifier: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        device: str | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> AsyncIterator[_HandleT]:
        """``async with ns.loaded(key) as model:`` a new instance, unloaded on exit
        (also on error and on cancellation)."""
        handle = await self.load(
            key,
            identifier,
            ttl=ttl,
            config=config,
            on_progress=on_progress,
            device=device,
            timeout=timeout,
        )
        try:
            yield handle
        finally:
            # A task of the client's own: if this exit is cancelled (a shutdown), the unload
            # still runs, its error is collected, and aclose() waits for it.
            unload = self._client._spawn(
                handle.unload(timeout=timeout), f"lmstudio-unload-{handle.identifier}"
            )
            self._client._unloads.add(unload)
            unload.add_done_callback(self._client._unloads.discard)
            with contextlib.suppress(ModelNotFoundError):
                await asyncio.shield(unload)

    # --- unload / list ---------------------------------------------------------------

    async def unload(
        self,
        identifier: str,
        *,
        device: str | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> None:
        """Unload the instance ``identifier`` (only from LM Link device ``device``, if
        given); :class:`ModelNotFoundError` if none has it."""
        check_key(identifier, "identifier")
        if device is not None:
            check_key(device, "device")
        await self._unload(identifier, device, timeout)

    async def _unload(
        self,
        identifier: str,
        device: str | None,
        timeout: TimeoutParam,
        deadline: float | None = None,
        *,
        exact: bool = False,
    ) -> None:
        """``exact``: see :func:`unload_param`."""
        await self._client._rpc(
            self._name,
            "unloadModel",
            unload_param(identifier, device, exact=exact),
            timeout=timeout,
            deadline=deadline,
            operation="Unload",
            subject=identifier,
        )

    async def list_loaded(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[_HandleT]:
        """Handles of every loaded instance of this domain, in load order."""
        raw = await self._client._rpc(self._name, "listLoaded", timeout=timeout)
        if raw is None:
            return []
        return [self._handle(info) for info in decode_instance_info_list(raw)]

    async def list_downloaded(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[_InfoT]:
        """Downloaded models of this domain."""
        infos = await self._client.system.list_downloaded(timeout=timeout)
        return [info for info in infos if info.type == self._name]  # type: ignore[misc]

    async def estimate(
        self,
        key: str,
        *,
        config: _ConfigT | Mapping[str, Any] | None = None,
        device: str | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> EstimateResult:
        """Memory a load of ``key`` with ``config`` would need, and whether it fits (on LM
        Link device ``device``, if given)."""
        check_key(key, "key")
        cfg = self._config(config)
        if device is not None:
            check_key(device, "device")
        timeouts, deadline = self._client._deadlines_for(timeout)
        cfg = await self._concrete(key, cfg, timeouts, deadline, "Estimate")
        param: dict[str, Any] = {
            "modelKey": key,
            "loadConfigStack": load_config_stack(self._name, cfg),
        }
        if device is not None:
            param["deviceIdentifier"] = device
        raw = await self._client._rpc(
            self._name,
            "estimateModelUsage",
            param,
            timeout=timeouts,
            deadline=deadline,
            operation="Estimate",
            subject=key,
        )
        if raw is None:
            raise ProtocolError(f"LM Studio sent no estimate for {key!r}")
        return decode_estimate_result(raw)


class LlmNamespace(_ModelNamespace[LLM, LlmInfo, LlmInstanceInfo, LlmLoadConfig]):
    """``client.llm``: LLM model management."""

    _name = "llm"
    _handle_cls = LLM


class EmbeddingNamespace(
    _ModelNamespace[
        EmbeddingModel, EmbeddingModelInfo, EmbeddingModelInstanceInfo, EmbeddingLoadConfig
    ]
):
    """``client.embedding``: embedding model management."""

    _name = "embedding"
    _handle_cls = EmbeddingModel


class SystemNamespace:
    """``client.system``: server-wide queries."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<SystemNamespace of {self._client!r}>"

    async def list_downloaded(
        self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[ModelInfo]:
        """Every downloaded model (LLMs and embedding models)."""
        raw = await self._client._rpc("system", "listDownloadedModels", timeout=timeout)
        return [] if raw is None else decode_model_info_list(raw)

    async def version(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> str:
        """LM Studio's version string, e.g. ``"0.3.30"``."""
        raw = await self._client._rpc("system", "version", timeout=timeout)
        if raw is None:
            raise ProtocolError("LM Studio sent no version")
        data = msgspec.json.decode(raw)
        return str(data.get("version", "")) if isinstance(data, dict) else str(data)
