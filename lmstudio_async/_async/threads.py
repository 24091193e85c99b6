"""Blocking work (plain-function tools, file reads) in a thread of its own.

Not ``asyncio.to_thread``: the event loop's default executor has a fixed number of
workers (``min(32, cpus + 4)``), and a plain tool may itself call the SDK through the
sync ``Client`` (``prepare_image``, a sub-agent's ``act`` with plain tools of its own),
whose blocking parts would then wait for a worker that the waiting tools hold: with as
many such tools running as there are workers, every one of them would wait for ever.
A thread per call has no such limit; it costs about a tenth of a millisecond.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["Escaped", "future_safe", "reraise_escaped", "run_in_thread"]

_T = TypeVar("_T")


class Escaped(Exception):
    """A ``SystemExit`` or ``KeyboardInterrupt`` raised by user code (a tool, a callback),
    carried through the event loop as an ordinary exception.

    Raised bare inside a task, those two stop the event loop itself (asyncio re-raises them
    out of ``run_forever``): in the sync ``Client``'s shared loop thread that would break
    every client of the process. Carried, they reach the awaiting caller, where
    :func:`reraise_escaped` (or the sync call's hop) raises the original again.
    """

    def __init__(self, exception: BaseException) -> None:
        super().__init__(exception)
        self.exception = exception


def future_safe(exc: BaseException) -> BaseException:
    """``exc`` in a form an asyncio future can be given and a task can raise: a
    ``StopIteration`` (which ``Future.set_exception`` refuses) becomes the ``RuntimeError``
    a coroutine makes of it; ``SystemExit`` / ``KeyboardInterrupt`` are :class:`Escaped`."""
    if isinstance(exc, StopIteration):
        error = RuntimeError(f"{type(exc).__name__} raised by a function the SDK called")
        error.__cause__ = exc
        return error
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return Escaped(exc)
    return exc


async def reraise_escaped(awaitable: Awaitable[_T]) -> _T:
    """``await awaitable``, raising the original exception an :class:`Escaped` carries."""
    try:
        return await awaitable
    except Escaped as carried:
        error = carried.exception
    raise error


async def run_in_thread(func: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
    """Run ``func(*args, **kwargs)`` in a new thread, with this task's context variables
    (as ``asyncio.to_thread`` does). Cancelling the caller does not stop the function; its
    result is then dropped."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[_T] = loop.create_future()
    call = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)

    def settle(ok: bool, value: Any) -> None:
        if future.cancelled():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(future_safe(value))

    def work() -> None:
        result: tuple[bool, Any]
        try:
            result = (True, call())
        except BaseException as exc:  # handed to the awaiting task, whatever it is
            result = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(settle, *result)

    name = f"lmstudio-thread-{getattr(func, '__name__', 'call')}"
    # A daemon: one that never returns (a tool stuck, a read from a pipe nobody writes)
    # must not keep the process from exiting once nobody waits for it.
    threading.Thread(target=work, name=name, daemon=True).start()
    return await future
