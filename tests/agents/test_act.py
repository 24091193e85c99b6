"""act() and respond(tools=...) against the stand-in, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
from typing import Annotated, Any

import msgspec
import pytest
from client._support import eventually  # tests/ is on sys.path (rootdir-relative)

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from .conftest import SMOL


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


async def mul(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


async def test_respond_returns_tool_calls_without_running_them(llm: lms.LLM) -> None:
    ran: list[Any] = []

    def add_spy(a: float, b: float) -> float:
        """Add two numbers."""
        ran.append((a, b))
        return a + b

    reply = await llm.respond("Please add_spy 2 and 3", tools=[add_spy])
    assert reply.stop_reason == "toolCalls"
    assert [(c.name, c.arguments) for c in reply.tool_calls] == [("add_spy", {"a": 2, "b": 3})]
    assert reply.tool_calls[0].id
    assert ran == []
    # Drive the loop by hand: the result goes back and the model answers with it.
    chat = lms.Chat().add_user("Please add_spy 2 and 3").add_assistant(reply)
    for call in reply.tool_calls:
        chat.add_tool_result(call, add_spy(**call.arguments))
    answer = await llm.respond(chat, tools=[add_spy])
    assert answer.tool_calls == ()
    assert answer.stop_reason == "eosFound"
    assert "5" in answer.content


async def test_act_runs_two_rounds_and_reports_every_message(llm: lms.LLM) -> None:
    messages: list[lms.ChatMessage] = []
    events: list[tuple[str, int]] = []
    completed: list[lms.PredictionRoundResult] = []
    chat = lms.Chat().add_user("add 2 and 3, then mul 4 and 5")
    result = await llm.act(
        chat,
        [add, mul],
        max_parallel_tool_calls=None,
        on_message=messages.append,
        on_round_start=lambda i: events.append(("start", i)),
        on_round_end=lambda i: events.append(("end", i)),
        on_first_token=lambda i: events.append(("first", i)),
        on_prediction_completed=completed.append,
    )
    assert isinstance(result, lms.ActResult)
    assert result.rounds == 2
    assert result.total_time_seconds > 0
    assert len(chat) == 1  # act works on a copy
    assert [m.role for m in messages] == ["assistant", "tool", "assistant"]
    calls = messages[0].tool_calls
    assert [(c.name, c.arguments) for c in calls] == [
        ("add", {"a": 2, "b": 3}),
        ("mul", {"a": 4, "b": 5}),
    ]
    results = messages[1].tool_results
    assert [r.content for r in results] == ["5.0", "20.0"]
    assert [r.tool_call_id for r in results] == [c.id for c in calls]
    assert "5.0" in messages[2].content
    assert "20.0" in messages[2].content
    assert events == [
        ("start", 0),
        ("first", 0),
        ("end", 0),
        ("start", 1),
        ("first", 1),
        ("end", 1),
    ]
    assert [(r.round_index, r.stop_reason) for r in completed] == [
        (0, "toolCalls"),
        (1, "eosFound"),
    ]


async def test_parallel_tool_calls_overlap_up_to_the_limit(llm: lms.LLM) -> None:
    running = 0
    peak = 0
    both = asyncio.Event()

    async def slow(name: str, tag: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 2:
            both.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(both.wait(), 0.3)
        running -= 1
        return name

    prompt = "use first with 'a' and second with 'b'"

    async def first(tag: str) -> str:
        """Tool first."""
        return await slow("first", tag)

    async def second(tag: str) -> str:
        """Tool second."""
        return await slow("second", tag)

    await llm.act(prompt, [first, second], max_parallel_tool_calls=2)
    assert peak == 2
    both.clear()
    peak = 0
    await llm.act(prompt, [first, second], max_parallel_tool_calls=1)
    assert peak == 1


async def test_sync_tools_run_in_worker_threads(llm: lms.LLM) -> None:
    threads: list[str] = []
    loop_thread = threading.current_thread().name

    def where(tag: str) -> str:
        """Report the thread."""
        threads.append(threading.current_thread().name)
        return tag

    await llm.act("call where with 'x'", [where])
    assert threads
    assert threads[0] != loop_thread


async def test_a_raising_tool_is_reported_to_the_model(llm: lms.LLM) -> None:
    def boom(x: int) -> int:
        """Explode."""
        raise RuntimeError("kaboom")

    messages: list[lms.ChatMessage] = []
    result = await llm.act("call boom with 3", [boom], on_message=messages.append)
    assert result.rounds == 2
    reported = messages[1].tool_results[0].content
    assert msgspec.json.decode(reported) == "Unhandled Python exception: RuntimeError('kaboom')"
    assert "kaboom" in messages[2].content


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
async def test_a_tool_raising_stop_iteration_is_reported_not_hung(llm: lms.LLM, kind: str) -> None:
    # e.g. next(u for u in users if ...) finding nothing: a plain tool's StopIteration cannot
    # be set on a future as it is; the model is told of a RuntimeError, as for a coroutine.
    def find(name: str) -> str:
        """Find a user."""
        return next(u for u in ["ann"] if u == name)

    async def afind(name: str) -> str:
        """Find a user."""
        return find(name)

    tool = find if kind == "plain" else afind
    messages: list[lms.ChatMessage] = []
    async with asyncio.timeout(10):
        result = await llm.act(
            f"call {tool.__name__} with 'bob'", [tool], on_message=messages.append
        )
    assert result.rounds == 2
    reported = msgspec.json.decode(messages[1].tool_results[0].content)
    assert reported.startswith("Unhandled Python exception: RuntimeError(")
    assert "StopIteration" in reported


@pytest.mark.parametrize("parallel", [1, None])
@pytest.mark.parametrize("kind", ["plain", "coroutine"])
async def test_a_tool_raising_system_exit_stops_act_with_it(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer, kind: str, parallel: int | None
) -> None:
    # sys.exit() (or argparse's parser.error()) in a tool is not a tool failure to report:
    # act raises it, the other tools of the round are cancelled, and the client goes on.
    def quit_now(code: int) -> int:
        """Quit."""
        raise SystemExit(f"bad input {code}")

    async def aquit_now(code: int) -> int:
        """Quit."""
        return quit_now(code)

    async def slow(code: int) -> int:
        """Wait."""
        await asyncio.sleep(30)
        return code

    tool = quit_now if kind == "plain" else aquit_now
    with pytest.raises(SystemExit, match="bad input 1"):
        async with asyncio.timeout(10):
            await llm.act(
                f"call {tool.__name__} with 1 and call slow with 2",
                [tool, slow],
                max_parallel_tool_calls=parallel,
            )
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert await llm.count_tokens("still working") > 0


@pytest.mark.parametrize("kind", ["plain", "coroutine"])
async def test_a_handler_raising_system_exit_stops_act_with_it(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer, kind: str
) -> None:
    # Two tool calls in the round, so each runs in a task of its own: the handler's
    # SystemExit reaches act's caller there too, and the event loop goes on.
    def boom(x: int) -> int:
        """Explode."""
        raise ValueError("no")

    def plain(error: lms.ToolCallError, request: Any) -> str:
        raise SystemExit("from the handler")

    async def coroutine(error: lms.ToolCallError, request: Any) -> str:
        return plain(error, request)

    with pytest.raises(SystemExit, match="from the handler"):
        async with asyncio.timeout(10):
            await llm.act(
                "call boom with 1 and call mul with 2 and 3",
                [boom, mul],
                max_parallel_tool_calls=None,
                handle_invalid_tool_request=plain if kind == "plain" else coroutine,
            )
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert await llm.count_tokens("still working") > 0


async def test_bad_arguments_are_reported_and_the_handler_may_rewrite_them(llm: lms.LLM) -> None:
    def big(n: Annotated[int, msgspec.Meta(ge=100)]) -> int:
        """Needs a big number."""
        return n

    seen: list[tuple[lms.ToolCallError, Any]] = []

    def handler(error: lms.ToolCallError, request: lms.ToolCallRequest | None) -> str:
        seen.append((error, request))
        return "use a number of at least 100"

    messages: list[lms.ChatMessage] = []
    await llm.act(
        "call big with 3", [big], on_message=messages.append, handle_invalid_tool_request=handler
    )
    assert "Failed to parse arguments for tool big" in str(seen[0][0])
    assert seen[0][1].name == "big"
    assert messages[1].tool_results[0].content == "use a number of at least 100"


async def test_a_raising_handler_stops_act(llm: lms.LLM) -> None:
    def boom(x: int) -> int:
        """Explode."""
        raise ValueError("no")

    def handler(error: lms.ToolCallError, request: Any) -> str:
        raise error

    with pytest.raises(lms.ToolCallError, match="Unhandled Python exception"):
        await llm.act("call boom with 1", [boom], handle_invalid_tool_request=handler)


async def test_the_last_round_offers_no_tools(llm: lms.LLM) -> None:
    completed: list[lms.PredictionRoundResult] = []
    result = await llm.act(
        "add 2 and 3", [add], max_prediction_rounds=1, on_prediction_completed=completed.append
    )
    assert result.rounds == 1
    assert completed[0].tool_calls == ()
    assert completed[0].stop_reason == "eosFound"
    with pytest.raises(lms.LMStudioValueError, match="max_prediction_rounds"):
        await llm.act("x", [add], max_prediction_rounds=0)
    with pytest.raises(lms.LMStudioValueError, match="max_parallel_tool_calls"):
        await llm.act("x", [add], max_parallel_tool_calls=0)
    with pytest.raises(lms.LMStudioValueError, match="on_message must be a function"):
        await llm.act("x", [add], on_message="print")  # type: ignore[arg-type]


async def test_a_model_without_tool_use_just_answers(client: lms.AsyncClient) -> None:
    smol = await client.llm.model(SMOL)
    result = await smol.act("add 2 and 3", [add])
    assert result.rounds == 1


async def test_cancelling_act_mid_tool_cancels_the_tool(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer
) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def wait_forever(tag: str) -> str:
        """Wait."""
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return tag

    task = asyncio.create_task(llm.act("call wait_forever with 'x'", [wait_forever]))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
    assert lmstudio_server.cancels() == []  # no prediction was in flight
    assert await llm.respond("still fine") is not None


@pytest.mark.lmstudio_server(tokens_per_second=40)
async def test_cancelling_act_mid_round_cancels_the_prediction(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer
) -> None:
    rounds: list[int] = []
    first_fragment = asyncio.Event()
    task = asyncio.create_task(
        llm.act(
            "add 2 and 3",
            [add],
            on_round_start=rounds.append,
            on_prediction_fragment=lambda f, i: first_fragment.set() if i == 1 else None,
        )
    )
    await asyncio.wait_for(first_fragment.wait(), 10)  # round 2 is streaming its answer
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert rounds == [0, 1]
    await eventually(lambda: len(lmstudio_server.cancels()) == 1)
    assert lmstudio_server.cancels()[0].endpoint == "predict"


class Unit(enum.Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


async def test_arguments_arrive_converted_to_the_annotated_types(llm: lms.LLM) -> None:
    got: list[Any] = []

    async def forecast(unit: Unit, days: int) -> dict[str, Any]:
        """Forecast in a unit."""
        got.append((unit, days))
        return {"unit": unit.value, "days": days}

    messages: list[lms.ChatMessage] = []
    await llm.act("call forecast in fahrenheit for 3 days", [forecast], on_message=messages.append)
    assert got == [(Unit.FAHRENHEIT, 3)]
    assert msgspec.json.decode(messages[1].tool_results[0].content) == {
        "unit": "fahrenheit",
        "days": 3,
    }


@pytest.mark.lmstudio_server(tokens_per_second=5)
async def test_act_predictions_keep_their_deadline(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer
) -> None:
    with pytest.raises(lms.LMStudioTimeoutError):
        await llm.act("add 2 and 3", [add], timeout=lms.Timeouts(idle=10, total=0.3))
    await eventually(lambda: len(lmstudio_server.cancels()) == 1)


async def test_an_explicit_tool_may_return_an_awaitable(llm: lms.LLM) -> None:
    async def triple(x: float) -> float:
        return 3 * x

    tool = lms.ToolFunctionDef(
        name="triple",
        description="Triple a number.",
        parameters={"x": float},
        implementation=lambda x: triple(x),  # a plain function returning a coroutine
    )
    messages: list[lms.ChatMessage] = []
    await llm.act("call triple with 2", [tool], on_message=messages.append)
    assert messages[1].tool_results[0].content == "6.0"


async def test_cancelling_act_cancels_every_parallel_tool(llm: lms.LLM) -> None:
    started: list[str] = []
    cancelled: list[str] = []

    async def hang(name: str) -> None:
        started.append(name)
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def first(tag: str) -> None:
        """Tool first."""
        await hang("first")

    async def second(tag: str) -> None:
        """Tool second."""
        await hang("second")

    task = asyncio.create_task(
        llm.act(
            "use first with 'a' and second with 'b'", [first, second], max_parallel_tool_calls=2
        )
    )
    await eventually(lambda: len(started) == 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(cancelled) == ["first", "second"]


async def test_a_handler_stopping_parallel_tools_raises_its_own_error(llm: lms.LLM) -> None:
    slow_cancelled = asyncio.Event()

    def first(tag: str) -> str:
        """Tool first."""
        raise RuntimeError("broken")

    async def second(tag: str) -> str:
        """Tool second."""
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            slow_cancelled.set()
            raise
        return tag

    def handler(error: lms.ToolCallError, request: Any) -> str:
        raise error

    with pytest.raises(lms.ToolCallError, match="broken"):  # not an ExceptionGroup
        await llm.act(
            "use first with 'a' and second with 'b'",
            [first, second],
            max_parallel_tool_calls=None,
            handle_invalid_tool_request=handler,
        )
    assert slow_cancelled.is_set()


async def test_bad_config_or_preset_fails_before_the_first_round(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer
) -> None:
    started: list[int] = []
    before = len(lmstudio_server.received_frames(namespace="llm"))
    with pytest.raises(lms.ConfigError, match="temprature"):
        await llm.act("x", [add], config={"temprature": 1}, on_round_start=started.append)
    with pytest.raises(lms.LMStudioValueError, match="preset"):
        await llm.act("x", [add], preset="", on_round_start=started.append)
    assert started == []
    assert len(lmstudio_server.received_frames(namespace="llm")) == before


async def test_act_chains_rounds_when_a_step_needs_the_previous_result(llm: lms.LLM) -> None:
    calls: list[tuple[str, float, float]] = []

    def plus(a: float, b: float) -> float:
        """Add two numbers."""
        calls.append(("plus", a, b))
        return a + b

    async def times(a: float, b: float) -> float:
        """Multiply two numbers."""
        calls.append(("times", a, b))
        return a * b

    messages: list[lms.ChatMessage] = []
    result = await llm.act(
        "Please plus 1 and 2, then times the result by 4", [plus, times], on_message=messages.append
    )
    assert result.rounds == 3
    assert calls == [("plus", 1, 2), ("times", 3, 4)]
    assert [m.role for m in messages] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert "12" in messages[-1].content
    limited = await llm.act(
        "Please plus 1 and 2, then times the result by 4", [plus, times], max_prediction_rounds=2
    )
    assert limited.rounds == 2  # the second round offers no tools: the model answers
