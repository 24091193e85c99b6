"""Inference endpoints over raw WebSocket JSON: predict, completeRawText, tokenizer, templates,
embeddings, cancel, prompt progress, errors and TTL."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer

from ._wire import RawClient, Socket, messages, stack, types

LLAMA = "llama-3.2-1b-instruct"
NOMIC = "text-embedding-nomic-embed-text-v1.5"
SMOL = "smollm2-135m-instruct"
QWEN = "qwen2.5-7b-instruct-1m"

FRAGMENT_KEYS = {"content", "tokensCount", "containsDrafted", "reasoningType", "isStructural"}
DETAIL_KEYS = {
    "cachedTokenCount",
    "totalPromptTokenCount",
    "processedPromptTokenCount",
    "unprocessedPromptTokenCount",
}


def query(identifier: str) -> dict[str, Any]:
    return {"type": "query", "query": {"identifier": identifier}}


def chat(*turns: tuple[str, str]) -> dict[str, Any]:
    return {
        "messages": [
            {"role": role, "content": [{"type": "text", "text": text}]} for role, text in turns
        ]
    }


def predict_param(
    model: str = LLAMA, prompt: str = "Tell me about lighthouses.", **config: Any
) -> dict[str, Any]:
    return {
        "modelSpecifier": query(model),
        "history": chat(("user", prompt)),
        "predictionConfigStack": stack(**config),
    }


def fragments(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m["fragment"] for m in messages(frames) if m["type"] == "fragment"]


def content(frames: list[dict[str, Any]]) -> str:
    return "".join(f["content"] for f in fragments(frames))


def success(frames: list[dict[str, Any]]) -> dict[str, Any]:
    [done] = [m for m in messages(frames) if m["type"] == "success"]
    return done


def kv(config: dict[str, Any]) -> dict[str, Any]:
    return {f["key"]: f.get("value") for f in config["fields"]}


async def predict(sock: Socket, **kwargs: Any) -> list[dict[str, Any]]:
    return await sock.channel("predict", predict_param(**kwargs))


@pytest.fixture
async def llm(server: StandInServer, client: RawClient) -> Socket:
    server.preload(LLAMA)
    return await client.connect("llm")


# --- predict: shapes --------------------------------------------------------------------------


async def test_predict_message_sequence(server: StandInServer, llm: Socket) -> None:
    frames = await predict(llm)
    kinds = types(frames)
    assert kinds[-2:] == ["success", "channelClose"]
    assert set(kinds[:-2]) == {"fragment"}
    assert len(kinds) > 10
    for fragment in fragments(frames):
        assert set(fragment) == FRAGMENT_KEYS
        assert fragment["content"]
        assert fragment["tokensCount"] == 1
        assert fragment["containsDrafted"] is False
        assert fragment["reasoningType"] == "none"
        assert fragment["isStructural"] is False
    done = success(frames)
    assert set(done) == {"type", "stats", "modelInfo", "loadModelConfig", "predictionConfig"}
    stats = done["stats"]
    assert stats["stopReason"] == "eosFound"
    assert stats["predictedTokensCount"] == len(fragments(frames))
    assert stats["totalTokensCount"] == stats["promptTokensCount"] + stats["predictedTokensCount"]
    assert stats["tokensPerSecond"] > 0
    assert 0 < stats["timeToFirstTokenSec"] <= stats["totalTimeSec"]
    assert done["modelInfo"]["identifier"] == LLAMA
    assert done["modelInfo"]["instanceReference"] == server.loaded_instances()[0].instance_reference
    load_config = await llm.result("getLoadConfig", {"specifier": query(LLAMA)})
    assert done["loadModelConfig"] == load_config
    prediction = kv(done["predictionConfig"])
    assert prediction["llm.prediction.temperature"] == 0.8
    assert prediction["llm.prediction.maxPredictedTokens"] == {"checked": False, "value": 1000}
    assert prediction["llm.prediction.promptTemplate"]["type"] == "jinja"
    # readable English-like text
    text = content(frames)
    assert text[0].isupper()
    assert text.rstrip()[-1] in ".!?"
    assert all(word.isascii() for word in text.split())


async def test_predict_is_deterministic(llm: Socket) -> None:
    first = content(await predict(llm))
    again = content(await predict(llm))
    assert first == again
    other_prompt = content(await predict(llm, prompt="How do volcanoes form?"))
    assert other_prompt != first
    hotter = content(await predict(llm, **{"llm.prediction.temperature": 1.2}))
    assert hotter != first


async def test_a_number_gives_the_same_text_written_as_int_or_float(llm: Socket) -> None:
    # JSON (and LM Studio's JavaScript) cannot tell 0 from 0.0: the JS SDK writes 0, Python
    # clients 0.0. The same settings must give the same text either way.
    def settings(whole: type) -> dict[str, Any]:
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": whole(3)}}}
        return {
            "llm.prediction.temperature": whole(0),
            "llm.prediction.topKSampling": whole(40),
            "llm.prediction.topPSampling": {"checked": True, "value": whole(1)},
            "llm.prediction.repeatPenalty": {"checked": True, "value": whole(1)},
            "llm.prediction.structured": {"type": "json", "jsonSchema": schema},
        }

    as_int = await predict(llm, **settings(int))
    as_float = await predict(llm, **settings(float))
    assert content(as_int) == content(as_float)
    # ... and so must a tool call's arguments in the history (rendered into the prompt).
    replies = []
    for whole in (int, float):
        call = {"type": "function", "name": "add", "id": "c1", "arguments": {"a": whole(2)}}
        history = {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Add two."}]},
                {
                    "role": "assistant",
                    "content": [{"type": "toolCallRequest", "toolCallRequest": call}],
                },
                {"role": "tool", "content": [{"type": "toolCallResult", "content": "4"}]},
            ]
        }
        param = {**predict_param(), "history": history}
        replies.append(await llm.channel("predict", param))
    assert content(replies[0]) == content(replies[1])
    assert '"a": 2}' in await apply(llm, LLAMA, history)


async def test_topic_comes_from_the_prompt(llm: Socket) -> None:
    text = content(await predict(llm, prompt="What is the capital of France?"))
    assert "France" in text


async def test_load_seed_changes_sampling_but_not_greedy(
    server: StandInServer, client: RawClient
) -> None:
    server.preload(LLAMA, identifier="a", config={"llm.load.seed": {"checked": True, "value": 1}})
    server.preload(LLAMA, identifier="b", config={"llm.load.seed": {"checked": True, "value": 2}})
    sock = await client.connect("llm")
    a = content(await predict(sock, model="a"))
    b = content(await predict(sock, model="b"))
    assert a != b
    greedy = {"llm.prediction.temperature": 0}
    assert content(await predict(sock, model="a", **greedy)) == content(
        await predict(sock, model="b", **greedy)
    )


async def test_max_predicted_tokens(llm: Socket) -> None:
    frames = await predict(
        llm, **{"llm.prediction.maxPredictedTokens": {"checked": True, "value": 5}}
    )
    assert len(fragments(frames)) == 5
    stats = success(frames)["stats"]
    assert stats["stopReason"] == "maxPredictedTokensReached"
    assert stats["predictedTokensCount"] == 5
    full = content(await predict(llm))
    assert full.startswith(content(frames))
    # unchecked: no limit
    frames = await predict(
        llm, **{"llm.prediction.maxPredictedTokens": {"checked": False, "value": 5}}
    )
    assert content(frames) == full
    # lmstudio-python's "disabled" form
    frames = await predict(
        llm, **{"llm.prediction.maxPredictedTokens": {"checked": True, "value": False}}
    )
    assert content(frames) == full
    echoed = kv(success(frames)["predictionConfig"])["llm.prediction.maxPredictedTokens"]
    assert echoed == {"checked": True, "value": False}


async def test_stop_strings(llm: Socket) -> None:
    full = content(await predict(llm))
    words = full.split()
    stop = words[len(words) // 2]
    frames = await predict(llm, **{"llm.prediction.stopStrings": ["never-there", stop]})
    text = content(frames)
    assert text == full[: full.index(stop)]
    stats = success(frames)["stats"]
    assert stats["stopReason"] == "stopStringFound"
    assert stats["stopString"] == stop
    assert stats["predictedTokensCount"] == len(fragments(frames))
    # a stop string that starts inside a token cuts that token
    inner = stop[1:] + full[full.index(stop) + len(stop) :][:2]
    frames = await predict(llm, **{"llm.prediction.stopStrings": [inner]})
    assert content(frames) == full[: full.index(inner)]
    # a stop string that never occurs changes nothing
    frames = await predict(llm, **{"llm.prediction.stopStrings": ["zzz-not-there"]})
    assert content(frames) == full
    assert success(frames)["stats"]["stopReason"] == "eosFound"


async def test_max_tokens_before_stop_string(llm: Socket) -> None:
    full = content(await predict(llm))
    stop = full.split()[-2]
    frames = await predict(
        llm,
        **{
            "llm.prediction.stopStrings": [stop],
            "llm.prediction.maxPredictedTokens": {"checked": True, "value": 3},
        },
    )
    assert success(frames)["stats"]["stopReason"] == "maxPredictedTokensReached"
    assert len(fragments(frames)) == 3


async def test_layers_collapse_later_wins(llm: Socket) -> None:
    param = predict_param()
    param["predictionConfigStack"] = {
        "layers": [
            {
                "layerName": "apiOverride",
                "config": {
                    "fields": [
                        {
                            "key": "llm.prediction.maxPredictedTokens",
                            "value": {"checked": True, "value": 9},
                        },
                        {"key": "llm.prediction.temperature", "value": 0.1},
                    ]
                },
            },
            {
                "layerName": "conversationSpecific",
                "config": {
                    "fields": [
                        {
                            "key": "llm.prediction.maxPredictedTokens",
                            "value": {"checked": True, "value": 4},
                        },
                        {"key": "llm.prediction.someFutureKey", "value": {"x": 1}},
                        {"key": "llm.load.contextLength", "value": 99},
                    ]
                },
            },
        ]
    }
    frames = await llm.channel("predict", param)
    assert len(fragments(frames)) == 4
    echoed = kv(success(frames)["predictionConfig"])
    assert echoed["llm.prediction.maxPredictedTokens"] == {"checked": True, "value": 4}
    assert echoed["llm.prediction.temperature"] == 0.1
    assert echoed["llm.prediction.someFutureKey"] == {"x": 1}
    assert "llm.load.contextLength" not in echoed


async def test_context_limit_with_stop_at_limit(server: StandInServer, client: RawClient) -> None:
    server.preload(SMOL, config={"llm.load.contextLength": 30})
    sock = await client.connect("llm")
    frames = await predict(
        sock, model=SMOL, **{"llm.prediction.contextOverflowPolicy": "stopAtLimit"}
    )
    stats = success(frames)["stats"]
    assert stats["stopReason"] == "contextLengthReached"
    assert stats["totalTokensCount"] == 30


# --- structured output ---------------------------------------------------------------------


def validate(value: Any, schema: Any, root: Any = None) -> None:
    """A tiny JSON-schema validator (the subset the stand-in promises)."""
    root = schema if root is None else root
    if not isinstance(schema, dict):
        return
    if "$ref" in schema:
        target = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        validate(value, target, root)
    if "const" in schema:
        assert value == schema["const"]
    if "enum" in schema:
        assert value in schema["enum"], (value, schema["enum"])
    if "anyOf" in schema:
        errors = 0
        for option in schema["anyOf"]:
            try:
                validate(value, option, root)
            except AssertionError:
                errors += 1
        assert errors < len(schema["anyOf"]), (value, schema)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": lambda v: isinstance(v, bool),
            "null": lambda v: v is None,
        }
        assert any(checks[k](value) for k in kinds), (value, kind)
    if isinstance(value, dict):
        for name in schema.get("required", []):
            assert name in value, (name, value)
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                validate(value[name], sub, root)
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(schema.get("properties", {}))
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0)
        assert len(value) <= schema.get("maxItems", len(value))
        for item in value:
            validate(item, schema.get("items", {}), root)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema:
            assert value >= schema["minimum"]
        if "maximum" in schema:
            assert value <= schema["maximum"]
        if "exclusiveMinimum" in schema:
            assert value > schema["exclusiveMinimum"]
        if "exclusiveMaximum" in schema:
            assert value < schema["exclusiveMaximum"]
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0)
        assert len(value) <= schema.get("maxLength", len(value))


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "height": {"type": "number", "exclusiveMinimum": 1.0, "maximum": 2.5},
        "member": {"type": "boolean"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 4},
        "nickname": {"anyOf": [{"type": "string", "maxLength": 5}, {"type": "null"}]},
        "address": {"$ref": "#/$defs/Address"},
        "code": {"type": "string", "minLength": 12},
        "kind": {"const": "person"},
    },
    "required": ["name", "age", "address", "extra"],
    "additionalProperties": False,
    "$defs": {
        "Address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
            "required": ["city", "zip"],
        }
    },
}
PERSON["properties"]["extra"] = {"type": ["integer", "null"]}  # type: ignore[index]

SCHEMAS = [
    PERSON,
    {  # msgspec / pydantic style: a root $ref
        "$ref": "#/$defs/Point",
        "$defs": {
            "Point": {
                "type": "object",
                "properties": {
                    "x": {"type": "integer", "maximum": -5},
                    "y": {"type": "number", "exclusiveMaximum": 0},
                    "label": {"type": "string", "maxLength": 3},
                    "ids": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
                },
                "required": ["x", "y", "label"],
            }
        },
    },
    {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]},
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"id": {"type": "integer"}, "ok": {"type": "boolean"}},
                    "required": ["id", "ok"],
                },
            }
        },
        "required": ["items"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_structured_json_output_validates(llm: Socket, schema: dict[str, Any]) -> None:
    structured = {"type": "json", "jsonSchema": schema}
    frames = await predict(llm, **{"llm.prediction.structured": structured})
    text = content(frames)
    value = json.loads(text)
    validate(value, schema)
    assert success(frames)["stats"]["stopReason"] == "eosFound"
    assert kv(success(frames)["predictionConfig"])["llm.prediction.structured"] == structured
    assert len(fragments(frames)) > 3  # streamed in pieces
    again = content(await predict(llm, **{"llm.prediction.structured": structured}))
    assert again == text


async def test_recursive_schema_does_not_break_the_channel(llm: Socket) -> None:
    node = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "child": {"$ref": "#/$defs/Node"}},
                "required": ["name", "child"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    structured = {"type": "json", "jsonSchema": node}
    frames = await predict(llm, **{"llm.prediction.structured": structured})
    assert types(frames)[-2:] == ["success", "channelClose"]
    value = json.loads(content(frames))
    assert isinstance(value["name"], str)


async def test_structured_output_with_different_prompts_varies(llm: Socket) -> None:
    structured = {"type": "json", "jsonSchema": PERSON}
    values = {
        content(await predict(llm, prompt=p, **{"llm.prediction.structured": structured}))
        for p in ("Describe a person.", "Describe a sailor.", "Describe a pilot.")
    }
    assert len(values) == 3


# --- cancel, progress, unloads -------------------------------------------------------------


@pytest.mark.lmstudio_server(tokens_per_second=100)
async def test_cancel_stops_with_user_stopped(server: StandInServer, llm: Socket) -> None:
    channel_id = await llm.open_channel("predict", predict_param())
    received: list[dict[str, Any]] = []
    while len(received) < 2:
        frame = await llm.recv()
        assert frame["channelId"] == channel_id
        received.append(frame)
    await llm.send({"type": "channelSend", "channelId": channel_id, "message": {"type": "cancel"}})
    frames = received + await llm.collect(channel_id)
    assert types(frames)[-2:] == ["success", "channelClose"]
    stats = success(frames)["stats"]
    assert stats["stopReason"] == "userStopped"
    assert stats["predictedTokensCount"] == len(fragments(frames)) < 10
    assert [c.endpoint for c in server.cancels()] == ["predict"]
    assert [i.identifier for i in server.loaded_instances()] == [LLAMA]
    assert server.open_channel_count(endpoint="predict") == 0
    # the model still works
    assert success(await predict(llm))["stats"]["stopReason"] == "eosFound"


@pytest.mark.lmstudio_server(tokens_per_second=400)
async def test_cancel_during_prompt_processing(server: StandInServer, llm: Socket) -> None:
    channel_id = await llm.open_channel("predict", predict_param(prompt="word " * 400))
    first = await llm.recv()
    assert first["message"]["type"] == "promptProcessingProgress"
    await llm.send({"type": "channelSend", "channelId": channel_id, "message": {"type": "cancel"}})
    frames = await llm.collect(channel_id)
    assert "fragment" not in types(frames)
    stats = success(frames)["stats"]
    assert stats["stopReason"] == "userStopped"
    assert stats["predictedTokensCount"] == 0
    assert "timeToFirstTokenSec" not in stats


async def test_prompt_processing_progress(llm: Socket) -> None:
    long_prompt = "Please summarise this passage about rivers and mountains. " * 20
    frames = await predict(llm, prompt=long_prompt)
    kinds = types(frames)
    first_fragment = kinds.index("fragment")
    assert kinds[:first_fragment] == ["promptProcessingProgress"] * first_fragment
    assert first_fragment >= 3
    progress = [m for m in messages(frames) if m["type"] == "promptProcessingProgress"]
    values = [m["progress"] for m in progress]
    assert values[0] == 0
    assert values[-1] == 1
    assert values == sorted(set(values))
    total = success(frames)["stats"]["promptTokensCount"]
    for m in progress:
        d = m["details"]
        assert set(d) == DETAIL_KEYS
        assert d["totalPromptTokenCount"] == total
        assert d["cachedTokenCount"] == 0
        assert d["processedPromptTokenCount"] + d["unprocessedPromptTokenCount"] == total
    assert progress[-1]["details"]["unprocessedPromptTokenCount"] == 0
    # the same prompt again: the prefix is cached, so there is nothing left to report
    again = await predict(llm, prompt=long_prompt)
    assert "promptProcessingProgress" not in types(again)
    # a short prompt has no progress packets
    assert "promptProcessingProgress" not in types(await predict(llm, prompt="Hi"))


async def test_cached_prefix_is_reported(llm: Socket) -> None:
    base = "Please summarise this passage about rivers and mountains. " * 20
    first = await predict(llm, prompt=base)
    answer = content(first)
    param = predict_param()
    param["history"] = chat(
        ("user", base), ("assistant", answer), ("user", "Now say more about valleys. " * 10)
    )
    frames = await llm.channel("predict", param)
    progress = [m for m in messages(frames) if m["type"] == "promptProcessingProgress"]
    assert progress
    cached = progress[0]["details"]["cachedTokenCount"]
    assert 0 < cached < success(frames)["stats"]["promptTokensCount"]


@pytest.mark.lmstudio_server(tokens_per_second=100)
async def test_unload_during_prediction(
    server: StandInServer, client: RawClient, llm: Socket
) -> None:
    channel_id = await llm.open_channel("predict", predict_param())
    await llm.recv()
    other = await client.connect("llm")
    await other.result("unloadModel", {"identifier": LLAMA})
    frames = await llm.collect(channel_id)
    assert types(frames)[-2:] == ["success", "channelClose"]
    assert success(frames)["stats"]["stopReason"] == "modelUnloaded"


@pytest.mark.lmstudio_server(tokens_per_second=500)
async def test_rate_follows_tokens_per_second(llm: Socket) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    limit = {"llm.prediction.maxPredictedTokens": {"checked": True, "value": 50}}
    frames = await predict(llm, **limit)
    elapsed = loop.time() - started
    assert len(fragments(frames)) == 50
    assert elapsed >= 50 / 500 * 0.9
    assert 150 < success(frames)["stats"]["tokensPerSecond"] <= 600


# --- completeRawText and text completion ---------------------------------------------------


async def test_complete_raw_text(llm: Socket) -> None:
    param = {
        "modelSpecifier": query(LLAMA),
        "rawPrompt": "Once upon a time there was a dragon",
        "predictionConfigStack": stack(),
    }
    frames = await llm.channel("completeRawText", param)
    assert types(frames)[-2:] == ["success", "channelClose"]
    text = content(frames)
    assert text.startswith(" ")  # continues the prompt
    assert "dragon" in text
    stats = success(frames)["stats"]
    count = await llm.result(
        "countTokens", {"specifier": query(LLAMA), "inputString": param["rawPrompt"]}
    )
    assert stats["promptTokensCount"] == count["tokenCount"]
    assert content(await llm.channel("completeRawText", param)) == text


async def test_python_sdk_completion_layer(llm: Socket) -> None:
    template = {
        "type": "jinja",
        "jinjaPromptTemplate": {
            "bosToken": "",
            "eosToken": "",
            "template": "{% for message in messages %}{{ message['content'] }}{% endfor %}",
            "inputConfig": {
                "messagesConfig": {"contentConfig": {"type": "string"}},
                "useTools": False,
            },
        },
        "stopStrings": [],
    }
    param = predict_param(prompt="The history of bread begins")
    param["predictionConfigStack"]["layers"].append(
        {
            "layerName": "completeModeFormatting",
            "config": {"fields": [{"key": "llm.prediction.promptTemplate", "value": template}]},
        }
    )
    frames = await llm.channel("predict", param)
    stats = success(frames)["stats"]
    count = await llm.result(
        "countTokens", {"specifier": query(LLAMA), "inputString": "The history of bread begins"}
    )
    assert stats["promptTokensCount"] == count["tokenCount"] == 5
    assert content(frames).startswith(" ")
    assert kv(success(frames)["predictionConfig"])["llm.prediction.promptTemplate"] == template


# --- tokenizer -----------------------------------------------------------------------------


async def test_tokenizer(server: StandInServer, client: RawClient) -> None:
    server.preload(LLAMA)
    server.preload(NOMIC)
    for namespace, model in (("llm", LLAMA), ("embedding", NOMIC)):
        sock = await client.connect(namespace)
        spec = query(model)
        tokens = await sock.result("tokenize", {"specifier": spec, "inputString": "Hello, world!"})
        # embedding models add start/end markers (countTokens + 2), LLMs none
        markers = 2 if namespace == "embedding" else 0
        assert len(tokens["tokens"]) == 4 + markers
        assert all(isinstance(t, int) and t >= 0 for t in tokens["tokens"])
        again = await sock.result("tokenize", {"specifier": spec, "inputString": "world, Hello!"})
        assert sorted(again["tokens"]) == sorted(tokens["tokens"])
        if markers:
            assert (tokens["tokens"][0], tokens["tokens"][-1]) == (101, 102)
            empty = await sock.result("tokenize", {"specifier": spec, "inputString": ""})
            assert empty == {"tokens": [101, 102]}
        count = await sock.result("countTokens", {"specifier": spec, "inputString": ""})
        assert count == {"tokenCount": 0}
        special = await sock.result(
            "countTokens", {"specifier": spec, "inputString": "<|eot_id|><|im_start|>user"}
        )
        assert special == {"tokenCount": 3}


async def test_stats_agree_with_tokenizer(llm: Socket) -> None:
    history = chat(("system", "You are terse."), ("user", "Describe the moon in detail."))
    param = {
        "modelSpecifier": query(LLAMA),
        "history": history,
        "predictionConfigStack": stack(),
    }
    frames = await llm.channel("predict", param)
    stats = success(frames)["stats"]
    spec = query(LLAMA)
    formatted = await llm.result(
        "applyPromptTemplate",
        {
            "specifier": spec,
            "history": history,
            "predictionConfigStack": {"layers": []},
            "opts": {},
        },
    )
    prompt_count = await llm.result(
        "countTokens", {"specifier": spec, "inputString": formatted["formatted"]}
    )
    assert stats["promptTokensCount"] == prompt_count["tokenCount"]
    output_count = await llm.result(
        "countTokens", {"specifier": spec, "inputString": content(frames)}
    )
    assert stats["predictedTokensCount"] == output_count["tokenCount"] == len(fragments(frames))


# --- prompt templates ----------------------------------------------------------------------


async def apply(sock: Socket, model: str, history: dict[str, Any], **opts: Any) -> str:
    result = await sock.result(
        "applyPromptTemplate",
        {
            "specifier": query(model),
            "history": history,
            "predictionConfigStack": {"layers": []},
            "opts": opts,
        },
    )
    return str(result["formatted"])


async def test_llama3_template(llm: Socket) -> None:
    history = chat(("system", "Be brief."), ("user", "Hi!"))
    assert await apply(llm, LLAMA, history) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    no_bos = await apply(llm, LLAMA, history, omitBosToken=True)
    assert no_bos.startswith("<|start_header_id|>system")
    finished = chat(("user", "Hi!"), ("assistant", "Hello."))
    assert (await apply(llm, LLAMA, finished)).endswith("Hello.<|eot_id|>")
    assert (await apply(llm, LLAMA, finished, omitEosToken=True)).endswith("Hello.")


async def test_chatml_templates(server: StandInServer, client: RawClient) -> None:
    server.preload(SMOL)
    server.preload(QWEN)
    sock = await client.connect("llm")
    history = chat(("user", "Hi!"))
    expected = "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n"
    assert await apply(sock, SMOL, history) == expected
    assert await apply(sock, QWEN, history, omitBosToken=True) == expected
    finished = chat(("user", "Hi!"), ("assistant", "Hello."))
    assert (await apply(sock, SMOL, finished)).endswith("<|im_start|>assistant\nHello.<|im_end|>\n")
    assert (await apply(sock, SMOL, finished, omitEosToken=True)).endswith("assistant\nHello.")


async def test_template_renders_tool_and_file_parts(llm: Socket) -> None:
    history = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "name": "cat.png",
                        "identifier": "f1",
                        "sizeBytes": 3,
                        "fileType": "image",
                    },
                    {"type": "text", "text": "What is this?"},
                ],
            },
            {
                "role": "tool",
                "content": [{"type": "toolCallResult", "content": "42", "toolCallId": "c1"}],
            },
        ]
    }
    text = await apply(llm, LLAMA, history)
    assert "[file: cat.png]\n\nWhat is this?" in text
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n42<|eot_id|>" in text


async def test_manual_prompt_template(llm: Socket) -> None:
    manual = {
        "type": "manual",
        "manualPromptTemplate": {
            "beforeSystem": "S: ",
            "afterSystem": "\n",
            "beforeUser": "U: ",
            "afterUser": "\n",
            "beforeAssistant": "A: ",
            "afterAssistant": "\n",
        },
        "stopStrings": [],
    }
    param = predict_param(prompt="Hello there")
    param["predictionConfigStack"] = stack(**{"llm.prediction.promptTemplate": manual})
    frames = await llm.channel("predict", param)
    count = await llm.result(
        "countTokens", {"specifier": query(LLAMA), "inputString": "U: Hello there\nA: "}
    )
    assert success(frames)["stats"]["promptTokensCount"] == count["tokenCount"]


async def test_base_prediction_config(llm: Socket) -> None:
    config = kv(await llm.result("getBasePredictionConfig", {"specifier": query(LLAMA)}))
    assert config["llm.prediction.temperature"] == 0.8
    assert config["llm.prediction.stopStrings"] == []
    assert config["llm.prediction.structured"] == {"type": "none"}
    assert (
        "<|start_header_id|>"
        in config["llm.prediction.promptTemplate"]["jinjaPromptTemplate"]["template"]
    )


# --- embeddings ----------------------------------------------------------------------------


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_embeddings(server: StandInServer, client: RawClient) -> None:
    server.preload(NOMIC)
    sock = await client.connect("embedding")

    async def embed(text: str) -> list[float]:
        result = await sock.result(
            "embedString", {"modelSpecifier": query(NOMIC), "inputString": text}
        )
        return list(result["embedding"])

    cat = await embed("The cat sat on the mat.")
    assert len(cat) == 768
    assert math.isclose(sum(v * v for v in cat), 1.0, rel_tol=1e-9)
    assert await embed("The cat sat on the mat.") == cat
    similar = await embed("A cat was sitting on the mat")
    related = await embed("Dogs and cats are popular pets")
    unrelated = await embed("Quarterly revenue grew in the banking sector")
    assert cosine(cat, similar) > cosine(cat, related) > cosine(cat, unrelated)
    assert cosine(cat, unrelated) < 0.3
    empty = await embed("")
    assert len(empty) == 768
    assert math.isclose(sum(v * v for v in empty), 1.0, rel_tol=1e-9)


# --- errors and validation -----------------------------------------------------------------


async def test_no_matching_model(server: StandInServer, client: RawClient) -> None:
    server.preload(SMOL)
    sock = await client.connect("llm")
    frames = await predict(sock, model=LLAMA)  # downloaded but not loaded: no JIT here
    assert types(frames) == ["channelError"]
    error = frames[0]["error"]
    assert error["displayData"] == {
        "code": "generic.noModelMatchingQuery",
        "query": {"identifier": LLAMA},
        "loadedModelsSample": [SMOL],
        "totalLoadedModels": 1,
    }
    assert [i.identifier for i in server.loaded_instances()] == [SMOL]
    raw = await sock.channel(
        "completeRawText",
        {"modelSpecifier": query("nope"), "rawPrompt": "x", "predictionConfigStack": stack()},
    )
    assert raw[0]["error"]["displayData"]["code"] == "generic.noModelMatchingQuery"
    for endpoint, param in (
        ("tokenize", {"specifier": query("nope"), "inputString": "x"}),
        ("countTokens", {"specifier": query("nope"), "inputString": "x"}),
        (
            "applyPromptTemplate",
            {
                "specifier": query("nope"),
                "history": chat(),
                "predictionConfigStack": stack(),
                "opts": {},
            },
        ),
    ):
        reply = await sock.rpc(endpoint, param)
        assert reply["type"] == "rpcError"
        assert reply["error"]["displayData"]["code"] == "generic.noModelMatchingQuery"
    emb = await client.connect("embedding")
    reply = await emb.rpc("embedString", {"modelSpecifier": query("nope"), "inputString": "x"})
    assert reply["error"]["displayData"]["code"] == "generic.noModelMatchingQuery"


async def test_stale_instance_reference(server: StandInServer, client: RawClient) -> None:
    ref = server.preload(LLAMA).instance_reference
    server.unload_all()
    server.preload(LLAMA)
    sock = await client.connect("llm")
    param = predict_param()
    param["modelSpecifier"] = {"type": "instanceReference", "instanceReference": ref}
    frames = await sock.channel("predict", param)
    assert frames[0]["type"] == "channelError"
    assert frames[0]["error"]["displayData"] == {"code": "generic.specificModelUnloaded"}


async def test_instance_reference_works(server: StandInServer, client: RawClient) -> None:
    ref = server.preload(LLAMA).instance_reference
    sock = await client.connect("llm")
    param = predict_param()
    param["modelSpecifier"] = {"type": "instanceReference", "instanceReference": ref}
    assert success(await sock.channel("predict", param))["stats"]["stopReason"] == "eosFound"


async def test_invalid_parameters_warn(llm: Socket) -> None:
    bad = [
        {"modelSpecifier": query(LLAMA), "predictionConfigStack": stack()},  # no history
        {**predict_param(), "history": {"messages": [{"role": "robot", "content": []}]}},
        {**predict_param(), "history": {"messages": [{"role": "user", "content": "hi"}]}},
        {
            **predict_param(),
            "predictionConfigStack": {"layers": [{"layerName": "nope", "config": {"fields": []}}]},
        },
    ]
    for param in bad:
        await llm.open_channel("predict", param)
        warning = await llm.recv()
        assert warning["type"] == "communicationWarning"
        assert warning["kind"] == "channelCreationParameterTypeError"
    await llm.barrier()


def _file(**extra: Any) -> dict[str, Any]:
    return {"type": "file", "name": "a.png", "identifier": "f1", **extra}


_SIZED = {"sizeBytes": 3, "fileType": "image"}
_CALL = {"type": "toolCallRequest", "toolCallRequest": {"type": "function", "name": "f"}}
_RESULT = {"type": "toolCallResult", "content": "42"}
_TEXT = {"type": "text", "text": "hi"}

# Histories lms-shared-types/src/ChatHistoryData.ts (chatMessageDataSchema) refuses.
BAD_HISTORIES: dict[str, list[dict[str, Any]]] = {
    "user toolCallResult": [{"role": "user", "content": [_RESULT]}],
    "user toolCallRequest": [{"role": "user", "content": [_CALL]}],
    "system toolCallRequest": [{"role": "system", "content": [_CALL]}],
    "assistant toolCallResult": [{"role": "assistant", "content": [_RESULT]}],
    "tool text": [{"role": "tool", "content": [_TEXT]}],
    "tool file": [{"role": "tool", "content": [_file(**_SIZED)]}],
    "file without sizeBytes": [{"role": "user", "content": [_file(fileType="image")]}],
    "file without fileType": [{"role": "user", "content": [_file(sizeBytes=3)]}],
    "file sizeBytes 2.5": [{"role": "user", "content": [_file(sizeBytes=2.5, fileType="image")]}],
    "file fileType video": [{"role": "user", "content": [_file(sizeBytes=3, fileType="video")]}],
    "empty toolCallRequest": [
        {"role": "assistant", "content": [{"type": "toolCallRequest", "toolCallRequest": {}}]}
    ],
    "toolCallRequest without name": [
        {
            "role": "assistant",
            "content": [{"type": "toolCallRequest", "toolCallRequest": {"type": "function"}}],
        }
    ],
    "toolCallRequest list arguments": [
        {
            "role": "assistant",
            "content": [
                {
                    "type": "toolCallRequest",
                    "toolCallRequest": {"type": "function", "name": "f", "arguments": [1]},
                }
            ],
        }
    ],
    "toolCallResult numeric id": [
        {"role": "tool", "content": [{**_RESULT, "toolCallId": 7}]},
    ],
}


@pytest.mark.parametrize("name", list(BAD_HISTORIES))
async def test_histories_the_schema_refuses_warn(llm: Socket, name: str) -> None:
    history = {"messages": BAD_HISTORIES[name]}
    await llm.open_channel("predict", {**predict_param(), "history": history})
    warning = await llm.recv()
    assert warning["kind"] == "channelCreationParameterTypeError", warning
    param = {
        "specifier": query(LLAMA),
        "history": history,
        "predictionConfigStack": {"layers": []},
        "opts": {},
    }
    await llm.send(
        {"type": "rpcCall", "endpoint": "applyPromptTemplate", "callId": 1, "parameter": param}
    )
    warning = await llm.recv()
    assert warning["kind"] == "rpcParameterTypeError", warning
    await llm.barrier()


async def test_every_part_the_schema_allows_is_accepted(llm: Socket) -> None:
    call = {"type": "function", "name": "f", "id": "c1", "arguments": {"x": [1, {"y": None}]}}
    history = {
        "messages": [
            {"role": "system", "content": [_TEXT, _file(**_SIZED)]},
            {"role": "user", "content": [_TEXT, _file(sizeBytes=3.0, fileType="unknown")]},
            {
                "role": "assistant",
                "content": [
                    _TEXT,
                    _file(**_SIZED),
                    {"type": "toolCallRequest", "toolCallRequest": call},
                ],
            },
            {"role": "tool", "content": [{**_RESULT, "toolCallId": "c1", "name": "f"}]},
        ]
    }
    formatted = await apply(llm, LLAMA, history)
    assert "42" in formatted
    assert await apply(llm, LLAMA, history, toolDefinitions=[TOOL]) == formatted


TOOL = {
    "type": "function",
    "function": {
        "name": "f",
        "description": "A tool.",
        "parameters": {"type": "object", "properties": {"x": {"type": "number"}}},
    },
}


@pytest.mark.parametrize(
    "opts",
    [
        None,  # opts is required (llmBackendInterface.ts)
        {"toolDefinitions": [{}]},
        {"toolDefinitions": [{"type": "function", "function": {}}]},
        {"toolDefinitions": [{**TOOL, "function": {"name": "f", "parameters": {"type": "x"}}}]},
        {"omitBosToken": "yes"},
    ],
)
async def test_apply_prompt_template_opts_follow_the_schema(
    llm: Socket, opts: dict[str, Any] | None
) -> None:
    param: dict[str, Any] = {
        "specifier": query(LLAMA),
        "history": chat(("user", "hi")),
        "predictionConfigStack": {"layers": []},
    }
    if opts is not None:
        param["opts"] = opts
    await llm.send(
        {"type": "rpcCall", "endpoint": "applyPromptTemplate", "callId": 1, "parameter": param}
    )
    warning = await llm.recv()
    assert warning["kind"] == "rpcParameterTypeError", warning
    assert "opts" in warning["warning"].rsplit("Zod error:", 1)[1]
    await llm.barrier()


async def test_invalid_prediction_value_errors(llm: Socket) -> None:
    frames = await predict(llm, **{"llm.prediction.temperature": "hot"})
    assert types(frames) == ["channelError"]
    assert "llm.prediction.temperature" in frames[0]["error"]["title"]


# Ranges from lmstudio-js packages/lms-kv-config/src/schema.ts: topKSampling numeric
# {min: -1, max: 500, int: true}, maxPredictedTokens checkboxNumeric {min: 1, int: true},
# repeatPenalty checkboxNumeric {min: -1}.
_PRED = "llm.prediction."


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("topKSampling", 2.5),
        ("topKSampling", 501),
        ("topKSampling", -2),
        ("maxPredictedTokens", {"checked": True, "value": 0}),
        ("maxPredictedTokens", {"checked": True, "value": -1}),
        ("maxPredictedTokens", {"checked": True, "value": 2.5}),
        ("repeatPenalty", {"checked": True, "value": -1.5}),
    ],
)
async def test_prediction_values_outside_the_schema_error(
    llm: Socket, key: str, value: object
) -> None:
    frames = await predict(llm, **{_PRED + key: value})
    assert types(frames) == ["channelError"], frames
    assert frames[0]["error"]["title"] == f'Invalid value for prediction config key "{_PRED}{key}"'


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("topKSampling", -1),
        ("topKSampling", 500),
        ("topKSampling", 7.0),
        ("maxPredictedTokens", {"checked": True, "value": 1}),
        ("maxPredictedTokens", {"checked": False, "value": 1}),  # the JS SDK's maxTokens: false
        ("maxPredictedTokens", {"checked": True, "value": False}),  # lmstudio-python's
        # beyond the schema, for the HTTP layer's max_tokens -1 (docs/stand-in.md)
        ("maxPredictedTokens", {"checked": False, "value": -1}),
        ("repeatPenalty", {"checked": True, "value": -1}),
        ("repeatPenalty", {"checked": True, "value": -0.5}),
    ],
)
async def test_prediction_values_inside_the_schema_are_accepted(
    llm: Socket, key: str, value: object
) -> None:
    frames = await predict(llm, **{_PRED + key: value})
    assert types(frames)[-2:] == ["success", "channelClose"], frames
    assert kv(success(frames)["predictionConfig"])[_PRED + key] == value


async def test_unknown_preset(llm: Socket) -> None:
    param = {**predict_param(), "fuzzyPresetIdentifier": "my preset"}
    frames = await llm.channel("predict", param)
    display = frames[0]["error"]["displayData"]
    assert display["code"] == "generic.presetNotFound"
    assert display["specifiedFuzzyPresetIdentifier"] == "my preset"
    # the built-in presets (test_presets.py) are the sample
    assert display["totalAvailablePresets"] == len(display["availablePresetsSample"]) == 3


# --- TTL -----------------------------------------------------------------------------------

LLM_USES: list[tuple[str, dict[str, Any]]] = [
    ("predict", predict_param(SMOL)),
    (
        "completeRawText",
        {"modelSpecifier": query(SMOL), "rawPrompt": "Hi", "predictionConfigStack": stack()},
    ),
    ("tokenize", {"specifier": query(SMOL), "inputString": "hi"}),
    ("countTokens", {"specifier": query(SMOL), "inputString": "hi"}),
    (
        "applyPromptTemplate",
        {
            "specifier": query(SMOL),
            "history": chat(("user", "hi")),
            "predictionConfigStack": stack(),
            "opts": {},
        },
    ),
]


@pytest.mark.parametrize(("endpoint", "param"), LLM_USES, ids=[e for e, _ in LLM_USES])
async def test_inference_resets_idle_timer(
    server: StandInServer, client: RawClient, endpoint: str, param: dict[str, Any]
) -> None:
    server.preload(SMOL, ttl_ms=10_000)
    sock = await client.connect("llm")
    server.advance_clock(8)
    if endpoint in ("predict", "completeRawText"):
        assert types(await sock.channel(endpoint, param))[-1] == "channelClose"
    else:
        assert (await sock.rpc(endpoint, param))["type"] == "rpcResult"
    server.advance_clock(8)
    assert [i.identifier for i in server.loaded_instances()] == [SMOL]
    server.advance_clock(3)
    assert server.loaded_instances() == []


async def test_embedding_resets_idle_timer(server: StandInServer, client: RawClient) -> None:
    server.preload(NOMIC, ttl_ms=10_000)
    sock = await client.connect("embedding")
    server.advance_clock(8)
    await sock.result("embedString", {"modelSpecifier": query(NOMIC), "inputString": "hi"})
    server.advance_clock(8)
    assert len(server.loaded_instances()) == 1
    server.advance_clock(3)
    assert server.loaded_instances() == []
