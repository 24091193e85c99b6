"""Sans-I/O inference payloads: PredictionConfig validation and KV mapping, chats, packets."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lmstudio_async as lms
from lmstudio_async._protocol.chat import coerce_chat
from lmstudio_async._protocol.prediction import (
    coerce_prediction_config,
    complete_creation,
    embed_param,
    fields_to_prediction_config,
    predict_creation,
    prediction_config_stack,
    tokenize_param,
)
from lmstudio_async._protocol.results import (
    PREDICTION_PACKET_DECODER,
    FragmentPacket,
    PredictionSuccess,
    PromptProcessingProgress,
    result_from_success,
)

SPEC = {"type": "instanceReference", "instanceReference": "ref-1"}


def fields(config: Any) -> dict[str, Any]:
    stack = prediction_config_stack(config)
    assert [layer["layerName"] for layer in stack["layers"]] == ["apiOverride"]
    return {f["key"]: f["value"] for f in stack["layers"][0]["config"]["fields"]}


# --- PredictionConfig -----------------------------------------------------------------


def test_empty_config_is_one_empty_layer() -> None:
    assert prediction_config_stack(None) == {
        "layers": [{"layerName": "apiOverride", "config": {"fields": []}}]
    }
    assert fields(lms.PredictionConfig()) == {}


def test_keys_and_checkboxes_per_protocol_7_5() -> None:
    config = lms.PredictionConfig(
        max_tokens=50,
        temperature=0,
        top_k=40,
        top_p=0.9,
        min_p=0.05,
        repeat_penalty=1.1,
        stop_strings=["\n\n", "END"],
        tool_call_stop_strings=["</tool>"],
        context_overflow_policy="rollingWindow",
        json_schema={"type": "object"},
        cpu_threads=4,
        draft_model="smollm2-135m-instruct",
    )
    assert fields(config) == {
        "llm.prediction.maxPredictedTokens": {"checked": True, "value": 50},
        "llm.prediction.temperature": 0,
        "llm.prediction.topKSampling": 40,
        "llm.prediction.topPSampling": {"checked": True, "value": 0.9},
        "llm.prediction.minPSampling": {"checked": True, "value": 0.05},
        "llm.prediction.repeatPenalty": {"checked": True, "value": 1.1},
        "llm.prediction.stopStrings": ["\n\n", "END"],
        "llm.prediction.toolCallStopStrings": ["</tool>"],
        "llm.prediction.contextOverflowPolicy": "rollingWindow",
        "llm.prediction.structured": {"type": "json", "jsonSchema": {"type": "object"}},
        "llm.prediction.llama.cpuThreads": 4,
        "llm.prediction.speculativeDecoding.draftModel": "smollm2-135m-instruct",
    }
    assert config.stop_strings == ("\n\n", "END")  # lists are frozen into tuples
    msgspec.json.encode(prediction_config_stack(config))  # JSON-able


def test_mapping_aliases() -> None:
    config = coerce_prediction_config(
        {
            "maxTokens": 5,
            "topPSampling": 0.5,
            "stopStrings": ["x"],
            "structured": {"type": "json", "jsonSchema": {"type": "string"}},
            "cpuThreads": 2,
            "temperature": None,  # None means unset
        }
    )
    assert config == lms.PredictionConfig(
        max_tokens=5, top_p=0.5, stop_strings=("x",), json_schema={"type": "string"}, cpu_threads=2
    )
    assert coerce_prediction_config({"response_format": {"type": "object"}}) == (
        lms.PredictionConfig(json_schema={"type": "object"})
    )
    assert coerce_prediction_config({"structured": {"type": "none"}}) == lms.PredictionConfig()


class Person(msgspec.Struct):
    name: str
    age: int


@dataclasses.dataclass
class Point:
    x: float
    y: float


class Movie(TypedDict):
    title: str


@pytest.mark.parametrize("cls", [Person, Point, Movie])
def test_json_schema_from_a_class(cls: type) -> None:
    schema = lms.PredictionConfig(json_schema=cls).json_schema
    assert schema is not None
    assert schema["type"] == "object"
    assert "$ref" not in schema
    assert coerce_prediction_config({"json_schema": cls}) == lms.PredictionConfig(
        json_schema=schema
    )


class Node(msgspec.Struct):
    name: str
    children: list[Node]


class Family(msgspec.Struct):
    parent: Person
    kids: list[Person]


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        own = [value["$ref"]] if "$ref" in value else []
        return own + [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


@pytest.mark.parametrize("cls", [Node, Family])
def test_json_schema_from_a_class_is_self_contained(cls: type) -> None:
    # Every reference left (only a recursive type keeps one) resolves within the schema:
    # a recursive Struct used to lose its $defs, the one definition it refers to.
    schema = lms.PredictionConfig(json_schema=cls).json_schema
    assert schema is not None
    assert schema["type"] == "object"
    defs = schema.get("$defs", {})
    for ref in _refs(schema):
        assert ref.removeprefix("#/$defs/") in defs, ref
    assert bool(defs) is (cls is Node)


@pytest.mark.parametrize(
    ("config", "field", "text"),
    [
        ({"max_tokens": 0}, "max_tokens", "int > 0"),
        ({"max_tokens": True}, "max_tokens", "bool"),
        ({"max_tokens": "5"}, "max_tokens", "int"),
        ({"temperature": -1}, "temperature", ">= 0"),
        ({"temperature": float("nan")}, "temperature", "finite"),
        ({"temperature": "hot"}, "temperature", "number"),
        ({"top_p": 1.5}, "top_p", "[0, 1]"),
        ({"min_p": -0.1}, "min_p", "[0, 1]"),
        ({"top_k": -3}, "top_k", "int in [-1, 500]"),
        ({"top_k": 501}, "top_k", "int in [-1, 500]"),
        ({"repeat_penalty": -1}, "repeat_penalty", ">= 0"),
        ({"stop_strings": "END"}, "stop_strings", "not a single string"),
        ({"stop_strings": ["ok", ""]}, "stop_strings", "non-empty"),
        ({"stop_strings": [1]}, "stop_strings", "str"),
        ({"context_overflow_policy": "truncate"}, "context_overflow_policy", "rollingWindow"),
        ({"json_schema": 3}, "json_schema", "JSON schema"),
        ({"json_schema": {"x": object()}}, "json_schema", "JSON"),
        ({"cpu_threads": 0}, "cpu_threads", "int > 0"),
        ({"draft_model": ""}, "draft_model", "must not be empty"),
        ({"draft_model": "  "}, "draft_model", "must not be empty"),
        ({"draft_model": "\u200b"}, "draft_model", "must not be empty"),
        ({"draft_model": "a\nb"}, "draft_model", "control character"),
        ({"draft_model": "x" * 1025}, "draft_model", "the limit is 1024"),
        ({"draft_model": 7}, "draft_model", "must be a string, got int"),
        ({"temprature": 1}, "temprature", "did you mean 'temperature'"),
        ({"maxTokenz": 1}, "maxTokenz", "unknown prediction config field"),
        ({"structured": {"type": "gbnf"}}, "structured", "json_schema"),
        ({"max_tokens": 1, "maxTokens": 2}, "max_tokens", "given twice"),
    ],
)
def test_bad_fields_name_the_field(config: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(lms.ConfigError, match=None) as info:
        coerce_prediction_config(config)
    assert info.value.field == field
    assert text in str(info.value)


def test_constructor_checks_too() -> None:
    with pytest.raises(lms.ConfigError) as info:
        lms.PredictionConfig(top_p=2)
    assert info.value.field == "top_p"
    with pytest.raises(lms.ConfigError, match=r"'max_tokns' \(did you mean 'max_tokens'\?\)"):
        lms.PredictionConfig(max_tokns=1)  # type: ignore[call-arg]


@pytest.mark.parametrize("config", ["fast", 3, lms.LlmLoadConfig(context_length=10)])
def test_not_a_config(config: Any) -> None:
    with pytest.raises(lms.ConfigError, match="PredictionConfig, a mapping or None"):
        coerce_prediction_config(config)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="max_tokens"):
        coerce_prediction_config({"max_tokens": -1})


def test_round_trip_from_kv_fields() -> None:
    config = lms.PredictionConfig(
        max_tokens=7, temperature=0.5, top_p=0.3, stop_strings=("a",), json_schema={"type": "x"}
    )
    stack = prediction_config_stack(config)
    assert fields_to_prediction_config(stack["layers"][0]["config"]) == config


def test_reading_skips_unchecked_unknown_and_bad_values() -> None:
    read = fields_to_prediction_config(
        {
            "fields": [
                {
                    "key": "llm.prediction.maxPredictedTokens",
                    "value": {"checked": False, "value": 9},
                },
                {"key": "llm.prediction.temperature", "value": -5},
                {"key": "llm.prediction.structured", "value": {"type": "none"}},
                {"key": "llm.prediction.unknownKey", "value": 1},
                {"key": "llm.prediction.topKSampling", "value": 40},
            ]
        }
    )
    assert read == lms.PredictionConfig(top_k=40)


finite = st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(
    max_tokens=st.none() | st.integers(min_value=1, max_value=10**9),
    temperature=st.none() | finite,
    top_p=st.none() | st.floats(min_value=0, max_value=1),
    stops=st.none() | st.lists(st.text(min_size=1), max_size=4),
)
def test_any_valid_config_round_trips(
    max_tokens: int | None, temperature: float | None, top_p: float | None, stops: Any
) -> None:
    config = lms.PredictionConfig(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop_strings=stops
    )
    wire = msgspec.json.decode(msgspec.json.encode(prediction_config_stack(config)))
    assert fields_to_prediction_config(wire["layers"][0]["config"]) == config


# --- chat -------------------------------------------------------------------------------


def test_chat_building_and_wire_form() -> None:
    chat = lms.Chat("Be terse.").add_user("Hi").add_assistant("Hello")
    assert len(chat) == 3
    assert [m.role for m in chat] == ["system", "user", "assistant"]
    assert chat.to_wire() == {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        ]
    }
    copy = chat.copy()
    copy.add_user("more")
    assert len(chat) == 3
    assert copy != chat


def test_coerce_chat_inputs() -> None:
    assert coerce_chat("Hi") == lms.Chat().add_user("Hi")
    listed = coerce_chat(
        [{"role": "system", "content": "S"}, lms.ChatMessage(role="user", content="U")]
    )
    assert listed == lms.Chat("S").add_user("U")
    chat = lms.Chat().add_user("x")
    assert coerce_chat(chat) is chat


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ([], "empty"),
        (lms.Chat(), "empty"),
        ([{"role": "robot", "content": "x"}], "role"),
        ([{"role": "user"}], "'role' and 'content'"),
        ([{"role": "user", "content": "x", "name": "n"}], "'role' and 'content'"),
        ([{"role": "user", "content": 3}], "content must be a string"),
        (["hi"], "ChatMessage or a dict"),
        (42, "prompt string"),
        (b"bytes", "prompt string"),
    ],
)
def test_bad_chats(value: Any, text: str) -> None:
    with pytest.raises(lms.LMStudioValueError, match=text):
        coerce_chat(value)


# --- requests ---------------------------------------------------------------------------


def test_request_parameters() -> None:
    creation = predict_creation(SPEC, lms.Chat().add_user("Hello"), {"max_tokens": 50})
    assert creation == {
        "modelSpecifier": SPEC,
        "history": {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}]},
        "predictionConfigStack": {
            "layers": [
                {
                    "layerName": "apiOverride",
                    "config": {
                        "fields": [
                            {
                                "key": "llm.prediction.maxPredictedTokens",
                                "value": {"checked": True, "value": 50},
                            }
                        ]
                    },
                }
            ]
        },
    }
    raw = complete_creation(SPEC, "Once", None)
    assert raw["rawPrompt"] == "Once"
    assert raw["modelSpecifier"] == SPEC
    with pytest.raises(lms.LMStudioValueError):
        complete_creation(SPEC, 3, None)  # type: ignore[arg-type]
    assert tokenize_param(SPEC, "x") == {"specifier": SPEC, "inputString": "x"}
    assert embed_param(SPEC, "x") == {"modelSpecifier": SPEC, "inputString": "x"}


# --- packets ---------------------------------------------------------------------------

INSTANCE = {
    "type": "llm",
    "modelKey": "llama-3.2-1b-instruct",
    "format": "gguf",
    "displayName": "Llama",
    "path": "lmstudio-community/llama/llama.gguf",
    "sizeBytes": 1,
    "maxContextLength": 4096,
    "vision": False,
    "trainedForToolUse": False,
    "identifier": "llama-3.2-1b-instruct",
    "instanceReference": "ref-1",
    "contextLength": 4096,
}


def test_decode_packets() -> None:
    fragment = PREDICTION_PACKET_DECODER.decode(
        b'{"type":"fragment","fragment":{"content":"Hi","tokensCount":1,'
        b'"containsDrafted":false,"reasoningType":"none","isStructural":false}}'
    )
    assert isinstance(fragment, FragmentPacket)
    assert fragment.fragment == lms.Fragment(content="Hi", tokens_count=1)
    progress = PREDICTION_PACKET_DECODER.decode(
        b'{"type":"promptProcessingProgress","progress":0.5,"details":{}}'
    )
    assert isinstance(progress, PromptProcessingProgress)
    assert progress.progress == 0.5
    tool = PREDICTION_PACKET_DECODER.decode(b'{"type":"toolCallGenerationStart"}')
    assert type(tool).__name__ == "_ToolCallStart"
    success = PREDICTION_PACKET_DECODER.decode(
        msgspec.json.encode(
            {
                "type": "success",
                "stats": {
                    "stopReason": "eosFound",
                    "tokensPerSecond": 55.1,
                    "timeToFirstTokenSec": 0.05,
                    "promptTokensCount": 12,
                    "predictedTokensCount": 2,
                    "totalTokensCount": 14,
                    "futureStat": 1,
                },
                "modelInfo": INSTANCE,
                "loadModelConfig": {"fields": [{"key": "llm.load.contextLength", "value": 4096}]},
                "predictionConfig": {
                    "fields": [{"key": "llm.prediction.temperature", "value": 0.2}]
                },
            }
        )
    )
    assert isinstance(success, PredictionSuccess)
    result = result_from_success("Hi!", success)
    assert result.content == str(result) == "Hi!"
    assert result.stop_reason == "eosFound"
    assert result.stats.tokens_per_second == 55.1
    assert result.stats.time_to_first_token_sec == 0.05
    assert result.stats.total_tokens_count == 14
    assert result.model_info.identifier == "llama-3.2-1b-instruct"
    assert result.load_config.context_length == 4096
    assert result.prediction_config == lms.PredictionConfig(temperature=0.2)


def test_unknown_packets_fail_to_decode() -> None:
    with pytest.raises(msgspec.ValidationError):
        PREDICTION_PACKET_DECODER.decode(b'{"type":"mystery"}')


def test_parsed_json() -> None:
    success = PredictionSuccess(
        stats=lms.PredictionStats(stop_reason="eosFound"),
        model_info=msgspec.convert(INSTANCE, lms.LlmInstanceInfo),
    )
    assert result_from_success('{"a": [1]}', success).parsed == {"a": [1]}
    with pytest.raises(lms.StructuredOutputError, match="not JSON: ") as info:
        _ = result_from_success("nope", success).parsed
    assert info.value.content == "nope"
    assert info.value.result is not None
    cut = PredictionSuccess(
        stats=lms.PredictionStats(stop_reason="maxPredictedTokensReached"),
        model_info=success.model_info,
    )
    with pytest.raises(lms.StructuredOutputError, match=r"\(it stopped: maxPredicted"):
        _ = result_from_success('{"name', cut).parsed
