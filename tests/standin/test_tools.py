"""Tool calls: the pure planning rule (``_toolcalls``) and the ``predict`` channel wiring."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmstudio_async.testing import StandInServer
from lmstudio_async.testing._toolcalls import (
    Message,
    PlannedCall,
    ToolSpec,
    messages_from_history,
    plan_tool_round,
    tools_from_setting,
)

from ._wire import RawClient, Socket, messages, stack, types


def _schema(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(props)}


ADD = ToolSpec("add", "Add two numbers", _schema(a={"type": "integer"}, b={"type": "integer"}))
DIVIDE = ToolSpec(
    "divide", "Divide", _schema(numerator={"type": "number"}, denominator={"type": "number"})
)
WEATHER = ToolSpec(
    "get_weather",
    "Weather for a city",
    _schema(city={"type": "string"}, unit={"type": "string", "enum": ["celsius", "fahrenheit"]}),
)
NOW = ToolSpec("current_time", "The time", {"type": "object", "properties": {}})


def _user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "text": "Be brief."}, {"role": "user", "text": text}]


def test_numbers_fill_an_unnamed_tool() -> None:
    result = plan_tool_round(_user("What is the sum of 123 and 3210?"), [ADD])
    assert [(c.name, c.arguments) for c in result.calls] == [("add", {"a": 123, "b": 3210})]
    assert result.text is not None
    assert "add" in result.text
    assert result.calls[0].id.startswith("call_")


def test_a_named_tool_takes_the_values_after_its_name() -> None:
    result = plan_tool_round(_user("Use 7 later. Divide 1 by 4 now."), [ADD, DIVIDE])
    assert [(c.name, c.arguments) for c in result.calls] == [
        ("divide", {"numerator": 1, "denominator": 4})
    ]


def test_several_named_tools_in_one_round_in_mention_order() -> None:
    text = 'Get weather for "Oslo" in fahrenheit, and add 2 and 5'
    result = plan_tool_round(_user(text), [ADD, WEATHER])
    assert [(c.name, c.arguments) for c in result.calls] == [
        ("get_weather", {"city": "Oslo", "unit": "fahrenheit"}),
        ("add", {"a": 2, "b": 5}),
    ]
    assert len({c.id for c in result.calls}) == 2


MULTIPLY = ToolSpec("multiply", "", _schema(x={"type": "number"}, y={"type": "number"}))


def _run(text: str, tools: list[ToolSpec], results: dict[str, Any]) -> list[Any]:
    """Drive plan_tool_round like an agent loop; returns each round's calls, then the answer."""
    history: list[Message | dict[str, Any]] = list(_user(text))
    rounds: list[Any] = []
    for _ in range(6):
        planned = plan_tool_round(history, tools)
        if not planned.calls:
            rounds.append(planned.text)
            return rounds
        rounds.append([(c.name, c.arguments) for c in planned.calls])
        history.append(Message("assistant", planned.text or "", tool_calls=planned.calls))
        for call in planned.calls:
            result = results[call.name](**call.arguments)
            history.append({"role": "tool", "text": str(result), "tool_call_id": call.id})
    raise AssertionError("the agent loop did not end")


def test_then_splits_named_tools_into_rounds_fed_by_earlier_results() -> None:
    funcs = {"add": lambda a, b: a + b, "multiply": lambda x, y: x * y}
    rounds = _run("Add 1 and 2, then multiply the result by 4", [ADD, MULTIPLY], funcs)
    assert rounds == [
        [("add", {"a": 1, "b": 2})],
        [("multiply", {"x": 3, "y": 4})],
        "The add tool returned: 3\nThe multiply tool returned: 12",
    ]
    # the previous step's numeric results come before the step's own numbers
    text = "add 1 and 1, then add the result and 5, then multiply that result by 3"
    assert _run(text, [ADD, MULTIPLY], funcs) == [
        [("add", {"a": 1, "b": 1})],
        [("add", {"a": 2, "b": 5})],
        [("multiply", {"x": 7, "y": 3})],
        "The add tool returned: 2\nThe add tool returned: 7\nThe multiply tool returned: 21",
    ]
    # without a reference to a result, "then" parts share one round
    assert _run("add 2 and 3, then multiply 4 by 5", [ADD, MULTIPLY], funcs)[0] == [
        ("add", {"a": 2, "b": 3}),
        ("multiply", {"x": 4, "y": 5}),
    ]
    # a result that is not a number is not reused (a placeholder fills the gap)
    shout = ToolSpec("shout", "", _schema(text={"type": "string"}))
    funcs["shout"] = lambda text: text.upper() + "!"
    rounds = _run("shout 'hi', then multiply the result by 3", [shout, MULTIPLY], funcs)
    assert rounds[1] == [("multiply", {"x": 3, "y": 0.0})]
    assert rounds[2] == "The shout tool returned: HI!\nThe multiply tool returned: 0.0"
    # "then" without a named tool in two parts is one round
    assert _run("First say 'Hi'. Then calculate 1 + 3", [ADD], funcs) == [
        [("add", {"a": 1, "b": 3})],
        "The add tool returned: 4",
    ]


def test_a_fillable_unnamed_tool_joins_the_named_ones() -> None:
    text = 'Divide 9 by 3. Also, how warm is "Lima" in celsius?'
    result = plan_tool_round(_user(text), [ADD, DIVIDE, WEATHER])
    assert [(c.name, c.arguments) for c in result.calls] == [
        ("divide", {"numerator": 9, "denominator": 3}),
        ("get_weather", {"city": "Lima", "unit": "celsius"}),
    ]


def test_spaced_and_camel_case_names_count_as_mentions() -> None:
    spec = ToolSpec("getStockPrice", "", _schema(symbol={"type": "string"}))
    result = plan_tool_round(_user("get stock price for 'ACME'"), [spec])
    assert [(c.name, c.arguments) for c in result.calls] == [("getStockPrice", {"symbol": "ACME"})]
    result = plan_tool_round(_user("what is the current time"), [NOW])
    assert [(c.name, c.arguments) for c in result.calls] == [("current_time", {})]


def test_unnamed_tools_share_values_without_reuse() -> None:
    # both tools want two numbers; only two are present, so only the first offered is called
    result = plan_tool_round(_user("combine 3 and 4"), [DIVIDE, ADD])
    assert [c.name for c in result.calls] == ["divide"]


def test_named_tool_missing_values_get_defaults_and_placeholders() -> None:
    spec = ToolSpec(
        "lookup",
        "",
        _schema(
            query={"type": "string"},
            limit={"type": "integer", "default": 5},
            mode={"type": "string", "enum": ["fast", "slow"]},
            exact={"type": "boolean"},
        ),
    )
    result = plan_tool_round(_user("please lookup something"), [spec])
    assert result.calls[0].arguments == {"query": "", "limit": 5, "mode": "fast", "exact": False}
    result = plan_tool_round(_user('lookup "cats" slow, exact: yes, 3 results'), [spec])
    assert result.calls[0].arguments == {"query": "cats", "limit": 3, "mode": "slow", "exact": True}


def test_no_tool_applies() -> None:
    assert plan_tool_round(_user("Hello there"), [ADD, WEATHER]) == plan_tool_round([], [ADD])
    assert plan_tool_round(_user("What is 3 + 4?"), []).calls == ()
    # an integer parameter does not take 2.5; a tool without parameters needs its name
    assert plan_tool_round(_user("2.5 and 3"), [ADD, NOW]).calls == ()
    # the last message is the assistant's: nothing to plan
    history = [*_user("add 1 and 2"), {"role": "assistant", "text": "Sure"}]
    assert plan_tool_round(history, [ADD]).text is None


def test_after_tool_results_it_answers_quoting_them() -> None:
    first = plan_tool_round(_user("add 20 and 22, and divide 1 by 0"), [ADD, DIVIDE])
    add_call, div_call = first.calls
    history: list[Message | dict[str, Any]] = [
        *_user("add 20 and 22, and divide 1 by 0"),
        Message("assistant", first.text or "", tool_calls=first.calls),
        {"role": "tool", "text": "42", "tool_call_id": add_call.id},
        {"role": "tool", "text": "Error: division by zero", "tool_call_id": div_call.id},
    ]
    answer = plan_tool_round(history, [ADD, DIVIDE])
    assert answer.calls == ()
    assert answer.text == (
        "The add tool returned: 42\nThe divide tool returned: Error: division by zero"
    )


def test_ids_are_deterministic_and_depend_on_the_conversation() -> None:
    a = plan_tool_round(_user("add 1 and 2"), [ADD]).calls[0]
    b = plan_tool_round(_user("add 1 and 2"), [ADD]).calls[0]
    c = plan_tool_round(_user("add 1 and 3"), [ADD]).calls[0]
    assert a == b
    assert a.id != c.id


def test_lmstudio_history_and_tool_setting_conversion() -> None:
    history = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "add 1 and 2"}]},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "ok"},
                    {
                        "type": "toolCallRequest",
                        "toolCallRequest": {
                            "type": "function",
                            "id": "c1",
                            "name": "add",
                            "arguments": {"a": 1, "b": 2},
                        },
                    },
                ],
            },
            {
                "role": "tool",
                "content": [{"type": "toolCallResult", "content": "3", "toolCallId": "c1"}],
            },
        ]
    }
    messages = messages_from_history(history)
    assert messages[1].tool_calls == (PlannedCall("c1", "add", {"a": 1, "b": 2}),)
    assert messages[2] == Message("tool", "3", tool_call_id="c1")
    setting = {
        "type": "toolArray",
        "tools": [{"type": "function", "function": {"name": "add", "parameters": ADD.parameters}}],
    }
    assert tools_from_setting(setting) == [ToolSpec("add", "", ADD.parameters)]
    assert tools_from_setting({"type": "none"}) == []
    assert plan_tool_round(messages, tools_from_setting(setting)).text == "The add tool returned: 3"


@pytest.mark.parametrize("bad", [{"role": "user"}, {"role": "user", "text": None}])
def test_sparse_messages_are_tolerated(bad: dict[str, Any]) -> None:
    assert plan_tool_round([bad], [ADD]).calls == ()


# --- over the predict channel -------------------------------------------------------------------

QWEN = "qwen2.5-7b-instruct-1m"  # trainedForToolUse
SMOL = "smollm2-135m-instruct"  # not trained for tool use
TOOLS_SETTING = {
    "type": "toolArray",
    "tools": [
        {"type": "function", "function": {"name": t.name, "parameters": dict(t.parameters)}}
        for t in (ADD, DIVIDE)
    ],
}


def _predict_param(model: str, history: list[dict[str, Any]], **config: Any) -> dict[str, Any]:
    return {
        "modelSpecifier": {"type": "query", "query": {"identifier": model}},
        "history": {"messages": history},
        "predictionConfigStack": stack(**{"llm.prediction.tools": TOOLS_SETTING, **config}),
    }


def _text(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": [{"type": "text", "text": text}]}


@pytest.fixture
async def llm(server: StandInServer, client: RawClient) -> Socket:
    server.preload(QWEN)
    server.preload(SMOL)
    return await client.connect("llm")


async def test_predict_streams_tool_call_packets(llm: Socket) -> None:
    history = [_text("user", "Divide 10 by 4, and add 1 and 2.")]
    frames = await llm.channel("predict", _predict_param(QWEN, history))
    packets = messages(frames)
    kinds = [p["type"] for p in packets]
    first_call = kinds.index("toolCallGenerationStart")
    assert set(kinds[:first_call]) == {"fragment"}
    text = "".join(p["fragment"]["content"] for p in packets if p["type"] == "fragment")
    assert text == "Let me use the divide, add tools."
    ends = [p for p in packets if p["type"] == "toolCallGenerationEnd"]
    assert [e["toolCallRequest"]["name"] for e in ends] == ["divide", "add"]
    assert ends[0]["toolCallRequest"]["arguments"] == {"numerator": 10, "denominator": 4}
    assert ends[1]["toolCallRequest"]["arguments"] == {"a": 1, "b": 2}
    starts = [p["toolCallId"] for p in packets if p["type"] == "toolCallGenerationStart"]
    assert starts == [e["toolCallRequest"]["id"] for e in ends]
    for end in ends:
        request = end["toolCallRequest"]
        assert request["type"] == "function"
        assert json.loads(end["rawContent"]) == {
            "name": request["name"],
            "arguments": request["arguments"],
        }
    # each call: start, name, argument fragments that join to the JSON arguments, end
    names = [p["name"] for p in packets if p["type"] == "toolCallGenerationNameReceived"]
    assert names == ["divide", "add"]
    first_args = []
    for p in packets[first_call:]:
        if p["type"] == "toolCallGenerationEnd":
            break
        if p["type"] == "toolCallGenerationArgumentFragmentGenerated":
            first_args.append(p["content"])
    assert json.loads("".join(first_args)) == {"numerator": 10, "denominator": 4}
    done = packets[-1]
    assert done["type"] == "success"
    assert done["stats"]["stopReason"] == "toolCalls"
    assert done["stats"]["predictedTokensCount"] > len(text.split())
    assert types(frames)[-1] == "channelClose"


async def test_tool_results_get_a_quoting_answer(llm: Socket) -> None:
    call = {"type": "function", "id": "c-7", "name": "add", "arguments": {"a": 1, "b": 2}}
    history = [
        _text("user", "add 1 and 2"),
        {
            "role": "assistant",
            "content": [{"type": "toolCallRequest", "toolCallRequest": call}],
        },
        {
            "role": "tool",
            "content": [{"type": "toolCallResult", "content": "3", "toolCallId": "c-7"}],
        },
    ]
    frames = await llm.channel("predict", _predict_param(QWEN, history))
    packets = messages(frames)
    text = "".join(p["fragment"]["content"] for p in packets if p["type"] == "fragment")
    assert text == "The add tool returned: 3"
    assert not any(p["type"].startswith("toolCall") for p in packets)
    assert packets[-1]["stats"]["stopReason"] == "eosFound"


async def test_no_tool_calls_without_tool_training_tools_or_with_structured_output(
    llm: Socket,
) -> None:
    history = [_text("user", "What is the sum of 123 and 3210?")]
    structured = {"type": "json", "jsonSchema": {"type": "object"}}
    params = [
        _predict_param(SMOL, history),
        _predict_param(QWEN, history, **{"llm.prediction.tools": {"type": "none"}}),
        _predict_param(QWEN, history, **{"llm.prediction.structured": structured}),
    ]
    for param in params:
        packets = messages(await llm.channel("predict", param))
        assert not any(p["type"].startswith("toolCall") for p in packets)
        assert packets[-1]["stats"]["stopReason"] == "eosFound"


async def test_a_cut_preamble_makes_no_tool_calls(llm: Socket) -> None:
    history = [_text("user", "add 5 and 6")]
    limit = {"llm.prediction.maxPredictedTokens": {"checked": True, "value": 2}}
    packets = messages(await llm.channel("predict", _predict_param(QWEN, history, **limit)))
    assert not any(p["type"].startswith("toolCall") for p in packets)
    assert packets[-1]["stats"]["stopReason"] == "maxPredictedTokensReached"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_schemas = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["object", "string", 3]),
        "properties": st.dictionaries(
            st.sampled_from(["a", "b", "city", "n"]),
            st.fixed_dictionaries(
                {},
                optional={
                    "type": st.sampled_from(
                        ["integer", "number", "string", "boolean", ["null", "integer"], "array", 7]
                    ),
                    "enum": st.lists(st.text(max_size=5) | st.integers(), max_size=3),
                    "default": _json,
                },
            )
            | _json,
            max_size=3,
        ),
        "required": st.lists(st.sampled_from(["a", "b", "city", "zz"]), max_size=3) | _json,
    },
)
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system", "other"])},
        optional={
            "text": st.text(alphabet="add 12 -3.5 'q' \"x\" yes then the result city", max_size=40)
            | st.none(),
            "tool_call_id": st.text(max_size=4) | st.none(),
            "tool_calls": st.lists(
                st.fixed_dictionaries(
                    {
                        "name": st.sampled_from(["add", "city"]),
                        "arguments": _json | st.text(max_size=6),
                    },
                    optional={"id": st.text(max_size=4) | st.none()},
                ),
                max_size=2,
            ),
        },
    ),
    max_size=5,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=_messages,
    tools=st.lists(
        st.fixed_dictionaries(
            {"name": st.sampled_from(["add", "city", "get_city", ""])},
            optional={"parameters": _schemas | _json, "description": _json},
        ),
        max_size=3,
    ),
)
def test_any_plain_input_gives_a_round_and_json_arguments(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]]
) -> None:
    result = plan_tool_round(messages, tools)
    assert result.calls == () or result.text is not None
    for call in result.calls:
        json.dumps(call.arguments)  # JSON-compatible
        assert call.name in {t["name"] for t in tools}
    assert plan_tool_round(messages, tools) == result  # deterministic
