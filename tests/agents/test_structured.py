"""Typed structured output, presets and the vision check, over real sockets."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

import lmstudio_async as lms
from lmstudio_async.testing import ThreadedStandInServer

from .conftest import SMOL


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Book:
    title: str
    pages: int
    tags: list[str]


class Person(TypedDict):
    name: str
    age: int


class Pet(pydantic.BaseModel):
    name: str
    legs: int


class Never(msgspec.Struct):
    value: int

    def __post_init__(self) -> None:
        raise ValueError("no reply is ever right")


def _tool(a: int) -> int:
    """Tool."""
    return a


@pytest.mark.parametrize("target", [Point, Book, Person, Pet])
async def test_parsed_is_an_instance_of_the_type(llm: lms.LLM, target: Any) -> None:
    result = await llm.respond("Describe one", response_format=target)
    assert isinstance(result, lms.StructuredResult)  # typed .parsed for type checkers
    assert isinstance(result, lms.PredictionResult)
    parsed = result.parsed
    if target is Person:
        assert set(parsed) == {"name", "age"}
        assert isinstance(parsed["age"], int)
    else:
        assert isinstance(parsed, target)
    # The reply really is the JSON of what was parsed.
    assert msgspec.json.decode(result.content) == msgspec.json.decode(
        msgspec.json.encode(
            parsed.model_dump() if isinstance(parsed, pydantic.BaseModel) else parsed
        )
    )


async def test_a_schema_dict_gives_plain_json(llm: lms.LLM) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    result = await llm.respond("a number", response_format=schema)
    assert isinstance(result.parsed, dict)
    assert isinstance(result.parsed["n"], int)


async def test_the_schema_travels_as_the_structured_setting(llm: lms.LLM) -> None:
    result = await llm.respond("a point", response_format=Point)
    assert result.prediction_config.json_schema == {
        "type": "object",
        "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
        "required": ["x", "y"],
    }


async def test_a_reply_that_does_not_match_raises_with_the_raw_text(llm: lms.LLM) -> None:
    with pytest.raises(lms.StructuredOutputError, match="does not match Never") as info:
        await llm.respond("anything", response_format=Never)
    error = info.value
    assert error.target is Never
    assert msgspec.json.decode(error.content)["value"] is not None
    assert error.result is not None
    assert error.result.content == error.content


async def test_a_truncated_reply_says_why(llm: lms.LLM) -> None:
    with pytest.raises(lms.StructuredOutputError, match="maxPredictedTokensReached") as info:
        await llm.respond("a book", response_format=Book, config={"max_tokens": 3})
    assert info.value.content  # the partial JSON text


async def test_stream_result_raises_too(llm: lms.LLM) -> None:
    stream = llm.respond_stream("x", response_format=Never)
    with pytest.raises(lms.StructuredOutputError):
        async for _ in stream:
            pass
    with pytest.raises(lms.StructuredOutputError):
        stream.result()


async def test_a_json_schema_in_the_config_is_checked_like_a_dict_response_format(
    llm: lms.LLM,
) -> None:
    # Cut short (max_tokens), the reply is not the JSON document asked for: an error with
    # the text and result, as with response_format, never a success whose .parsed fails.
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    whole = await llm.respond("A person", config={"json_schema": schema})
    assert isinstance(whole.parsed["name"], str)
    with pytest.raises(lms.StructuredOutputError, match="maxPredictedTokensReached") as info:
        await llm.respond("A person", config={"json_schema": schema, "max_tokens": 3})
    assert info.value.result is not None
    assert info.value.result.stats.predicted_tokens_count == 3
    assert info.value.content == info.value.result.content
    stream = llm.respond_stream("A person", config={"json_schema": Point, "max_tokens": 3})
    with pytest.raises(lms.StructuredOutputError):
        async for _ in stream:
            pass
    with pytest.raises(lms.StructuredOutputError):
        stream.result()
    with pytest.raises(lms.StructuredOutputError, match="maxPredictedTokensReached"):
        await llm.complete("A person:", config={"json_schema": schema, "max_tokens": 3})
    # A grammar's reply need not be JSON: it is a success, and .parsed says it is not JSON.
    yes = await llm.respond("Is it?", config={"grammar": 'root ::= "yes"'})
    assert yes.content == "yes"
    with pytest.raises(lms.StructuredOutputError, match="not JSON"):
        _ = yes.parsed


async def test_conflicting_requests_are_rejected_before_sending(
    llm: lms.LLM, lmstudio_server: ThreadedStandInServer
) -> None:
    before = len(lmstudio_server.received_frames(namespace="llm"))
    with pytest.raises(lms.ConfigError, match="give only one"):
        await llm.respond("x", response_format=Point, config={"json_schema": {"type": "object"}})
    with pytest.raises(lms.LMStudioValueError, match="cannot be combined"):
        await llm.respond("x", response_format=Point, tools=[_tool])
    with pytest.raises(lms.ConfigError, match="response_format"):
        await llm.respond("x", response_format=3)
    # Structured output asked for in the config is refused with tools too: sent together,
    # the reply follows the structure and the tools are silently never called.
    for config in ({"json_schema": Point}, {"grammar": 'root ::= "yes"'}):
        with pytest.raises(lms.LMStudioValueError, match="cannot be combined"):
            await llm.respond("x", tools=[_tool], config=config)
        with pytest.raises(lms.LMStudioValueError, match="cannot be combined"):
            llm.respond_stream("x", tools=[_tool], config=config)
        rounds: list[int] = []
        with pytest.raises(lms.LMStudioValueError, match="cannot be combined"):
            await llm.act("call _tool", [_tool], config=config, on_round_start=rounds.append)
        assert rounds == []
    assert len(lmstudio_server.received_frames(namespace="llm")) == before


async def test_unknown_preset(llm: lms.LLM) -> None:
    with pytest.raises(lms.PresetNotFoundError) as info:
        await llm.respond("hi", preset="no-such-preset")
    assert info.value.preset == "no-such-preset"
    assert info.value.code == "generic.presetNotFound"
    with pytest.raises(lms.PresetNotFoundError):
        await llm.complete("hi", preset="no-such-preset")
    with pytest.raises(lms.LMStudioValueError, match="preset"):
        await llm.respond("hi", preset="")


async def test_images_for_a_model_without_vision_fail_before_sending(
    client: lms.AsyncClient, lmstudio_server: ThreadedStandInServer
) -> None:
    smol = await client.llm.model(SMOL)
    assert not smol.info.vision
    image = lms.FileHandle(name="cat.png", identifier="f-1", size_bytes=3, file_type="image")
    before = len(lmstudio_server.received_frames(namespace="llm"))
    with pytest.raises(lms.VisionNotSupportedError, match="no vision support") as info:
        await smol.respond(lms.Chat().add_user("What is it?", images=[image]))
    assert info.value.subject == smol.identifier
    assert len(lmstudio_server.received_frames(namespace="llm")) == before


async def test_a_preset_applies_under_the_callers_config(llm: lms.LLM) -> None:
    try:
        concise = await llm.respond("Describe a cat", preset="concise")
    except lms.PresetNotFoundError:
        pytest.skip("the stand-in serves no presets yet")
    assert concise.prediction_config.max_tokens == 24
    assert concise.stats.predicted_tokens_count <= 24
    overridden = await llm.respond("Describe a cat", preset="concise", config={"max_tokens": 5})
    assert overridden.prediction_config.max_tokens == 5
    assert overridden.stats.predicted_tokens_count <= 5
    with pytest.raises(lms.PresetNotFoundError) as info:
        await llm.respond("hi", preset="no-such-preset")
    assert "@local:concise" in info.value.available


async def test_a_gbnf_grammar_shapes_the_reply(llm: lms.LLM) -> None:
    pytest.importorskip("lmstudio_async.testing._gbnf", reason="the stand-in has no GBNF yet")
    grammar = 'root ::= answer "."\nanswer ::= "yes" | "no"'
    result = await llm.respond("Is the sky blue?", config=lms.PredictionConfig(grammar=grammar))
    assert result.content in ("yes.", "no.")
    assert result.prediction_config.grammar == grammar
    official_shape = {"structured": {"type": "gbnf", "gbnfGrammar": grammar}}
    assert (await llm.respond("Is the sky blue?", config=official_shape)).content == result.content
    with pytest.raises(lms.ConfigError, match="give only one"):
        await llm.respond("x", response_format=Point, config={"grammar": grammar})
    with pytest.raises(lms.ConfigError, match="give only one") as info:
        lms.PredictionConfig(grammar=grammar, json_schema={"type": "object"})
    assert info.value.field == "grammar"
    with pytest.raises(lms.ConfigError, match="grammar"):
        lms.PredictionConfig(grammar="  ")
