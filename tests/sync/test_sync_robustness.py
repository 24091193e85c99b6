"""The sync facade under unusual conditions: a caller that gives up just as a load finished,
concurrent and late closes, clients dropped unclosed, fork(), callbacks of every shape, and
streams left early."""

from __future__ import annotations

import gc
import inspect
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import lmstudio_async as lms
from lmstudio_async._sync import client as _sync
from lmstudio_async._sync import loop as _loop
from lmstudio_async._sync import stream as _stream
from lmstudio_async._sync.loop import _LoopThread
from lmstudio_async.testing import ThreadedStandInServer

from .test_sync import eventually, loaded_ids, loop_threads

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"


@pytest.fixture
def client(lmstudio_server: ThreadedStandInServer) -> Iterator[lms.Client]:
    with lms.Client(lmstudio_server.host) as c:
        yield c


@pytest.fixture(autouse=True)
def _no_default_client_leak() -> Iterator[None]:
    yield
    _sync._close_default_client()
    _sync._default_settings.clear()


# --- a caller that gives up just as its load finished -----------------------------------------


def _give_up_at_the_end(error: BaseException) -> Callable[[float], None]:
    """A progress callback that raises at 1.0, once the load has surely finished in the
    loop thread: the caller gives up after the load returned its instance."""

    def on_progress(fraction: float) -> None:
        if fraction >= 1.0:
            time.sleep(0.1)
            raise error

    return on_progress


@pytest.mark.lmstudio_server(load_seconds=0.1)
@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("progress bar broke")])
@pytest.mark.parametrize("method", ["load", "model", "loaded"])
def test_a_load_that_finished_as_its_caller_gave_up_is_unloaded(
    client: lms.Client, lmstudio_server: ThreadedStandInServer, method: str, error: BaseException
) -> None:
    on_progress = _give_up_at_the_end(error)

    def call() -> None:
        if method == "loaded":
            with client.llm.loaded(SMOL, on_progress=on_progress):
                pytest.fail("entered although the caller gave up")
        else:
            getattr(client.llm, method)(SMOL, on_progress=on_progress)

    with pytest.raises(type(error)):
        call()
    assert loaded_ids(lmstudio_server) == []  # unloaded before the call raised
    assert client.llm.model(SMOL).identifier == SMOL  # not smollm:2


@pytest.mark.lmstudio_server(load_seconds=0.1)
def test_model_that_found_the_instance_loaded_leaves_it_when_its_caller_gives_up(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    lmstudio_server.preload(SMOL)
    with pytest.raises(KeyboardInterrupt):
        client.llm.model(SMOL, on_progress=_give_up_at_the_end(KeyboardInterrupt()))
    assert loaded_ids(lmstudio_server) == [SMOL]


@pytest.mark.lmstudio_server(load_seconds=0.5)
def test_a_shared_load_stays_for_the_caller_that_did_not_give_up(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    got: list[lms.SyncLLM] = []
    other = threading.Thread(target=lambda: got.append(client.llm.model(SMOL)))
    other.start()
    eventually(lambda: lmstudio_server.open_channel_count() == 1)  # the other's load runs
    with pytest.raises(RuntimeError):
        client.llm.model(SMOL, on_progress=_give_up_at_the_end(RuntimeError("stop")))
    other.join(10)
    assert len(got) == 1
    assert loaded_ids(lmstudio_server) == [SMOL]
    assert got[0].get_info().identifier == SMOL
    assert len(lmstudio_server.received_messages(endpoint="getOrLoad")) == 1


# --- callbacks: positional, and async callable objects ----------------------------------------


def test_a_download_callback_passed_positionally_runs_in_the_caller(client: lms.Client) -> None:
    downloaded = {m.path for m in client.system.list_downloaded()}
    option = next(
        o
        for r in client.repository.search_models(limit=25)
        for o in r.get_download_options()
        if o.info.indexed_model_identifier not in downloaded
    )
    threads: set[str] = set()

    def on_progress(_: object) -> None:
        threads.add(threading.current_thread().name)
        client.system.version()  # a sync call: only possible outside the loop thread

    assert option.download(on_progress)
    assert threads == {threading.current_thread().name}


class _Recorder:
    """A callback object whose ``__call__`` is a coroutine function."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.threads: set[str] = set()

    async def __call__(self, value: Any) -> None:
        self.threads.add(threading.current_thread().name)
        self.values.append(value)


@pytest.mark.lmstudio_server(load_seconds=0.1)
def test_an_async_callable_object_is_awaited_in_the_loop_thread(client: lms.Client) -> None:
    progress, fragments, prompt = _Recorder(), _Recorder(), _Recorder()
    llm = client.llm.load(SMOL, on_progress=progress)
    long_prompt = "Summarise this text: " + " ".join(f"word{i}" for i in range(400))
    result = llm.respond(
        long_prompt, config={"max_tokens": 5}, on_fragment=fragments, on_prompt_progress=prompt
    )
    assert progress.values[-1] == 1.0
    assert "".join(f.content for f in fragments.values) == result.content
    assert len(fragments.values) == 5
    assert prompt.values[-1] == 1.0
    assert progress.threads | fragments.threads | prompt.threads == {"lmstudio-async-loop"}


# --- streams left early -----------------------------------------------------------------------


@pytest.mark.lmstudio_server(tokens_per_second=100)
def test_iterating_a_stream_again_after_break_yields_nothing(client: lms.Client) -> None:
    stream = client.llm.model(SMOL).respond_stream("Tell me a story", config={"max_tokens": 300})
    seen = []
    for fragment in stream:
        seen.append(fragment.content)
        if len(seen) == 3:
            break
    time.sleep(0.2)  # the loop thread has read ahead meanwhile
    assert list(stream) == []
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content == "".join(seen)


@pytest.mark.lmstudio_server(tokens_per_second=100)
def test_result_after_break_when_the_final_result_never_comes(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    stream = client.llm.model(SMOL).respond_stream("Tell me a story", config={"max_tokens": 300})
    for index, _ in enumerate(stream):
        if index == 2:
            lmstudio_server.faults.silent = True  # the cancel gets no answer...
            break
    time.sleep(0.2)
    lmstudio_server.faults.drop_connections()  # ... then the connection drops
    lmstudio_server.faults.reset()
    with pytest.raises(lms.LMStudioError, match="stopped by its caller") as info:
        stream.result()
    assert not isinstance(info.value, lms.LoopThreadError)
    assert client.llm.list_loaded()  # the loop thread is fine


# --- closing ----------------------------------------------------------------------------------


def test_two_threads_closing_the_last_client_at_once_both_succeed(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    for _ in range(20):
        client = lms.Client(lmstudio_server.host)
        client.llm.list_loaded()
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def close(
            client: lms.Client = client,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                client.close()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=close) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == []
        assert client.closed
        del client
        assert loop_threads() == []
    # An unclosed aiohttp session of any of them would warn here (an error in this suite);
    # collected once: with the whole suite's heap, each collection takes a while.
    gc.collect()
    eventually(lambda: lmstudio_server.connection_count() == 0)


@pytest.mark.lmstudio_server(load_seconds=0.1)
def test_close_from_the_loop_thread_closes_the_client(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    with lms.Client(lmstudio_server.host) as keeper:  # keeps the loop thread running
        keeper.system.version()
        client = lms.Client(lmstudio_server.host)
        client.llm.list_loaded()
        assert lmstudio_server.connection_count() == 2

        async def on_progress(fraction: float) -> None:  # runs in the loop thread
            if not client.closed:
                client.close()

        # Closed at its first progress report: the load is in flight, and fails as any call
        # in flight when its client closes (closing at the last report raced its success).
        with pytest.raises(lms.ClientClosedError):
            client.llm.load(SMOL, on_progress=on_progress)
        assert client.closed
        with pytest.raises(lms.ClientClosedError):
            client.llm.list_loaded()
        eventually(lambda: lmstudio_server.connection_count() == 1)  # only the keeper's
        eventually(lambda: lmstudio_server.loaded_instances() == [])  # the load was stopped
        assert keeper.system.version()
    assert loop_threads() == []


def test_leaving_loaded_after_the_client_was_closed_raises_client_closed(
    lmstudio_server: ThreadedStandInServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = lms.Client(lmstudio_server.host)

    def use() -> None:
        with client.llm.loaded(SMOL):
            closer = threading.Thread(target=client.close)  # the last client: the loop stops
            closer.start()
            closer.join(10)

    with pytest.raises(lms.ClientClosedError):
        use()
    assert loop_threads() == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.lmstudio_server(load_seconds=0.1)
def test_a_pool_closed_after_its_client_reports_closed(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    with lms.Client(lmstudio_server.host) as keeper:  # the loop thread stays: the pool stops
        keeper.system.version()
        client = lms.Client(lmstudio_server.host)
        pool = lms.ModelPool(client)
        with pool.llm(SMOL):
            pass
        assert keeper._lease.call(_pool_tasks, (pool._async,)) > 0  # e.g. its reconciler
        client.close()
        pool.close()
        assert pool.closed
        assert keeper._lease.call(_pool_tasks, (pool._async,)) == 0
    client = lms.Client(lmstudio_server.host)  # the last client: no loop thread left
    pool = lms.ModelPool(client)
    client.close()
    pool.close()
    assert pool.closed


async def _pool_tasks(pool: lms.AsyncModelPool) -> int:
    return sum(not t.done() for t in pool._tasks | pool._cancellable)


# --- clients dropped without close() ----------------------------------------------------------


def test_a_client_dropped_unclosed_warns_and_is_closed(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    def use_once() -> None:
        lms.Client(lmstudio_server.host).llm.list_loaded()
        gc.collect()

    with pytest.warns(ResourceWarning, match="unclosed lmstudio_async.Client"):
        use_once()
    eventually(lambda: lmstudio_server.connection_count() == 0)
    eventually(lambda: loop_threads() == [])  # its lease was returned


@pytest.mark.lmstudio_server(load_seconds=0.1)
def test_what_uses_a_client_keeps_it_open(lmstudio_server: ThreadedStandInServer) -> None:
    kept: dict[str, Any] = {"handle": lms.Client(lmstudio_server.host).llm.load(SMOL)}
    gc.collect()
    assert kept["handle"].get_info().identifier == SMOL  # the handle keeps its client
    pool = lms.ModelPool([lms.Client(lmstudio_server.host), lms.Client(lmstudio_server.host)])
    gc.collect()
    with pool.llm(LLAMA) as model:  # the pool keeps both
        assert model.respond("Hi", config={"max_tokens": 2}).content
    pool.close()
    kept.update(pool=pool, model=model)
    del pool, model

    def drop() -> None:
        kept.clear()
        gc.collect()

    with pytest.warns(ResourceWarning) as caught:
        drop()
    assert len(caught) == 3  # the handle's client and the pool's two
    eventually(lambda: loop_threads() == [])


# --- fork() -----------------------------------------------------------------------------------


def _in_a_fork_child(child: Callable[[], None], timeout: float = 20.0) -> int:
    """Run ``child`` in a forked process; its exit code (1 on error, -9 if it hung)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads
        pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 1
        try:
            child()
            code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork()")
def test_a_fork_child_creates_its_default_client_even_if_a_lock_was_held_at_the_fork(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    _sync.configure_default_client(lmstudio_server.host)
    held, done = threading.Event(), threading.Event()

    def hold() -> None:  # as a thread creating the default client at the fork would
        with _sync._default_lock, _LoopThread._lock:
            held.set()
            done.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(10)
    try:

        def child() -> None:
            assert _sync.get_default_client().system.version()
            with lms.Client(lmstudio_server.host) as other:
                assert other.system.version()

        assert _in_a_fork_child(child) == 0
    finally:
        done.set()
        holder.join(10)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork()")
def test_inherited_clients_fail_at_once_in_a_fork_child_and_close_without_waiting(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    _sync.configure_default_client(lmstudio_server.host)
    default = _sync.get_default_client()
    default.system.version()
    client = lms.Client(lmstudio_server.host)
    try:
        client.llm.list_loaded()

        def child() -> None:
            start = time.monotonic()
            with pytest.raises(lms.LoopThreadError, match="fork"):
                client.llm.list_loaded()
            client.close()
            _sync._close_default_client()  # what atexit runs
            assert time.monotonic() - start < 1.0
            assert _sync.get_default_client() is not default  # a new one in the child
            assert _sync.get_default_client().system.version()

        assert _in_a_fork_child(child) == 0
        assert client.llm.list_loaded() == []  # the parent's clients are untouched
        assert default.system.version()
    finally:
        client.close()


# --- a Ctrl-C as a call is handed to the loop thread ---------------------------------------------


def _interrupt_at(function: Any, text: str) -> Callable[[], bool]:
    """Raise ``KeyboardInterrupt`` once, as ``function`` is about to run its line holding
    ``text``: a Ctrl-C landing exactly there, made deterministic with a trace function.
    Returns a check that it fired; the tracer is removed by the caller (settrace(None))."""
    code = function.__code__
    lines, start = inspect.getsourcelines(function)
    [line] = [start + i for i, source in enumerate(lines) if text in source]
    fired: list[bool] = []

    def local(frame: Any, event: str, _arg: Any) -> Any:
        if event == "line" and frame.f_lineno == line and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return local

    def outer(frame: Any, _event: str, _arg: Any) -> Any:
        return local if frame.f_code is code else None

    sys.settrace(outer)
    return lambda: bool(fired)


@pytest.mark.lmstudio_server(load_seconds=0.3)
@pytest.mark.parametrize(
    "where",
    [
        "pending.append(fn(*args, **kwargs))",
        "self._hand_over(start)",
        "task = self._wait(inbox, callback)",
    ],
)
def test_a_ctrl_c_as_a_call_is_handed_over_cancels_it(
    client: lms.Client, lmstudio_server: ThreadedStandInServer, where: str
) -> None:
    # Before the hand-over, the call never starts (its coroutine is closed, never left
    # un-awaited); after it, the call is cancelled on the server like any Ctrl-C.
    client.llm.list_loaded()
    fired = _interrupt_at(_loop._LoopThread.call, where)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.llm.load(SMOL, "interrupted")
    finally:
        sys.settrace(None)
    assert fired()
    gc.collect()  # a coroutine never awaited would warn here (an error under pytest)
    time.sleep(0.5)  # longer than the load takes
    assert loaded_ids(lmstudio_server) == []
    assert lmstudio_server.open_channel_count() == 0
    assert client.llm.list_loaded() == []  # the client is fine


@pytest.mark.lmstudio_server(tokens_per_second=50)
@pytest.mark.parametrize("where", ["self._started = True", "return self._queue.get("])
def test_a_ctrl_c_as_a_stream_starts_stops_it(
    client: lms.Client, lmstudio_server: ThreadedStandInServer, where: str
) -> None:
    llm = client.llm.model(SMOL)
    stream = llm.respond_stream("Write a long story about a river.")
    function = _stream.SyncPredictionStream._start if "started" in where else (
        _stream.SyncPredictionStream._get
    )
    fired = _interrupt_at(function, where)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(iter(stream))
    finally:
        sys.settrace(None)
    assert fired()
    assert time.monotonic() - started < 1.5  # not a wait for a pump that never started
    eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert loaded_ids(lmstudio_server) == [SMOL]


@pytest.mark.lmstudio_server(tokens_per_second=2000)
def test_a_ctrl_c_as_the_reader_takes_the_end_of_a_stream_returns_at_once(
    client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    # The reader has just taken the pump's end marker when Ctrl-C lands: leaving must not
    # wait the 5 s grace for a second end marker that would never come.
    llm = client.llm.model(SMOL)
    stream = llm.respond_stream("Hi", config={"max_tokens": 5})
    fired = _interrupt_at(_stream.SyncPredictionStream._next, "self._ended = True")
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in stream:
                pass
    finally:
        sys.settrace(None)
    assert fired()
    assert time.monotonic() - started < 1.5
    assert lmstudio_server.open_channel_count() == 0

