"""Pure unit tests of tool definitions, response formats and the chat history shape."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal, TypedDict

import lmstudio
import msgspec
import pydantic
import pytest

import lmstudio_async as lms
from lmstudio_async._protocol.prediction import predict_creation
from lmstudio_async._protocol.tools import parse_tools, response_format


def get_weather(
    city: str, unit: Literal["c", "f"] = "c", days: Annotated[int, msgspec.Meta(ge=1)] = 1
) -> dict[str, Any]:
    """Get the weather forecast.

    Args:
        city: The city,
            e.g. "Paris".
        unit (str): Temperature unit.

    Returns:
        The forecast.
    """
    return {}


async def lookup(term: str) -> str:
    """Look a term up."""
    return term


def test_function_becomes_a_json_schema_tool() -> None:
    tools = parse_tools([get_weather, lookup])
    setting = tools.setting()
    assert setting["type"] == "toolArray"
    weather = setting["tools"][0]
    assert weather["type"] == "function"
    function = weather["function"]
    assert function["name"] == "get_weather"
    assert function["description"] == "Get the weather forecast."
    params = function["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["city"]
    assert params["properties"]["city"] == {
        "type": "string",
        "description": 'The city, e.g. "Paris".',
    }
    assert params["properties"]["unit"]["enum"] == ["c", "f"]
    assert params["properties"]["unit"]["default"] == "c"
    assert params["properties"]["days"]["minimum"] == 1
    assert not tools.tools["get_weather"].is_async
    assert tools.tools["lookup"].is_async


def test_arguments_are_validated_and_converted() -> None:
    tool = parse_tools([get_weather]).tools["get_weather"]
    assert tool.bind({"city": "Oslo", "days": "3"}) == {"city": "Oslo", "unit": "c", "days": 3}
    with pytest.raises(msgspec.ValidationError, match="days"):
        tool.bind({"city": "Oslo", "days": 0})
    with pytest.raises(msgspec.ValidationError, match="city"):
        tool.bind({})


def test_explicit_definition_matches_the_official_shape() -> None:
    ours = lms.ToolFunctionDef(
        name="add",
        description="Add two numbers.",
        parameters={"a": float, "b": {"type": float, "default": 0.0}},
        implementation=lambda a, b: a + b,
    )
    function = parse_tools([ours]).setting()["tools"][0]["function"]
    assert function["parameters"]["required"] == ["a"]
    assert function["parameters"]["properties"]["b"] == {"type": "number", "default": 0.0}


def test_a_dict_definition_like_the_official_sdk() -> None:
    tools = parse_tools(
        [{"name": "add", "description": "Add.", "parameters": {"a": int}, "implementation": abs}]
    )
    assert tools.setting()["tools"][0]["function"]["parameters"]["required"] == ["a"]


@pytest.mark.parametrize(
    ("tools", "message"),
    [
        ([], "empty"),
        ([{"name": "add"}], "a tool dict needs exactly the keys"),
        ("get_weather", "list"),
        ([42], "function or a ToolFunctionDef"),
        ([get_weather, get_weather], "two tools are named 'get_weather'"),
        ([lambda x: x], "cannot name"),
    ],
)
def test_bad_tool_lists_are_rejected(tools: Any, message: str) -> None:
    with pytest.raises(lms.LMStudioValueError, match=message):
        parse_tools(tools)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"description": None}, "description must be a non-empty string"),
        ({"description": 5}, "description must be a non-empty string"),
        ({"description": "  "}, "description must be a non-empty string"),
        ({"parameter_descriptions": ["a", "b"]}, "parameter_descriptions must be a mapping"),
        ({"parameter_descriptions": {"a": 1}}, "parameter_descriptions must be a mapping"),
        ({"parameter_descriptions": {"c": "typo"}}, r"names no parameter of the tool: 'c'"),
    ],
)
def test_bad_tool_function_defs_are_value_errors(fields: dict[str, Any], message: str) -> None:
    tool = lms.ToolFunctionDef(
        **{  # type: ignore[arg-type]
            "name": "add",
            "description": "Add.",
            "parameters": {"a": int, "b": int},
            "implementation": abs,
            **fields,
        }
    )
    with pytest.raises(lms.LMStudioValueError, match=message):
        parse_tools([tool])


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"city": {"type": "string"}}, "has the type 'string', a string: give a Python type"),
        ({"city": "str"}, "has the type 'str', a string"),
        ({"__secret": int}, "cannot derive a JSON schema"),
    ],
)
def test_parameter_specs_msgspec_cannot_take_are_value_errors(
    parameters: dict[str, Any], message: str
) -> None:
    tool = lms.ToolFunctionDef(
        name="lookup", description="Look up.", parameters=parameters, implementation=print
    )
    with pytest.raises(lms.LMStudioValueError, match=message):
        parse_tools([tool])
    with pytest.raises(lms.LMStudioValueError, match=message):
        tool.to_tool_definition()


def test_functions_without_hints_or_docstring_are_rejected() -> None:
    def no_doc(x: int) -> int:
        return x

    def no_hint(x):  # type: ignore[no-untyped-def]
        """Doc."""

    def var_args(*xs: int) -> None:
        """Doc."""

    with pytest.raises(lms.LMStudioValueError, match="no description"):
        parse_tools([no_doc])
    with pytest.raises(lms.LMStudioValueError, match="'x' has no type hint"):
        parse_tools([no_hint])
    with pytest.raises(lms.LMStudioValueError, match=r"\*args"):
        parse_tools([var_args])
    with pytest.raises(lms.LMStudioValueError, match="cannot derive a JSON schema"):
        parse_tools(
            [
                lms.ToolFunctionDef(
                    name="f", description="d", parameters={"x": object}, implementation=print
                )
            ]
        )


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Box:
    width: float
    label: str


class Person(TypedDict):
    name: str
    age: int


class Pet(pydantic.BaseModel):
    name: str
    legs: int


@pytest.mark.parametrize(
    ("target", "good", "expected"),
    [
        (Point, '{"x": 1, "y": 2}', Point(1, 2)),
        (Box, '{"width": 2.5, "label": "a"}', Box(2.5, "a")),
        (Person, '{"name": "Ada", "age": 36}', {"name": "Ada", "age": 36}),
        (Pet, '{"name": "Rex", "legs": 4}', Pet(name="Rex", legs=4)),
        ({"type": "object"}, '{"any": [1]}', {"any": [1]}),
    ],
)
def test_response_formats(target: Any, good: str, expected: Any) -> None:
    fmt = response_format(target)
    assert fmt.schema.get("type") == "object"
    assert fmt.decode(good) == expected
    if not isinstance(target, dict):
        with pytest.raises(ValueError, match=r"(?i)missing|required|field"):
            fmt.decode('{"nope": true}')


def test_response_format_rejects_other_values_and_json_schema_together() -> None:
    with pytest.raises(lms.ConfigError, match="response_format"):
        response_format(42)
    fmt = response_format(Point)
    with pytest.raises(lms.ConfigError, match="give only one") as info:
        predict_creation(
            {}, lms.Chat().add_user("x"), {"json_schema": {"type": "object"}}, response_format=fmt
        )
    assert info.value.field == "json_schema"


def _sample_chat() -> lms.Chat:
    image = lms.FileHandle(name="cat.png", identifier="f-1", size_bytes=10, file_type="image")
    call = lms.ToolCallRequest(id="call_1", name="add", arguments={"a": 1, "b": 2})
    chat = lms.Chat("Be terse.")
    chat.add_user("What is this, and 1+2?", images=[image])
    chat.add_assistant("Let me add.", tool_calls=[call])
    chat.add_tool_result(call, 3)
    chat.add_assistant("A cat; 3.")
    return chat


def test_chat_round_trips_through_the_official_history_shape() -> None:
    chat = _sample_chat()
    history = chat.to_history()
    assert lms.Chat.from_history(history) == chat
    # The official SDK reads it and writes back the same history.
    official = lmstudio.Chat.from_history(history)
    assert official._get_history() == history
    assert lms.Chat.from_history(official._get_history()) == chat
    roles = [m["role"] for m in history["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant"]
    assert history["messages"][1]["content"][1] == {
        "type": "file",
        "name": "cat.png",
        "identifier": "f-1",
        "sizeBytes": 10,
        "fileType": "image",
    }
    assert history["messages"][3]["content"] == [
        {"type": "toolCallResult", "content": "3", "toolCallId": "call_1"}
    ]


def test_official_chat_history_is_accepted() -> None:
    official = lmstudio.Chat("sys")
    official.add_user_message("hello")
    official.add_assistant_response("hi")
    chat = lms.Chat.from_history(official._get_history())
    assert [(m.role, m.content) for m in chat] == [
        ("system", "sys"),
        ("user", "hello"),
        ("assistant", "hi"),
    ]


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"messages": [{"role": "user", "content": [{"type": "video"}]}]}, "unknown part type"),
        ({"messages": [{"role": "user", "content": [{"type": "file", "name": "x"}]}]}, "malformed"),
        ({"messages": [{"role": "tool", "content": []}]}, "at least one tool result"),
        ({"nope": []}, "messages"),
    ],
)
def test_bad_histories_name_the_problem(history: Any, message: str) -> None:
    with pytest.raises(lms.LMStudioValueError, match=message):
        lms.Chat.from_history(history)


def test_chat_arguments_of_the_wrong_kind_are_value_errors() -> None:
    assert lms.Chat().add_user("x", images=None).messages[0].images == ()
    with pytest.raises(lms.LMStudioValueError, match="prepare_image"):
        lms.Chat().add_user("x", images="cat.png")  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError, match="images must be a list, got int"):
        lms.Chat().add_user("x", images=5)  # type: ignore[arg-type]
    with pytest.raises(lms.LMStudioValueError, match="tool_calls must be a list"):
        lms.Chat().add_assistant("x", tool_calls=5)  # type: ignore[arg-type]


def test_add_tool_result_needs_json() -> None:
    with pytest.raises(lms.LMStudioValueError, match="JSON"):
        lms.Chat().add_tool_result("call_1", object())
    image = _sample_chat().images[0]
    result = lms.ToolCallResult(content="1")
    with pytest.raises(lms.LMStudioValueError, match="a tool message carries no images"):
        lms.ChatMessage(role="tool", images=(image,), tool_results=(result,))
    with pytest.raises(lms.LMStudioValueError, match="a user message carries no tool_calls"):
        lms.ChatMessage(role="user", tool_calls=(lms.ToolCallRequest(id="c", name="f"),))


def test_files_in_assistant_and_system_messages_round_trip() -> None:
    # LM Studio's chat history schema (and lmstudio-python's AssistantResponseContent)
    # allow file parts in system and assistant messages too: such a history from the
    # official SDKs reads, and writes back the same.
    file_part = {
        "type": "file", "name": "cat.png", "identifier": "f-1", "sizeBytes": 10, "fileType": "image"
    }
    history = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Be terse."}, file_part]},
            {"role": "user", "content": [{"type": "text", "text": "Draw a cat"}]},
            {"role": "assistant", "content": [file_part]},
        ]
    }
    chat = lms.Chat.from_history(history)
    assert [len(m.images) for m in chat.messages] == [1, 0, 1]
    assert chat.to_wire() == history


def test_tool_call_packets_decode_with_missing_arguments() -> None:
    from lmstudio_async._protocol.results import PREDICTION_PACKET_DECODER, ToolCallEndPacket

    raw = (
        b'{"type": "toolCallGenerationEnd", "toolCallRequest": '
        b'{"type": "function", "id": "c1", "name": "ping", "arguments": null}}'
    )
    packet = PREDICTION_PACKET_DECODER.decode(raw)
    assert isinstance(packet, ToolCallEndPacket)
    assert packet.request() == lms.ToolCallRequest(id="c1", name="ping", arguments={})


@pytest.mark.parametrize(
    ("payload", "cls"),
    [
        ({"title": "x", "displayData": {"code": "generic.visionNotSupported"}}, "Vision"),
        ({"title": 'Model "m" does not support images'}, "Vision"),
        ({"title": "x", "displayData": {"code": "generic.draftModelNotFound"}}, "Draft"),
        ({"title": 'Draft model "d" is not compatible with "m"'}, "Draft"),
        (
            {
                "title": "No preset",
                "displayData": {
                    "code": "generic.presetNotFound",
                    "specifiedFuzzyPresetIdentifier": "p",
                    "availablePresetsSample": [{"identifier": "@local:a", "name": "A"}],
                    "totalAvailablePresets": 1,
                },
            },
            "Preset",
        ),
        ({"title": "Something else broke"}, "Server"),
    ],
)
def test_prediction_errors_map_to_their_classes(payload: dict[str, Any], cls: str) -> None:
    from lmstudio_async._protocol.errors import decode_serialized_error, map_server_error

    error = map_server_error(decode_serialized_error(payload), operation="Chat response")
    expected = {
        "Vision": lms.VisionNotSupportedError,
        "Draft": lms.DraftModelError,
        "Preset": lms.PresetNotFoundError,
        "Server": lms.ServerError,
    }[cls]
    assert type(error) is expected
    if isinstance(error, lms.PresetNotFoundError):
        assert error.preset == "p"
        assert error.available == ["@local:a"]


async def test_unknown_tools_and_bad_arguments_are_reported_as_the_official_sdk_does() -> None:
    from lmstudio_async._async.agent import _run_tools

    toolset = parse_tools([get_weather])
    requests = [
        lms.ToolCallRequest(id="1", name="nope", arguments={}),
        lms.ToolCallRequest(id="2", name="get_weather", arguments={"unit": "kelvin"}),
        lms.ToolCallRequest(id="3", name="get_weather", arguments={"city": "Oslo"}),
    ]
    results = await _run_tools(toolset, requests, None, None)
    assert [r.tool_call_id for r in results] == ["1", "2", "3"]
    assert results[0].content == "Cannot find tool with name nope."
    assert results[1].content.startswith("Failed to parse arguments for tool get_weather: ")
    assert results[2].content == "{}"  # get_weather returns {}


def test_to_tool_definition_is_what_the_model_is_offered() -> None:
    definition = lms.ToolFunctionDef.from_callable(get_weather)
    offered = definition.to_tool_definition()
    assert offered == parse_tools([get_weather]).setting()["tools"][0]
    offered["function"]["name"] = "changed"  # a copy: the tool itself is unchanged
    assert definition.to_tool_definition()["function"]["name"] == "get_weather"
