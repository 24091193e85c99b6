"""The async inference tests (``tests/client/test_inference.py``), run on the sync Client.

Every ``test_*`` of that module is collected here with the ``client`` fixture replaced by the
sync :class:`~lmstudio_async.Client` behind :class:`InferenceShape`: the model-management
shape adapter (``_shape.AsyncShape``) plus sync prediction streams presented as async ones.
Tests about asyncio task cancellation or ``gather`` concurrency are left out
(``ASYNC_ONLY``); their sync counterparts (Ctrl-C, threads, break) are below.
"""

from __future__ import annotations

import _thread
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from client import test_inference as _async_tests  # tests/ is on sys.path (rootdir-relative)

import lmstudio_async as lms
from lmstudio_async._sync import client as _sync
from lmstudio_async.testing import ThreadedStandInServer

from ._shape import ASYNC_TWIN, RENAMES, AsyncShape

ASYNC_ONLY = {
    "test_cancelling_the_task_cancels_the_prediction": "asyncio task.cancel()",
    "test_after_a_break_cancel_waits_for_the_final_result": "a sync stream's result() "
    "waits by itself (test_sync_break_sends_cancel)",
    "test_concurrent_predictions_on_two_models": "asyncio.gather concurrency",
    "test_cancel_from_the_readers_own_callback_does_not_wait_for_itself": "a coroutine "
    "callback awaiting the async stream's cancel()",
    "test_a_deadline_expiring_while_cancel_reads_ends_the_other_reader_too": "a second "
    "asyncio task reads while cancel() drains",
    "test_concurrent_predictions_on_one_model_all_run_at_once": "asyncio tasks; the sync "
    "counterpart streams from several threads (test_sync_stream_from_several_threads)",
    "test_cancel_from_another_task_while_one_reads": "a second asyncio task; the sync "
    "counterpart cancels from another thread",
    "test_cancel_while_the_stream_is_still_opening_its_channel": "a second asyncio task "
    "cancels while the first read is suspended in the reconnect",
    "test_cancel_while_a_large_request_is_being_sent": "asyncio task.cancel() while the "
    "send waits; a sync Ctrl-C cancels the same way, through the loop thread's task",
    "test_a_long_list_keeps_at_most_32_requests_in_flight": "watches the socket from a "
    "second asyncio task; the sync call runs the same coroutine in the loop thread",
    "test_a_reply_of_the_wrong_shape_is_a_protocol_error": "forges the reply while the "
    "call waits in a second asyncio task; the sync call decodes in the same coroutine",
    "test_many_embeddings_run_concurrently_on_one_socket": "runs concurrently in the loop "
    "thread either way; a sync caller blocks its own test loop",
}

for _name, _test in vars(_async_tests).items():
    if _name.startswith("test_") and _name not in ASYNC_ONLY:
        globals()[_name] = _test

LLAMA = _async_tests.LLAMA
SLOW = _async_tests.SLOW
eventually = _async_tests.eventually
loaded_ids = _async_tests.loaded_ids


class _AsyncIterator:
    """What ``async for`` holds: a sync fragment iterator (dropping it on ``break`` cancels)."""

    def __init__(self, iterator: Iterator[lms.Fragment]) -> None:
        self.iterator = iterator

    def __aiter__(self) -> _AsyncIterator:
        return self

    async def __anext__(self) -> lms.Fragment:
        try:
            return next(self.iterator)
        except StopIteration:
            raise StopAsyncIteration from None


class StreamShape:
    """A :class:`SyncPredictionStream` with the call shape of :class:`PredictionStream`."""

    def __init__(self, target: lms.SyncPredictionStream) -> None:
        self.target = target

    def __aiter__(self) -> _AsyncIterator:
        return _AsyncIterator(iter(self.target))

    async def __anext__(self) -> lms.Fragment:
        try:
            return next(self.target)
        except StopIteration:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> StreamShape:
        self.target.__enter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.target.__exit__(*exc_info)

    def result(self) -> lms.PredictionResult:
        return self.target.result()

    async def cancel(self) -> None:
        self.target.cancel()

    async def aclose(self) -> None:
        self.target.close()


class InferenceShape(AsyncShape):
    """:class:`AsyncShape` that also presents sync streams as async ones."""

    __slots__ = ()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.target, RENAMES.get(name, name))
        if name in ("respond_stream", "complete_stream"):
            return lambda *args, **kwargs: StreamShape(value(*args, **kwargs))
        result = super().__getattr__(name)
        if isinstance(result, AsyncShape):
            return InferenceShape(result.target)
        if callable(result) and not isinstance(result, type):

            async def call(*args: Any, **kwargs: Any) -> Any:
                return reshape(await result(*args, **kwargs))

            return call
        return result


def reshape(value: Any) -> Any:
    if isinstance(value, AsyncShape):
        return InferenceShape(value.target)
    if type(value) is list:
        return [reshape(item) for item in value]
    return value


@pytest.fixture
def client(lmstudio_server: ThreadedStandInServer) -> Iterator[InferenceShape]:
    sync_client = _sync.Client(lmstudio_server.host)
    try:
        yield InferenceShape(sync_client)
    finally:
        sync_client.close()


@pytest.fixture
def sync_client(lmstudio_server: ThreadedStandInServer) -> Iterator[lms.Client]:
    with lms.Client(lmstudio_server.host) as c:
        yield c


def test_every_async_test_is_mirrored_or_listed() -> None:
    mirrored = {n for n in globals() if n.startswith("test_")}
    for name in vars(_async_tests):
        if name.startswith("test_"):
            assert name in mirrored or name in ASYNC_ONLY, name
    assert set(ASYNC_ONLY) <= set(vars(_async_tests)), "stale ASYNC_ONLY entry"
    assert _sync.SyncLLM in ASYNC_TWIN


# --- sync-only behaviour -------------------------------------------------------------------


@SLOW
def test_sync_break_sends_cancel(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = sync_client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story.")
    for _ in stream:
        break
    assert stream.result().stop_reason == "userStopped"  # result() waits for it
    deadline = time.monotonic() + 5
    while lmstudio_server.cancel_count != 1 or lmstudio_server.open_channel_count() != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert loaded_ids(lmstudio_server) == [LLAMA]


@pytest.mark.lmstudio_server(tokens_per_second=400)
@pytest.mark.parametrize("leave", ["break", "ctrl-c", "close"])
def test_a_sync_stream_left_early_holds_what_its_loop_got(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer, leave: str
) -> None:
    # The loop thread reads ahead of a slow loop; what it read and the loop never got is
    # not part of the result (nor of .content), as with an async stream.
    llm = sync_client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story.", config={"max_tokens": 60})
    seen: list[str] = []
    try:
        for fragment in stream:
            seen.append(fragment.content)
            time.sleep(0.05)  # the rest of the reply arrives meanwhile
            if len(seen) == 3:
                if leave == "ctrl-c":
                    raise KeyboardInterrupt
                if leave == "close":
                    stream.close()
                    continue  # the loop gets nothing more
                break
    except KeyboardInterrupt:
        pass
    assert len(seen) == 3
    assert list(stream) == []
    result = stream.result()
    assert result.content == "".join(seen)
    assert stream.content == "".join(seen)
    deadline = time.monotonic() + 5
    while lmstudio_server.open_channel_count() != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.parametrize("exc", [SystemExit, KeyboardInterrupt])
def test_a_coroutine_callback_raising_system_exit_reaches_only_the_reader(
    lmstudio_server: ThreadedStandInServer, exc: type[BaseException]
) -> None:
    # The callback runs in the shared loop thread: its SystemExit / KeyboardInterrupt goes
    # to the iterating thread, and the loop thread goes on serving every client.
    async def stop(fragment: lms.Fragment) -> None:
        raise exc("from the callback")

    with lms.Client(lmstudio_server.host) as bystander, lms.Client(lmstudio_server.host) as own:
        llm = own.llm.model(LLAMA)
        with pytest.raises(exc, match="from the callback"):
            for _ in llm.respond_stream("Write a story.", on_fragment=stop):
                pass
        assert [h.identifier for h in bystander.llm.list_loaded()] == [LLAMA]
        assert llm.count_tokens("still working") > 0
    deadline = time.monotonic() + 5
    while lmstudio_server.open_channel_count() != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_sync_stream_does_not_hop_per_fragment(
    sync_client: lms.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = sync_client.llm.model(LLAMA)
    hops = 0
    runner = llm._lease.runner
    original = runner.call

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "call", counting)
    stream = llm.respond_stream("Tell me about rivers.")
    fragments = list(stream)
    assert len(fragments) > 10
    assert stream.result().content == "".join(f.content for f in fragments)
    assert hops == 0  # fragments and the result come through the queue


def test_sync_callbacks_run_in_the_calling_thread(sync_client: lms.Client) -> None:
    llm = sync_client.llm.model(LLAMA)
    threads: set[int] = set()
    progress: list[float] = []

    def on_progress(value: float) -> None:
        threads.add(threading.get_ident())
        progress.append(value)

    result = llm.respond(
        "Summarise: " + " ".join(f"w{i}" for i in range(300)),
        on_fragment=lambda f: threads.add(threading.get_ident()),
        on_prompt_progress=on_progress,
        config={"max_tokens": 3},
    )
    assert result.stats.predicted_tokens_count == 3
    assert progress[-1] == 1.0
    assert threads == {threading.get_ident()}


@SLOW
def test_sync_ctrl_c_cancels_the_prediction(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = sync_client.llm.model(LLAMA)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.respond("Write a long story.")
    finally:
        timer.cancel()
    deadline = time.monotonic() + 5
    while lmstudio_server.cancel_count != 1 or lmstudio_server.open_channel_count() != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert loaded_ids(lmstudio_server) == [LLAMA]
    assert llm.respond("Hi", config={"max_tokens": 2}).stats.predicted_tokens_count == 2


def test_sync_stream_from_several_threads(sync_client: lms.Client) -> None:
    llm = sync_client.llm.model(LLAMA)
    expected = llm.respond("Describe a bridge.", config={"temperature": 0}).content
    results: list[str] = []

    def work() -> None:
        text = "".join(
            f.content for f in llm.respond_stream("Describe a bridge.", config={"temperature": 0})
        )
        results.append(text)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [expected] * 4


@SLOW
def test_sync_cancel_from_another_thread_while_one_reads(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = sync_client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story about a harbour.")
    seen: list[str] = []
    first = threading.Event()
    failures: list[BaseException] = []

    def read() -> None:
        try:
            for fragment in stream:
                seen.append(fragment.content)
                first.set()
        except BaseException as exc:  # reported below
            failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert first.wait(10)
    stream.cancel()
    reader.join(10)
    assert not reader.is_alive()
    assert failures == []  # the reader's loop ended normally
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content == "".join(seen)
    assert lmstudio_server.cancel_count == 1
