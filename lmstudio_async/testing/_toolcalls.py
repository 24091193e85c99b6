"""Deterministic tool calling for the stand-in: which tools a "model" calls, with what.

The core, :func:`plan_tool_round`, is a pure function over plain data, shared by the
WebSocket ``predict`` channel and the OpenAI-compatible HTTP layer:

* ``messages``: the conversation, oldest first, each a :class:`Message` or a mapping with
  ``role`` (``"system" | "user" | "assistant" | "tool"``) and ``text``; an assistant message
  may carry ``tool_calls`` (planned-call mappings or :class:`PlannedCall`), a tool message
  may carry ``tool_call_id``.
* ``tools``: the offered tools, each a :class:`ToolSpec` or a mapping with ``name``,
  ``description`` and ``parameters`` (a JSON schema of type object).

It returns a :class:`ToolRound`: either planned ``calls`` (each with ``id``, ``name`` and an
``arguments`` dict) plus a short ``text`` to stream before them, or a final ``text`` that
quotes the tool results, or neither (``calls == ()`` and ``text is None``: no tool applies,
generate ordinary text). Callers decide whether the model may call tools at all (the
stand-in: the catalogue entry has ``trainedForToolUse``).

The rule (documented in docs/stand-in.md, "Tool calls"):

1. Only the messages after the last ``user`` message count as "this turn". If this turn
   already holds tool results (and no later step is pending, rule 7), the model answers
   with text quoting each result of the turn (and the tool's name): no further calls. If
   the last message is neither the user's nor a tool result, nothing applies.
2. Otherwise, in the last user message, a tool is *named* when its name appears as a whole
   word, case-insensitively, also with ``_``/``-`` read as spaces and camelCase split
   (``get_weather``: "get_weather" or "get weather").
3. Values in the message: numbers (``-12``, ``3.5``), quoted texts ('...', "...", “...”),
   booleans (true/false/yes/no) and words that equal an ``enum`` value of a parameter.
4. The tools to call: every named tool, in order of first mention; then every other
   offered tool (in the offered order) whose required parameters can all be filled from the
   values not yet taken by an earlier tool. A tool without parameters is called only when
   named.
5. Filling a parameter (the ``required`` list, else all properties, in schema order): an
   ``integer`` takes the next untaken integral number, a ``number`` the next untaken number,
   a ``string`` with ``enum`` an enum word or quoted enum value, other strings the next
   untaken quoted text, a ``boolean`` the next boolean word. "Next" prefers values after
   the tool's mention, then the earliest untaken one. Each value is used once. A named
   tool whose parameter cannot be filled gets the schema's ``default``, else the first
   ``enum`` value, else a placeholder (0, 0.0, "", false, [], {}, null).
6. Call ids are ``call_`` plus 24 hex digits of a hash of the conversation and the call's
   position, so a repeated request gets the same ids.
7. Steps: a part of the message after the word "then" that refers to an earlier result
   ("the result", "that result", "the answer", "that answer") depends on what comes before
   it, so it starts a new step (other "then" parts stay in the current step). When two or
   more steps name tools, each is a round: round *k* (counting the assistant tool-call
   messages of the turn) calls the tools named in step *k*, filled from the numeric results
   of the previous round first, then from the step's own values; after the last step's
   results the model answers (rule 1). "Add 1 and 2, then multiply the result by 4" calls
   ``add(1, 2)``, then ``multiply(3, 4)``, then answers; "add 2 and 3, then multiply 4 by
   5" calls both tools in one round.
8. A round that must call a tool (:func:`forced_tool_round`; the OpenAI-compatible
   ``tool_choice: "required"`` or a named function) makes the calls rules 1-7 pick when
   they pick any; otherwise (nothing fits, or the turn already holds results) it calls one
   tool: the one the last user message names first, else the first offered tool whose
   parameters can all be filled, else the first offered tool, filled as rule 5 fills a
   named tool.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Message",
    "PlannedCall",
    "ToolRound",
    "ToolSpec",
    "answer_from_results",
    "forced_tool_round",
    "messages_from_history",
    "plan_tool_round",
    "tools_from_setting",
]


@dataclass(frozen=True)
class ToolSpec:
    """One offered tool: its name, description and JSON-schema parameters (type object)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PlannedCall:
    """A tool call the model makes: ``arguments`` is a JSON-compatible dict."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    """One conversation message in plain form."""

    role: str
    text: str = ""
    tool_calls: tuple[PlannedCall, ...] = ()
    tool_call_id: str | None = None


@dataclass(frozen=True)
class ToolRound:
    """The outcome of one prediction round (see the module docstring)."""

    calls: tuple[PlannedCall, ...] = ()
    text: str | None = None


# --- normalising the inputs -------------------------------------------------------------------


def _as_call(raw: PlannedCall | Mapping[str, Any]) -> PlannedCall:
    if isinstance(raw, PlannedCall):
        return raw
    args = raw.get("arguments")
    if isinstance(args, str):  # OpenAI sends arguments as a JSON text
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):  # not JSON, or nested too deeply
            args = {}
    return PlannedCall(
        id=str(raw.get("id") or ""),
        name=str(raw.get("name", "")),
        arguments=dict(args) if isinstance(args, Mapping) else {},
    )


def _as_message(raw: Message | Mapping[str, Any]) -> Message:
    if isinstance(raw, Message):
        return raw
    calls = raw.get("tool_calls") or ()
    call_id = raw.get("tool_call_id")
    return Message(
        role=str(raw.get("role", "user")),
        text=str(raw.get("text") or ""),
        tool_calls=tuple(_as_call(c) for c in calls if isinstance(c, (PlannedCall, Mapping))),
        tool_call_id=None if call_id is None else str(call_id),
    )


def _as_tool(raw: ToolSpec | Mapping[str, Any]) -> ToolSpec:
    if isinstance(raw, ToolSpec):
        return raw
    params = raw.get("parameters")
    return ToolSpec(
        name=str(raw.get("name", "")),
        description=str(raw.get("description") or ""),
        parameters=params if isinstance(params, Mapping) else {},
    )


def messages_from_history(history: Mapping[str, Any]) -> list[Message]:
    """Plain messages from LM Studio's ``ChatHistoryData`` (``{"messages": [...]}``).

    Text parts become the text (file parts as ``[file: NAME]``); ``toolCallRequest`` parts
    become ``tool_calls``; each ``toolCallResult`` part becomes one ``tool`` message.
    """
    out: list[Message] = []
    for raw in history.get("messages", []):
        if not isinstance(raw, Mapping):
            continue
        role = str(raw.get("role", "user"))
        texts: list[str] = []
        calls: list[PlannedCall] = []
        for part in raw.get("content", []):
            if not isinstance(part, Mapping):
                continue
            kind = part.get("type")
            if kind == "text":
                texts.append(str(part.get("text", "")))
            elif kind == "file":
                texts.append(f"[file: {part.get('name', 'attachment')}]")
            elif kind == "toolCallRequest":
                request = part.get("toolCallRequest")
                if isinstance(request, Mapping):
                    calls.append(_as_call(request))
            elif kind == "toolCallResult":
                call_id = part.get("toolCallId")
                out.append(
                    Message(
                        "tool",
                        str(part.get("content", "")),
                        tool_call_id=None if call_id is None else str(call_id),
                    )
                )
        if texts or calls or role != "tool":
            out.append(Message(role, "\n\n".join(t for t in texts if t), tuple(calls)))
    return out


def tools_from_setting(setting: Any) -> list[ToolSpec]:
    """Tool specs from an ``llm.prediction.tools`` value (``{"type": "toolArray", ...}``).

    Accepts the LM Studio shape ``{"type": "function", "function": {name, description,
    parameters}}`` (also OpenAI's) for each tool; anything else yields no tools.
    """
    if not isinstance(setting, Mapping) or setting.get("type") != "toolArray":
        return []
    specs: list[ToolSpec] = []
    tools = setting.get("tools")
    for tool in tools if isinstance(tools, list) else []:
        if isinstance(tool, Mapping) and isinstance(tool.get("function"), Mapping):
            spec = _as_tool(tool["function"])
            if spec.name:
                specs.append(spec)
    return specs


# --- values in the user's message ---------------------------------------------------------------

_NUMBER_RE = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\w]|\.\d)")
# Quoted texts. A quoted text holds no quote mark of its own kind: for the curly quotes
# this excludes the opening mark too, so a run of opening marks without a closing one is
# scanned once, not once per mark (that made planning quadratic in the message length).
_QUOTED_RE = re.compile(r"(?<!\w)'([^'\n]+)'(?!\w)|\"([^\"\n]+)\"|“([^“”\n]+)”")
_BOOL_RE = re.compile(r"\b(true|false|yes|no)\b", re.IGNORECASE)
_WORD_RE = re.compile(r"[\w.-]+")


@dataclass
class _Value:
    kind: str  # "number" | "quoted" | "bool" | "word"
    start: int
    value: Any
    taken: bool = False


def _values(text: str) -> list[_Value]:
    found: list[_Value] = []
    quoted_spans: list[tuple[int, int]] = []
    for m in _QUOTED_RE.finditer(text):
        inner = next(g for g in m.groups() if g is not None)
        found.append(_Value("quoted", m.start(), inner))
        quoted_spans.append(m.span())
    quoted_starts = [a for a, _b in quoted_spans]  # sorted, the spans do not overlap
    for m in _NUMBER_RE.finditer(text):
        index = bisect.bisect_right(quoted_starts, m.start()) - 1
        if index >= 0 and m.start() < quoted_spans[index][1]:
            continue  # inside a quoted text
        raw = m.group()
        number: int | float = float(raw) if "." in raw else int(raw)
        found.append(_Value("number", m.start(), number))
    for m in _BOOL_RE.finditer(text):
        word = m.group().lower()
        found.append(_Value("bool", m.start(), word in ("true", "yes")))
    for m in _WORD_RE.finditer(text):
        found.append(_Value("word", m.start(), m.group()))
    found.sort(key=lambda v: v.start)
    return found


def _name_variants(name: str) -> set[str]:
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    spaced = re.sub(r"[_\-\s]+", " ", spaced).strip().lower()
    return {name.lower(), spaced} - {""}


def _mention(text: str, name: str) -> int | None:
    lowered = text.lower()
    best: int | None = None
    for variant in _name_variants(name):
        m = re.search(r"(?<![\w])" + re.escape(variant) + r"(?![\w])", lowered)
        if m is not None and (best is None or m.start() < best):
            best = m.start()
    return best


# --- filling parameters -------------------------------------------------------------------------

_MISSING = object()


def _param_names(schema: Mapping[str, Any]) -> list[str]:
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = schema.get("required")
    if isinstance(required, list):
        return [r for r in required if isinstance(r, str)]
    return [str(k) for k in props]


def _param_type(schema: Any) -> str:
    if not isinstance(schema, Mapping):
        return "string"
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if kinds else "null"
    if isinstance(kind, str):
        return kind
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            for option in options:
                inner = _param_type(option)
                if inner != "null":
                    return inner
    return "string"


_PLAIN_MATCHES = frozenset({("number", "number"), ("string", "quoted"), ("boolean", "bool")})


def _accepts(value: _Value, kind: str, schema: Any) -> Any:
    """The argument ``value`` gives for a parameter of this kind, or ``_MISSING``."""
    enum = schema.get("enum") if isinstance(schema, Mapping) else None
    if isinstance(enum, list) and enum:
        if value.kind in ("word", "quoted"):
            for option in enum:
                if isinstance(option, str) and option.lower() == str(value.value).lower():
                    return option
        if value.kind == "number":
            for option in enum:
                if (
                    isinstance(option, (int, float))
                    and not isinstance(option, bool)
                    and option == value.value
                ):
                    return option
        return _MISSING
    if kind == "integer" and value.kind == "number":
        number = value.value
        if isinstance(number, int) or float(number).is_integer():
            return int(number)
    elif (kind, value.kind) in _PLAIN_MATCHES:
        return value.value
    return _MISSING


def _usable_kinds(kind: str, schema: Any) -> frozenset[str]:
    """The kinds of value that :func:`_accepts` may take for such a parameter."""
    enum = schema.get("enum") if isinstance(schema, Mapping) else None
    if isinstance(enum, list) and enum:
        return frozenset({"word", "quoted", "number"})
    if kind == "integer":
        return frozenset({"number"})
    return frozenset(v for k, v in _PLAIN_MATCHES if k == kind)


def _placeholder(kind: str, schema: Any) -> Any:
    if isinstance(schema, Mapping):
        if "default" in schema:
            return schema["default"]
        enum = schema.get("enum")
        if isinstance(enum, list) and enum:
            return enum[0]
    return {
        "integer": 0,
        "number": 0.0,
        "string": "",
        "boolean": False,
        "array": [],
        "object": {},
    }.get(kind)


def _fill(
    tool: ToolSpec, values: list[_Value], after: int, *, lenient: bool
) -> dict[str, Any] | None:
    """Arguments for ``tool`` from the untaken values (marked taken on success)."""
    schema = tool.parameters
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    chosen: list[_Value] = []
    args: dict[str, Any] = {}
    ordered = [v for v in values if v.start >= after] + [v for v in values if v.start < after]
    for name in _param_names(schema):
        sub = props.get(name, {})
        kind = _param_type(sub)
        usable = _usable_kinds(kind, sub)
        for value in ordered:
            if value.kind not in usable or value.taken or any(value is c for c in chosen):
                continue
            argument = _accepts(value, kind, sub)
            if argument is not _MISSING:
                chosen.append(value)
                args[name] = argument
                break
        else:
            if not lenient:
                return None
            args[name] = _placeholder(kind, sub)
    for value in chosen:
        value.taken = True
    return args


def _call_id(messages: Sequence[Message], index: int) -> str:
    material = json.dumps(
        [[m.role, m.text, m.tool_call_id, [c.id for c in m.tool_calls]] for m in messages] + [index]
    )
    return "call_" + hashlib.sha256(material.encode()).hexdigest()[:24]


# --- the rule -------------------------------------------------------------------------------------


def answer_from_results(turn: Sequence[Message]) -> str:
    """Text that quotes each tool result of this turn, naming the tool that produced it."""
    names = {c.id: c.name for m in turn for c in m.tool_calls if c.id}
    lines: list[str] = []
    for message in turn:
        if message.role != "tool":
            continue
        name = names.get(message.tool_call_id or "")
        who = f"The {name} tool" if name else "The tool"
        lines.append(f"{who} returned: {message.text.strip()}")
    return "\n".join(lines)


def plan_tool_round(
    messages: Sequence[Message | Mapping[str, Any]],
    tools: Sequence[ToolSpec | Mapping[str, Any]],
) -> ToolRound:
    """Decide one prediction round of a tool-using model (the rule: module docstring).

    Returns ``ToolRound(calls=(...), text=preamble)`` when the model calls tools,
    ``ToolRound(text=answer)`` when it answers from tool results, and ``ToolRound()``
    when tools play no part (generate ordinary text).
    """
    history = [_as_message(m) for m in messages]
    specs = [t for t in (_as_tool(t) for t in tools) if t.name]
    last_user = max((i for i, m in enumerate(history) if m.role == "user"), default=None)
    if last_user is None:
        return ToolRound()
    turn = history[last_user + 1 :]
    text = history[last_user].text
    steps = _steps(text, specs)
    done = sum(1 for m in turn if m.role == "assistant" and m.tool_calls)
    has_results = any(m.role == "tool" for m in turn)
    if has_results and (len(steps) < 2 or done >= len(steps) or turn[-1].role != "tool"):
        return ToolRound(text=answer_from_results(turn))
    if not specs or (turn and not has_results):
        return ToolRound()
    if len(steps) >= 2:
        picked = _plan_step(steps[done], specs, _result_values(turn))
    else:
        picked = _plan_single(text, specs)
    if not picked:
        return ToolRound()
    calls = tuple(
        PlannedCall(_call_id(history, index), tool.name, args)
        for index, (tool, args) in enumerate(picked)
    )
    names = ", ".join(call.name for call in calls)
    plural = "tools" if len(calls) > 1 else "tool"
    return ToolRound(calls=calls, text=f"Let me use the {names} {plural}.")


def forced_tool_round(
    messages: Sequence[Message | Mapping[str, Any]],
    tools: Sequence[ToolSpec | Mapping[str, Any]],
) -> ToolRound:
    """A round in which the model must call a tool (rule 8): :func:`plan_tool_round`'s
    calls when it makes any, else one call it would not have made. ``ToolRound()`` only
    when no tool is offered."""
    specs = [t for t in (_as_tool(t) for t in tools) if t.name]
    if not specs:
        return ToolRound()
    planned = plan_tool_round(messages, specs)
    if planned.calls:
        return planned
    history = [_as_message(m) for m in messages]
    last_user = max((i for i, m in enumerate(history) if m.role == "user"), default=None)
    text = "" if last_user is None else history[last_user].text
    values = _values(text)
    named = [(pos, i) for i, t in enumerate(specs) if (pos := _mention(text, t.name)) is not None]
    args: dict[str, Any] | None = None
    if named:
        pos, index = min(named)
        tool = specs[index]
        args = _fill(tool, values, pos, lenient=True)
    else:
        for tool in specs:
            args = _fill(tool, values, 0, lenient=False)
            if args is not None:
                break
        else:
            tool = specs[0]
            args = _fill(tool, values, 0, lenient=True)
    assert args is not None
    call = PlannedCall(_call_id(history, 0), tool.name, args)
    return ToolRound(calls=(call,), text=f"Let me use the {tool.name} tool.")


_THEN_RE = re.compile(r"\bthen\b", re.IGNORECASE)
_DEPENDS_RE = re.compile(r"\b(?:the|that) (?:result|answer)\b", re.IGNORECASE)


def _steps(text: str, specs: list[ToolSpec]) -> list[str]:
    """The sequential steps of ``text`` (rule 7): parts after a "then" that refer to "the
    result" start a new step; steps that name no tool are dropped."""
    groups: list[list[str]] = []  # each step's parts, joined once (appending is quadratic)
    for index, part in enumerate(_THEN_RE.split(text)):
        if index and _DEPENDS_RE.search(part):
            groups.append([part])
        elif groups:
            groups[-1].append(part)
        else:
            groups.append([part])
    steps = [" then ".join(parts) for parts in groups]
    return [g for g in steps if any(_mention(g, t.name) is not None for t in specs)]


def _plan_single(text: str, specs: list[ToolSpec]) -> list[tuple[ToolSpec, dict[str, Any]]]:
    values = _values(text)
    mentioned = [
        (pos, i, t) for i, t in enumerate(specs) if (pos := _mention(text, t.name)) is not None
    ]
    picked: list[tuple[ToolSpec, dict[str, Any]]] = []
    for pos, _i, tool in sorted(mentioned, key=lambda x: (x[0], x[1])):
        args = _fill(tool, values, pos, lenient=True)
        assert args is not None
        picked.append((tool, args))
    named = {id(t) for _p, _i, t in mentioned}
    for tool in specs:
        if id(tool) in named or not _param_names(tool.parameters):
            continue
        args = _fill(tool, values, 0, lenient=False)
        if args is not None:
            picked.append((tool, args))
    return picked


def _result_values(turn: Sequence[Message]) -> list[_Value]:
    """Numbers that the latest tool results consist of (the previous step's results)."""
    latest: list[Message] = []
    for message in reversed(turn):
        if message.role != "tool":
            break
        latest.insert(0, message)
    values: list[_Value] = []
    for message in latest:
        raw = message.text.strip().strip('"')
        if _NUMBER_RE.fullmatch(raw):
            number: int | float = float(raw) if "." in raw else int(raw)
            values.append(_Value("number", -1, number))
    return values


def _plan_step(
    text: str, specs: list[ToolSpec], earlier: list[_Value]
) -> list[tuple[ToolSpec, dict[str, Any]]]:
    """One step of a "then" sequence: its named tools, filled from the previous step's
    numeric results first, then from the step's own values."""
    values = earlier + _values(text)
    mentioned = sorted(
        (pos, i, t) for i, t in enumerate(specs) if (pos := _mention(text, t.name)) is not None
    )
    picked: list[tuple[ToolSpec, dict[str, Any]]] = []
    for _pos, _i, tool in mentioned:
        args = _fill(tool, values, -1, lenient=True)
        assert args is not None
        picked.append((tool, args))
    return picked
