"""RPC deadlines: one timer per socket serves every pending call's deadline.

The socket-level tests make the stand-in silent (it reads requests and never answers),
so only the client's deadlines can end the calls.
"""

from __future__ import annotations

import asyncio
import time

import pytest

import lmstudio_async as lms
from lmstudio_async._io.transport import _Deadlines
from lmstudio_async.testing import ThreadedStandInServer

from ._support import LLAMA, SMOL

# --- _Deadlines on its own (a loop, futures, no sockets) ------------------------------------


def _pending(loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    return loop.create_future()


async def test_deadlines_expire_in_deadline_order_whatever_the_order_added() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop)
    late, early, middle = _pending(loop), _pending(loop), _pending(loop)
    now = loop.time()
    deadlines.add(late, now + 0.30, "late", 0.30, "idle")
    deadlines.add(early, now + 0.05, "early", 0.05, "total")  # earlier: re-arms the timer
    deadlines.add(middle, now + 0.15, "middle", 0.15, "idle")
    order: list[str] = []
    for fut, name in ((late, "late"), (early, "early"), (middle, "middle")):
        fut.add_done_callback(lambda _f, name=name: order.append(name))
    await asyncio.wait([late, early, middle], timeout=5)
    assert order == ["early", "middle", "late"]
    assert len(deadlines) == 0
    err = early.exception()
    assert isinstance(err, lms.LMStudioTimeoutError)
    assert isinstance(err, TimeoutError)
    assert err.kind == "total"
    assert "early did not finish within the total deadline (0.05 s)" in str(err)
    assert isinstance(late.exception(), lms.LMStudioTimeoutError)


async def test_discarded_and_finished_calls_never_expire() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop)
    answered, dropped, waiting = _pending(loop), _pending(loop), _pending(loop)
    now = loop.time()
    deadlines.add(answered, now + 0.05, "a", 0.05, "idle")
    deadlines.add(dropped, now + 0.05, "d", 0.05, "idle")
    deadlines.add(waiting, now + 0.10, "w", 0.10, "idle")
    answered.set_result(None)  # answered but not yet discarded when the timer fires
    deadlines.discard(dropped)
    await asyncio.wait([waiting], timeout=5)
    assert answered.result() is None
    assert not dropped.done()
    assert isinstance(waiting.exception(), lms.LMStudioTimeoutError)
    assert len(deadlines) == 0
    dropped.cancel()


async def test_timer_fires_only_when_needed_and_rearms_for_later_calls() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop)
    first = _pending(loop)
    deadlines.add(first, loop.time() + 0.05, "first", 0.05, "idle")
    first.set_result(None)
    deadlines.discard(first)
    await asyncio.sleep(0.1)  # the timer fired with nothing pending and stayed disarmed
    second = _pending(loop)
    deadlines.add(second, loop.time() + 0.05, "second", 0.05, "idle")
    await asyncio.wait([second], timeout=5)
    assert isinstance(second.exception(), lms.LMStudioTimeoutError)


async def test_cancel_disarms_and_a_later_add_rearms() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop)
    fut = _pending(loop)
    deadlines.add(fut, loop.time() + 0.05, "x", 0.05, "idle")
    deadlines.cancel()
    await asyncio.sleep(0.1)
    assert not fut.done()
    deadlines.discard(fut)
    again = _pending(loop)
    deadlines.add(again, loop.time() + 0.05, "y", 0.05, "idle")
    await asyncio.wait([again], timeout=5)
    assert isinstance(again.exception(), lms.LMStudioTimeoutError)
    fut.cancel()


async def test_watch_takes_the_shorter_of_idle_and_total() -> None:
    loop = asyncio.get_running_loop()
    deadlines = _Deadlines(loop)
    by_idle, by_total, past_total, none = (_pending(loop) for _ in range(4))
    now = loop.time()
    deadlines.watch(by_idle, now, 0.05, 5.0, "a")
    deadlines.watch(by_total, now, 5.0, 0.1, "b")
    deadlines.watch(past_total, now, None, -1.0, "c")  # a whole-call deadline already passed
    deadlines.watch(none, now, None, None, "d")
    assert len(deadlines) == 3
    await asyncio.wait([by_idle, by_total, past_total], timeout=5)
    kinds = {
        name: (err.kind, err.timeout)
        for name, fut in (("a", by_idle), ("b", by_total), ("c", past_total))
        if isinstance(err := fut.exception(), lms.LMStudioTimeoutError)
    }
    assert kinds == {"a": ("idle", 0.05), "b": ("total", 0.1), "c": ("total", 0.0)}
    assert not none.done()
    none.cancel()


# --- over a real socket, against a silent stand-in -----------------------------------------


async def test_rpc_idle_deadline_against_a_silent_server(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.list_loaded()  # connected
    lmstudio_server.faults.silent = True
    t0 = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await client.llm.list_loaded(timeout=lms.Timeouts(idle=0.2))
    assert time.monotonic() - t0 >= 0.19
    assert info.value.kind == "idle"
    assert str(info.value) == "listLoaded: nothing from LM Studio within the idle deadline (0.2 s)"
    lmstudio_server.faults.silent = False
    assert await client.llm.list_loaded() == []  # the socket still works


async def test_short_deadline_behind_a_long_one_fails_first(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await client.llm.list_loaded()
    lmstudio_server.faults.silent = True
    done: list[str] = []

    async def call(name: str, timeouts: lms.Timeouts) -> BaseException | None:
        try:
            await client.llm.list_loaded(timeout=timeouts)
        except lms.LMStudioTimeoutError as exc:
            done.append(name)
            return exc
        return None

    long_call = asyncio.create_task(call("long", lms.Timeouts(idle=1.0)))
    await asyncio.sleep(0.02)
    short_call = asyncio.create_task(call("short", lms.Timeouts(idle=5.0, total=0.1)))
    short_err = await short_call
    assert done == ["short"]
    assert not long_call.done()
    assert isinstance(short_err, lms.LMStudioTimeoutError)
    assert short_err.kind == "total"
    long_err = await long_call
    assert done == ["short", "long"]
    assert isinstance(long_err, lms.LMStudioTimeoutError)
    assert long_err.kind == "idle"
    lmstudio_server.faults.silent = False


async def test_answered_calls_leave_no_deadline_behind(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    await asyncio.gather(
        *[client.llm.list_loaded(timeout=lms.Timeouts(idle=0.1)) for _ in range(50)]
    )
    sock = client._transport.socket("llm")
    assert sock._deadlines is not None
    assert len(sock._deadlines) == 0
    await asyncio.sleep(0.15)  # the armed timer fires after every call was answered
    assert await client.llm.list_loaded() == []


async def test_channel_reads_share_the_socket_deadlines(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    model = await client.llm.load(SMOL)  # ~20 progress packets, each read under a deadline
    sock = client._transport.socket("llm")
    assert sock._deadlines is not None
    assert len(sock._deadlines) == 0
    lmstudio_server.faults.silent = True
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await client.llm.load(LLAMA, timeout=lms.Timeouts(idle=0.2))
    assert info.value.kind == "idle"
    assert str(info.value).startswith(f"Model load of {LLAMA!r}: nothing from LM Studio within")
    lmstudio_server.faults.silent = False
    await model.unload()


@pytest.mark.lmstudio_server(load_seconds=3.0)
async def test_a_total_deadline_error_reports_the_configured_value(
    client: lms.AsyncClient,
) -> None:
    # The load channel reports progress (the idle deadline never expires); the total
    # deadline does, and its error names the value configured, not the time left of it.
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await client.llm.load(LLAMA, timeout=lms.Timeouts(idle=5.0, total=0.5))
    assert info.value.kind == "total"
    assert info.value.timeout == 0.5
    assert "within the total deadline (0.5 s)" in str(info.value)


@pytest.mark.parametrize("call", ["rpc", "load", "prediction"])
@pytest.mark.parametrize(("kind", "seconds"), [("total", 0.3), ("connect", 0.3), ("connect", 0.8)])
async def test_a_calls_own_deadlines_bound_its_wait_for_the_socket(
    lmstudio_server: ThreadedStandInServer, call: str, kind: str, seconds: float
) -> None:
    # A server that accepts connections and never answers (a hung LM Studio): a call's
    # total deadline ends the wait for the connection too, and so does its own connect
    # deadline, shorter or longer than the client's (0.5 s here; it was silently ignored).
    async with lms.AsyncClient(lmstudio_server.host) as warm:
        llm = await warm.llm.load(SMOL)
    lmstudio_server.faults.silent = True
    client_wide = lms.Timeouts(connect=0.5)
    async with lms.AsyncClient(lmstudio_server.host, timeout=client_wide) as client:
        timeout = lms.Timeouts(**{kind: seconds})
        calls = {
            "rpc": lambda: client.llm.list_loaded(timeout=timeout),
            "load": lambda: client.llm.load(SMOL, timeout=timeout),
            "prediction": lambda: client.llm._handle(llm.info).respond("Hi", timeout=timeout),
        }
        t0 = time.monotonic()
        with pytest.raises(lms.LMStudioTimeoutError) as info:
            await calls[call]()
        assert seconds - 0.05 < time.monotonic() - t0 < seconds + 1.0
        assert (info.value.kind, info.value.timeout) == (kind, seconds)
        if kind == "total":
            assert "within the total deadline (0.3 s)" in str(info.value)
        lmstudio_server.faults.silent = False
        assert [h.identifier for h in await client.llm.list_loaded()] == [SMOL]
