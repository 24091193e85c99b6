# mypy: disable-error-code="empty-body"
# Method bodies of the facades below are typed stubs: ``@_hop`` / ``@_hop_context`` replace
# them with a generic implementation that forwards the call to the async method of the
# same name, so those bodies are never run.
"""The sync facade: :class:`Client`, its namespaces and handles, and the default client.

Every sync call makes exactly one hop into a shared event-loop thread and runs the
whole coroutine of the :class:`~lmstudio_async.AsyncClient` there; the async client is
the only implementation. All sync clients of a process share one loop thread, started
by the first client and stopped when the last one closes.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import threading
from collections.abc import Callable, Mapping
from types import FunctionType, TracebackType
from typing import Any, ClassVar, Final, Generic, TypeVar, cast

from .._async.client import (
    LLM,
    USE_CLIENT_DEFAULT,
    AsyncClient,
    EmbeddingModel,
    EmbeddingNamespace,
    LlmNamespace,
    MismatchPolicy,
    ProgressCallback,
    SystemNamespace,
    _ModelNamespace,
)
from .._async.handle import TimeoutParam, _ModelHandle
from .._async.inference import FragmentCallback, PromptProgressCallback
from .._io.transport import SSLOption
from .._protocol.info import (
    EmbeddingModelInfo,
    EmbeddingModelInstanceInfo,
    EstimateResult,
    LlmInfo,
    LlmInstanceInfo,
    ModelInfo,
)
from .._protocol.prediction import ChatInput, PredictionConfig, PredictionResult
from ..config import EmbeddingLoadConfig, LlmLoadConfig
from ..errors import LoopThreadError
from ..types import DEFAULT_TIMEOUTS, Timeouts
from .loop import _Lease, _LoopThread
from .stream import SyncPredictionStream

__all__ = [
    "Client",
    "SyncEmbeddingModel",
    "SyncEmbeddingNamespace",
    "SyncLLM",
    "SyncLlmNamespace",
    "SyncSystemNamespace",
    "configure_default_client",
    "embedding_model",
    "get_default_client",
    "llm",
]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

# --- mechanical generation of the sync methods ---------------------------------------------


def _wrap(value: Any, lease: _Lease) -> Any:
    """Async handles (alone or in a list) become sync handles; anything else is returned as is."""
    sync_cls = _SYNC_HANDLES.get(type(value))
    if sync_cls is not None:
        return sync_cls(value, lease)
    if type(value) is list and value and type(value[0]) in _SYNC_HANDLES:
        return [_SYNC_HANDLES[type(item)](item, lease) for item in value]
    return value


def _hop(stub: _F) -> _F:
    """Make ``stub`` (a typed signature) call the async method of the same name in one hop."""
    name = stub.__name__

    @functools.wraps(stub)
    def method(self: _Facade, /, *args: Any, **kwargs: Any) -> Any:
        return _wrap(self._lease.call(getattr(self._async, name), args, kwargs), self._lease)

    return cast(_F, method)


def _hop_context(stub: _F) -> _F:
    """Like :func:`_hop` for an async context-manager factory: returns a sync context manager."""
    name = stub.__name__

    @functools.wraps(stub)
    def method(self: _Facade, /, *args: Any, **kwargs: Any) -> Any:
        return _SyncContext(self._lease, getattr(self._async, name), args, kwargs)

    return cast(_F, method)


class _SyncContext(Generic[_T]):
    """A sync context manager running an async one's enter and exit in the loop thread."""

    def __init__(
        self,
        lease: _Lease,
        factory: Callable[..., contextlib.AbstractAsyncContextManager[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._lease = lease
        self._factory = factory
        self._args = args
        self._kwargs = kwargs
        self._context: contextlib.AbstractAsyncContextManager[Any] | None = None

    async def _aenter(self, **kwargs: Any) -> Any:
        self._context = self._factory(*self._args, **kwargs)
        return await self._context.__aenter__()

    def __enter__(self) -> _T:
        return cast(_T, _wrap(self._lease.call(self._aenter, (), self._kwargs), self._lease))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            # The block's exception stays in this thread (its traceback untouched); the
            # async context manager sees a normal exit and cleans up all the same.
            self._lease.runner.call(context.__aexit__, (None, None, None))


class _Facade:
    """Base of the sync classes: mirrors the public surface of ``_async_cls``.

    Public methods and properties without a docstring of their own take the one of
    the async attribute they mirror (``close`` mirrors ``aclose``).
    """

    _async_cls: ClassVar[type]
    _async: Any
    _lease: _Lease

    _RENAMES: ClassVar[dict[str, str]] = {"close": "aclose", "__enter__": "__aenter__"}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        source = cls.__dict__.get("_async_cls")
        if source is None:
            return
        for name, attr in cls.__dict__.items():
            if name.startswith("_") or getattr(attr, "__doc__", None):
                continue
            original = getattr(source, cls._RENAMES.get(name, name), None)
            if isinstance(attr, property | FunctionType) and original is not None:
                attr.__doc__ = original.__doc__

    def __init__(self, async_obj: Any, lease: _Lease) -> None:
        self._async = async_obj
        self._lease = lease

    def __repr__(self) -> str:
        text = repr(self._async)
        return text.replace("<", "<Sync", 1) if not text.startswith("<AsyncClient") else text


# --- handles ----------------------------------------------------------------------------------

_InstanceT = TypeVar("_InstanceT", LlmInstanceInfo, EmbeddingModelInstanceInfo)
_ConfigT = TypeVar("_ConfigT", LlmLoadConfig, EmbeddingLoadConfig)


class _SyncModelHandle(_Facade, Generic[_InstanceT, _ConfigT]):
    """Sync handle of a loaded model instance (wraps the async handle)."""

    _async_cls: ClassVar[type] = _ModelHandle
    _async: _ModelHandle[Any, Any]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _SyncModelHandle):
            return NotImplemented
        return bool(self._async == other._async)

    def __hash__(self) -> int:
        return hash(self._async)

    @property
    def identifier(self) -> str:
        return self._async.identifier

    @property
    def model_key(self) -> str:
        return self._async.model_key

    @property
    def instance_reference(self) -> str:
        return self._async.instance_reference

    @property
    def info(self) -> _InstanceT:
        return cast(_InstanceT, self._async.info)

    @_hop
    def get_info(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> _InstanceT: ...

    @_hop
    def get_load_config(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> _ConfigT: ...

    @_hop
    def get_context_length(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> int: ...

    @_hop
    def unload(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> None: ...

    @_hop
    def tokenize(
        self, text: str | list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[int] | list[list[int]]:
        """Token ids of ``text``; for a list of strings, one list per string."""

    @_hop
    def count_tokens(self, text: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> int:
        """How many tokens ``text`` is for this model."""


class SyncLLM(_SyncModelHandle[LlmInstanceInfo, LlmLoadConfig]):
    """Sync handle of a loaded LLM instance (the sync counterpart of :class:`LLM`).

    Streams (:meth:`respond_stream`, :meth:`complete_stream`) are fed by the loop thread
    through a queue: one ``for`` loop, no thread hop per fragment; ``break`` or Ctrl-C
    cancels the prediction on the server. Plain ``on_fragment`` / ``on_prompt_progress``
    functions run in the calling thread.
    """

    _async_cls = LLM
    _async: LLM

    def respond_stream(
        self,
        prompt_or_chat: ChatInput,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> SyncPredictionStream:
        """Start a chat response, streamed: ``for fragment in llm.respond_stream(...)``;
        then ``stream.result()``. See :class:`SyncPredictionStream`."""
        kwargs = {
            "config": config,
            "on_fragment": on_fragment,
            "on_prompt_progress": on_prompt_progress,
            "timeout": timeout,
        }
        return SyncPredictionStream(
            self._lease, self._async.respond_stream, (prompt_or_chat,), kwargs
        )

    def respond(
        self,
        prompt_or_chat: ChatInput,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> PredictionResult:
        return self.respond_stream(
            prompt_or_chat,
            config=config,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeout=timeout,
        )._run()

    def complete_stream(
        self,
        prompt: str,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> SyncPredictionStream:
        """Start a raw text completion, streamed: ``for fragment in llm.complete_stream(...)``."""
        kwargs = {
            "config": config,
            "on_fragment": on_fragment,
            "on_prompt_progress": on_prompt_progress,
            "timeout": timeout,
        }
        return SyncPredictionStream(self._lease, self._async.complete_stream, (prompt,), kwargs)

    def complete(
        self,
        prompt: str,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> PredictionResult:
        return self.complete_stream(
            prompt,
            config=config,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeout=timeout,
        )._run()

    @_hop
    def apply_prompt_template(
        self, chat: ChatInput, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> str: ...


class SyncEmbeddingModel(_SyncModelHandle[EmbeddingModelInstanceInfo, EmbeddingLoadConfig]):
    """Sync handle of a loaded embedding-model instance (counterpart of :class:`EmbeddingModel`)."""

    _async_cls = EmbeddingModel

    @_hop
    def embed(
        self, text: str | list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[float] | list[list[float]]: ...


_SYNC_HANDLES: Final[dict[type, type[_SyncModelHandle[Any, Any]]]] = {
    LLM: SyncLLM,
    EmbeddingModel: SyncEmbeddingModel,
}

# --- namespaces -------------------------------------------------------------------------------

_SyncHandleT = TypeVar("_SyncHandleT", SyncLLM, SyncEmbeddingModel)
_InfoT = TypeVar("_InfoT", LlmInfo, EmbeddingModelInfo)


class _SyncModelNamespace(_Facade, Generic[_SyncHandleT, _InfoT, _ConfigT]):
    """Sync model management for one domain (``client.llm`` / ``client.embedding``).

    A plain ``on_progress`` function is called in the caller's thread, while the call
    waits (the loop thread only enqueues each fraction); a coroutine function runs in
    the loop thread, as with the async client.
    """

    _async_cls: ClassVar[type] = _ModelNamespace

    @_hop
    def model(
        self,
        key: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        on_config_mismatch: MismatchPolicy = "warn",
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> _SyncHandleT: ...

    @_hop
    def load(
        self,
        key: str,
        identifier: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> _SyncHandleT: ...

    @_hop_context
    def loaded(
        self,
        key: str,
        identifier: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> contextlib.AbstractContextManager[_SyncHandleT]:
        """``with ns.loaded(key) as model:`` a new instance, unloaded on exit (also on
        error and on Ctrl-C)."""

    @_hop
    def unload(self, identifier: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> None: ...

    @_hop
    def list_loaded(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[_SyncHandleT]: ...

    @_hop
    def list_downloaded(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[_InfoT]: ...

    @_hop
    def estimate(
        self,
        key: str,
        *,
        config: _ConfigT | Mapping[str, Any] | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> EstimateResult: ...


class SyncLlmNamespace(_SyncModelNamespace[SyncLLM, LlmInfo, LlmLoadConfig]):
    """``client.llm`` of a sync :class:`Client`: LLM model management."""

    _async_cls = LlmNamespace


class SyncEmbeddingNamespace(
    _SyncModelNamespace[SyncEmbeddingModel, EmbeddingModelInfo, EmbeddingLoadConfig]
):
    """``client.embedding`` of a sync :class:`Client`: embedding model management."""

    _async_cls = EmbeddingNamespace


class SyncSystemNamespace(_Facade):
    """``client.system`` of a sync :class:`Client`: server-wide queries."""

    _async_cls = SystemNamespace

    @_hop
    def list_downloaded(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[ModelInfo]: ...

    @_hop
    def version(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> str: ...


# --- the client -------------------------------------------------------------------------------


async def _new_async_client(
    runner: _LoopThread,
    api_host: str | None,
    api_token: str | None,
    timeout: float | Timeouts | None,
    ssl: SSLOption,
) -> AsyncClient:
    client = AsyncClient(api_host, api_token=api_token, timeout=timeout, ssl=ssl)
    runner.clients.add(client)
    return client


class Client(_Facade):
    """Synchronous LM Studio client: the same API as :class:`AsyncClient`, without ``await``.

    Each call makes one hop into a shared event-loop thread, where an
    :class:`AsyncClient` (created, used and closed in that thread) does the work, so
    deadlines, errors and cancellation behave exactly as in async code: Ctrl-C
    while a call waits cancels it on the server too. Safe to share between threads,
    and usable inside a running event loop (e.g. Jupyter)::

        with Client("localhost:1234") as client:
            model = client.llm.model("llama-3.2-1b-instruct")

    Close it (``with`` or :meth:`close`); the loop thread stops with the last client.
    """

    _async_cls = AsyncClient
    _async: AsyncClient

    def __init__(
        self,
        api_host: str | None = None,
        *,
        api_token: str | None = None,
        timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
        ssl: SSLOption = None,
    ) -> None:
        lease = _Lease()
        try:
            async_client = lease.call(
                _new_async_client, (lease.runner, api_host, api_token, timeout, ssl)
            )
        except BaseException:
            lease.release()
            raise
        super().__init__(async_client, lease)
        self.llm = SyncLlmNamespace(async_client.llm, lease)
        """LLM model management."""
        self.embedding = SyncEmbeddingNamespace(async_client.embedding, lease)
        """Embedding model management."""
        self.system = SyncSystemNamespace(async_client.system, lease)
        """Server-wide queries (downloaded models, version)."""

    def __repr__(self) -> str:
        return repr(self._async).replace("<AsyncClient", "<Client", 1)

    @property
    def api_host(self) -> str | None:
        return self._async.api_host

    @property
    def timeouts(self) -> Timeouts:
        return self._async.timeouts

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._lease.closed or self._async.closed

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every socket and release the shared loop thread (stopped with the last client)."""
        lease = self._lease
        if lease.closed:
            return
        lease.host = self._async.api_host
        try:
            lease.call(self._async.aclose)
        except LoopThreadError:
            pass  # the loop thread is gone, and its sockets with it
        finally:
            lease.release()


# --- the default client for scripts -----------------------------------------------------------

_default_lock: Final = threading.Lock()
_default_client: Client | None = None
_default_settings: dict[str, Any] = {}
_atexit_registered = False


def configure_default_client(
    api_host: str | None = None,
    *,
    api_token: str | None = None,
    timeout: float | Timeouts | None = DEFAULT_TIMEOUTS,
    ssl: SSLOption = None,
) -> None:
    """Set the host, token, deadlines and TLS settings (see :class:`Client`) of the
    default client.

    Takes effect on the next :func:`get_default_client` (or :func:`llm` /
    :func:`embedding_model`); a default client already created is closed first.
    """
    global _default_client
    with _default_lock:
        _default_settings.clear()
        _default_settings.update(
            api_host=api_host, api_token=api_token, timeout=timeout, ssl=ssl
        )
        old, _default_client = _default_client, None
    if old is not None:
        old.close()


def get_default_client() -> Client:
    """The process-wide sync :class:`Client` of :func:`llm` and :func:`embedding_model`.

    Created on first use (see :func:`configure_default_client`), and created anew if
    it was closed or its loop thread died; a dropped connection reconnects on the
    next call. It is closed at interpreter exit.
    """
    global _default_client, _atexit_registered
    with _default_lock:
        client = _default_client
        if client is None or client.closed or not client._lease.runner.thread.is_alive():
            client = _default_client = Client(**_default_settings)
            if not _atexit_registered:
                atexit.register(_close_default_client)
                _atexit_registered = True
        return client


def _close_default_client() -> None:
    global _default_client
    with _default_lock:
        client, _default_client = _default_client, None
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


def llm(key: str | None = None, **kwargs: Any) -> SyncLLM:
    """``get_default_client().llm.model(key, **kwargs)``: any loaded LLM, or get-or-load ``key``."""
    return get_default_client().llm.model(key, **kwargs)


def embedding_model(key: str | None = None, **kwargs: Any) -> SyncEmbeddingModel:
    """``get_default_client().embedding.model(key, **kwargs)``: any loaded embedding model,
    or get-or-load ``key``."""
    return get_default_client().embedding.model(key, **kwargs)
