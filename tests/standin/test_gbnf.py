"""GBNF grammars: the generator (``_gbnf``) and ``structured: gbnf`` on predict."""

from __future__ import annotations

import json
import random
import re
import time
from typing import Any

import pytest

from lmstudio_async.testing import StandInServer
from lmstudio_async.testing._gbnf import GrammarError, generate

from ._wire import RawClient, messages, stack

JSON_OBJECT = r"""
root ::= "{\"answer\":" string ",\"count\":" number "}"
number ::= "-"? [1-9] [0-9]{0,3}
string ::=
  "\"" (
    [^"\\\x7f\x00-\x1f] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4})
  )* "\""
""".lstrip()


@pytest.mark.parametrize("seed", range(20))
def test_json_grammar_output_parses(seed: int) -> None:
    out = generate(JSON_OBJECT, random.Random(seed), ["lighthouse", "harbor"])
    value = json.loads(out)
    assert set(value) == {"answer", "count"}
    assert isinstance(value["count"], int)
    assert re.fullmatch(r"[a-z ]*", value["answer"])  # spelled from the words


@pytest.mark.parametrize(
    ("grammar", "pattern"),
    [
        ('root ::= ("yes" | "no") "!"', r"(yes|no)!"),
        ("root ::= [a-c]{2,3} [0-9]+ [x]?", r"[a-c]{2,3}[0-9]+x?"),
        (
            'root ::= expr\nexpr ::= term ("+" term)*\nterm ::= [0-9]+ | "(" expr ")"',
            r"[0-9()+]+",
        ),
        ('# comment\nroot ::= word (" " word)*  # trailing\nword ::= [a-z]+', r"[a-z]+( [a-z]+)*"),
        ('root ::= "\\x41\\u00e9\\n" .', "A\u00e9\n[^\n]"),
    ],
)
def test_grammar_features(grammar: str, pattern: str) -> None:
    for seed in range(10):
        out = generate(grammar, random.Random(seed), ["word"])
        assert re.fullmatch(pattern, out), out
    assert generate(grammar, random.Random(3), ["w"]) == generate(grammar, random.Random(3), ["w"])


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ('root = "a"', '"::="'),
        ('item ::= "a"', "no root"),
        ('root ::= "abc', "unterminated string"),
        ("root ::= [a-z", "unterminated character class"),
        ("root ::= missing", "undefined rule missing"),
        ('root ::= root "a"', "recurses too deeply"),
        ('root ::= "a"{x}', "repetition count"),
        ("root ::= [^\\x00-\\U0010ffff]", "excludes every character"),
    ],
)
def test_bad_grammars(grammar: str, message: str) -> None:
    with pytest.raises(GrammarError, match=message):
        generate(grammar, random.Random(0), [])


def _param(grammar: str) -> dict[str, Any]:
    structured = {"type": "gbnf", "gbnfGrammar": grammar}
    return {
        "modelSpecifier": {"type": "query", "query": {"identifier": "llama-3.2-1b-instruct"}},
        "history": {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Describe a lighthouse"}]}
            ]
        },
        "predictionConfigStack": stack(**{"llm.prediction.structured": structured}),
    }


async def test_predict_follows_the_grammar(server: StandInServer, client: RawClient) -> None:
    server.preload("llama-3.2-1b-instruct")
    llm = await client.connect("llm")
    frames = await llm.channel("predict", _param(JSON_OBJECT))
    text = "".join(m["fragment"]["content"] for m in messages(frames) if m["type"] == "fragment")
    value = json.loads(text)
    assert set(value) == {"answer", "count"}
    assert set(value["answer"].split()) <= {"describe", "lighthouse"}
    again = await llm.channel("predict", _param(JSON_OBJECT))
    assert messages(again)[:-1] == messages(frames)[:-1]  # deterministic
    bad = await llm.channel("predict", _param("root ::= nothing-here"))
    assert bad[-1]["type"] == "channelError"
    assert bad[-1]["error"]["title"] == "Invalid GBNF grammar: undefined rule nothing-here"


# --- bounded work ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "grammar",
    [
        'root ::= ((""{1000}){1000}){1000}',
        'root ::= ""{1000000000000}',
        'root ::= x{1000000000}\nx ::= y*\ny ::= ""',
        'root ::= "a" (""?){1000000000} "b"',
    ],
)
def test_repeating_an_empty_match_takes_no_time(grammar: str) -> None:
    started = time.perf_counter()
    out = generate(grammar, random.Random(0), ["word"])
    assert time.perf_counter() - started < 1.0
    assert out in ("", "ab")


@pytest.mark.parametrize(
    ("grammar", "message"),
    [
        ("root ::= " + "(" * 3000 + '"a"' + ")" * 3000, "groups nested too deeply"),
        ('root ::= "a"' + "{1}" * 3000, "rule root nests too deeply"),
        ('root ::= ("a"?){1000000000000}', "more than 50000 steps"),
        ('root ::= ("a "){1000000000000}', "too much text"),
        ("root ::= [\\]]{1000000}", "too much text"),
        ('root ::= "a"\n' + "# padding\n" * 6000, "longer than 50000 characters"),
        ("root ::= [a-", "unexpected end"),
        ('root ::= "\\UFFFFFFFF"', "beyond U+10FFFF"),
        ("root ::= []", "excludes every character"),
    ],
)
def test_too_much_work_is_a_grammar_error(grammar: str, message: str) -> None:
    started = time.perf_counter()
    with pytest.raises(GrammarError, match=re.escape(message)):
        generate(grammar, random.Random(0), ["word"])
    assert time.perf_counter() - started < 2.0  # bounded: no hang, no RecursionError


def test_enough_ends_the_derivation_with_a_prefix() -> None:
    grammar = 'root ::= ("a "){1000000000000}'
    seen: list[int] = []

    def enough(text: str) -> bool:
        seen.append(len(text))
        return len(text) >= 200

    out = generate(grammar, random.Random(0), ["word"], enough)
    assert out == "a " * 128
    assert seen == [64, 128, 256]  # asked at doubling lengths
    whole = generate(JSON_OBJECT, random.Random(5), ["harbor"])
    for limit in (0, 10, 30):
        part = generate(JSON_OBJECT, random.Random(5), ["harbor"], lambda t, n=limit: len(t) > n)
        assert whole.startswith(part)
