"""Deterministic inference simulation: tokenizer, chat templates, text/JSON generation, embeddings.

Everything here is pure and synchronous; the endpoint handlers in ``_endpoints`` drive it.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

# --- tokenizer ------------------------------------------------------------------------------

# A token is a special token (``<|...|>``), a run of word characters, or one other
# non-space character. Whitespace belongs to the token that follows it.
TOKEN_RE = re.compile(r"<\|[^|\s]{1,64}\|>|\w+|[^\w\s]", re.UNICODE)
VOCAB_SIZE = 128_000


def _token_id(token: str) -> int:
    return int.from_bytes(hashlib.blake2s(token.encode(), digest_size=4).digest(), "big") % (
        VOCAB_SIZE
    )


def tokenize(text: str) -> list[int]:
    """Token ids of ``text`` (deterministic; equal tokens have equal ids)."""
    return [_token_id(m.group()) for m in TOKEN_RE.finditer(text)]


def count_tokens(text: str) -> int:
    return sum(1 for _ in TOKEN_RE.finditer(text))


def first_tokens(text: str, limit: int) -> str:
    """The start of ``text`` that holds its first ``limit`` tokens (all of it if shorter)."""
    if limit <= 0:
        return ""
    ends = [m.end() for m in itertools.islice(TOKEN_RE.finditer(text), limit)]
    return text[: ends[-1]] if ends else ""


# Embedding models wrap their input in start/end markers (BERT's [CLS] and [SEP] ids); they
# take room in the model's context.
EMBEDDING_MARKERS = (101, 102)


def split_fragments(text: str) -> list[str]:
    """Split ``text`` into one-token pieces whose concatenation is ``text``.

    Each piece holds exactly one token (with the whitespace before it), so
    ``count_tokens(text) == len(split_fragments(text))``. Trailing whitespace goes to the
    last piece.
    """
    pieces: list[str] = []
    start = 0
    for match in TOKEN_RE.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    if start < len(text) and pieces:
        pieces[-1] += text[start:]
    # (text made only of whitespace has no tokens: nothing to stream)
    return pieces


# --- prompt templates -----------------------------------------------------------------------


@dataclass(frozen=True)
class TemplateStyle:
    name: str
    bos: str
    eos: str
    jinja: str  # shown as the default llm.prediction.promptTemplate (display only)

    def message(self, role: str, text: str) -> str:
        if self.name == "llama3":
            role = "ipython" if role == "tool" else role
            return f"<|start_header_id|>{role}<|end_header_id|>\n\n{text.strip()}<|eot_id|>"
        return f"<|im_start|>{role}\n{text}<|im_end|>\n"

    def generation_prompt(self) -> str:
        if self.name == "llama3":
            return "<|start_header_id|>assistant<|end_header_id|>\n\n"
        return "<|im_start|>assistant\n"


LLAMA3 = TemplateStyle(
    "llama3",
    bos="<|begin_of_text|>",
    eos="<|eot_id|>",
    jinja=(
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + "
        "message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
        "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
)
CHATML = TemplateStyle(
    "chatml",
    bos="",
    eos="<|im_end|>",
    jinja=(
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
        "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
)

# Built-in template per model key (substring match), then per architecture; default ChatML.
_STYLE_BY_KEY: tuple[tuple[str, TemplateStyle], ...] = (
    ("smollm", CHATML),
    ("qwen", CHATML),
    ("llama-3", LLAMA3),
)
_STYLE_BY_ARCH: dict[str, TemplateStyle] = {
    "llama": LLAMA3,
    "qwen2": CHATML,
    "qwen3": CHATML,
}


def template_style(model: dict[str, Any]) -> TemplateStyle:
    key = str(model.get("modelKey", "")).lower()
    for fragment, style in _STYLE_BY_KEY:
        if fragment in key:
            return style
    return _STYLE_BY_ARCH.get(str(model.get("architecture", "")).lower(), CHATML)


def default_prompt_template(model: dict[str, Any]) -> dict[str, Any]:
    style = template_style(model)
    return {
        "type": "jinja",
        "jinjaPromptTemplate": {"template": style.jinja},
        "stopStrings": [],
    }


def message_text(message: dict[str, Any]) -> str:
    """The text of one ChatHistoryData message (text parts, file names, tool calls/results)."""
    parts: list[str] = []
    for part in message.get("content", []):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            parts.append(str(part.get("text", "")))
        elif kind == "file":
            parts.append(f"[file: {part.get('name', 'attachment')}]")
        elif kind == "toolCallRequest":
            request = whole_numbers_as_ints(part.get("toolCallRequest", {}))
            parts.append(json.dumps(request, ensure_ascii=False))
        elif kind == "toolCallResult":
            parts.append(str(part.get("content", "")))
    return "\n\n".join(p for p in parts if p)


@dataclass(frozen=True)
class RenderedPrompt:
    text: str
    raw: bool  # True for plain concatenation (text completion): continue the text
    topic_text: str = ""  # where the generator takes its topic from

    @property
    def topic_source(self) -> str:
        return self.topic_text or self.text


def render_prompt(
    model: dict[str, Any],
    history: dict[str, Any],
    template: Any = None,
    *,
    omit_bos: bool = False,
    omit_eos: bool = False,
    prediction: bool = False,
) -> RenderedPrompt:
    """Render a chat history the way the model's prompt template would.

    ``template`` is an ``llm.prediction.promptTemplate`` value (or ``None`` for the model's
    built-in one). Manual templates are applied exactly; a Jinja template that never looks at
    ``role`` (such as the Python SDK's text-completion layer) is a plain concatenation of
    the message contents; any other Jinja template falls back to the built-in style.
    A generation prompt is appended unless the last message is from the assistant. Such a
    final assistant message is rendered complete (its end-of-turn token dropped only with
    ``omit_eos``), except for a ``prediction``, which continues it (no end-of-turn token).
    """
    messages = [m for m in history.get("messages", []) if isinstance(m, dict)]
    ends_with_assistant = bool(messages) and messages[-1].get("role") == "assistant"
    continue_last = ends_with_assistant and prediction
    users = [m for m in messages if m.get("role") == "user"]
    topic = message_text(users[-1]) if users else ""
    if isinstance(template, dict) and template.get("type") == "manual":
        manual = template.get("manualPromptTemplate")
        if isinstance(manual, dict):
            text = _render_manual(manual, messages, ends_with_assistant, continue_last)
            return RenderedPrompt(text, raw=False, topic_text=topic)
    if isinstance(template, dict) and template.get("type") == "jinja":
        jinja = template.get("jinjaPromptTemplate")
        if isinstance(jinja, dict) and "role" not in str(jinja.get("template", "role")):
            bos = "" if omit_bos else str(jinja.get("bosToken", ""))
            text = bos + "".join(message_text(m) for m in messages)
            return RenderedPrompt(text, raw=True, topic_text=text[-1000:])
    style = template_style(model)
    out = [] if omit_bos else [style.bos]
    out.extend(style.message(str(m.get("role", "user")), message_text(m)) for m in messages)
    text = "".join(out)
    if not messages or ends_with_assistant:
        if omit_eos or continue_last:
            text = _strip_final_eos(text, style.eos)
    else:
        text += style.generation_prompt()
    return RenderedPrompt(text, raw=False, topic_text=topic)


def _strip_final_eos(text: str, eos: str) -> str:
    trimmed = text.rstrip("\n")
    if eos and trimmed.endswith(eos):
        return trimmed[: -len(eos)]
    return text


def _render_manual(
    manual: dict[str, Any], messages: list[dict[str, Any]], ends_with_assistant: bool, cont: bool
) -> str:
    out: list[str] = []
    for index, message in enumerate(messages):
        role = str(message.get("role", "user"))
        prefix = {"system": "System", "assistant": "Assistant"}.get(role, "User")
        before = str(manual.get(f"before{prefix}", ""))
        after = str(manual.get(f"after{prefix}", ""))
        last = index == len(messages) - 1
        out.append(before + message_text(message) + ("" if cont and last else after))
    if not ends_with_assistant:
        out.append(str(manual.get("beforeAssistant", "")))
    return "".join(out)


# --- text generation ------------------------------------------------------------------------


def _w(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_STOPWORDS = frozenset(
    _w(
        """a an and are as at be but by can could did do does for from had has have how i if in
    into is it its me my of on or our please should so some tell than that the their them
    then there these they this to was we were what when where which who why will with would
    you your about write give explain describe short sentence sentences word words once
    upon time very much many more most just like also only over such make made know think
    want need been being other same each both again here hello thanks thank"""
    )
)
_ADJECTIVES = _w(
    "quiet bright careful simple gentle helpful curious steady clever patient warm small "
    "large modern ancient calm vivid hopeful practical friendly"
)
_NOUNS = _w(
    "river garden library engine window village teacher mountain harbor journey lantern "
    "question answer pattern signal machine forest bridge market story idea method"
)
_VERBS = _w(
    "follows shapes carries guides reflects reveals supports connects improves explains "
    "changes protects"
)
_VERBS_BASE = _w(
    "follow shape carry guide reflect reveal support connect improve explain change protect"
)
_ADVERBS = _w("slowly clearly quietly carefully often gently steadily easily")
_PLACES = ("the city", "the valley", "a small town", "the old port", "the north", "every season")
_CONNECTIVES = ("In short", "Over time", "For example", "In practice", "As a result", "Meanwhile")
_OPENERS = (
    "Sure! Here is a short note about {topic}.",
    "Good question about {topic}.",
    "Here is what I can tell you about {topic}.",
    "Let me explain {topic} briefly.",
)
_PLAIN_OPENERS = ("Sure, happy to help.", "Here is a short answer.", "Of course.")
_CLOSERS = (
    "I hope this helps.",
    "Let me know if you have more questions.",
    "That is the short version.",
)
_BODY = (
    "The {adj} {noun} {verb} the {noun2} {adverb}.",
    "In {place}, {a_adj_noun} {verb} the {adj2} {noun2}.",
    "This means that {topic} can {verb_base} {a_adj_noun}.",
    "Many people {verb_base} {topic} because it is {adj}.",
    "{connective}, the {noun} {verb} {a_adj_noun} {adverb}.",
    "Every {noun} has {a_adj_noun} that {verb} the {noun2}.",
)
_NAMES = _w("Alice Bruno Chen Dana Elif Farah Goran Hana Ivo Jonas")
_CITIES = _w("Lisbon Osaka Nairobi Oslo Quito Perth Tallinn Porto")
_COLORS = _w("red green blue amber violet teal")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def prompt_topic(text: str) -> str | None:
    """The most salient word of a prompt.

    The longest word of four or more letters that is not a stop word, where a capitalised
    word that does not start a sentence (a likely name) counts three letters more; the first
    one wins ties.
    """
    best: str | None = None
    best_score = 0
    for match in re.finditer(r"[^\W\d_]{4,}", text):
        word = match.group()
        if word.lower() in _STOPWORDS:
            continue
        before = text[: match.start()].rstrip()
        starts_sentence = not before or before[-1] in ".!?:\n"
        score = len(word) + (3 if word[0].isupper() and not starts_sentence else 0)
        if score > best_score:
            best, best_score = word, score
    return best


def _sentence(rng: random.Random, topic: str) -> str:
    adj, adj2 = rng.sample(_ADJECTIVES, 2)
    noun, noun2 = rng.sample(_NOUNS, 2)
    a_adj = rng.choice(_ADJECTIVES)
    fields = {
        "adj": adj,
        "adj2": adj2,
        "noun": noun,
        "noun2": noun2,
        "verb": rng.choice(_VERBS),
        "verb_base": rng.choice(_VERBS_BASE),
        "adverb": rng.choice(_ADVERBS),
        "place": rng.choice(_PLACES),
        "connective": rng.choice(_CONNECTIVES),
        "topic": topic,
        "a_adj_noun": f"{_article(a_adj)} {a_adj} {rng.choice(_NOUNS)}",
    }
    return rng.choice(_BODY).format(**fields)


def generate_text(rng: random.Random, topic_text: str, *, chat: bool, lead_space: bool) -> str:
    """English-like text: an opener (chat), 2-6 body sentences, sometimes a closer.

    ``topic_text`` (the last user message, or the raw prompt) supplies the topic word;
    ``lead_space`` starts the text with a space (continuing a prompt that ends in a word).
    """
    found = prompt_topic(topic_text)
    topic = found if found is not None else "this topic"
    sentences: list[str] = []
    if chat:
        if found is not None:
            sentences.append(rng.choice(_OPENERS).format(topic=found))
        else:
            sentences.append(rng.choice(_PLAIN_OPENERS))
    sentences.extend(_sentence(rng, topic) for _ in range(rng.randint(2, 6)))
    if chat and rng.random() < 0.5:
        sentences.append(rng.choice(_CLOSERS))
    if len(sentences) > 4:
        middle = rng.randint(2, len(sentences) - 2)
        text = " ".join(sentences[:middle]) + "\n\n" + " ".join(sentences[middle:])
    else:
        text = " ".join(sentences)
    return " " + text if lead_space else text


def whole_numbers_as_ints(value: Any) -> Any:
    """``value`` with every float that is a whole number written as an int (``0.0`` → ``0``):
    JSON and LM Studio's JavaScript do not tell ``0`` from ``0.0``, so neither may the seed."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: whole_numbers_as_ints(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [whole_numbers_as_ints(item) for item in value]
    return value


def generation_seed(*parts: Any) -> int:
    """A seed from ``parts`` (JSON values): equal values give equal seeds, however a number
    was written."""
    text = json.dumps(whole_numbers_as_ints(parts), sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).digest()
    return int.from_bytes(digest[:8], "big")


# --- JSON-schema-guided output --------------------------------------------------------------

_MAX_DEPTH = 6  # deeper: only required properties and minimal arrays
_HARD_DEPTH = 40  # deeper still: give up (recursive schemas)
# Bounds on the work for one document, so that no schema can hold the server: characters
# of JSON, work units (one per value written and per schema key copied while resolving
# $ref / anyOf / allOf), $ref / anyOf / allOf steps in a row without a value (a cycle), and
# values being generated at once (Python frames).
_MAX_JSON = 100_000
_MAX_WORK = 20_000
_MAX_HOPS = 32
_MAX_STACK = 300
_FIRST_CHECK = 64  # output length at which ``enough`` is first asked


class SchemaError(ValueError):
    """The JSON schema cannot be followed: malformed, cyclic, or asking for too much."""


class _Enough(Exception):
    """The caller has all the text it needs (``generate_json``'s ``enough`` said so)."""


_ENCODER = json.JSONEncoder(ensure_ascii=False)


def _dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False)``, faster for the common scalars."""
    try:
        if type(value) is int:
            return int.__repr__(value)
        return _ENCODER.encode(value)
    except (RecursionError, ValueError, TypeError):  # (ValueError: an int of 4300+ digits)
        raise SchemaError("a const or enum value cannot be written as JSON") from None


class _SchemaGen:
    """Writes a JSON text whose value satisfies a JSON schema (a practical subset, see
    docs), piece by piece, spaced like ``json.dumps``."""

    def __init__(
        self,
        root: Any,
        rng: random.Random,
        topic: str,
        enough: Callable[[str], bool] | None = None,
    ) -> None:
        self.root = root
        self.rng = rng
        self.topic = topic
        self.enough = enough
        self.out: list[str] = []
        self.size = 0
        self.work = 0
        self.stack = 0
        self.trials = 0  # unique-item candidates being written (they may be taken back)
        self.next_check = _FIRST_CHECK

    # --- output and budgets -----------------------------------------------------------

    def spend(self, units: int) -> None:
        self.work += units
        if self.work > _MAX_WORK:
            raise SchemaError(
                f"following the schema takes more than {_MAX_WORK} steps (values and "
                "$ref / anyOf / allOf expansions)"
            )

    def write(self, text: str) -> None:
        self.out.append(text)
        self.size += len(text)
        if self.size > _MAX_JSON:
            # too long, unless the caller's cap ends the answer within the text so far
            if self.enough is not None and self.trials == 0 and self.enough("".join(self.out)):
                raise _Enough
            raise SchemaError(f"the schema asks for more than {_MAX_JSON} characters of JSON")
        self.check_enough()

    def check_enough(self) -> None:
        if self.enough is not None and self.trials == 0 and self.size >= self.next_check:
            self.next_check = 2 * self.size
            if self.enough("".join(self.out)):
                raise _Enough

    # --- schemas ------------------------------------------------------------------------

    def resolve(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str):
            if seen == 20:
                raise SchemaError("its $ref definitions refer to each other in a cycle")
            ref = schema["$ref"]
            target: Any = self.root
            if ref.startswith("#"):
                for part in ref[1:].split("/"):
                    if not part:
                        continue
                    part = part.replace("~1", "/").replace("~0", "~")
                    target = target.get(part) if isinstance(target, dict) else None
            else:
                target = {}
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            self.spend(len(schema) + (len(target) if isinstance(target, dict) else 0))
            schema = {**target, **rest} if isinstance(target, dict) else rest
            seen += 1
        return schema

    def value(self, schema: Any, name: str = "", depth: int = 0, hops: int = 0) -> None:
        """Write a value for ``schema`` (``hops``: $ref / anyOf / allOf steps that led here
        without writing anything)."""
        self.spend(1)
        self.stack += 1
        if self.stack > _MAX_STACK:
            raise SchemaError("it nests too deeply")
        if hops > _MAX_HOPS:
            raise SchemaError("its $ref / anyOf / allOf definitions refer to each other in a cycle")
        self._value(schema, name, depth, hops)
        self.stack -= 1  # (every exception ends the whole document)

    def _value(self, schema: Any, name: str, depth: int, hops: int) -> None:
        if depth > _HARD_DEPTH:
            self.write("null")  # a schema that requires infinite nesting cannot be satisfied
            return
        schema = self.resolve(schema)
        if schema is True or not isinstance(schema, dict):
            self.write(_dumps(self.string({}, name)))
            return
        if "const" in schema:
            self.write(_dumps(schema["const"]))
            return
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            self.write(_dumps(self.rng.choice(schema["enum"])))
            return
        for key in ("anyOf", "oneOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                self.spend(len(options) + len(schema))
                resolved = [self.resolve(o) for o in options]
                useful = [
                    o for o in resolved if not (isinstance(o, dict) and o.get("type") == "null")
                ]
                base = {k: v for k, v in schema.items() if k != key}
                choice = useful[0] if useful else resolved[0]
                picked = {**base, **choice} if isinstance(choice, dict) else base
                self.value(picked, name, depth, hops + 1)
                return
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            _check_keywords(merged)
            for part in schema["allOf"]:
                part = self.resolve(part)
                if isinstance(part, dict):
                    _check_keywords(part)
                    self.spend(len(part))
                    for k, v in part.items():
                        if k == "properties":
                            merged["properties"] = {**merged.get("properties", {}), **v}
                        elif k == "required":
                            merged["required"] = [*merged.get("required", []), *v]
                        else:
                            merged.setdefault(k, v)
            self.value(merged, name, depth, hops + 1)
            return
        kind = schema.get("type")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            kind = non_null[0] if non_null else "null"
        if kind is None:
            if "properties" in schema or "required" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
            else:
                kind = "string"
        if kind == "object":
            self.object(schema, depth)
        elif kind == "array":
            self.array(schema, name, depth)
        elif kind == "integer":
            self.write(_dumps(self.integer(schema)))
        elif kind == "number":
            self.write(_dumps(self.number(schema)))
        elif kind == "boolean":
            self.write("true" if self.rng.random() < 0.5 else "false")
        elif kind == "null":
            self.write("null")
        else:
            self.write(_dumps(self.string(schema, name)))

    def object(self, schema: dict[str, Any], depth: int) -> None:
        _check_keywords(schema)
        props = schema.get("properties", {})
        required = [r for r in schema.get("required", []) if isinstance(r, str)]
        if depth >= _MAX_DEPTH:
            names = required
        else:
            names = list(props) + [r for r in required if r not in props]
        written: set[str] = set()
        self.write("{")
        for key in dict.fromkeys(names):  # (a name required twice is written once)
            self.write(("" if not written else ", ") + _dumps(key) + ": ")
            written.add(key)
            self.value(props.get(key, {}), key, depth + 1)
        minimum = schema.get("minProperties")
        extra = schema.get("additionalProperties")
        if isinstance(minimum, int) and len(written) < minimum and extra is not False:
            extra_schema = extra if isinstance(extra, dict) else {"type": "string"}
            index = 1
            while len(written) < minimum:
                key = f"item{index}"
                if key not in written:
                    self.write(("" if not written else ", ") + _dumps(key) + ": ")
                    written.add(key)
                    self.value(extra_schema, key, depth + 1)
                index += 1
        self.write("}")

    def array(self, schema: dict[str, Any], name: str, depth: int) -> None:
        low = schema.get("minItems", 0)
        high = schema.get("maxItems")
        low = low if isinstance(low, int) and low >= 0 else 0
        count = max(low, self.rng.randint(1, 3)) if depth < _MAX_DEPTH else low
        if isinstance(high, int) and not isinstance(high, bool):
            if high < low:
                raise SchemaError(f"minItems {low} is more than maxItems {high}")
            count = min(count, high)
        prefix = schema.get("prefixItems")
        prefix = prefix if isinstance(prefix, list) else []
        items = schema.get("items", {})
        item_schema = items if isinstance(items, dict) else {}
        if prefix and items is False:
            count = min(count, len(prefix))
        unique = schema.get("uniqueItems") is True
        seen: set[str] = set()
        written = 0
        attempts = 0
        self.write("[")
        while written < count and attempts < count * 10 + 10:
            attempts += 1
            sub = prefix[written] if written < len(prefix) else item_schema
            mark, size = len(self.out), self.size
            if written:
                self.write(", ")
            if not unique:
                self.value(sub, _singular(name), depth + 1)
                written += 1
                continue
            self.trials += 1  # a repeated value is taken back: no early end meanwhile
            self.value(sub, _singular(name), depth + 1)
            self.trials -= 1
            text = "".join(self.out[mark + (1 if written else 0) :])
            if text in seen:
                del self.out[mark:]
                self.size = size
                continue
            seen.add(text)
            written += 1
            self.check_enough()
        if written < low:  # (the work and size bounds end a huge array before this)
            raise SchemaError(f"no {low} distinct items fit the array's item schema")
        self.write("]")

    def _bounds(self, schema: dict[str, Any], integer: bool) -> tuple[float, float]:
        step = 1 if integer else 0.01
        low: float | None = None
        high: float | None = None
        if _is_num(schema.get("minimum")):
            low = schema["minimum"]
        if _is_num(schema.get("exclusiveMinimum")):
            low = schema["exclusiveMinimum"] + step
        if _is_num(schema.get("maximum")):
            high = schema["maximum"]
        if _is_num(schema.get("exclusiveMaximum")):
            high = schema["exclusiveMaximum"] - step
        if low is None:
            low = 0 if high is None or high >= 0 else high - 100
        if high is None:
            high = max(low, 0) + 100
        return low, max(low, high)

    def integer(self, schema: dict[str, Any]) -> int:
        low, high = self._bounds(schema, integer=True)
        lo, hi = math.ceil(low), math.floor(high)
        if hi < lo:
            hi = lo
        value = self.rng.randint(lo, hi)
        step = schema.get("multipleOf")
        if isinstance(step, int) and not isinstance(step, bool) and step > 0:
            value -= value % step
            if value < lo:
                value += step
        return value

    def number(self, schema: dict[str, Any]) -> float:
        low, high = self._bounds(schema, integer=False)
        value = round(self.rng.uniform(low, high), 2)
        return min(max(value, low), high)

    def string(self, schema: dict[str, Any], name: str) -> str:
        fmt = schema.get("format")
        rng = self.rng
        if fmt == "date":
            text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        elif fmt == "date-time":
            text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z"
        elif fmt == "time":
            text = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
        elif fmt == "email":
            text = f"{rng.choice(_NAMES).lower()}@example.com"
        elif fmt in ("uri", "url"):
            text = f"https://example.com/{rng.choice(_NOUNS)}"
        elif fmt == "uuid":
            a, b, c, d, e = (rng.getrandbits(n) for n in (32, 16, 12, 12, 48))
            text = f"{a:08x}-{b:04x}-4{c:03x}-8{d:03x}-{e:012x}"
        else:
            low = name.lower()
            if "name" in low:
                text = rng.choice(_NAMES)
            elif "city" in low or "town" in low or "location" in low:
                text = rng.choice(_CITIES)
            elif "color" in low or "colour" in low:
                text = rng.choice(_COLORS)
            elif "email" in low:
                text = f"{rng.choice(_NAMES).lower()}@example.com"
            else:
                words = [rng.choice(_ADJECTIVES), rng.choice(_NOUNS)]
                if rng.random() < 0.5 and self.topic:
                    words.insert(0, self.topic)
                text = " ".join(words)
        min_len = schema.get("minLength")
        max_len = schema.get("maxLength")
        if isinstance(min_len, int) and isinstance(max_len, int) and min_len > max_len >= 0:
            raise SchemaError(f"minLength {min_len} is more than maxLength {max_len}")
        if isinstance(min_len, int) and len(text) < min_len:
            # longer than the JSON bound: the write fails (or the caller's cap ends it)
            min_len = min(min_len, _MAX_JSON + 1)
            filler = " ".join(rng.choice(_NOUNS) for _ in range(min_len // 4 + 1))
            text = (text + " " + filler)[: max(min_len, len(text))]
            while len(text) < min_len:
                text += "x"
        if isinstance(max_len, int) and max_len >= 0 and len(text) > max_len:
            text = text[:max_len]
        return text


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _singular(name: str) -> str:
    return name[:-1] if name.endswith("s") and len(name) > 3 else name


def _check_keywords(schema: dict[str, Any]) -> None:
    """Refuse the keywords the generator relies on when they have the wrong JSON type."""
    if "properties" in schema and not isinstance(schema["properties"], dict):
        raise SchemaError('"properties" must be an object')
    if "required" in schema and not isinstance(schema["required"], list):
        raise SchemaError('"required" must be an array of strings')


def generate_json(
    rng: random.Random,
    schema: Any,
    topic_text: str,
    enough: Callable[[str], bool] | None = None,
) -> str:
    """A JSON text (spaced like ``json.dumps``) whose value satisfies ``schema``.

    ``enough(text)``, called now and then with the text so far (at doubling lengths), may
    end the document early: the text so far is returned, a prefix of the whole (the caller
    knows it needs no more, e.g. its token cap is reached). A schema that is malformed
    (``properties`` not an object, ``required`` not an array), whose ``$ref`` / ``anyOf`` /
    ``allOf`` definitions form a cycle, or that asks for more work or text than the bounds
    allow, raises :class:`SchemaError`.
    """
    topic = prompt_topic(topic_text) or ""
    if not isinstance(schema, dict):
        schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    gen = _SchemaGen(schema, rng, topic, enough)
    with contextlib.suppress(_Enough):
        gen.value(schema)
    return "".join(gen.out)


# --- embeddings -----------------------------------------------------------------------------

# Embedding dimension per model key, then per architecture; default 768.
EMBEDDING_DIMENSION_BY_KEY: dict[str, int] = {
    "text-embedding-nomic-embed-text-v1.5": 768,
    "text-embedding-nomic-embed-text-v1": 768,
    "text-embedding-all-minilm-l6-v2": 384,
    "text-embedding-bge-small-en-v1.5": 384,
    "text-embedding-mxbai-embed-large-v1": 1024,
}
EMBEDDING_DIMENSION_BY_ARCH: dict[str, int] = {"nomic-bert": 768, "bert": 384}
DEFAULT_EMBEDDING_DIMENSION = 768
_WORD_RE = re.compile(r"\w+", re.UNICODE)


def embedding_dimension(model: dict[str, Any]) -> int:
    key = str(model.get("modelKey", "")).lower()
    if key in EMBEDDING_DIMENSION_BY_KEY:
        return EMBEDDING_DIMENSION_BY_KEY[key]
    arch = str(model.get("architecture", "")).lower()
    return EMBEDDING_DIMENSION_BY_ARCH.get(arch, DEFAULT_EMBEDDING_DIMENSION)


# Only the first words of a text count (the catalogue's embedding models take at most a few
# thousand tokens of context anyway); so one request cannot hold the event loop for long.
MAX_EMBEDDED_WORDS = 4096
# Each feature's pseudo-random vector is kept as one integer whose 4-byte lanes hold its
# digest bytes, so the vectors of many features are summed with a few big-integer additions
# instead of a Python loop over every dimension (lanes cannot overflow: at most
# 2 * MAX_EMBEDDED_WORDS features of 255 each).
_LANE = 4


@lru_cache(maxsize=4096)
def _feature_lanes(feature: str, dim: int, model: str) -> int:
    # Seeded by the model too: two models of one dimension give different vectors.
    raw = hashlib.shake_256(f"{model}:{dim}:{feature}".encode()).digest(dim)
    lanes = bytearray(dim * _LANE)
    lanes[::_LANE] = raw
    return int.from_bytes(lanes, "little")


def _stem(word: str) -> str:
    """A crude stemmer so that "cats"/"cat" and "walked"/"walking"/"walk" share a feature."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)]
    return word


def embed(model: dict[str, Any], text: str) -> list[float]:
    """A unit-length vector: hashed bag of stemmed words (stop words down-weighted) + bigrams.

    Each feature's vector has the components ``(b - 127.5) / 73.9`` for the bytes ``b`` of
    a SHAKE-256 digest of the model key and the feature. Equal texts give equal vectors;
    texts that share words get higher cosine similarity. Only the first
    ``MAX_EMBEDDED_WORDS`` words count.
    """
    dim = embedding_dimension(model)
    seed = str(model.get("modelKey", "")).lower()
    found = itertools.islice(_WORD_RE.finditer(text), MAX_EMBEDDED_WORDS)
    lowered = [m.group().lower() for m in found]
    words = [_stem(w) for w in lowered]
    features: dict[str, float] = {}
    for raw, word in zip(lowered, words, strict=True):
        weight = 0.25 if raw in _STOPWORDS else 1.0
        features[word] = features.get(word, 0.0) + weight
    for first, second in itertools.pairwise(words):
        key = f"{first} {second}"
        features[key] = features.get(key, 0.0) + 0.3
    if not features:
        features["<empty>"] = 1.0
    # Features of equal weight are summed as integers first: sum(weight * vector) is then
    # weight * (lane sums - 127.5 * count) / 73.9 per group.
    sums: dict[float, int] = {}
    counts: dict[float, int] = {}
    for feature, count in features.items():
        weight = 1.0 + math.log(count) if count >= 1 else count
        sums[weight] = sums.get(weight, 0) + _feature_lanes(feature, dim, seed)
        counts[weight] = counts.get(weight, 0) + 1
    vector = [0.0] * dim
    for weight, total in sums.items():
        lanes = struct.unpack(f"<{dim}I", total.to_bytes(dim * _LANE, "little"))
        offset = 127.5 * counts[weight]
        scale = weight / 73.9
        vector = [v + scale * (lane - offset) for v, lane in zip(vector, lanes, strict=True)]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]
