"""Using loaded models: predictions (streamed or not), completions, embeddings, tokens.

The methods live in handle base classes (:class:`LlmMethods`, :class:`EmbeddingMethods`)
that :class:`~lmstudio_async.LLM` and :class:`~lmstudio_async.EmbeddingModel` extend.
:class:`PredictionStream` runs one ``predict`` / ``completeRawText`` channel (the sync
client's counterpart is in :mod:`lmstudio_async._sync.stream`).

Deadlines, as for loads: ``idle`` between two packets, optional ``total`` for the whole
prediction. Cancelling (task cancel, ``break`` out of the iteration, :meth:`aclose`,
a deadline, Ctrl-C in sync code) sends the protocol ``cancel``; the server then ends the
prediction with stop reason ``"userStopped"`` and the model stays loaded. A prediction
the server ends with stop reason ``"modelUnloaded"`` (its instance was unloaded by someone
else, a TTL or a JIT auto-evict) raises :class:`~lmstudio_async.ModelUnloadedError`, whose
``result`` is the partial :class:`PredictionResult`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar, overload

import msgspec

from .._io.transport import ChannelStream, RemoteError
from .._protocol.chat import Chat, ChatInput, coerce_chat
from .._protocol.info import (
    EmbeddingModelInstanceInfo,
    LlmInstanceInfo,
)
from .._protocol.messages import decode_reply
from .._protocol.prediction import (
    PredictionConfig,
    apply_template_param,
    complete_creation,
    complete_via_predict,
    embed_param,
    predict_creation,
    requested_json_schema,
    tokenize_param,
)
from .._protocol.results import (
    PREDICTION_PACKET_DECODER,
    EmbeddingReply,
    FormattedReply,
    Fragment,
    FragmentPacket,
    PredictionResult,
    PredictionSuccess,
    PromptProcessingProgress,
    StructuredResult,
    TokenCountReply,
    TokensReply,
    ToolCallEndPacket,
    ToolCallFailedPacket,
    result_from_success,
)
from .._protocol.tools import ResponseFormat, ToolCallRequest, ToolDefinition, parse_tools
from .._protocol.tools import response_format as make_response_format
from ..config import EmbeddingLoadConfig, LlmLoadConfig
from ..errors import (
    LMStudioError,
    LMStudioTimeoutError,
    LMStudioValueError,
    ModelUnloadedError,
    ProtocolError,
    StructuredOutputError,
    UnsupportedEndpointError,
    VisionNotSupportedError,
)
from ..types import Timeouts
from .handle import USE_CLIENT_DEFAULT, TimeoutParam, _ConfigT, _InstanceT, _ModelHandle, log

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "EmbeddingMethods",
    "FragmentCallback",
    "LlmMethods",
    "PredictionStream",
    "PromptProgressCallback",
]

FragmentCallback: TypeAlias = Callable[[Fragment], Any]
"""``on_fragment(fragment)``: a plain function or a coroutine function."""

PromptProgressCallback: TypeAlias = Callable[[float], Any]
"""``on_prompt_progress(fraction)``: prompt processing progress in [0, 1]."""

_TOKENS_DECODER: Final = msgspec.json.Decoder(TokensReply)
_COUNT_DECODER: Final = msgspec.json.Decoder(TokenCountReply)
_EMBEDDING_DECODER: Final = msgspec.json.Decoder(EmbeddingReply)
_FORMATTED_DECODER: Final = msgspec.json.Decoder(FormattedReply)


def _check_callable(name: str, value: object) -> None:
    if value is not None and not callable(value):
        raise LMStudioValueError(f"{name} must be a function, got {type(value).__name__}")


def _check_texts(value: object, what: str) -> list[str] | None:
    """``None`` for a single string; the list for a list/tuple of strings; else an error."""
    if isinstance(value, str):
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise LMStudioValueError(
                    f"{what}: item {index} must be a string, got {type(item).__name__}"
                )
        return list(value)
    raise LMStudioValueError(
        f"{what} takes a string or a list of strings, got {type(value).__name__}"
    )


_BATCH_IN_FLIGHT: Final = 32
"""At most this many requests of one ``embed`` / ``tokenize`` list are in flight at once.
Each request's idle deadline starts when it is sent, so a list of any length succeeds
while LM Studio keeps answering; and a failure leaves at most this many unanswered."""

# After a stream's deadline expired: how long its reaper waits, between packets, for the
# rest of the prediction and its final result (the server's answer to the cancel).
_TIMED_OUT_SETTLE_SECONDS: Final = 2.0

_R = TypeVar("_R")


async def _each(call: Callable[[str], Awaitable[_R]], texts: list[str]) -> list[_R]:
    """``call`` on every text, results in order, at most ``_BATCH_IN_FLIGHT`` at once.
    The first failure (or cancellation) stops the rest and is raised as it is."""
    if not texts:
        return []
    results: list[Any] = [None] * len(texts)
    queue = iter(enumerate(texts))

    async def worker() -> None:
        for index, text in queue:
            results[index] = await call(text)

    workers = [asyncio.ensure_future(worker()) for _ in range(min(_BATCH_IN_FLIGHT, len(texts)))]
    try:
        await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        for task in workers:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        if not all(task.done() for task in workers):
            for task in workers:
                task.cancel()
            await asyncio.wait(workers)
        for task in workers:  # retrieved, so none is logged as "never retrieved"
            if not task.cancelled():
                task.exception()
    return results


async def _invoke(callback: Callable[[Any], Any], value: Any) -> None:
    try:
        result = callback(value)
        if inspect.isawaitable(result):
            await result
    except (StopAsyncIteration, StopIteration) as exc:
        raise stopped_callback(callback, exc) from exc


def stopped_callback(callback: Callable[[Any], Any], exc: BaseException) -> RuntimeError:
    """The error for a callback that raised StopIteration / StopAsyncIteration: raised
    through a stream's ``__anext__`` / ``__next__`` it would end the caller's loop as if the
    prediction were over (it is not), so it becomes a RuntimeError, as PEP 479 does."""
    name = getattr(callback, "__name__", "a callback")
    return RuntimeError(f"{name} raised {type(exc).__name__}")


def _parse_structured(result: PredictionResult, fmt: ResponseFormat) -> PredictionResult:
    """``result`` with ``.parsed`` an instance of the requested type, or
    :class:`StructuredOutputError` carrying the raw text."""
    try:
        value = fmt.decode(result.content)
    except (ValueError, TypeError) as exc:  # msgspec and pydantic errors are ValueErrors
        name = (
            "the JSON schema"
            if fmt.target is dict
            else getattr(fmt.target, "__name__", repr(fmt.target))
        )
        detail = str(exc).splitlines()[0] if str(exc) else repr(exc)
        raise StructuredOutputError(
            f"the reply does not match {name}{result._cut_short()}: {detail}",
            content=result.content,
            result=result,
            target=fmt.target,
        ) from None
    return StructuredResult.of(result, value)


# --- the async stream -------------------------------------------------------------------


class PredictionStream:
    """A prediction in progress: ``async for fragment in stream`` yields :class:`Fragment`.

    Returned by :meth:`LLM.respond_stream` / :meth:`LLM.complete_stream`; nothing is sent
    until the first iteration (or ``async with``). Afterwards :meth:`result` gives the
    :class:`PredictionResult`. Leaving the ``async for`` early (``break``, an exception),
    cancelling the task, :meth:`aclose`, :meth:`cancel` or a deadline sends the protocol
    ``cancel``: the model stays loaded and the prediction ends with stop reason
    ``"userStopped"``::

        async with llm.respond_stream("Tell me a story") as stream:
            async for fragment in stream:
                print(fragment.content, end="", flush=True)
        print(stream.result().stats.tokens_per_second)
    """

    def __init__(
        self,
        handle: _ModelHandle[Any, Any],
        endpoint: str,
        creation: dict[str, Any],
        *,
        on_fragment: FragmentCallback | None,
        on_prompt_progress: PromptProgressCallback | None,
        timeouts: Timeouts,
        operation: str,
        response_format: ResponseFormat | None = None,
    ) -> None:
        _check_callable("on_fragment", on_fragment)
        _check_callable("on_prompt_progress", on_prompt_progress)
        self._client = handle._namespace._client
        self._namespace: str = handle._namespace._name
        self._subject = handle.identifier
        self._endpoint = endpoint
        self._creation = creation
        self._on_fragment = on_fragment
        self._on_prompt_progress = on_prompt_progress
        self._timeouts = timeouts
        self._operation = operation
        self._what = f"{operation} of {self._subject!r}"  # names it in errors and logs
        self._loop: asyncio.AbstractEventLoop | None = None
        self._channel: ChannelStream | None = None
        self._deadline: float | None = None
        self._parts: list[str] = []  # the text of the fragments the reader was given
        # Fragments cancel() read on behalf of a reader that may go on iterating: it gets
        # them (they count in the result's content) unless it leaves the stream first.
        self._held: collections.deque[Fragment] = collections.deque()
        self._left = False  # the reader left the stream early (a ``break``): see _leave
        self._cut = False  # ... and fragments it was not given were dropped
        self._result: PredictionResult | None = None
        self._error: BaseException | None = None
        self._done = False
        self._busy = False
        self._reader: asyncio.Task[Any] | None = None  # the task reading, while _busy
        self._cancel_sent = False
        self._finished: asyncio.Event | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._response_format = response_format
        self._tool_calls: list[ToolCallRequest] = []
        self._tool_call_failures: list[ToolCallFailedPacket] = []

    def __repr__(self) -> str:
        state = "done" if self._done else "running" if self._channel is not None else "not started"
        return f"<PredictionStream {self._endpoint} on {self._subject!r} ({state})>"

    @property
    def done(self) -> bool:
        """True once the prediction ended (finished, failed or cancelled)."""
        return self._done

    @property
    def content(self) -> str:
        """The text received so far."""
        return "".join(self._parts)

    def result(self) -> PredictionResult:
        """The result of the finished prediction.

        After a cancel it is the server's ``"userStopped"`` result (once it arrived).
        Raises the prediction's error if it failed, and :class:`LMStudioError` if it has
        not finished yet.
        """
        if self._result is not None:
            return self._result
        if self._error is not None:
            raise self._error
        raise LMStudioError(
            f"the prediction of {self._subject!r} has not finished; iterate the stream to "
            "the end first, or, after leaving the loop early without `async with`, "
            "`await stream.cancel()`, which waits for the final result"
        )

    # --- iteration ---------------------------------------------------------------------

    def __aiter__(self) -> _FragmentIterator:
        return _FragmentIterator(self)

    async def __anext__(self) -> Fragment:
        return await self._next()

    async def __aenter__(self) -> PredictionStream:
        await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _open(self) -> ChannelStream:
        channel = self._channel
        if channel is not None:
            return channel
        if self._done:
            raise LMStudioError(f"the prediction of {self._subject!r} was cancelled")
        loop = self._loop = asyncio.get_running_loop()
        self._finished = asyncio.Event()
        if self._timeouts.total is not None:
            self._deadline = loop.time() + self._timeouts.total
        try:
            channel = await self._open_channel()
        except UnsupportedEndpointError:
            if not self._fall_back():
                raise
            channel = await self._open_channel()
        self._channel = channel
        return channel

    async def _open_channel(self) -> ChannelStream:
        sock = self._client._transport.socket(self._namespace)
        timeouts = self._timeouts
        return await sock.open_channel(
            self._endpoint, self._creation, self._deadline, timeouts.total, timeouts.connect
        )

    def _fall_back(self) -> bool:
        """For an LM Studio without the ``completeRawText`` channel (older than mid-2026):
        complete through ``predict`` instead, as lmstudio-python does. False if this stream
        has no other way."""
        if self._endpoint != "completeRawText":
            return False
        log.info("this LM Studio has no completeRawText channel: completing through predict")
        self._endpoint, self._creation = "predict", complete_via_predict(self._creation)
        return True

    async def _next(self, *, hold: bool = False) -> Fragment:
        """The next fragment, given to the caller (``hold``: kept for the reader instead,
        when cancel() reads to the end on its own)."""
        if self._left:  # the loop was left: a stream left early yields nothing more
            self._leave()
            raise StopAsyncIteration
        if self._held:
            return await self._deliver(self._held.popleft())
        if self._done:
            raise StopAsyncIteration
        if self._busy:  # another task is reading (e.g. draining in cancel()): wait for the end
            assert self._finished is not None
            await self._finished.wait()
            if self._held and not self._left:
                return await self._deliver(self._held.popleft())
            if self._result is None and self._error is not None and not self._left:
                raise self._error  # e.g. a deadline expired while cancel() read
            raise StopAsyncIteration
        self._busy = True
        self._reader = asyncio.current_task()
        try:
            channel = self._channel or await self._open()
            if self._done:  # cancel() ran while the channel was opening: stop it there
                self._abort(self._error or LMStudioError(f"{self._what} was cancelled"))
                raise StopAsyncIteration
            timeouts, deadline, what = self._timeouts, self._deadline, self._what
            while True:
                try:
                    packet = await channel.next_packet(
                        PREDICTION_PACKET_DECODER, timeouts.idle, deadline, timeouts.total, what
                    )
                except UnsupportedEndpointError:
                    # The server's answer to the channel's creation: nothing was sent on it.
                    if not self._fall_back():
                        raise
                    channel = self._channel = await self._open_channel()
                    continue
                kind = type(packet)
                if kind is FragmentPacket:
                    fragment: Fragment = packet.fragment  # type: ignore[union-attr]
                    if hold:
                        if self._left:  # nobody is to get it
                            self._cut = True
                        else:
                            self._held.append(fragment)
                        continue
                    return await self._deliver(fragment)
                if kind is PredictionSuccess:
                    channel.release()  # the prediction is over; its channelClose adds nothing
                    self._succeed(packet)  # type: ignore[arg-type]
                    if self._result is None and self._error is not None:
                        raise self._error  # ModelUnloadedError: the model went away
                    raise StopAsyncIteration
                if kind is PromptProcessingProgress and self._on_prompt_progress is not None:
                    value = min(max(float(packet.progress), 0.0), 1.0)  # type: ignore[union-attr]
                    await _invoke(self._on_prompt_progress, value)
                elif kind is ToolCallEndPacket and not self._cancel_sent:
                    self._tool_calls.append(packet.request())  # type: ignore[union-attr]
                elif kind is ToolCallFailedPacket and not self._cancel_sent:
                    log.warning(
                        "%s of %r: LM Studio could not parse a tool call: %s",
                        self._operation,
                        self._subject,
                        packet.error,  # type: ignore[union-attr]
                    )
                    self._tool_call_failures.append(packet)  # type: ignore[arg-type]
        except (StopAsyncIteration, ModelUnloadedError, StructuredOutputError):
            raise
        except RemoteError as exc:
            error = self._client._server_error(
                exc, self._operation, self._subject, self._namespace
            )
            self._end(error)
            raise error from None
        except BaseException as exc:
            # Cancelled, timed out, a callback failed, the connection died.
            self._abort(exc)
            raise
        finally:
            self._busy = False
            self._reader = None

    async def _deliver(self, fragment: Fragment) -> Fragment:
        self._parts.append(fragment.content)
        if self._on_fragment is not None:
            await _invoke(self._on_fragment, fragment)
        return fragment

    def _leave(self) -> None:
        """The reader left the stream early (in the loop thread): what it was not given is
        not part of the result, and the prediction is cancelled if it still runs."""
        self._left = True
        if self._held:
            self._cut = True
            self._held.clear()
        if self._result is not None:
            self._result = self._result._with_content("".join(self._parts))
        self._abandon()

    async def _run(self) -> PredictionResult:
        while True:
            try:
                await self._next()
            except StopAsyncIteration:
                return self.result()

    # --- ending -------------------------------------------------------------------------

    def _succeed(self, packet: PredictionSuccess) -> None:
        text = "".join(self._parts) + "".join(f.content for f in self._held)
        result = result_from_success(text, packet, self._tool_calls)
        if self._cut:  # its reader left before the end of the reply (even if the model
            result = result._cut_to(text)  # had finished it): never "eosFound"
        if result.stop_reason == "modelUnloaded" and not self._cancel_sent:
            # Cut short because the instance went away (unloaded by another client, a TTL,
            # a JIT auto-evict): an error carrying the partial result, never a silent success.
            self._end(
                ModelUnloadedError(subject=self._subject, result=result, operation=self._operation)
            )
            return
        if self._response_format is not None and not self._cancel_sent:
            try:
                result = _parse_structured(result, self._response_format)
            except StructuredOutputError as exc:
                self._end(exc)
                return
        self._result = result
        self._end(None)

    def _end(self, error: BaseException | None) -> None:
        if error is not None and self._error is None and self._result is None:
            self._error = error
        self._done = True
        if self._finished is not None:
            self._finished.set()

    def _blame(self, error: BaseException) -> None:
        """The error the stream ends with when something outside stops it (the sync stream,
        before it cancels its reading task), unless it already has an error or a result."""
        if self._error is None and self._result is None:
            self._error = error

    def _abort(self, exc: BaseException) -> None:
        """Stop the prediction on the server; a reaper collects its final result."""
        if self._error is None:
            self._error = exc
        self._done = True
        self._held.clear()  # it ends with an error: nothing more for the reader
        if self._finished is not None:  # a reader waiting in another task sees the error now
            self._finished.set()
        channel = self._channel
        if channel is None or channel.finished:
            self._end(None)
            return
        if not self._cancel_sent:
            self._cancel_sent = True
            channel.send({"type": "cancel"})
        if self._reaper is None:
            # The rest is read within the stream's idle deadline, so that leaving a stream
            # on a silent server does not wait for the keepalive (or SETTLE_SECONDS); once
            # a deadline has expired, within _TIMED_OUT_SETTLE_SECONDS at most.
            idle = self._timeouts.idle
            if isinstance(exc, LMStudioTimeoutError):
                idle = min(idle or _TIMED_OUT_SETTLE_SECONDS, _TIMED_OUT_SETTLE_SECONDS)
            self._reaper = self._client._spawn(
                self._reap(channel, idle), f"lmstudio-reap-{self._subject}"
            )

    async def _reap(self, channel: ChannelStream, idle: float | None) -> None:
        try:
            terminal = (PredictionSuccess,)
            packet = await channel.settle(
                PREDICTION_PACKET_DECODER, terminal, idle=idle, skipped=self._skipped
            )
            if packet is not None:
                result = result_from_success("".join(self._parts), packet)
                self._result = result._cut_to(result.content) if self._cut else result
        finally:
            self._end(None)

    def _skipped(self, packet: object) -> None:
        """A packet the reaper read after the cancel: a fragment there is one the stream's
        reader never got, if it had left."""
        if self._left and type(packet) is FragmentPacket:
            self._cut = True

    def _abandon(self) -> None:
        """The iteration was dropped mid-way (``break``): cancel, in the loop thread."""
        if not self._done and self._channel is not None and not self._busy:
            self._abort(
                LMStudioError(f"the prediction of {self._subject!r} was stopped by its caller")
            )

    def _leave_threadsafe(self) -> None:
        """:meth:`_leave`, from wherever the reader's iterator (or the stream) was dropped
        (at once, for the next step of this stream to see, and the rest in the loop
        thread)."""
        self._left = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed meanwhile
            loop.call_soon_threadsafe(self._leave)

    def __del__(self) -> None:
        # getattr: __init__ may have raised (bad arguments) before setting these.
        if not getattr(self, "_done", True) and getattr(self, "_channel", None) is not None:
            self._leave_threadsafe()  # dropped unfinished: as a loop left early

    async def cancel(self) -> None:
        """Stop the prediction: sends ``cancel`` and waits for the server's final result
        (stop reason ``"userStopped"``), available from :meth:`result`. The model stays
        loaded. A no-op once the prediction has ended. Called from the reading task's own
        ``on_fragment`` callback, it only sends the cancel: the loop then ends normally."""
        if self._channel is None:
            if not self._done:
                self._end(LMStudioError(f"the prediction of {self._subject!r} was cancelled"))
            return
        if self._done and self._reaper is None:
            return
        channel = self._channel
        if not self._cancel_sent and not channel.finished:
            self._cancel_sent = True
            channel.send({"type": "cancel"})
        if self._reaper is not None:
            await asyncio.shield(self._reaper)
            return
        if self._busy:
            if self._reader is asyncio.current_task():
                return  # from the reader's own callback: it sees the end when it reads on
            assert self._finished is not None
            await self._finished.wait()  # another task is reading: it sees the end
            if self._reaper is not None:
                await asyncio.shield(self._reaper)
            return
        # Read to the end here; a reader that goes on iterating gets what arrived.
        with contextlib.suppress(StopAsyncIteration):
            while True:
                await self._next(hold=True)
        if self._reaper is not None:  # the reader had left: the reading ended in _abort
            await asyncio.shield(self._reaper)

    async def aclose(self) -> None:
        """Cancel the prediction if it is still running (see :meth:`cancel`), and wait
        for its final result: also when a loop left early already cancelled it."""
        await self.cancel()

    async def _settled(self) -> PredictionResult:
        """Wait for the end (including a reaper's), then :meth:`result`."""
        if self._reaper is not None:
            await asyncio.shield(self._reaper)
        elif self._finished is not None and not self._done:
            await self._finished.wait()
        return self.result()


class _FragmentIterator:
    """What ``async for`` holds: dropping it before the end (``break``) cancels."""

    __slots__ = ("_stream",)

    def __init__(self, stream: PredictionStream) -> None:
        self._stream = stream

    def __aiter__(self) -> _FragmentIterator:
        return self

    async def __anext__(self) -> Fragment:
        return await self._stream._next()

    def __del__(self) -> None:
        stream = self._stream
        if stream._channel is not None and (not stream._done or stream._held):
            stream._leave_threadsafe()


# --- handle methods ---------------------------------------------------------------------


class _InferenceMethods(_ModelHandle[_InstanceT, _ConfigT]):
    """Tokenizer methods shared by LLM and embedding handles."""

    @overload
    async def tokenize(
        self, text: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[int]: ...
    @overload
    async def tokenize(
        self, text: list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[list[int]]: ...
    async def tokenize(
        self, text: str | Sequence[str], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[int] | list[list[int]]:
        """Token ids of ``text``; for a list of strings, one list per string (requests
        run concurrently, at most 32 at once; ``timeout``'s idle deadline bounds each one's
        wait, its total the whole list's)."""
        # (named first: returned directly, mypy would take _R from the return's union)
        done = await self._one_or_each(text, "tokenize", self._tokenize_one, timeout)
        return done

    async def _one_or_each(
        self,
        text: str | Sequence[str],
        what: str,
        one: Callable[[str, TimeoutParam, float | None], Awaitable[_R]],
        timeout: TimeoutParam,
    ) -> _R | list[_R]:
        """``one`` on ``text``, or on each string of a list of them (see :func:`_each`),
        whose total deadline then bounds the whole list."""
        texts = _check_texts(text, what)
        if texts is None:
            return await one(text, timeout, None)  # type: ignore[arg-type]
        timeouts, deadline = self._namespace._client._deadlines_for(timeout)
        return await _each(lambda t: one(t, timeouts, deadline), texts)

    async def _tokenize_one(
        self, text: str, timeout: TimeoutParam, deadline: float | None = None
    ) -> list[int]:
        param = tokenize_param(self._specifier(), text)
        raw = await self._call("tokenize", param, timeout, deadline)
        return decode_reply(_TOKENS_DECODER, raw, "tokenize result").tokens

    async def count_tokens(self, text: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> int:
        """How many tokens ``text`` is for this model."""
        if not isinstance(text, str):
            raise LMStudioValueError(f"count_tokens takes a string, got {type(text).__name__}")
        raw = await self._call("countTokens", tokenize_param(self._specifier(), text), timeout)
        return decode_reply(_COUNT_DECODER, raw, "token count").token_count

    async def _call(
        self, endpoint: str, parameter: Any, timeout: TimeoutParam, deadline: float | None = None
    ) -> msgspec.Raw:
        ns = self._namespace
        raw = await ns._client._rpc(
            ns._name,
            endpoint,
            parameter,
            timeout=timeout,
            deadline=deadline,
            operation=f"{endpoint} on {self.identifier!r}",
            subject=self.identifier,
        )
        if raw is None:
            raise ProtocolError(f"LM Studio sent no result for {endpoint} on {self.identifier!r}")
        return raw


class LlmMethods(_InferenceMethods[LlmInstanceInfo, LlmLoadConfig]):
    """Inference methods of :class:`~lmstudio_async.LLM`."""

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
    ) -> PredictionStream:
        """Start a chat response, streamed: ``async for fragment in llm.respond_stream(...)``.

        ``prompt_or_chat`` is a string (one user message), a :class:`Chat`, a list of
        ``{"role", "content"}`` dicts / :class:`ChatMessage`, or a history dict
        ``{"messages": [...]}``. ``config`` is a :class:`PredictionConfig` or a dict of its
        fields, validated here, before anything is sent. ``tools``, ``response_format`` and
        ``preset`` as for :meth:`respond`. Not a coroutine: the request is sent on the
        first iteration (or ``async with``). See :class:`PredictionStream`.
        """
        chat = coerce_chat(prompt_or_chat)
        toolset = None if tools is None else parse_tools(tools)
        fmt = None if response_format is None else make_response_format(response_format)
        self._check_vision(chat)
        creation = predict_creation(
            self._specifier(), chat, config, tools=toolset, response_format=fmt, preset=preset
        )
        if fmt is None:  # a json_schema in the config: the reply is checked to be JSON
            schema = requested_json_schema(creation)
            fmt = None if schema is None else make_response_format(schema)
        return PredictionStream(
            self,
            "predict",
            creation,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeouts=self._namespace._client._timeouts_for(timeout),
            operation="Chat response",
            response_format=fmt,
        )

    def _check_vision(self, chat: Chat) -> None:
        images = chat.images
        if images and not self._info.vision:
            raise VisionNotSupportedError(
                f"{self.identifier!r} ({self.model_key}) has no vision support: it cannot read "
                f"the {len(images)} image(s) in this chat; load a vision model",
                subject=self.identifier,
                operation="Chat response",
            )

    @overload
    async def respond(
        self,
        prompt_or_chat: ChatInput,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        tools: None = None,
        response_format: type[_R],
        preset: str | None = None,
    ) -> StructuredResult[_R]: ...
    @overload
    async def respond(
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
    async def respond(
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
        """Chat response: the full :class:`PredictionResult` (``.content``, ``.stats``…).

        ``on_fragment(fragment)`` sees each :class:`Fragment` as it arrives and
        ``on_prompt_progress(fraction)`` the prompt processing (plain or coroutine
        functions). ``timeout`` bounds the wait between two packets (idle) and, with a
        :class:`Timeouts` ``total``, the whole prediction. Cancelling the call or a
        deadline cancels the prediction on the server.

        ``tools`` (functions or :class:`ToolFunctionDef`) are offered to the model; the
        calls it asks for come back, not run, as ``result.tool_calls`` (:meth:`act` runs
        them). ``response_format`` (a msgspec Struct, dataclass, TypedDict or pydantic model
        class, or a JSON schema dict) asks for structured output: ``result.parsed`` is then
        an instance of that type (a :class:`StructuredResult`, typed for type checkers
        too), and a reply that does not match raises
        :class:`StructuredOutputError`. ``preset`` names an LM Studio preset
        (:class:`PresetNotFoundError` if there is none). A chat with images needs a vision
        model (:class:`VisionNotSupportedError`).
        """
        stream = self.respond_stream(
            prompt_or_chat,
            config=config,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeout=timeout,
            tools=tools,
            response_format=response_format,
            preset=preset,
        )
        return await stream._run()

    def complete_stream(
        self,
        prompt: str,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        preset: str | None = None,
    ) -> PredictionStream:
        """Start a raw text completion of ``prompt`` (no chat template), streamed.

        Uses the ``completeRawText`` channel; on an LM Studio without it (older than
        mid-2026), ``predict`` with a raw prompt template, as lmstudio-python does.
        Otherwise like :meth:`respond_stream`.
        """
        creation = complete_creation(self._specifier(), prompt, config, preset=preset)
        schema = requested_json_schema(creation)  # checked to be JSON, as in respond
        return PredictionStream(
            self,
            "completeRawText",
            creation,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeouts=self._namespace._client._timeouts_for(timeout),
            operation="Completion",
            response_format=None if schema is None else make_response_format(schema),
        )

    async def complete(
        self,
        prompt: str,
        *,
        config: PredictionConfig | Mapping[str, Any] | None = None,
        on_fragment: FragmentCallback | None = None,
        on_prompt_progress: PromptProgressCallback | None = None,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
        preset: str | None = None,
    ) -> PredictionResult:
        """Raw text completion of ``prompt`` (no chat template); like :meth:`respond`."""
        stream = self.complete_stream(
            prompt,
            config=config,
            on_fragment=on_fragment,
            on_prompt_progress=on_prompt_progress,
            timeout=timeout,
            preset=preset,
        )
        return await stream._run()

    async def apply_prompt_template(
        self, chat: ChatInput, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> str:
        """The prompt text the model's chat template makes of ``chat``."""
        param = apply_template_param(self._specifier(), coerce_chat(chat))
        raw = await self._call("applyPromptTemplate", param, timeout)
        return decode_reply(_FORMATTED_DECODER, raw, "formatted prompt").formatted


class EmbeddingMethods(_InferenceMethods[EmbeddingModelInstanceInfo, EmbeddingLoadConfig]):
    """Inference methods of :class:`~lmstudio_async.EmbeddingModel`."""

    @overload
    async def embed(
        self, text: str, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[float]: ...
    @overload
    async def embed(
        self, text: list[str] | tuple[str, ...], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[list[float]]: ...
    async def embed(
        self, text: str | Sequence[str], *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[float] | list[list[float]]:
        """The embedding vector of ``text``; for a list of strings, one vector per string,
        in order (the requests run concurrently on the one socket, at most 32 at once;
        ``timeout``'s idle deadline bounds each one's wait, its total the whole list's)."""
        # (named first: returned directly, mypy would take _R from the return's union)
        done = await self._one_or_each(text, "embed", self._embed_one, timeout)
        return done

    async def _embed_one(
        self, text: str, timeout: TimeoutParam, deadline: float | None = None
    ) -> list[float]:
        param = embed_param(self._specifier(), text)
        raw = await self._call("embedString", param, timeout, deadline)
        return decode_reply(_EMBEDDING_DECODER, raw, "embedding").embedding
