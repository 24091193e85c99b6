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

import asyncio
import atexit
import contextlib
import functools
import inspect
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import FunctionType, TracebackType
from typing import Any, ClassVar, Final, Generic, TypeVar, cast, overload

from .._async.agent import ActResult, InvalidToolRequestHandler
from .._async.client import (
    LLM,
    LOAD_CANCEL_GRACE_SECONDS,
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
from .._async.files import FilesNamespace, FileSource
from .._async.handle import TimeoutParam, _ModelHandle
from .._async.inference import FragmentCallback, PromptProgressCallback
from .._async.repository import (
    DownloadOption,
    DownloadProgressCallback,
    ModelSearchResult,
    RepositoryNamespace,
)
from .._io.transport import SSLOption
from .._protocol.chat import ChatInput, ChatMessage
from .._protocol.files import FileHandle
from .._protocol.info import (
    EmbeddingModelInfo,
    EmbeddingModelInstanceInfo,
    EstimateResult,
    LlmInfo,
    LlmInstanceInfo,
    ModelInfo,
)
from .._protocol.prediction import PredictionConfig
from .._protocol.repository import CompatibilityType, DownloadOptionData, SearchResultData
from .._protocol.results import (
    Fragment,
    PredictionResult,
    PredictionRoundResult,
    StructuredResult,
)
from .._protocol.tools import ToolDefinition
from ..config import EmbeddingLoadConfig, LlmLoadConfig
from ..errors import LMStudioError
from ..types import DEFAULT_TIMEOUTS, Timeouts
from .loop import _Lease, _LoopThread, spawn
from .stream import SyncPredictionStream

__all__ = [
    "Client",
    "SyncDownloadOption",
    "SyncEmbeddingModel",
    "SyncEmbeddingNamespace",
    "SyncFilesNamespace",
    "SyncLLM",
    "SyncLlmNamespace",
    "SyncModelSearchResult",
    "SyncRepositoryNamespace",
    "SyncSystemNamespace",
    "configure_default_client",
    "embedding_model",
    "get_default_client",
    "llm",
]

_T = TypeVar("_T")
_F = TypeVar("_F", bound=Callable[..., Any])

log: Final = logging.getLogger("lmstudio_async")

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
    return _make_hop(stub, None)


def _hop_disowning(stub: _F) -> _F:
    """:func:`_hop` for a load: if its caller gives up (Ctrl-C, a progress callback's
    error) just as the load finished, the instance it loaded is unloaded."""
    return _make_hop(stub, _disown)


def _make_hop(stub: _F, orphan: Callable[[Any], Any] | None) -> _F:
    name = stub.__name__
    # The loop thread hands a plain on_progress back to the caller only as a keyword: a
    # positional one, and the positional arguments after it, are passed by name.
    names = [
        p.name
        for p in list(inspect.signature(stub).parameters.values())[1:]
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    at = names.index("on_progress") if "on_progress" in names else None

    @functools.wraps(stub)
    def method(self: _Facade, /, *args: Any, **kwargs: Any) -> Any:
        if at is not None and at < len(args) <= len(names) and kwargs.keys().isdisjoint(names):
            kwargs.update(zip(names[at:], args[at:], strict=False))
            args = args[:at]
        fn = getattr(self._async, name)
        return _wrap(self._lease.call(fn, args, kwargs, orphan=orphan), self._lease)

    return cast(_F, method)


async def _disown(handle: _ModelHandle[Any, Any]) -> None:
    """Unload an instance loaded for a sync caller that has gone (as the async client does
    for a cancelled one), waiting at most ``LOAD_CANCEL_GRACE_SECONDS``."""
    log.info("unloading %r: the call that loaded it was interrupted", handle.identifier)

    async def unload() -> None:
        with contextlib.suppress(LMStudioError):
            await handle.unload()

    await asyncio.wait({spawn(unload())}, timeout=LOAD_CANCEL_GRACE_SECONDS)


async def _disown_if_loaded_now(result: tuple[_ModelHandle[Any, Any], bool]) -> None:
    handle, loaded_now = result
    if loaded_now:
        await _disown(handle)


async def _model(
    namespace: _ModelNamespace[Any, Any, Any, Any], key: str | None, **kwargs: Any
) -> tuple[_ModelHandle[Any, Any], bool]:
    """``namespace.model(key, ...)``, and whether it loaded the instance for this call
    alone (then it is unloaded if the caller has gone, as the async client does)."""
    return await namespace._model(key, **kwargs)


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

    async def _abandon(self, _: object) -> None:
        """Entered, but the caller gave up meanwhile (Ctrl-C): leave it at once."""
        context, self._context = self._context, None
        if context is not None:
            with contextlib.suppress(LMStudioError):
                await context.__aexit__(None, None, None)

    def __enter__(self) -> _T:
        entered = self._lease.call(self._aenter, (), self._kwargs, orphan=self._abandon)
        return cast(_T, _wrap(entered, self._lease))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        context, self._context = self._context, None
        if context is not None:
            # The block's exception stays in this thread (its traceback untouched); the
            # async context manager sees a normal exit and cleans up all the same, also
            # when the client was closed in the block (ClientClosedError, as in async).
            self._lease.finish(context.__aexit__, (None, None, None))


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
        if text.startswith("<AsyncClient"):
            return text
        # A namespace names its client: the sync Client, not the AsyncClient inside it.
        return text.replace("<", "<Sync", 1).replace(" of <AsyncClient ", " of <Client ", 1)


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

    @property
    def device(self) -> str | None:
        return self._async.device

    @_hop
    def get_info(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> _InstanceT: ...

    @_hop
    def get_load_config(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> _ConfigT: ...

    @_hop
    def get_context_length(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> int: ...

    @_hop
    def unload(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> None: ...

    @overload
    def tokenize(self, text: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[int]: ...
    @overload
    def tokenize(
        self, text: list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[list[int]]: ...
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
        tools: Sequence[ToolDefinition] | None = None,
        response_format: Any = None,
        preset: str | None = None,
    ) -> SyncPredictionStream:
        """Start a chat response, streamed: ``for fragment in llm.respond_stream(...)``;
        then ``stream.result()``. See :class:`SyncPredictionStream`."""
        kwargs = {
            "config": config,
            "on_fragment": on_fragment,
            "on_prompt_progress": on_prompt_progress,
            "timeout": timeout,
            "tools": tools,
            "response_format": response_format,
            "preset": preset,
        }
        return SyncPredictionStream(
            self._lease, self._async.respond_stream, (prompt_or_chat,), kwargs
        )

    @overload
    def respond(
        self,
        prompt_or_chat: ChatInput,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        tools: None = None,
        response_format: type[_T],
        preset: str | None = None,
    ) -> StructuredResult[_T]: ...
    @overload
    def respond(
        self,
        prompt_or_chat: ChatInput,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        tools: Sequence[ToolDefinition] | None = None,
        response_format: Mapping[str, Any] | None = None,
        preset: str | None = None,
    ) -> PredictionResult: ...
    def respond(
        self,
        prompt_or_chat: ChatInput,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        tools: Sequence[ToolDefinition] | None = None,
        response_format: Any = None,
        preset: str | None = None,
    ) -> PredictionResult:
        return self.respond_stream(
            prompt_or_chat,
            config=config,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeout=timeout,
            tools=tools,
            response_format=response_format,
            preset=preset,
        )._run()

    def complete_stream(
        self,
        prompt: str,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        preset: str | None = None,
    ) -> SyncPredictionStream:
        """Start a raw text completion, streamed: ``for fragment in llm.complete_stream(...)``."""
        kwargs = {
            "config": config,
            "on_fragment": on_fragment,
            "on_prompt_progress": on_prompt_progress,
            "timeout": timeout,
            "preset": preset,
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
        preset: str | None = None,
    ) -> PredictionResult:
        return self.complete_stream(
            prompt,
            config=config,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeout=timeout,
            preset=preset,
        )._run()

    @_hop
    def apply_prompt_template(
        self, chat: ChatInput, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> str: ...

    def act(
        self,
        chat: ChatInput,
        tools: Iterable[ToolDefinition],
        *,
        max_prediction_rounds: int | None = None,
        max_parallel_tool_calls: int | None = 1,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        preset: str | None = None,
        on_message: Callable[[ChatMessage], Any] | None = None,
        on_first_token: Callable[[int], Any] | None = None,
        on_prediction_fragment: Callable[[Fragment, int], Any] | None = None,
        on_round_start: Callable[[int], Any] | None = None,
        on_round_end: Callable[[int], Any] | None = None,
        on_prediction_completed: Callable[[PredictionRoundResult], Any] | None = None,
        on_prompt_processing_progress: Callable[[float, int], Any] | None = None,
        handle_invalid_tool_request: InvalidToolRequestHandler | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> ActResult:
        """Let the model use ``tools`` until it answers (see :meth:`LLM.act`), in one hop.

        Plain-function tools run in worker threads and plain-function callbacks in the
        calling thread (``act`` waits for each), so both may use this sync client; coroutine
        functions run in the client's loop thread. Ctrl-C cancels the prediction in flight
        and the running tools.
        """
        kwargs = {
            "max_prediction_rounds": max_prediction_rounds,
            "max_parallel_tool_calls": max_parallel_tool_calls,
            "config": config,
            "preset": preset,
            "on_message": on_message,
            "on_first_token": on_first_token,
            "on_prediction_fragment": on_prediction_fragment,
            "on_round_start": on_round_start,
            "on_round_end": on_round_end,
            "on_prediction_completed": on_prediction_completed,
            "on_prompt_processing_progress": on_prompt_processing_progress,
            "handle_invalid_tool_request": handle_invalid_tool_request,
            "timeout": timeout,
        }
        return self._lease.call(self._async.act, (chat, tools), kwargs, _ACT_CALLBACKS)


_ACT_CALLBACKS: Final = (
    "on_message",
    "on_first_token",
    "on_prediction_fragment",
    "on_round_start",
    "on_round_end",
    "on_prediction_completed",
    "on_prompt_processing_progress",
    "handle_invalid_tool_request",
)


class SyncEmbeddingModel(_SyncModelHandle[EmbeddingModelInstanceInfo, EmbeddingLoadConfig]):
    """Sync handle of a loaded embedding-model instance (counterpart of :class:`EmbeddingModel`)."""

    _async_cls = EmbeddingModel

    @overload
    def embed(self, text: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> list[float]: ...
    @overload
    def embed(
        self, text: list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[list[float]]: ...
    @_hop
    def embed(
        self, text: str | list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[float] | list[list[float]]: ...


class SyncDownloadOption(_Facade):
    """Sync counterpart of :class:`DownloadOption`: one way to download a search result.

    A plain ``on_progress`` function of :meth:`download` runs in the calling thread;
    Ctrl-C cancels the download on the server.
    """

    _async_cls = DownloadOption
    _async: DownloadOption

    @property
    def info(self) -> DownloadOptionData:
        return self._async.info

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def size_bytes(self) -> int:
        return self._async.size_bytes

    @property
    def quantization(self) -> str | None:
        return self._async.quantization

    @property
    def recommended(self) -> bool:
        return self._async.recommended

    @_hop
    def download(
        self,
        on_progress: DownloadProgressCallback | None = None,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> str: ...


class SyncModelSearchResult(_Facade):
    """Sync counterpart of :class:`ModelSearchResult`: a model found by a search."""

    _async_cls = ModelSearchResult
    _async: ModelSearchResult

    @property
    def info(self) -> SearchResultData:
        return self._async.info

    @property
    def name(self) -> str:
        return self._async.name

    @property
    def exact(self) -> bool:
        return self._async.exact

    @property
    def staff_pick(self) -> bool:
        return self._async.staff_pick

    @_hop
    def get_download_options(
        self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[SyncDownloadOption]: ...


_SYNC_HANDLES: Final[dict[type, type[_Facade]]] = {
    LLM: SyncLLM,
    EmbeddingModel: SyncEmbeddingModel,
    ModelSearchResult: SyncModelSearchResult,
    DownloadOption: SyncDownloadOption,
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

    def model(
        self,
        key: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        on_config_mismatch: MismatchPolicy = "warn",
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> _SyncHandleT:
        kwargs = {
            "ttl": ttl,
            "config": config,
            "on_progress": on_progress,
            "on_config_mismatch": on_config_mismatch,
            "timeout": timeout,
        }
        handle, _ = self._lease.call(
            _model, (self._async, key), kwargs, orphan=_disown_if_loaded_now
        )
        return cast(_SyncHandleT, _wrap(handle, self._lease))

    @_hop_disowning
    def load(
        self,
        key: str,
        identifier: str | None = None,
        *,
        ttl: float | None = None,
        config: _ConfigT | Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
        device: str | None = None,
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
        device: str | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> contextlib.AbstractContextManager[_SyncHandleT]:
        """``with ns.loaded(key) as model:`` a new instance, unloaded on exit (also on
        error and on Ctrl-C)."""

    @_hop
    def unload(
        self,
        identifier: str,
        *,
        device: str | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> None: ...

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
        device: str | None = None,
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


class SyncFilesNamespace(_Facade):
    """``client.files`` of a sync :class:`Client`: files for predictions."""

    _async_cls = FilesNamespace

    @_hop
    def prepare_image(
        self,
        src: FileSource,
        name: str | None = None,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> FileHandle: ...


class SyncRepositoryNamespace(_Facade):
    """``client.repository`` of a sync :class:`Client`: model search and download."""

    _async_cls = RepositoryNamespace

    @_hop
    def search_models(
        self,
        search_term: str | None = None,
        limit: int | None = None,
        compatibility_types: Sequence[CompatibilityType] | None = None,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> list[SyncModelSearchResult]: ...


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
        lease.own(async_client)  # collected unclosed: closed, with a ResourceWarning
        super().__init__(async_client, lease)
        self.llm = SyncLlmNamespace(async_client.llm, lease)
        """LLM model management."""
        self.embedding = SyncEmbeddingNamespace(async_client.embedding, lease)
        """Embedding model management."""
        self.system = SyncSystemNamespace(async_client.system, lease)
        """Server-wide queries (downloaded models, version)."""
        self.files = SyncFilesNamespace(async_client.files, lease)
        """Files for predictions (``prepare_image``)."""
        self.repository = SyncRepositoryNamespace(async_client.repository, lease)
        """Model search and download."""

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
        """Close every socket and release the shared loop thread (stopped with the last client).

        A no-op once closed; a ``close()`` running meanwhile in another thread is waited
        for. Called from the loop thread (a coroutine callback), it closes the client at
        once for sync calls, and its sockets right after the callback, in the background.
        """
        lease = self._lease
        if lease.closed:
            return
        lease.host = self._async.api_host
        lease.close(self._async)


# --- the default client for scripts -----------------------------------------------------------

_default_lock = threading.Lock()  # replaced in a fork child (see _after_fork_in_child)
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
    :func:`embedding_model`); a default client already created is closed first. The
    arguments are checked now, as :class:`Client` checks them (:class:`LMStudioValueError`).
    """
    global _default_client
    # Checked here (a client with no socket yet, dropped at once), not at the first call.
    AsyncClient(api_host, api_token=api_token, timeout=timeout, ssl=ssl)
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
        client = old = _default_client
        if client is None or client.closed or not client._lease.runner.thread.is_alive():
            client = _default_client = Client(**_default_settings)
            if not _atexit_registered:
                atexit.register(_close_default_client)
                _atexit_registered = True
        else:
            old = None
    if old is not None:
        old.close()  # its loop thread died (or it was inherited across fork()): no wait
    return client


def _close_default_client() -> None:
    global _default_client
    with _default_lock:
        client, _default_client = _default_client, None
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


def llm(
    key: str | None = None,
    *,
    ttl: float | None = None,
    config: LlmLoadConfig | Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    on_config_mismatch: MismatchPolicy = "warn",
    timeout: TimeoutParam = USE_CLIENT_DEFAULT,
) -> SyncLLM:
    """``get_default_client().llm.model(key, ...)``: any loaded LLM, or get-or-load ``key``."""
    return get_default_client().llm.model(
        key,
        ttl=ttl,
        config=config,
        on_progress=on_progress,
        on_config_mismatch=on_config_mismatch,
        timeout=timeout,
    )


def embedding_model(
    key: str | None = None,
    *,
    ttl: float | None = None,
    config: EmbeddingLoadConfig | Mapping[str, Any] | None = None,
    on_progress: ProgressCallback | None = None,
    on_config_mismatch: MismatchPolicy = "warn",
    timeout: TimeoutParam = USE_CLIENT_DEFAULT,
) -> SyncEmbeddingModel:
    """``get_default_client().embedding.model(key, ...)``: any loaded embedding model, or
    get-or-load ``key``."""
    return get_default_client().embedding.model(
        key,
        ttl=ttl,
        config=config,
        on_progress=on_progress,
        on_config_mismatch=on_config_mismatch,
        timeout=timeout,
    )


def _after_fork_in_child() -> None:
    # A parent thread could hold the lock at the fork (creating the default client): in
    # the child it would stay held for ever. The inherited default client is replaced on
    # the next get_default_client() (its loop thread is not in the child).
    global _default_lock
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):  # not on Windows (no fork there)
    os.register_at_fork(after_in_child=_after_fork_in_child)
