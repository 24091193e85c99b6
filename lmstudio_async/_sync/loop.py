"""The shared event-loop thread of the sync facade, and a client's lease of it.

Every sync client of a process leases one :class:`_LoopThread` (started by the first
lease, stopped when the last one is released); :meth:`_Lease.call` is the one thread hop
each sync call makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
import os
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeGuard, TypeVar, cast

from .._async.notices import RELAY, warn_outside
from .._async.threads import Escaped, future_safe
from ..errors import ClientClosedError, LMStudioError, LoopThreadError

if TYPE_CHECKING:
    from .._async.client import AsyncClient, ProgressCallback

_T = TypeVar("_T")

log: Final = logging.getLogger("lmstudio_async")

_POLL_SECONDS: Final = 0.1
"""Longest uninterrupted wait of a sync caller: bounds Ctrl-C latency where a blocked
wait is not interruptible (Windows, ``_thread.interrupt_main``) and loop-thread death detection."""

_CANCEL_GRACE_SECONDS: Final = 5.0
"""After Ctrl-C, how long the caller waits for the cancelled coroutine to wind down
(which sends the protocol ``cancel``, or unloads what a load finished anyway) before
re-raising."""

_STOP_JOIN_SECONDS: Final = 10.0

_CLOSE_WAIT_SECONDS: Final = _STOP_JOIN_SECONDS + _CANCEL_GRACE_SECONDS
"""How long a ``close()`` waits for a concurrent ``close()`` of the same client to finish."""


def _is_async_callable(value: object) -> bool:
    """True for a callback the loop thread must run and await: a coroutine function, or an
    object whose ``__call__`` is one (the async client awaits what a callback returns)."""
    while isinstance(value, functools.partial):
        value = value.func
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(
        getattr(value, "__call__", None)  # noqa: B004 (the method itself is what is checked)
    )


def _runs_in_caller(value: object) -> TypeGuard[Callable[..., Any]]:
    """True for a callback the sync facade runs in the calling thread (a plain function)."""
    return callable(value) and not _is_async_callable(value)


class _Settled:
    """Put in a call's inbox once a call given up by its caller has wound down."""

    __slots__ = ()


_SETTLED: Final = _Settled()

_background: Final[set[asyncio.Task[Any]]] = set()


def spawn(coro: Awaitable[Any]) -> asyncio.Task[Any]:
    """In the loop thread: run ``coro`` as a task of its own, referenced until it ends
    (the loop thread cancels it if it stops first)."""
    task = asyncio.ensure_future(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


# --- the shared loop thread ----------------------------------------------------------------


class _LoopThread:
    """An asyncio loop in a daemon thread, shared by every sync client and leased by them.

    :meth:`acquire` starts it for the first lease; :meth:`release` of the last lease
    stops the loop and joins the thread (anyio's ``BlockingPortalProvider`` pattern,
    with a cheaper hop than ``BlockingPortal.call``; see ``benchmarks/hop_cost.py``).

    After ``os.fork()`` the child has no loop thread: every :class:`_LoopThread` it
    inherited is :attr:`inherited`, its calls fail at once with :class:`LoopThreadError`
    and its clients close without touching the loop (whose sockets are the parent's).
    """

    _lock: ClassVar[threading.Lock] = threading.Lock()
    _current: ClassVar[_LoopThread | None] = None
    _forks: ClassVar[int] = 0  # how many times this process is a fork child

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.leases = 0
        self.clients: weakref.WeakSet[AsyncClient] = weakref.WeakSet()  # touched in the loop only
        self._fork = _LoopThread._forks
        self.thread = threading.Thread(target=self._main, name="lmstudio-async-loop", daemon=True)
        self.thread.start()

    def __repr__(self) -> str:
        state = "inherited" if self.inherited else "running" if self.thread.is_alive() else "dead"
        return f"<_LoopThread {state} leases={self.leases}>"

    @property
    def inherited(self) -> bool:
        """True in a process forked after this loop thread started: the thread is not here."""
        return self._fork != _LoopThread._forks

    @classmethod
    def acquire(cls) -> _LoopThread:
        """Take a lease on the shared loop thread, starting it if needed."""
        with cls._lock:
            current = cls._current
            if current is None or not current.thread.is_alive():
                current = cls._current = cls()
            current.leases += 1
            return current

    def release(self) -> None:
        """Return a lease; the last one stops the loop and joins its thread."""
        if self.inherited:
            return  # the parent's loop: leave it alone
        with self._lock:
            self.leases -= 1
            if self.leases > 0:
                return
            if type(self)._current is self:
                type(self)._current = None
        with contextlib.suppress(RuntimeError):  # loop already closed: thread is gone
            self.loop.call_soon_threadsafe(self.loop.stop)
        if threading.current_thread() is not self.thread:
            self.thread.join(_STOP_JOIN_SECONDS)

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                # The loop stopped under open clients: fail their calls, then close them.
                self._cancel_all()
                for client in list(self.clients):
                    with contextlib.suppress(Exception):
                        loop.run_until_complete(client.aclose())
                self._cancel_all()
                loop.set_exception_handler(_quiet_closed_client_errors)
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
            finally:
                asyncio.set_event_loop(None)
                loop.close()

    def _cancel_all(self) -> None:
        for _ in range(3):  # cancelled tasks may spawn clean-up tasks (e.g. a reaper)
            tasks = asyncio.all_tasks(self.loop)
            if not tasks:
                return
            for task in tasks:
                task.cancel()
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))

    def close_later(self, client: AsyncClient) -> None:
        """In the loop thread: close ``client`` in the background, then return a lease.

        For a close that cannot wait: a ``close()`` made from the loop thread itself,
        or a client garbage-collected unclosed."""

        async def close() -> None:
            try:
                await client.aclose()
            finally:
                self.release()

        spawn(close())

    def call(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        in_caller: tuple[str, ...] = (),
        orphan: Callable[[_T], Awaitable[object]] | None = None,
    ) -> _T:
        """Run ``await fn(*args, **kwargs)`` in the loop thread: exactly one hop.

        A plain ``on_progress`` callback in ``kwargs`` runs in *this* thread: the loop
        thread only enqueues each fraction and this thread calls it while it waits.
        The plain functions among the ``in_caller`` keyword arguments run in this thread
        too, and the coroutine waits for each call to return (its result or exception goes
        back to the coroutine). Ctrl-C (or an exception from the progress callback) cancels
        the coroutine in the loop thread, waits briefly for it to wind down, and re-raises
        here. If the coroutine returned a result all the same (it had finished before the
        cancel reached it), ``orphan(result)`` runs in the loop thread, and the wait
        covers it too: e.g. the unload of an instance a load finished for a caller that
        is gone.
        """
        if threading.current_thread() is self.thread:
            raise LoopThreadError(
                "a sync lmstudio_async call was made from the client's own event-loop thread "
                "(e.g. from a coroutine progress callback); use the AsyncClient there"
            )
        if self.inherited:
            raise self._dead()
        kwargs = dict(kwargs or {})
        inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        callback = kwargs.get("on_progress")
        if _runs_in_caller(callback):
            kwargs["on_progress"] = inbox.put
        else:
            callback = None
        for name in in_caller:
            value = kwargs.get(name)
            if _runs_in_caller(value):
                kwargs[name] = _relay(value, inbox, self.loop)
        # The call's coroutine, taken by start() in the loop thread; still here if the
        # caller gave up before start() ran (a Ctrl-C as it is handed over), and then
        # closed, never run.
        pending: list[Awaitable[_T]] = []
        tasks: list[asyncio.Task[_T]] = []

        def start() -> None:
            if not pending:
                return
            # The call's warnings are issued in this (the caller's) thread: see notices.py.
            context = contextvars.copy_context()
            context.run(RELAY.set, lambda *warning: inbox.put(_Warning(*warning)))
            call = pending.pop()
            task = self.loop.create_task(_contained(call), context=context)
            tasks.append(task)
            task.add_done_callback(inbox.put)
            # Cancelled before its first step (a Ctrl-C right after the hand-over), the
            # task never awaits the call: closed, it is not reported as never awaited.
            task.add_done_callback(lambda _: _close(call))

        try:
            pending.append(fn(*args, **kwargs))  # argument errors surface here
            self._hand_over(start)
            task = self._wait(inbox, callback)
        except BaseException:
            # Ctrl-C (also while the call was being handed over), or the progress callback
            # raised, or the loop thread is gone: cancel the call in the loop.
            self._cancel(tasks, pending, inbox, orphan)
            raise
        if task.cancelled():
            raise LoopThreadError("the sync client's event-loop thread was stopped mid-call")
        try:
            return cast(_T, task.result())
        except Escaped as carried:  # a tool's or callback's SystemExit / KeyboardInterrupt
            error = carried.exception
        raise error

    def _hand_over(self, start: Callable[[], None]) -> None:
        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:
            raise self._dead() from None

    def _wait(self, inbox: queue.SimpleQueue[Any], callback: ProgressCallback | None) -> Any:
        watch = CallerTask.find()
        while True:
            if watch is not None:
                watch.check()
            try:
                item = inbox.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise self._dead() from None
                continue
            if type(item) is _CallerJob:
                item.run()
                continue
            if type(item) is _Warning:
                warn_outside(item.message, item.category)
                continue
            if not isinstance(item, asyncio.Future):
                # A progress value (a load's fraction, a download's DownloadProgress).
                if callback is not None:
                    callback(item)
                continue
            return item

    def _cancel(
        self,
        tasks: list[asyncio.Task[Any]],
        pending: list[Awaitable[Any]],
        inbox: queue.SimpleQueue[Any],
        orphan: Callable[[Any], Awaitable[object]] | None,
    ) -> None:
        """Cancel the call given up by its caller; wait (bounded) until it wound down.
        A call that had not started yet (``pending``) is closed, never run."""

        def settled(task: asyncio.Task[Any]) -> None:
            if orphan is None or task.cancelled() or task.exception() is not None:
                inbox.put(_SETTLED)
                return
            # It finished anyway, e.g. a load whose last progress the caller was handling.
            cleanup = spawn(orphan(task.result()))
            cleanup.add_done_callback(lambda _: inbox.put(_SETTLED))

        def cancel() -> None:
            if pending:  # start() never ran: it was not scheduled, or the loop died
                _close(pending.pop())
            if not tasks:
                inbox.put(_SETTLED)
                return
            tasks[0].cancel()  # a no-op if it is done
            tasks[0].add_done_callback(settled)

        try:
            self.loop.call_soon_threadsafe(cancel)
        except RuntimeError:  # the loop is gone: nothing runs there any more
            if pending:
                _close(pending.pop())
            return
        deadline = time.monotonic() + _CANCEL_GRACE_SECONDS
        while (left := deadline - time.monotonic()) > 0:
            try:
                item = inbox.get(timeout=min(left, _POLL_SECONDS))
            except queue.Empty:
                if not self.thread.is_alive():
                    return
                continue
            if item is _SETTLED:
                return
            if type(item) is _CallerJob:
                item.abandon()

    def _dead(self) -> LoopThreadError:
        if self.inherited:
            return LoopThreadError(
                "this sync lmstudio_async client was created before os.fork(), and its "
                "event-loop thread does not exist in this process; create a new Client here"
            )
        return LoopThreadError(
            "the sync client's event-loop thread is no longer running; create a new Client"
        )


def _quiet_closed_client_errors(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """The loop thread's exception handler while it shuts down.

    An async generator left open then is a ``with client.llm.loaded()`` block whose
    client was closed meanwhile: its clean-up fails with :class:`ClientClosedError`,
    which that block's ``__exit__`` reports to its caller; only other errors are logged
    as asyncio would."""
    if isinstance(context.get("exception"), ClientClosedError):
        log.debug("at loop-thread shutdown: %s", context.get("message"))
        return
    loop.default_exception_handler(context)


class CallerTask:
    """The asyncio task a sync call is made from, when its thread runs an event loop (a
    sync call inside ``asyncio.run()`` or a notebook cell), and how many cancel requests it
    had when the call began.

    That loop is blocked while the call waits, so nothing can cancel its task but code run
    in the waiting thread itself: a signal handler. ``asyncio.run()`` installs one for
    SIGINT that cancels the main task rather than raising ``KeyboardInterrupt``; the wait
    sees that request (within one poll) and raises ``CancelledError``, so the call is
    cancelled on the server and the task ends as cancelled (which ``asyncio.run()`` turns
    into ``KeyboardInterrupt``)."""

    __slots__ = ("base", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.base = task.cancelling()

    @classmethod
    def find(cls) -> CallerTask | None:
        loop = asyncio._get_running_loop()
        task = None if loop is None else asyncio.current_task(loop)
        return None if task is None else cls(task)

    def here(self) -> bool:
        """Whether this thread runs that task now."""
        loop = asyncio._get_running_loop()
        return loop is not None and asyncio.current_task(loop) is self.task

    def check(self) -> None:
        """Raise ``CancelledError`` if the task was asked to cancel since the call began."""
        if self.task.cancelling() > self.base:
            raise asyncio.CancelledError


class _Warning:
    """A warning of the call, for the waiting caller thread to issue (see notices.py)."""

    __slots__ = ("category", "message")

    def __init__(self, message: str, category: type[Warning]) -> None:
        self.message = message
        self.category = category


class _CallerJob:
    """A callback call the loop thread hands to the waiting caller thread."""

    __slots__ = ("args", "function", "future", "loop")

    def __init__(
        self,
        function: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.function = function
        self.args = args
        self.future = future
        self.loop = loop

    def run(self) -> None:
        """Call it here; hand its result (or exception) back to the loop thread. A
        ``KeyboardInterrupt`` / ``SystemExit`` is re-raised here too (the caller cancels)."""
        try:
            result = self.function(*self.args)
        except Exception as exc:
            self._settle(None, future_safe(exc))
        except BaseException:
            self.abandon()
            raise
        else:
            self._settle(result, None)

    def abandon(self) -> None:
        self._settle(None, asyncio.CancelledError())

    def _settle(self, result: Any, error: BaseException | None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is None:
                self.future.set_result(result)
            elif isinstance(error, asyncio.CancelledError):
                self.future.cancel()
            else:
                self.future.set_exception(error)

        with contextlib.suppress(RuntimeError):  # the loop is gone
            self.loop.call_soon_threadsafe(settle)


def _close(call: Awaitable[Any]) -> None:
    """Close a coroutine that will never run (no "never awaited" warning)."""
    if inspect.iscoroutine(call):
        call.close()


async def _contained(call: Awaitable[_T]) -> _T:
    """``await call``, with a ``SystemExit`` / ``KeyboardInterrupt`` it raises (a tool's, a
    coroutine callback's) carried to the caller's thread as :class:`Escaped`: raised bare
    by a task, they would stop the shared loop thread, and every client with it."""
    try:
        return await call
    except (KeyboardInterrupt, SystemExit) as exc:
        raise Escaped(exc) from None


def _relay(
    function: Callable[..., Any], inbox: queue.SimpleQueue[Any], loop: asyncio.AbstractEventLoop
) -> Callable[..., Awaitable[Any]]:
    """A coroutine function that runs ``function`` in the caller's thread and awaits it."""

    async def relay(*args: Any) -> Any:
        future: asyncio.Future[Any] = loop.create_future()
        inbox.put(_CallerJob(function, args, future, loop))
        result = await future
        if inspect.isawaitable(result):  # e.g. a lambda returning a coroutine: as async does
            result = await result
        return result

    return relay


class _Lease:
    """One client's lease on the loop thread; refuses calls once the client is closed.

    :meth:`own` ties it to the client's :class:`AsyncClient`: a lease garbage-collected
    before :meth:`close` (its client, namespaces, handles and streams all dropped) closes
    that client in the loop thread, returns the lease, and warns (``ResourceWarning``).
    """

    __slots__ = (
        "__weakref__",
        "_closer",
        "_closing_done",
        "_finalizer",
        "_lock",
        "closed",
        "host",
        "runner",
    )

    def __init__(self) -> None:
        self.runner = _LoopThread.acquire()
        self.closed = False
        self.host: str | None = None
        self._lock = threading.Lock()
        self._closer: int | None = None  # the thread running close()
        self._closing_done = threading.Event()
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def own(self, client: AsyncClient) -> None:
        """Close ``client`` (without waiting) if this lease is collected unclosed."""
        finalizer = weakref.finalize(self, _unclosed, self.runner, client)
        finalizer.atexit = False  # at exit the daemon loop thread just ends, as before
        self._finalizer = finalizer

    def call(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        in_caller: tuple[str, ...] = (),
        orphan: Callable[[_T], Awaitable[object]] | None = None,
    ) -> _T:
        if self.closed:
            raise ClientClosedError(host=self.host)
        try:
            return self.runner.call(fn, args, kwargs, in_caller, orphan)
        except LoopThreadError as exc:
            raise self._closed_meanwhile(exc) from None

    def finish(
        self,
        fn: Callable[..., Awaitable[_T]],
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
        in_caller: tuple[str, ...] = (),
        orphan: Callable[[_T], Awaitable[object]] | None = None,
    ) -> _T:
        """:meth:`call`, also once the client is closed: the clean-up of something begun
        before (leaving a ``loaded()`` block), which the async side must see."""
        try:
            return self.runner.call(fn, args, kwargs, in_caller, orphan)
        except LoopThreadError as exc:
            raise self._closed_meanwhile(exc) from None

    def _closed_meanwhile(self, error: LoopThreadError) -> LMStudioError:
        if self.closed:  # closed from another thread: its loop thread stopped with it
            return ClientClosedError(
                "the LM Studio client was closed while this call was in flight", host=self.host
            )
        return error

    def close(self, client: AsyncClient) -> None:
        """Close ``client`` in the loop thread, then release the lease: once.

        A concurrent ``close()`` from another thread waits for the first one to finish
        (bounded), then returns. From the loop thread itself (a coroutine callback), the
        lease is closed at once and the client is closed right after, in the background.
        """
        runner = self.runner
        if runner.inherited:  # after fork(): no loop thread here, and locks may be stale
            self.closed = True
            self._detach()
            return
        me = threading.get_ident()
        with self._lock:
            closer = self._closer
            if closer is None:
                self._closer = me
        if closer is not None:
            # Closed or being closed; wait for a closing thread (unless it is this one).
            if closer != me and threading.current_thread() is not runner.thread:
                self._closing_done.wait(_CLOSE_WAIT_SECONDS)
            return
        self._detach()
        try:
            if threading.current_thread() is runner.thread:
                with self._lock:
                    self.closed = True
                runner.close_later(client)  # it returns the lease once the client is closed
                return
            try:
                with contextlib.suppress(LoopThreadError):  # gone, and its sockets with it
                    runner.call(client.aclose)
            finally:
                self.release()
        finally:
            self._closing_done.set()

    def release(self) -> bool:
        """Release the lease once; False if it was already released."""
        with self._lock:
            if self.closed:
                return False
            self.closed = True
        self._detach()
        self.runner.release()
        return True

    def _detach(self) -> None:
        finalizer = self._finalizer
        if finalizer is not None:
            finalizer.detach()


def _unclosed(runner: _LoopThread, client: AsyncClient) -> None:
    """The finalizer of a lease collected unclosed. It may run in any thread, inside the
    garbage collector: it takes no lock and never waits."""
    if runner.inherited or not runner.thread.is_alive():
        return  # no loop thread: nothing of the client is left to release
    try:
        runner.loop.call_soon_threadsafe(runner.close_later, client)
    except RuntimeError:
        return  # the loop has just closed, and the client's sockets with it
    warnings.warn(
        f"unclosed lmstudio_async.Client (host {client.api_host or 'auto'}); close it "
        "(`with Client(...) as client:` or `client.close()`)",
        ResourceWarning,
        stacklevel=1,
    )


def _after_fork_in_child() -> None:
    # The loop thread is not in the child, and a lock held by any parent thread at the
    # fork would stay held for ever: start afresh, and mark what was inherited.
    _LoopThread._forks += 1
    _LoopThread._lock = threading.Lock()
    _LoopThread._current = None


if hasattr(os, "register_at_fork"):  # not on Windows (no fork there)
    os.register_at_fork(after_in_child=_after_fork_in_child)
