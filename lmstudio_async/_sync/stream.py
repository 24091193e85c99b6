"""The sync client's prediction stream, fed by the loop thread through a queue."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from .._async.inference import (
    FragmentCallback,
    PredictionStream,
    PromptProgressCallback,
    stopped_callback,
)
from .._protocol.results import Fragment, PredictionResult
from ..errors import ClientClosedError, LMStudioError, LoopThreadError
from .loop import _CANCEL_GRACE_SECONDS, _POLL_SECONDS, CallerTask, _Lease, _runs_in_caller

__all__ = ["SyncPredictionStream"]


class _End:
    __slots__ = ("error",)

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class SyncPredictionStream:
    """The sync client's prediction stream: ``for fragment in stream`` yields :class:`Fragment`.

    The event-loop thread reads the channel and pushes fragments into a thread-safe
    queue that this iterator drains, so there is no blocking thread hop per fragment.
    Leaving the ``for`` early (``break``, an exception, Ctrl-C), :meth:`close`,
    :meth:`cancel` or leaving a ``with`` block sends the protocol ``cancel``; the model
    stays loaded. A plain ``on_fragment`` / ``on_prompt_progress`` function runs in the
    iterating thread.
    """

    def __init__(
        self,
        lease: _Lease,
        factory: Callable[..., PredictionStream],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._lease = lease
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        kwargs = dict(kwargs)
        self._on_fragment: FragmentCallback | None = None
        self._on_progress: PromptProgressCallback | None = None
        fragment_cb = kwargs.get("on_fragment")
        if _runs_in_caller(fragment_cb):
            self._on_fragment, kwargs["on_fragment"] = fragment_cb, None
        progress_cb = kwargs.get("on_prompt_progress")
        if _runs_in_caller(progress_cb):
            self._on_progress, kwargs["on_prompt_progress"] = progress_cb, self._queue.put
        self._stream = factory(*args, **kwargs)  # validates here, before any hop
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._ended = False
        self._yielded = 0  # fragments given to the reader (the pump reads ahead of it)
        # The reader left before the end: it gets nothing more, and the result holds what
        # it got.
        self._left = False
        self._watch: CallerTask | None = None  # Ctrl-C under asyncio.run(): see CallerTask
        self._pumping = False  # the pump task has begun (in the loop thread)

    def __repr__(self) -> str:
        return repr(self._stream).replace("<", "<Sync", 1)

    @property
    def done(self) -> bool:
        """True once the prediction ended (finished, failed or cancelled)."""
        return self._ended or self._stream.done

    @property
    def content(self) -> str:
        """The text of the fragments iterated so far."""
        return "".join(self._stream._parts[: self._yielded])  # the pump appends in order

    # --- running ------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        if self._lease.closed:
            raise ClientClosedError(host=self._lease.host)
        runner = self._lease.runner
        if threading.current_thread() is runner.thread:
            raise LoopThreadError(
                "a sync lmstudio_async call was made from the client's own event-loop thread; "
                "use the AsyncClient there"
            )
        if runner.inherited:
            self._ended = True
            raise runner._dead()
        self._started = True
        self._watch = CallerTask.find()
        try:
            runner.loop.call_soon_threadsafe(self._spawn_pump)
        except RuntimeError:
            self._ended = True
            raise LoopThreadError(
                "the sync client's event-loop thread is no longer running; create a new Client"
            ) from None

    def _spawn_pump(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pump())

    async def _pump(self) -> None:
        self._pumping = True
        put = self._queue.put
        stream = self._stream
        try:
            while True:
                put(await stream._next())
        except StopAsyncIteration:
            put(_End(None))
        except asyncio.CancelledError as exc:
            put(_End(exc))
            raise
        except BaseException as exc:  # a coroutine callback's SystemExit too: for the reader
            put(_End(exc))  # (raised here, it would stop the shared loop thread)

    def _get(self) -> Any:
        runner = self._lease.runner
        watch = self._watch
        if watch is not None and not watch.here():
            watch = None  # read by another task or thread than the one it started in
        while True:
            if watch is not None:
                watch.check()
            try:
                return self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not runner.thread.is_alive():
                    self._ended = True
                    raise LoopThreadError(
                        "the sync client's event-loop thread is no longer running"
                    ) from None

    def __iter__(self) -> Iterator[Fragment]:
        return _SyncFragmentIterator(self)

    def __next__(self) -> Fragment:
        return self._next()

    def _next(self) -> Fragment:
        if self._ended or self._left:
            raise StopIteration  # as in async: a stream left early yields nothing more
        try:
            self._start()  # (a Ctrl-C as the pump is handed over cancels it too)
            while True:
                item = self._get()
                kind = type(item)
                if kind is Fragment:
                    if self._on_fragment is not None:
                        _call_back(self._on_fragment, item)
                    self._yielded += 1
                    return item  # type: ignore[no-any-return]
                if kind is float:
                    if self._on_progress is not None:
                        _call_back(self._on_progress, item)
                    continue
                self._ended = True
                error = item.error
                if error is None:
                    raise StopIteration
                if isinstance(error, asyncio.CancelledError):  # not expected: see _request_cancel
                    raise self._stopped()
                raise error
        except StopIteration:
            raise
        except BaseException as exc:
            # Ctrl-C, or a callback raised: stop the prediction on the server.
            self._request_cancel(exc if isinstance(exc, Exception) else None)
            self._wait_end()
            raise

    def _stopped(self) -> LMStudioError:
        subject = self._stream._subject
        return LMStudioError(f"the prediction of {subject!r} was stopped by its caller")

    def _request_cancel(self, reason: Exception | None = None) -> None:
        """The reader left: stop the prediction from the loop thread (non-blocking; any
        thread). What the pump read ahead and the reader never got is not part of the
        result (see :meth:`result`), as with an async stream left early.

        The pump task is cancelled; its read then stops the prediction as the async stream
        does (``cancel`` is sent, a reaper collects the final result). The stream's error is
        set first, to ``reason`` (the callback's exception) or "stopped by its caller", as
        async sets it when its caller leaves: otherwise it would be the pump's
        ``CancelledError``, which ``result()`` would raise as if its own hop was
        cancelled."""
        self._left = True
        if not self._started or self._ended or self._lease.runner.inherited:
            return

        def cancel() -> None:
            task, stream = self._task, self._stream
            if task is None or task.done():
                # Never started, or over: its end marker may already have been taken by
                # the reader that is leaving (a Ctrl-C right then), so _wait_end gets one
                # from here (a second one is never read: a stream left reads no more).
                self._queue.put(_End(None))
                return
            stream._blame(reason or self._stopped())
            task.cancel()  # the pump's read ends with the stream's _abort (it keeps that error)
            if not self._pumping:
                # Cancelled before its first step (a Ctrl-C as it was handed over), the
                # pump never runs, nothing was sent: the reader gets the end from here.
                self._queue.put(_End(None))

        with contextlib.suppress(RuntimeError):
            self._lease.runner.loop.call_soon_threadsafe(cancel)

    def _wait_end(self) -> None:
        if not self._started or self._ended:
            return
        self._ended = True
        with contextlib.suppress(queue.Empty):
            while not isinstance(self._queue.get(timeout=_CANCEL_GRACE_SECONDS), _End):
                pass

    def __enter__(self) -> SyncPredictionStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Cancel the prediction if it is still running: sends ``cancel`` and waits for the
        server to end it (see :meth:`cancel`). Iterating afterwards yields nothing more."""
        if self._started and not self._ended:
            self._left = True
            self._stop()
        self._ended = True

    def cancel(self) -> None:
        """Stop the prediction: sends ``cancel`` and waits for the server's final result
        (stop reason ``"userStopped"``), then available from :meth:`result`. The model
        stays loaded. Any thread may call it: a thread iterating the stream meanwhile
        gets the fragments that arrived before the cancel, then the loop ends normally."""
        if not self._started:
            self._ended = True
            self._lease.call(self._stream.cancel)
            return
        if not self._ended:
            self._stop()

    def _stop(self) -> None:
        # The async stream's own cancel, in the loop thread: it sends ``cancel`` while the
        # pump goes on reading, so the pump queues everything up to the end, and a reader
        # in another thread drains that queue rather than racing this thread for it.
        with contextlib.suppress(LMStudioError):
            self._lease.call(self._stream.cancel)

    def result(self) -> PredictionResult:
        """The result of the finished prediction (see :meth:`PredictionStream.result`).

        After a ``break`` or :meth:`cancel`, waits for the server's ``"userStopped"`` result.
        After a ``break`` (or Ctrl-C, or :meth:`close`), its content is the text the loop
        was given, as with an async stream.
        """
        result = self._final()
        return result._with_content(self.content) if self._left else result

    def _final(self) -> PredictionResult:
        if self._stream._result is not None:
            return self._stream._result
        if not self._started:
            return self._stream.result()
        if not self._ended:
            self.close()
        return self._lease.call(self._stream._settled)

    def _run(self) -> PredictionResult:
        for _ in self:
            pass
        return self.result()

    def __del__(self) -> None:
        if getattr(self, "_started", False) and not self._ended:
            self._request_cancel()


class _SyncFragmentIterator:
    """What ``for`` holds: dropping it before the end (``break``) cancels."""

    __slots__ = ("_stream",)

    def __init__(self, stream: SyncPredictionStream) -> None:
        self._stream = stream

    def __iter__(self) -> _SyncFragmentIterator:
        return self

    def __next__(self) -> Fragment:
        return self._stream._next()

    def __del__(self) -> None:
        stream = self._stream
        if stream._started and not stream._ended:
            stream._request_cancel()  # dropped before the end (``break``)


def _call_back(callback: Callable[[Any], Any], value: Any) -> None:
    """Run a plain callback in the caller's thread (see ``stopped_callback``)."""
    try:
        callback(value)
    except (StopIteration, StopAsyncIteration) as exc:
        raise stopped_callback(callback, exc) from exc
