"""Using loaded models (respond, streams, completions, embeddings, tokens) against the
stand-in, over real sockets. ``tests/sync/test_sync_inference.py`` runs these on the sync
Client too."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from ._support import LLAMA, NOMIC, SMOL, eventually, loaded_ids

GREEDY = {"temperature": 0}
SLOW = pytest.mark.lmstudio_server(tokens_per_second=40)


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


# --- respond ----------------------------------------------------------------------------


async def test_respond_returns_content_stats_and_model_info(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    seen: list[lms.Fragment] = []
    result = await llm.respond("Tell me about rivers.", config=GREEDY, on_fragment=seen.append)
    assert isinstance(result, lms.PredictionResult)
    assert result.content
    assert "".join(f.content for f in seen) == result.content
    assert all(isinstance(f, lms.Fragment) for f in seen)
    assert result.stop_reason == "eosFound"
    stats = result.stats
    assert stats.predicted_tokens_count == len(seen)
    assert stats.prompt_tokens_count
    assert stats.prompt_tokens_count > 0
    assert stats.total_tokens_count == stats.prompt_tokens_count + stats.predicted_tokens_count
    assert stats.tokens_per_second
    assert stats.tokens_per_second > 0
    assert stats.time_to_first_token_sec is not None
    assert result.model_info.identifier == llm.identifier
    assert result.prediction_config.temperature == 0


async def test_respond_is_deterministic_at_temperature_zero(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    first = await llm.respond("Describe a garden.", config=GREEDY)
    second = await llm.respond("Describe a garden.", config=lms.PredictionConfig(temperature=0))
    assert first.content == second.content
    other = await llm.respond("Describe a harbor at night.", config=GREEDY)
    assert other.content != first.content


async def test_respond_takes_a_chat_or_a_message_list(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    chat = lms.Chat("You are terse.").add_user("Name a colour.")
    as_chat = await llm.respond(chat, config=GREEDY)
    as_dicts = await llm.respond(
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."},
        ],
        config=GREEDY,
    )
    as_structs = await llm.respond(list(chat.messages), config=GREEDY)
    assert as_chat.content == as_dicts.content == as_structs.content
    chat.add_assistant(as_chat.content).add_user("Another one?")
    follow_up = await llm.respond(chat, config=GREEDY)
    assert follow_up.content


async def test_max_tokens(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    result = await llm.respond("Write a long story.", config={"max_tokens": 5, **GREEDY})
    assert result.stop_reason == "maxPredictedTokensReached"
    assert result.stats.predicted_tokens_count == 5


async def test_stop_strings(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    full = (await llm.respond("Explain bridges.", config=GREEDY)).content
    words = full.split()
    stop = words[len(words) // 2]
    cut = await llm.respond("Explain bridges.", config={"stop_strings": [stop], **GREEDY})
    assert cut.stop_reason == "stopStringFound"
    assert cut.stats.stop_string == stop
    assert stop not in cut.content
    assert full.startswith(cut.content)


async def test_structured_json_output_matches_the_schema(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "age", "tags"],
    }
    result = await llm.respond("Describe a person.", config={"json_schema": schema})
    data = result.parsed
    assert set(data) >= {"name", "age", "tags"}
    assert isinstance(data["name"], str)
    assert isinstance(data["age"], int)
    assert 0 <= data["age"] <= 120
    assert all(isinstance(t, str) for t in data["tags"])


async def test_structured_output_from_a_struct_class(client: lms.AsyncClient) -> None:
    import msgspec

    class City(msgspec.Struct):
        name: str
        population: int

    llm = await client.llm.model(LLAMA)
    result = await llm.respond("A city, please.", config=lms.PredictionConfig(json_schema=City))
    city = msgspec.json.decode(result.content, type=City)
    assert isinstance(city.population, int)


async def test_prompt_progress_callback(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    progress: list[float] = []
    long_prompt = "Summarise this text: " + " ".join(f"word{i}" for i in range(400))
    await llm.respond(long_prompt, on_prompt_progress=progress.append, config={"max_tokens": 3})
    assert progress
    assert progress == sorted(progress)
    assert progress[-1] == 1.0
    assert all(0.0 <= p <= 1.0 for p in progress)


async def test_coroutine_callbacks(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    seen: list[str] = []

    async def on_fragment(fragment: lms.Fragment) -> None:
        await asyncio.sleep(0)
        seen.append(fragment.content)

    result = await llm.respond("Hello", on_fragment=on_fragment, config={"max_tokens": 4})
    assert "".join(seen) == result.content


# --- streams ----------------------------------------------------------------------------


async def test_respond_stream_yields_fragments_then_the_result(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    expected = await llm.respond("Tell me about lanterns.", config=GREEDY)
    stream = llm.respond_stream("Tell me about lanterns.", config=GREEDY)
    with pytest.raises(lms.LMStudioError, match="not finished"):
        stream.result()
    pieces = [fragment.content async for fragment in stream]
    assert "".join(pieces) == expected.content
    result = stream.result()
    assert result.content == expected.content
    assert result.stop_reason == "eosFound"
    assert [f async for f in stream] == []  # finished: iterating again yields nothing


async def test_stream_as_context_manager(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    async with llm.respond_stream("Hi", config={"max_tokens": 3}) as stream:
        count = 0
        async for _ in stream:
            count += 1
    assert count == 3
    assert stream.result().stats.predicted_tokens_count == 3


async def cancelled_once_and_cleaned_up(server: ThreadedStandInServer) -> None:
    """One ``cancel`` reached the server, no prediction channel is left open, and the
    model is still loaded."""
    await eventually(lambda: server.cancel_count == 1)
    await eventually(lambda: server.open_channel_count(endpoint="predict") == 0)
    assert server.cancel_count == 1  # still one, once the channel has ended
    assert loaded_ids(server) == [LLAMA]


@SLOW
async def test_cancel_mid_stream(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story about a village.")
    seen = []
    async for fragment in stream:
        seen.append(fragment)
        if len(seen) == 3:
            await stream.cancel()
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content == "".join(f.content for f in seen)
    await cancelled_once_and_cleaned_up(lmstudio_server)
    again = await llm.respond("Hi", config={"max_tokens": 2})
    assert again.stop_reason == "maxPredictedTokensReached"


@SLOW
async def test_cancel_from_another_task_while_one_reads(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # A "stop" button: one task streams, another stops it.
    llm = await client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story about a harbour.")
    seen: list[str] = []
    first = asyncio.Event()

    async def read() -> None:
        async for fragment in stream:
            seen.append(fragment.content)
            first.set()

    reader = asyncio.create_task(read())
    async with asyncio.timeout(10):
        await first.wait()
        await stream.cancel()  # returns once the reader has seen the end
        assert reader.done()
        await reader  # the loop ended normally, without an error
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content == "".join(seen)
    await cancelled_once_and_cleaned_up(lmstudio_server)


@pytest.mark.lmstudio_server(tokens_per_second=200)
@pytest.mark.parametrize("ended_first", [False, True])
async def test_a_slow_reader_stopped_from_another_task_gets_every_fragment_sent(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, ended_first: bool
) -> None:
    # A Stop button while the reading loop lags behind the tokens: the fragments that had
    # arrived (and those in flight) still reach the loop, which ends normally; the result
    # holds exactly them, whether the prediction had ended before the Stop or not.
    llm = await client.llm.model(LLAMA)
    max_tokens = 12 if ended_first else 200
    stream = llm.respond_stream("Tell me a story.", config={"max_tokens": max_tokens})
    seen: list[str] = []
    first = asyncio.Event()

    async def read() -> None:
        async for fragment in stream:
            seen.append(fragment.content)
            first.set()
            await asyncio.sleep(0.03)  # a slow UI

    reader = asyncio.create_task(read())
    async with asyncio.timeout(10):
        await first.wait()
        await asyncio.sleep(0.3 if ended_first else 0.1)
        await stream.cancel()
        await reader  # the loop ended normally, without an error
    result = stream.result()
    assert result.content == "".join(seen)
    assert result.stats.predicted_tokens_count == len(seen)
    if ended_first:
        assert result.stop_reason == "maxPredictedTokensReached"
        assert len(seen) == max_tokens
    else:
        assert result.stop_reason == "userStopped"
        assert 3 < len(seen) < max_tokens
    await eventually(lambda: lmstudio_server.open_channel_count(endpoint="predict") == 0)


@SLOW
async def test_a_loop_left_early_yields_nothing_more_when_iterated_again(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story about a river.")
    seen: list[str] = []
    async for fragment in stream:
        seen.append(fragment.content)
        if len(seen) == 3:
            break
    assert [f async for f in stream] == []  # not the rest of the story
    await cancelled_once_and_cleaned_up(lmstudio_server)
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content == "".join(seen)


@SLOW
@pytest.mark.parametrize("then", ["await", "iterate again"])
async def test_a_break_inside_async_with_then_more_awaits_still_ends_with_the_result(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, then: str
) -> None:
    # The break's cancel went out before the block ended: leaving the block still waits
    # for the final result (it raised "stopped by its caller" and left the channel open).
    llm = await client.llm.model(LLAMA)
    seen: list[str] = []
    async with llm.respond_stream("Write a long story about a river.") as stream:
        async for fragment in stream:
            seen.append(fragment.content)
            break
        if then == "await":
            await asyncio.sleep(0)
        else:
            assert [f async for f in stream] == []
    result = stream.result()
    assert (result.stop_reason, result.content) == ("userStopped", "".join(seen))
    await cancelled_once_and_cleaned_up(lmstudio_server)


@SLOW
async def test_cancel_from_the_readers_own_callback_does_not_wait_for_itself(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    seen: list[str] = []
    stream: lms.PredictionStream

    async def stop_at_the_third(fragment: lms.Fragment) -> None:
        if len(seen) == 2:
            await stream.cancel()  # the cancel goes out; the loop then ends normally

    stream = llm.respond_stream("Write a long story.", on_fragment=stop_at_the_third)
    async with asyncio.timeout(10):
        async for fragment in stream:
            seen.append(fragment.content)
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content == "".join(seen)
    await cancelled_once_and_cleaned_up(lmstudio_server)


@pytest.mark.parametrize("deadline", ["idle", "total"])
async def test_a_deadline_expiring_while_cancel_reads_ends_the_other_reader_too(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, deadline: str
) -> None:
    # cancel() reads the rest for a slow reader; LM Studio goes silent: cancel() raises the
    # timeout, and the reader gets it too, at once (not when the clean-up gives up).
    llm = await client.llm.model(LLAMA)
    timeout = lms.Timeouts(idle=0.5) if deadline == "idle" else lms.Timeouts(idle=None, total=1)
    stream = llm.respond_stream("Tell me a story.", config={"max_tokens": 400}, timeout=timeout)
    first = asyncio.Event()

    async def read() -> None:
        async for _ in stream:
            first.set()
            await asyncio.sleep(0.2)

    reader = asyncio.create_task(read())
    async with asyncio.timeout(10):
        await first.wait()
        lmstudio_server.faults.silent = True
        with pytest.raises(lms.LMStudioTimeoutError) as info:
            await stream.cancel()
        assert info.value.kind == deadline
        with pytest.raises(lms.LMStudioTimeoutError):
            await asyncio.wait_for(reader, 2)
    lmstudio_server.faults.silent = False


@pytest.mark.parametrize(
    ("how", "deadline"), [("async with", "idle"), ("async with", "total"), ("break", "idle")]
)
async def test_leaving_a_stream_on_a_silent_server_waits_one_idle_deadline_at_most(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer, how: str, deadline: str
) -> None:
    # Leaving the stream (after its timeout, or after a break) waits for LM Studio's answer
    # to the cancel within the stream's idle deadline, and after a deadline expired within
    # 2 s at most; never until the keepalive (25 s).
    llm = await client.llm.model(LLAMA)
    timeout = lms.Timeouts(idle=0.5) if deadline == "idle" else lms.Timeouts(idle=30, total=1)
    started = 0.0

    async def read_within() -> None:
        nonlocal started
        async with llm.respond_stream("A story.", timeout=timeout) as stream:
            async for _ in stream:
                if not started:
                    lmstudio_server.faults.silent = True
                    started = time.monotonic()

    try:
        async with asyncio.timeout(10):
            if how == "async with":
                with pytest.raises(lms.LMStudioTimeoutError) as info:
                    await read_within()
                assert info.value.kind == deadline
            else:
                stream = llm.respond_stream("A story.", timeout=timeout)
                async for _ in stream:
                    lmstudio_server.faults.silent = True
                    started = time.monotonic()
                    break
                await stream.aclose()  # waits for the final result, which never comes
                with pytest.raises(lms.LMStudioError, match="stopped by its caller"):
                    stream.result()
            elapsed = time.monotonic() - started
    finally:
        lmstudio_server.faults.silent = False
    # idle: 0.5 s, then at most 0.5 s for the cancel's answer; total: 1 s, then at most 2 s
    assert elapsed < (2.0 if deadline == "idle" else 3.6), elapsed


@SLOW
async def test_cancel_while_the_stream_is_still_opening_its_channel(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    lmstudio_server.faults.drop_connections()  # the first read below has to reconnect first
    await eventually(lambda: lmstudio_server.connection_count() == 0)
    stream = llm.respond_stream("Write a long story about a lighthouse.")
    first = asyncio.create_task(stream.__anext__())
    await asyncio.sleep(0)  # the read is now opening the socket and the channel
    await stream.cancel()
    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(5):
            await first
    # The prediction that started on the server is stopped there, not left running.
    await cancelled_once_and_cleaned_up(lmstudio_server)
    async with asyncio.timeout(5):
        await stream.cancel()  # again: waits until the server's final result is in
    assert stream.result().stop_reason == "userStopped"


@SLOW
async def test_cancel_while_a_large_request_is_being_sent(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # A long prompt fills the socket's send buffer, so opening the channel waits for it
    # to drain; the request is already queued then, so cancelling must stop it there.
    llm = await client.llm.model(LLAMA)
    await llm.respond("Hi", config={"max_tokens": 1})  # the socket is open
    task = asyncio.create_task(llm.respond("word " * 2_000_000, config={"max_tokens": 50}))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    assert lmstudio_server.open_channel_count(endpoint="predict") == 0  # not there yet
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await cancelled_once_and_cleaned_up(lmstudio_server)
    await eventually(lambda: client._transport.socket("llm")._conn.open_channels == 0)


async def test_cancel_before_the_stream_starts_sends_nothing(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    frames_before = len(lmstudio_server.received_frames())
    stream = llm.respond_stream("Hello")
    await stream.cancel()
    assert [fragment async for fragment in stream] == []  # it ends at once
    with pytest.raises(lms.LMStudioError, match="was cancelled"):
        stream.result()
    assert len(lmstudio_server.received_frames()) == frames_before  # no channel was opened
    await stream.cancel()  # again: a no-op


@SLOW
async def test_break_out_of_the_loop_sends_cancel(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story about a river.")
    async for _ in stream:
        break
    await cancelled_once_and_cleaned_up(lmstudio_server)
    assert stream.result().stop_reason == "userStopped"



async def test_a_break_after_the_reply_has_ended_still_says_user_stopped(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The whole reply arrives while the loop is slow (a UI update); the loop then leaves
    # after two fragments. Its result holds those two, so it must not claim the model
    # ended the reply ("maxPredictedTokensReached" here, "eosFound" for a short answer).
    llm = await client.llm.model(LLAMA)
    config = lms.PredictionConfig(max_tokens=12, temperature=0)
    whole = await llm.respond("Tell me about rivers", config=config)
    assert whole.stop_reason == "maxPredictedTokensReached"
    seen = []
    async with llm.respond_stream("Tell me about rivers", config=config) as stream:
        async for fragment in stream:
            seen.append(fragment.content)
            if len(seen) == 1:
                await asyncio.sleep(0.5)  # 12 tokens at the stand-in's speed: long done
            else:
                break
    result = stream.result()
    assert len(seen) == 2
    assert result.content == "".join(seen)
    assert whole.content.startswith(result.content)
    assert whole.content != result.content
    assert result.stop_reason == "userStopped"
    assert result.stats.stop_string is None


@SLOW
async def test_after_a_break_cancel_waits_for_the_final_result(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    stream = llm.respond_stream("Write a long story about a lake.")
    seen = []
    async for fragment in stream:
        seen.append(fragment.content)
        break
    with pytest.raises(lms.LMStudioError, match=r"await stream\.cancel\(\)"):
        stream.result()  # the cancel is still on its way
    await stream.cancel()
    result = stream.result()
    assert result.stop_reason == "userStopped"
    assert result.content.startswith("".join(seen))
    assert lmstudio_server.cancel_count == 1

@SLOW
async def test_aclose_and_context_exit_send_cancel(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    async with llm.respond_stream("Write a long story about a forest.") as stream:
        async for _ in stream:
            break
    assert lmstudio_server.cancel_count == 1
    assert stream.result().stop_reason == "userStopped"
    other = llm.respond_stream("Write a long story about a machine.")
    await other.__anext__()
    await other.aclose()
    assert lmstudio_server.cancel_count == 2
    assert other.result().stop_reason == "userStopped"
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert loaded_ids(lmstudio_server) == [LLAMA]


@SLOW
async def test_cancelling_the_task_cancels_the_prediction(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    first = asyncio.Event()
    task = asyncio.create_task(
        llm.respond("Write a long story.", on_fragment=lambda f: first.set())
    )
    await asyncio.wait_for(first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: lmstudio_server.cancel_count == 1)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert loaded_ids(lmstudio_server) == [LLAMA]


@SLOW
@pytest.mark.parametrize(
    ("error", "match"),
    [
        (RuntimeError("boom"), "boom"),
        # Through __anext__ (or __next__) these would end the caller's loop as if the
        # prediction had ended; they become a RuntimeError, as PEP 479 does.
        (StopAsyncIteration(), "explode raised StopAsyncIteration"),
        (StopIteration(), "explode raised StopIteration"),
    ],
)
async def test_callback_error_cancels_the_prediction(
    client: lms.AsyncClient,
    lmstudio_server: ThreadedStandInServer,
    error: BaseException,
    match: str,
) -> None:
    llm = await client.llm.model(LLAMA)

    def explode(fragment: lms.Fragment) -> None:
        raise error

    with pytest.raises(RuntimeError, match=match):
        await llm.respond("Write a long story.", on_fragment=explode)
    with pytest.raises(RuntimeError, match=match):
        async for _ in llm.respond_stream("Write a long story.", on_fragment=explode):
            pass
    await eventually(lambda: lmstudio_server.cancel_count == 2)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert loaded_ids(lmstudio_server) == [LLAMA]


async def test_concurrent_predictions_on_two_models(client: lms.AsyncClient) -> None:
    llama, smol = await asyncio.gather(client.llm.model(LLAMA), client.llm.load(SMOL))
    results = await asyncio.gather(
        *(m.respond(f"Question {i}", config=GREEDY) for i in range(4) for m in (llama, smol))
    )
    assert {r.model_info.identifier for r in results} == {LLAMA, SMOL}
    assert all(r.stop_reason == "eosFound" for r in results)


@SLOW
async def test_concurrent_predictions_on_one_model_all_run_at_once(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # The client does not queue them behind one another: all eight are open at the server
    # together (whether LM Studio runs them in parallel is its max_parallel_predictions).
    llm = await client.llm.model(LLAMA)
    replies = [
        asyncio.create_task(llm.respond(f"Question {i}", config={"max_tokens": 20}))
        for i in range(8)
    ]
    await eventually(lambda: lmstudio_server.open_channel_count(endpoint="predict") == 8)
    results = await asyncio.gather(*replies)
    assert [r.stats.predicted_tokens_count for r in results] == [20] * 8


# --- deadlines --------------------------------------------------------------------------


@pytest.mark.lmstudio_server(tokens_per_second=2)
async def test_idle_deadline_between_fragments(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    started = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await llm.respond("Hello", timeout=0.2)
    assert info.value.kind == "idle"
    assert str(info.value) == (
        f"Chat response of {LLAMA!r}: nothing from LM Studio within the idle deadline (0.2 s)"
    )
    assert time.monotonic() - started < 2
    await eventually(lambda: lmstudio_server.cancel_count == 1)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert loaded_ids(lmstudio_server) == [LLAMA]


async def test_text_that_is_not_valid_unicode_is_a_value_error(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    broken = "cut mid-emoji: \ud83d"  # a lone surrogate, as json.loads can produce
    with pytest.raises(lms.LMStudioValueError, match="cannot be sent as JSON"):
        await llm.count_tokens(broken)
    with pytest.raises(lms.LMStudioValueError, match="cannot be sent as JSON"):
        await llm.respond(broken)
    assert lmstudio_server.open_channel_count() == 0
    assert await llm.count_tokens("fine") > 0  # the socket is unharmed

@pytest.mark.lmstudio_server(tokens_per_second=20)
async def test_total_deadline_cancels(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    seen: list[lms.Fragment] = []
    stream = llm.respond_stream(
        "Write a long story.", timeout=lms.Timeouts(idle=5, total=0.4), on_fragment=seen.append
    )
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        async for _ in stream:
            pass
    assert info.value.kind == "total"
    assert info.value.timeout == 0.4  # the configured deadline, not the time left of it
    # It names the prediction, and does not say LM Studio was silent: fragments came.
    assert str(info.value) == (
        f"Chat response of {LLAMA!r} did not finish within the total deadline (0.4 s)"
    )
    assert seen  # the idle deadline was never the problem
    await eventually(lambda: lmstudio_server.cancel_count == 1)
    await eventually(lambda: lmstudio_server.open_channel_count() == 0)
    assert loaded_ids(lmstudio_server) == [LLAMA]


# --- errors -----------------------------------------------------------------------------


async def test_stale_handle_names_the_identifier(client: lms.AsyncClient) -> None:
    llm = await client.llm.load(SMOL, "scratch")
    emb = await client.embedding.load(NOMIC, "vectors")
    await llm.unload()
    await emb.unload()
    for call in (
        llm.respond("Hi"),
        llm.complete("Hi"),
        llm.tokenize("Hi"),
        llm.count_tokens("Hi"),
        llm.apply_prompt_template("Hi"),
        emb.embed("Hi"),
    ):
        with pytest.raises(lms.ModelNotFoundError, match=r"'scratch'|'vectors'"):
            await call
    with pytest.raises(lms.ModelNotFoundError, match="'scratch'") as info:
        async for _ in llm.respond_stream("Hi"):
            pass
    assert info.value.subject == "scratch"


async def test_bad_input_fails_before_anything_is_sent(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    emb = await client.embedding.load(NOMIC)
    lmstudio_server.clear_logs()
    with pytest.raises(lms.ConfigError, match="max_tokens") as info:
        await llm.respond("Hi", config={"max_tokens": -1})
    assert info.value.field == "max_tokens"
    with pytest.raises(lms.ConfigError, match="did you mean 'temperature'"):
        llm.respond_stream("Hi", config={"temprature": 0.5})
    with pytest.raises(lms.ConfigError, match="top_p"):
        await llm.complete("Hi", config=lms.PredictionConfig(top_p=0.5).to_dict() | {"top_p": 7})
    with pytest.raises(lms.ConfigError):
        await llm.respond("Hi", config=lms.LlmLoadConfig(context_length=5))  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError, match="empty"):
        await llm.respond([])
    with pytest.raises(lms.LMStudioValueError, match="role"):
        await llm.respond([{"role": "wizard", "content": "x"}])  # type: ignore[list-item]
    with pytest.raises(lms.LMStudioValueError, match="on_fragment"):
        await llm.respond("Hi", on_fragment="print")  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError):
        await emb.embed(3)  # type: ignore[call-overload]
    with pytest.raises(lms.LMStudioValueError, match="item 1"):
        await emb.embed(["ok", None])  # type: ignore[list-item]
    with pytest.raises(lms.LMStudioValueError):
        await llm.count_tokens(["a"])  # type: ignore[arg-type]
    assert lmstudio_server.received_frames() == []


# --- completions, templates, tokens, embeddings ----------------------------------------


async def test_complete_raw_text(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    result = await llm.complete("The river flows", config={"max_tokens": 6, **GREEDY})
    assert result.stop_reason == "maxPredictedTokensReached"
    assert result.stats.predicted_tokens_count == 6
    pieces = [f.content async for f in llm.complete_stream("The river flows", config=GREEDY)]
    full = await llm.complete("The river flows", config=GREEDY)
    assert "".join(pieces) == full.content
    assert full.content.startswith(result.content)


async def test_apply_prompt_template(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    text = await llm.apply_prompt_template(lms.Chat("Be nice.").add_user("What is a lantern?"))
    assert isinstance(text, str)
    assert "What is a lantern?" in text
    assert "Be nice." in text
    assert await llm.apply_prompt_template("hello there") != text


async def test_tokenize_and_count_tokens_agree(client: lms.AsyncClient) -> None:
    llm = await client.llm.model(LLAMA)
    emb = await client.embedding.load(NOMIC)
    # An embedding model's tokenize adds its start and end markers, count_tokens does not
    # (as LM Studio does; issue 17).
    for handle, markers in ((llm, 0), (emb, 2)):
        tokens = await handle.tokenize("Hello, world! How are you?")
        assert tokens
        assert all(isinstance(t, int) for t in tokens)
        assert await handle.count_tokens("Hello, world! How are you?") + markers == len(tokens)
        batch = await handle.tokenize(["a b", "Hello, world! How are you?", ""])
        assert batch[1] == tokens
        assert [len(b) for b in batch] == [
            await handle.count_tokens(t) + markers
            for t in ["a b", "Hello, world! How are you?", ""]
        ]
        assert await handle.tokenize([]) == []


async def test_embeddings(client: lms.AsyncClient) -> None:
    emb = await client.embedding.load(NOMIC)
    vector = await emb.embed("The cat sat on the mat.")
    assert len(vector) == 768
    assert all(isinstance(v, float) for v in vector)
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-6)
    assert await emb.embed("The cat sat on the mat.") == vector  # deterministic
    texts = ["The cat sat on the mat.", "A cat was sitting on the mat.", "Quarterly tax filing."]
    vectors = await emb.embed(texts)
    assert len(vectors) == 3
    assert vectors[0] == vector
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2])
    assert await emb.embed([]) == []


async def test_many_embeddings_run_concurrently_on_one_socket(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    emb = await client.embedding.load(NOMIC)
    vectors = await emb.embed([f"text {i}" for i in range(100)])
    assert len(vectors) == 100
    assert len({tuple(v[:4]) for v in vectors}) == 100
    assert lmstudio_server.connection_count("embedding") == 1


@pytest.mark.parametrize("method", ["embed", "tokenize"])
async def test_a_total_deadline_bounds_a_whole_list(client: lms.AsyncClient, method: str) -> None:
    # The idle deadline bounds each request's wait, the total the whole call: a list that
    # takes longer than its total fails with the total as configured.
    emb = await client.embedding.load(NOMIC)
    call = getattr(emb, method)
    texts = [f"hello world {i}" for i in range(1000)]
    started = time.monotonic()
    await call(texts)
    untimed = time.monotonic() - started
    total = round(untimed / 5, 3)
    started = time.monotonic()
    with pytest.raises(lms.LMStudioTimeoutError) as info:
        await call(texts, timeout=lms.Timeouts(total=total))
    assert time.monotonic() - started < total + 0.5  # before: the whole list succeeded
    assert (info.value.kind, info.value.timeout) == ("total", total)
    assert len(await call(texts[:50], timeout=lms.Timeouts(total=30))) == 50


async def test_a_long_list_keeps_at_most_32_requests_in_flight(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # Each request's deadline starts when it is sent, so a list of any length succeeds
    # while LM Studio keeps answering; and a failure stops what was not sent yet.
    emb = await client.embedding.load(NOMIC)
    conn = client._transport.socket("embedding")._conn
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, conn.pending_calls)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch())
    texts = [f"text {i}" for i in range(300)]
    vectors = await emb.embed(texts)
    tokens = await emb.tokenize(texts)
    watcher.cancel()
    assert 1 < most <= 32
    assert vectors[7] == await emb.embed("text 7")  # in order
    assert tokens[299] == await emb.tokenize("text 299")
    # The model goes away early in a list: the error is raised as it is, nothing is left
    # waiting, and the rest of the list is not sent.
    task = asyncio.create_task(emb.embed([f"more {i}" for i in range(3000)]))
    await eventually(lambda: conn.pending_calls > 0)
    lmstudio_server.unload_all()
    with pytest.raises(lms.ModelNotFoundError):
        await task
    assert conn.pending_calls == 0
    await asyncio.sleep(0.1)
    sent = [f for f in lmstudio_server.received_frames() if "more " in str(f.raw)]
    assert len(sent) < 500


@pytest.mark.parametrize(
    ("endpoint", "result"),
    [
        ("embedString", {"embedding": [None, 0.5]}),  # a NaN, as JSON.stringify writes it
        ("tokenize", {"tokens": None}),
        ("countTokens", {}),
        ("getLoadConfig", {"fields": "none"}),
    ],
)
async def test_a_reply_of_the_wrong_shape_is_a_protocol_error(
    client: lms.AsyncClient,
    lmstudio_server: ThreadedStandInServer,
    endpoint: str,
    result: dict[str, object],
) -> None:
    emb = await client.embedding.load(NOMIC)
    calls = {
        "embedString": lambda: emb.embed("x"),
        "tokenize": lambda: emb.tokenize("x"),
        "countTokens": lambda: emb.count_tokens("x"),
        "getLoadConfig": lambda: emb.get_load_config(),
    }
    lmstudio_server.faults.silent = True  # the call gets a forged reply instead

    def sent() -> list[int]:
        return [
            f.message["callId"]
            for f in lmstudio_server.received_frames(namespace="embedding")
            if isinstance(f.message, dict) and f.message.get("endpoint") == endpoint
        ]

    task = asyncio.create_task(calls[endpoint]())
    await eventually(lambda: len(sent()) == 1)
    lmstudio_server.faults.silent = False
    reply = {"type": "rpcResult", "callId": sent()[0], "result": result}
    lmstudio_server.faults.inject("raw", namespace="embedding", payload=reply)
    with pytest.raises(lms.ProtocolError, match="LM Studio sent an invalid"):
        await task


def _channels_opened(server: ThreadedStandInServer) -> list[str]:
    return [
        f.message["endpoint"]
        for f in server.received_frames(namespace="llm")
        if isinstance(f.message, dict)
        and f.message.get("type") == "channelCreate"
        and f.message["endpoint"] in ("predict", "completeRawText")
    ]


async def test_complete_on_an_lm_studio_without_the_complete_raw_text_channel(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # LM Studio added completeRawText in mid-2026; an older one answers it with only a
    # warning. complete() then completes through predict, as lmstudio-python does: the
    # same text, at once rather than at a deadline.
    llm = await client.llm.model(LLAMA)
    config = lms.PredictionConfig(max_tokens=10, temperature=0)
    expected = await llm.complete("Once upon a time", config=config)
    assert _channels_opened(lmstudio_server) == ["completeRawText"]
    lmstudio_server.faults.missing_endpoints = {"completeRawText"}
    for _ in range(2):
        started = time.monotonic()
        result = await llm.complete("Once upon a time", config=config, timeout=30)
        assert time.monotonic() - started < 10  # not the 30 s idle deadline
        assert result.content == expected.content
        assert result.stop_reason == "maxPredictedTokensReached"
    # The first learnt it from the server's warning; the second did not ask again.
    assert _channels_opened(lmstudio_server) == [
        "completeRawText", "completeRawText", "predict", "predict"
    ]
    assert lmstudio_server.open_channel_count() == 0


async def test_concurrent_completions_on_an_older_lm_studio_draw_one_warning(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    llm = await client.llm.model(LLAMA)
    config = lms.PredictionConfig(max_tokens=6, temperature=0)
    lmstudio_server.faults.missing_endpoints = {"completeRawText"}
    results = await asyncio.gather(*(llm.complete("Once", config=config) for _ in range(8)))
    assert len({r.content for r in results}) == 1
    assert _channels_opened(lmstudio_server) == ["completeRawText"] + ["predict"] * 8


async def test_leaving_streams_whose_replies_had_ended_draws_no_warnings(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    # A stream left after LM Studio had closed its channel sends no cancel (LM Studio
    # would answer each with a channelUnknown warning, and it sends five per connection).
    llm = await client.llm.model(LLAMA)
    for _ in range(6):
        async with llm.respond_stream("Hi", config={"max_tokens": 8}) as stream:
            async for _fragment in stream:
                await asyncio.sleep(0.15)  # the whole reply has arrived by now
                break
        assert stream.result().stop_reason == "userStopped"
    warnings = [
        f for f in lmstudio_server.sent_frames(namespace="llm") if b"communicationWarning" in (
            f.raw if isinstance(f.raw, bytes) else f.raw.encode()
        )
    ]
    assert warnings == []
    assert lmstudio_server.cancel_count == 0

