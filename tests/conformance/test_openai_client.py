"""The real ``openai`` client against the stand-in's OpenAI-compatible endpoints."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from lmstudio_async.testing import ThreadedStandInServer

pytestmark = pytest.mark.conformance

LLAMA = "llama-3.2-1b-instruct"
SMOL = "smollm2-135m-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
TOKEN = "sk-lm-abcd1234:abcdefghij0123456789"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def sync_client(server: ThreadedStandInServer, key: str = "lm-studio") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)


def async_client(server: ThreadedStandInServer, key: str = "lm-studio") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=10)


def test_models_list_every_downloaded_model_and_loaded_identifiers(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    lmstudio_server.preload(SMOL, identifier="tiny")
    with sync_client(lmstudio_server) as client:
        ids = [m.id for m in client.models.list()]
    assert ids[0] == "tiny"
    assert set(ids) == {"tiny", LLAMA, SMOL, NOMIC, "mobilevlm_v2-1.7b", "qwen2.5-7b-instruct-1m"}


def test_sync_chat_loads_just_in_time_and_reports_usage(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    messages = [{"role": "user", "content": "Tell me about harbors"}]
    with sync_client(lmstudio_server) as client:
        first = client.chat.completions.create(model=LLAMA, messages=messages)
        again = client.chat.completions.create(model=LLAMA, messages=messages)
    [inst] = lmstudio_server.loaded_instances()
    assert (inst.identifier, inst.jit, inst.ttl_ms) == (LLAMA, True, 3_600_000)
    assert first.model == LLAMA
    assert first.object == "chat.completion"
    choice = first.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert "harbor" in (choice.message.content or "").lower()
    assert choice.message.content == again.choices[0].message.content  # deterministic
    assert first.usage is not None
    assert first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


def test_sync_stream_matches_the_non_streamed_answer(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    messages = [{"role": "user", "content": "Describe a valley"}]
    with sync_client(lmstudio_server) as client:
        whole = client.chat.completions.create(model=SMOL, messages=messages, temperature=0)
        stream = client.chat.completions.create(
            model=SMOL,
            messages=messages,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) > 3  # really streamed, token by token
    assert "".join(pieces) == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finish == ["stop"]
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_max_tokens_and_stop(lmstudio_server: ThreadedStandInServer) -> None:
    messages = [{"role": "user", "content": "Explain tides"}]
    with sync_client(lmstudio_server) as client:
        full = client.chat.completions.create(model=SMOL, messages=messages)
        short = client.chat.completions.create(model=SMOL, messages=messages, max_tokens=5)
        text = full.choices[0].message.content or ""
        stop_word = text.split()[3]
        stopped = client.chat.completions.create(model=SMOL, messages=messages, stop=[stop_word])
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None
    assert short.usage.completion_tokens == 5
    assert text.startswith(short.choices[0].message.content or "<none>")
    assert stopped.choices[0].finish_reason == "stop"
    assert stopped.choices[0].message.content == text[: text.index(stop_word)]


def test_temperature_changes_the_answer(lmstudio_server: ThreadedStandInServer) -> None:
    messages = [{"role": "user", "content": "Write about rivers"}]
    with sync_client(lmstudio_server) as client:
        answers = {
            client.chat.completions.create(model=SMOL, messages=messages, temperature=t)
            .choices[0]
            .message.content
            for t in (0.0, 0.5, 1.0)
        }
    assert len(answers) == 3


@pytest.mark.lmstudio_server(tokens_per_second=300.0)
async def test_async_client_many_concurrent_streams(lmstudio_server: ThreadedStandInServer) -> None:
    lmstudio_server.preload(SMOL, identifier="small")  # an explicit load: never auto-evicted
    async with async_client(lmstudio_server) as client:

        async def one(n: int) -> str:
            stream = await client.chat.completions.create(
                model=LLAMA if n % 2 else "small",
                messages=[{"role": "user", "content": f"Question {n} about cities"}],
                stream=True,
            )
            parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
            return "".join(parts)

        answers = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(12))), 30)
    assert all(answers)
    assert len(set(answers)) == 12
    # six concurrent requests for the unloaded LLAMA shared one just-in-time load
    loaded = {i.identifier: i.jit for i in lmstudio_server.loaded_instances()}
    assert loaded == {"small": False, LLAMA: True}


async def test_async_embeddings_string_and_list(lmstudio_server: ThreadedStandInServer) -> None:
    async with async_client(lmstudio_server) as client:
        one = await client.embeddings.create(
            model=NOMIC, input="a cat sat", encoding_format="float"
        )
        many = await client.embeddings.create(
            model=NOMIC, input=["a cat sat", "stock markets fell"], encoding_format="float"
        )
        packed = await client.embeddings.create(model=NOMIC, input=["a cat sat"])  # base64 default
    assert [d.index for d in many.data] == [0, 1]
    assert many.data[0].embedding == one.data[0].embedding
    assert many.data[1].embedding != one.data[0].embedding
    assert len(one.data[0].embedding) == 768
    assert packed.data[0].embedding == pytest.approx(one.data[0].embedding, rel=1e-6, abs=1e-7)
    assert one.model == NOMIC
    assert many.usage.prompt_tokens > one.usage.prompt_tokens > 0


def test_tool_call_round_trip(lmstudio_server: ThreadedStandInServer) -> None:
    messages: list[dict[str, object]] = [
        {"role": "user", "content": "What will the weather be in 'Lisbon' for 3 days?"}
    ]
    with sync_client(lmstudio_server) as client:
        first = client.chat.completions.create(model=LLAMA, messages=messages, tools=[WEATHER])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Lisbon", "days": 3}
        with client.chat.completions.stream(
            model=LLAMA,
            messages=messages,
            tools=[WEATHER],
        ) as stream:
            streamed = stream.get_final_completion().choices[0]
        assert streamed.finish_reason == "tool_calls"
        [again] = streamed.message.tool_calls or []
        assert (again.id, again.function.arguments) == (call.id, call.function.arguments)
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny, 24 C"})
        final = client.chat.completions.create(model=LLAMA, messages=messages, tools=[WEATHER])
    assert final.choices[0].finish_reason == "stop"
    assert "sunny, 24 C" in (final.choices[0].message.content or "")


def test_tool_choice_required_or_named_forces_a_call(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    """The message names no tool and holds no quoted city, so "auto" answers in text;
    "required" (LM Studio's changelog 0.3.15: the model must call tools) and a named
    function make the model call one."""
    delivery = {
        "type": "function",
        "function": {
            "name": "get_delivery_date",
            "parameters": {
                "type": "object",
                "properties": {"order_id": {"type": "string"}},
                "required": ["order_id"],
            },
        },
    }
    messages = [{"role": "user", "content": "When does order number 1017 arrive?"}]
    named = {"type": "function", "function": {"name": "get_delivery_date"}}
    with sync_client(lmstudio_server) as client:
        auto = client.chat.completions.create(
            model=LLAMA, messages=messages, tools=[WEATHER, delivery]
        )
        required = client.chat.completions.create(
            model=LLAMA, messages=messages, tools=[WEATHER, delivery], tool_choice="required"
        )
        chosen = client.chat.completions.create(
            model=LLAMA, messages=messages, tools=[WEATHER, delivery], tool_choice=named
        )
    assert auto.choices[0].finish_reason == "stop"
    assert auto.choices[0].message.tool_calls is None
    assert required.choices[0].finish_reason == "tool_calls"
    [forced] = required.choices[0].message.tool_calls or []
    assert forced.function.name == "get_weather"  # the first offered tool
    assert json.loads(forced.function.arguments) == {"city": "", "days": 1017}
    [picked] = chosen.choices[0].message.tool_calls or []
    assert picked.function.name == "get_delivery_date"


def test_structured_output_follows_the_schema(lmstudio_server: ThreadedStandInServer) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["name", "age", "tags"],
    }
    with sync_client(lmstudio_server) as client:
        reply = client.chat.completions.create(
            model=LLAMA,
            messages=[{"role": "user", "content": "Invent a person"}],
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema},
            },
        )
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model=LLAMA,
                messages=[{"role": "user", "content": "Invent a person"}],
                response_format={"type": "json_object"},
            )
    data = json.loads(reply.choices[0].message.content or "")
    assert set(data) == {"name", "age", "tags"}
    assert isinstance(data["name"], str)
    assert isinstance(data["age"], int)
    assert 0 <= data["age"] <= 120
    assert data["tags"]
    assert all(isinstance(t, str) for t in data["tags"])
    assert "json_schema" in str(bad.value)


def test_completions_and_responses(lmstudio_server: ThreadedStandInServer) -> None:
    with sync_client(lmstudio_server) as client:
        done = client.completions.create(model=SMOL, prompt="The old port was", max_tokens=6)
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(
                model=SMOL, prompt="The old port was", max_tokens=6, stream=True
            )
        )
        first = client.responses.create(model=SMOL, input="Tell me about lighthouses")
        with client.responses.stream(
            model=SMOL, input="And about ships?", previous_response_id=first.id
        ) as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            follow = stream.get_final_response()
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None
    assert done.usage.completion_tokens == 6
    assert streamed == done.choices[0].text
    assert done.choices[0].text.startswith(" ")  # continues the prompt
    assert first.status == "completed"
    assert first.output_text
    assert first.usage is not None
    assert first.usage.output_tokens > 0
    assert "".join(deltas) == follow.output_text
    # the follow-up saw the stored conversation: a longer prompt than a fresh one
    assert follow.usage is not None
    assert follow.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens


def test_errors_are_typed(lmstudio_server: ThreadedStandInServer) -> None:
    with sync_client(lmstudio_server) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            client.chat.completions.create(
                model="no-such-model", messages=[{"role": "user", "content": "hi"}]
            )
        with pytest.raises(openai.BadRequestError) as wrong_domain:
            client.embeddings.create(model=LLAMA, input="hi")
        with pytest.raises(openai.BadRequestError) as bad_temperature:
            client.chat.completions.create(
                model=LLAMA, messages=[{"role": "user", "content": "hi"}], temperature=-1
            )
    assert missing.value.status_code == 404
    assert missing.value.code == "model_not_found"
    assert "no-such-model" in missing.value.message
    assert wrong_domain.value.code == "model_type_mismatch"
    assert bad_temperature.value.param == "temperature"
    assert lmstudio_server.loaded_instances() == []  # bad input loads nothing


@pytest.mark.lmstudio_server(tokens_per_second=40.0)
async def test_an_unload_mid_request_is_not_undone_by_the_default_retries(
    lmstudio_server: ThreadedStandInServer,
) -> None:
    """The openai client retries a 503 twice by default; a retry would load the model just
    in time again, silently undoing the unload. The stand-in's 503 says not to retry."""
    lmstudio_server.preload(LLAMA)  # an explicit load
    async with openai.AsyncOpenAI(
        base_url=lmstudio_server.url + "/v1", api_key="lm-studio", timeout=20
    ) as client:
        assert client.max_retries == 2
        request = asyncio.create_task(
            client.chat.completions.create(
                model=LLAMA,
                messages=[{"role": "user", "content": "Tell me about harbors"}],
                max_tokens=40,
            )
        )
        await asyncio.sleep(0.3)  # generating by now
        assert not request.done()
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                lmstudio_server.url + "/api/v1/models/unload", json={"instance_id": LLAMA}
            ) as unloaded,
        ):
            assert unloaded.status == 200, await unloaded.text()
        with pytest.raises(openai.InternalServerError) as failed:
            await request
    assert failed.value.status_code == 503
    assert failed.value.code == "model_unloaded"
    assert "unloaded during the request" in failed.value.message
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert lmstudio_server.loaded_instances() == []  # the unload stands


@pytest.mark.lmstudio_server(api_token=TOKEN)
async def test_api_token_is_required(lmstudio_server: ThreadedStandInServer) -> None:
    async with async_client(lmstudio_server, key="sk-lm-wrong123:abcdefghij0123456789") as bad:
        with pytest.raises(openai.AuthenticationError):
            await bad.models.list()
    async with async_client(lmstudio_server, key=TOKEN) as good:
        models = await good.models.list()
        reply = await good.chat.completions.create(
            model=SMOL, messages=[{"role": "user", "content": "hello"}]
        )
    assert len(models.data) == 5
    assert reply.choices[0].message.content
