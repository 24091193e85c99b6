"""act, tools, structured output and presets on the sync Client (one hop per call)."""

from __future__ import annotations

import _thread
import base64
import contextlib
import os
import threading
import time
from collections.abc import Iterator

import msgspec
import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

LLAMA = "llama-3.2-1b-instruct"


@pytest.fixture
def sync_client(lmstudio_server: ThreadedStandInServer) -> Iterator[lms.Client]:
    with lms.Client(lmstudio_server.host) as client:
        yield client


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


class Point(msgspec.Struct):
    x: int
    y: int


def test_sync_act_two_rounds(sync_client: lms.Client) -> None:
    llm = sync_client.llm.model(LLAMA)
    messages: list[lms.ChatMessage] = []
    result = llm.act("add 2 and 3", [add], on_message=messages.append)
    assert result.rounds == 2
    assert [m.role for m in messages] == ["assistant", "tool", "assistant"]
    assert messages[1].tool_results[0].content == "5.0"
    assert "5.0" in messages[2].content


def test_sync_tools_run_in_worker_threads_and_may_use_the_sync_client(
    sync_client: lms.Client,
) -> None:
    llm = sync_client.llm.model(LLAMA)
    caller = threading.get_ident()
    seen: list[int] = []

    def count(text: str) -> int:
        """Count the tokens of a text."""
        seen.append(threading.get_ident())
        return llm.count_tokens(text)  # a sync call from the tool's worker thread

    messages: list[lms.ChatMessage] = []
    llm.act("call count with 'hello world'", [count], on_message=messages.append)
    assert seen
    assert seen[0] != caller
    assert int(messages[1].tool_results[0].content) == llm.count_tokens("hello world")



def test_more_tools_waiting_on_the_sync_client_than_executor_workers_do_not_deadlock(
    sync_client: lms.Client,
) -> None:
    # Each tool runs a sub-agent whose own plain tool needs a thread too. With tools in the
    # loop's default executor (min(32, cpus + 4) workers), this many at once waited for ever.
    llm = sync_client.llm.model(LLAMA)
    n = min(32, (os.cpu_count() or 1) + 4) + 2
    everyone_in = threading.Barrier(n, timeout=5)

    def delegate(a: int, b: int) -> str:
        """Ask a sub-agent for a sum."""
        with contextlib.suppress(threading.BrokenBarrierError):
            everyone_in.wait()  # the tools hold their threads at the same time
        replies: list[lms.ChatMessage] = []
        llm.act(f"Please add {a} and {b}.", [add], on_message=replies.append)
        return replies[-1].content or ""

    results: list[lms.ActResult] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results.append(llm.act(f"Use delegate with {i} and 2", [delegate]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "deadlocked"
    assert errors == []
    assert len(results) == n

def test_sync_callbacks_run_in_the_calling_thread_and_may_use_the_client(
    sync_client: lms.Client,
) -> None:
    llm = sync_client.llm.model(LLAMA)
    caller = threading.get_ident()
    seen: list[tuple[str, int]] = []
    counts: list[int] = []

    def on_message(message: lms.ChatMessage) -> None:
        seen.append(("message", threading.get_ident()))
        counts.append(llm.count_tokens(message.content or "x"))  # a sync call, same client

    def boom(x: int) -> int:
        """Explode."""
        raise RuntimeError("no")

    def handler(error: lms.ToolCallError, request: lms.ToolCallRequest | None) -> str:
        seen.append(("handler", threading.get_ident()))
        return "try again later"

    messages: list[lms.ChatMessage] = []
    llm.act(
        "call boom with 1",
        [boom],
        on_message=lambda m: (messages.append(m), on_message(m)),
        on_round_start=lambda i: seen.append(("start", threading.get_ident())),
        handle_invalid_tool_request=handler,
    )
    assert {thread for _, thread in seen} == {caller}
    assert [kind for kind, _ in seen].count("message") == 3
    assert len(counts) == 3
    assert msgspec.json.decode(messages[1].tool_results[0].content) == "try again later"


def test_sync_callback_errors_stop_act(sync_client: lms.Client) -> None:
    llm = sync_client.llm.model(LLAMA)

    def fail(_index: int) -> None:
        raise LookupError("callback failed")

    with pytest.raises(LookupError, match="callback failed"):
        llm.act("add 2 and 3", [add], on_round_end=fail)
    assert llm.respond("Hi", config={"max_tokens": 2}).stats.predicted_tokens_count == 2


def test_a_sync_callback_raising_stop_iteration_raises_not_hangs(sync_client: lms.Client) -> None:
    # Its StopIteration cannot be set on the loop's future as it is: the caller gets the
    # RuntimeError the async client raises for it (a coroutine turns it into one).
    llm = sync_client.llm.model(LLAMA)

    def first_call(message: lms.ChatMessage) -> None:
        next(iter(message.tool_calls))  # the final answer has none

    with pytest.raises(RuntimeError, match="StopIteration") as info:
        llm.act("add 2 and 3", [add], on_message=first_call)
    assert isinstance(info.value.__cause__, StopIteration)


def test_a_tool_raising_system_exit_reaches_only_its_caller(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    # sys.exit() in a tool (argparse's parser.error() in a reused CLI helper): the thread
    # that called act gets the SystemExit; the shared loop thread, and so every other sync
    # client of the process and this one, go on working.
    def quit_now(code: int) -> int:
        """Quit."""
        raise SystemExit(f"bad input {code}")

    with lms.Client(lmstudio_server.host) as bystander, lms.Client(lmstudio_server.host) as own:
        llm = own.llm.model(LLAMA)
        with pytest.raises(SystemExit, match="bad input 1"):
            llm.act("call quit_now with 1", [quit_now])
        assert [h.identifier for h in bystander.llm.list_loaded()] == [LLAMA]
        assert llm.count_tokens("still working") > 0


def test_a_coroutine_handler_raising_system_exit_reaches_only_its_caller(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    def boom(x: int) -> int:
        """Explode."""
        raise ValueError("no")

    async def handler(error: lms.ToolCallError, request: object) -> str:
        raise SystemExit("from the handler")

    with lms.Client(lmstudio_server.host) as bystander, lms.Client(lmstudio_server.host) as own:
        llm = own.llm.model(LLAMA)
        with pytest.raises(SystemExit, match="from the handler"):
            llm.act(
                "call boom with 1 and call add with 2 and 3",
                [boom, add],
                max_parallel_tool_calls=None,
                handle_invalid_tool_request=handler,
            )
        assert [h.identifier for h in bystander.llm.list_loaded()] == [LLAMA]
        assert llm.count_tokens("still working") > 0


def test_sync_respond_with_tools_and_structured_output(sync_client: lms.Client) -> None:
    llm = sync_client.llm.model(LLAMA)
    reply = llm.respond("add 2 and 3", tools=[add])
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("add", {"a": 2, "b": 3})]
    assert isinstance(llm.respond("a point", response_format=Point).parsed, Point)
    stream = llm.respond_stream("a point", response_format=Point)
    assert "".join(f.content for f in stream)
    assert isinstance(stream.result().parsed, Point)
    with pytest.raises(lms.PresetNotFoundError):
        llm.respond("hi", preset="missing")


def test_sync_ctrl_c_mid_tool_stops_act(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = sync_client.llm.model(LLAMA)
    started = threading.Event()
    release = threading.Event()
    finished: list[str] = []

    def slow(tag: str) -> str:
        """Slow tool."""
        started.set()
        release.wait(5)
        finished.append(tag)
        return tag

    def fire() -> None:
        if started.wait(5):
            _thread.interrupt_main()

    timer = threading.Thread(target=fire, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.act("call slow with 'x'", [slow])
    finally:
        release.set()
        timer.join(5)
    assert lmstudio_server.cancel_count == 0  # no prediction was in flight
    assert llm.respond("Hi", config={"max_tokens": 2}).stats.predicted_tokens_count == 2


@pytest.mark.lmstudio_server(tokens_per_second=40)
def test_sync_ctrl_c_mid_round_cancels_the_prediction(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = sync_client.llm.model(LLAMA)
    streaming = threading.Event()

    def fire() -> None:
        if streaming.wait(10):
            _thread.interrupt_main()

    timer = threading.Thread(target=fire, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            llm.act(
                "add 2 and 3",
                [add],
                on_prediction_fragment=lambda f, i: streaming.set() if i == 1 else None,
            )
    finally:
        timer.join(5)
    deadline = time.monotonic() + 5
    while lmstudio_server.cancel_count != 1 or lmstudio_server.open_channel_count() != 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert lmstudio_server.cancels()[0].endpoint == "predict"


def test_sync_ctrl_c_cancels_a_download(
    sync_client: lms.Client, lmstudio_server: ThreadedStandInServer
) -> None:
    infos = sync_client.system.list_downloaded()
    downloaded = {m.model_key for m in infos} | {m.path for m in infos}
    option = next(
        o
        for r in sync_client.repository.search_models(limit=25)
        for o in r.get_download_options()
        if o.info.indexed_model_identifier not in downloaded
    )
    progressed = threading.Event()

    def fire() -> None:
        if progressed.wait(10):
            _thread.interrupt_main()

    timer = threading.Thread(target=fire, daemon=True)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            option.download(on_progress=lambda _p: progressed.set())
    finally:
        timer.join(5)
    deadline = time.monotonic() + 5
    while not any(c.endpoint == "downloadModel" for c in lmstudio_server.cancels()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    infos = sync_client.system.list_downloaded()
    assert option.info.indexed_model_identifier not in {m.path for m in infos}


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def test_sync_images_drafts_and_grammars(sync_client: lms.Client) -> None:
    image = sync_client.files.prepare_image(PNG, name="dot.png")
    chat = lms.Chat().add_user("What is this?", images=[image])
    vision = sync_client.llm.model("mobilevlm_v2-1.7b")
    assert "png" in vision.respond(chat).content.lower()
    smol = sync_client.llm.model("smollm2-135m-instruct")
    with pytest.raises(lms.VisionNotSupportedError):
        smol.respond(chat)
    llm = sync_client.llm.model(LLAMA)
    with pytest.raises(lms.DraftModelError):
        llm.respond("hi", config={"draft_model": "qwen2.5-7b-instruct-1m"})  # not a llama
    drafted = llm.respond("Tell me a story", config={"draft_model": "smollm2-135m-instruct"})
    assert drafted.stats.used_draft_model_key == "smollm2-135m-instruct"
    assert drafted.stats.accepted_draft_tokens_count is not None
    yes_no = llm.respond("Is it?", config={"grammar": 'root ::= "yes" | "no"'})
    assert yes_no.content in ("yes", "no")


def test_closing_the_client_while_act_runs_a_tool_is_client_closed(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    # The last sync client: closing it stops the loop thread under the waiting act.
    client = lms.Client(lmstudio_server.host)
    llm = client.llm.model(LLAMA)
    in_tool = threading.Event()

    def slow_add(a: float, b: float) -> float:
        """Add two numbers, slowly."""
        in_tool.set()
        time.sleep(0.3)
        return a + b

    outcome: list[BaseException | str] = []

    def run() -> None:
        try:
            llm.act("Please add 2 and 3.", [slow_add])
            outcome.append("finished")
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert in_tool.wait(10)
    client.close()
    thread.join(10)
    assert len(outcome) == 1
    assert isinstance(outcome[0], lms.ClientClosedError), outcome
    with pytest.raises(lms.ClientClosedError):
        llm.act("Please add 2 and 3.", [slow_add])
