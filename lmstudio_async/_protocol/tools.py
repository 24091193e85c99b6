"""Tools, tool calls and typed response formats: pure, no I/O.

* :class:`ToolFunctionDef`: a tool the model may call (name, description, typed parameters,
  implementation); :func:`parse_tools` turns plain functions and definitions into the
  ``llm.prediction.tools`` setting (``{"type": "toolArray", "tools": [...]}``) plus what the
  client needs to run a call: a msgspec Struct per tool that validates the arguments.
* :class:`ToolCallRequest` (the model asks for a call: ``id``, ``name``, ``arguments``) and
  :class:`ToolCallResult` (what goes back: ``content`` and ``tool_call_id``), the wire parts
  ``toolCallRequest`` / ``toolCallResult`` of the chat history.
* :func:`response_format`: a msgspec Struct, dataclass, TypedDict, pydantic model or JSON
  schema dict becomes a JSON schema for ``llm.prediction.structured`` and a decoder that
  turns the reply into an instance of that type.

Parameter schemas come from :func:`msgspec.json.schema` of a Struct built from the
signature (``msgspec.defstruct``), so every type msgspec knows works (``Literal``, enums,
``Annotated[int, Meta(ge=0)]``, Structs, dataclasses...). Descriptions come from the
docstring: its text before a Google-style ``Args:`` section describes the tool, and each
``name: text`` line of that section describes a parameter (``Annotated[..., Meta(
description=...)]`` takes precedence).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import re
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal

import msgspec
import msgspec.structs

from lmstudio_async.errors import ConfigError, LMStudioValueError

__all__ = [
    "ResponseFormat",
    "Tool",
    "ToolCallRequest",
    "ToolCallResult",
    "ToolDefinition",
    "ToolFunctionDef",
    "ToolSet",
    "encode_tool_result",
    "inline_schema",
    "parse_tools",
    "response_format",
]


# --- tool-call wire types --------------------------------------------------------------------


class ToolCallRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A tool call the model asked for: ``name`` with ``arguments`` (a JSON object).

    ``id`` pairs the call with its result (:meth:`Chat.add_tool_result`); LM Studio always
    sends one, older servers may not (``None``).
    """

    name: str
    """The tool's name."""
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    """The arguments, as the model wrote them (not yet validated)."""
    id: str | None = None
    """The call's id, echoed by its result."""
    type: Literal["function"] = "function"
    """Always ``"function"``."""

    def to_wire(self) -> dict[str, Any]:
        """The wire ``ToolCallRequest``."""
        wire: dict[str, Any] = {"type": "function", "name": self.name}
        if self.id is not None:
            wire["id"] = self.id
        wire["arguments"] = self.arguments
        return wire


class ToolCallResult(msgspec.Struct, frozen=True, kw_only=True):
    """The result of one tool call, as the model sees it: ``content`` (text, usually JSON)."""

    content: str
    """The result as text (``act`` JSON-encodes what a tool returns)."""
    tool_call_id: str | None = None
    """The id of the :class:`ToolCallRequest` this answers."""

    def to_wire(self) -> dict[str, Any]:
        """The wire ``toolCallResult`` part."""
        wire: dict[str, Any] = {"type": "toolCallResult", "content": self.content}
        if self.tool_call_id is not None:
            wire["toolCallId"] = self.tool_call_id
        return wire


_RESULT_ENCODER: Final = msgspec.json.Encoder()


def encode_tool_result(value: Any) -> str:
    """A tool's return value as the text the model receives: its JSON (as the official SDKs
    send it; a string becomes a JSON string). Raises ``TypeError`` for a value that has no
    JSON form."""
    return _RESULT_ENCODER.encode(value).decode("utf-8")


# --- tool definitions ------------------------------------------------------------------------

_NO_DEFAULT: Final[Any] = object()


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class ToolFunctionDef:
    """A tool given explicitly: what ``act`` / ``respond(tools=...)`` take besides functions.

    ``parameters`` maps each parameter name to its type, or to ``{"type": T, "default":
    value}`` for an optional one; ``implementation`` is called with them as keyword
    arguments (a plain function runs in a worker thread, a coroutine function on the loop)::

        ToolFunctionDef(
            name="add",
            description="Add two numbers.",
            parameters={"a": float, "b": {"type": float, "default": 0.0}},
            implementation=lambda a, b: a + b,
        )
    """

    name: str
    """The name the model calls the tool by."""
    description: str
    """What the tool does (the model reads this)."""
    parameters: Mapping[str, Any]
    """Parameter name -> type, or ``{"type": T, "default": value}``."""
    implementation: Callable[..., Any]
    """The function run for a call."""
    parameter_descriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Optional per-parameter descriptions (put in the JSON schema)."""

    @classmethod
    def from_callable(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> ToolFunctionDef:
        """The definition of a plain (or coroutine) function: its name, docstring and type hints.

        Every parameter needs a type hint; ``*args`` / ``**kwargs`` are not allowed.
        Raises :class:`~lmstudio_async.LMStudioValueError` naming what is missing.
        """
        if not callable(function):
            raise LMStudioValueError(
                f"a tool must be a function or a ToolFunctionDef, got {type(function).__name__}"
            )
        tool_name = name if name is not None else getattr(function, "__name__", None)
        if not isinstance(tool_name, str) or not tool_name or tool_name == "<lambda>":
            raise LMStudioValueError(
                f"cannot name the tool {function!r}: give it a name "
                "(ToolFunctionDef.from_callable(f, name=...))"
            )
        summary, arg_docs = _split_docstring(inspect.getdoc(function) or "")
        text = description if description is not None else summary
        if not text:
            raise LMStudioValueError(
                f"tool {tool_name!r} has no description: give the function a docstring "
                "(the model reads it to decide when to call the tool)"
            )
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError) as exc:
            raise LMStudioValueError(
                f"tool {tool_name!r}: cannot read its signature: {exc}"
            ) from None
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except Exception as exc:  # unresolvable forward references and the like
            raise LMStudioValueError(
                f"tool {tool_name!r}: cannot resolve its type hints: {exc}"
            ) from None
        parameters: dict[str, Any] = {}
        for pname, param in signature.parameters.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise LMStudioValueError(
                    f"tool {tool_name!r}: parameter {pname!r} is *args/**kwargs; "
                    "tools take named parameters only"
                )
            if param.kind is param.POSITIONAL_ONLY:
                raise LMStudioValueError(
                    f"tool {tool_name!r}: parameter {pname!r} is positional-only; "
                    "tools are called with keyword arguments"
                )
            if pname not in hints:
                raise LMStudioValueError(
                    f"tool {tool_name!r}: parameter {pname!r} has no type hint "
                    "(the hints become the JSON schema the model fills in)"
                )
            hint = hints[pname]
            if param.default is param.empty:
                parameters[pname] = hint
            else:
                parameters[pname] = {"type": hint, "default": param.default}
        return cls(
            name=tool_name,
            description=text,
            parameters=parameters,
            implementation=function,
            parameter_descriptions={k: v for k, v in arg_docs.items() if k in parameters},
        )

    def to_tool_definition(self) -> dict[str, Any]:
        """What the model is offered: ``{"type": "function", "function": {"name",
        "description", "parameters": <JSON schema>}}`` (LM Studio's and OpenAI's tool shape).

        Raises :class:`~lmstudio_async.LMStudioValueError` if a parameter type has no JSON
        schema.
        """
        return copy.deepcopy(_tool_from_def(self).wire)


ToolDefinition = ToolFunctionDef | Callable[..., Any] | Mapping[str, Any]
"""What ``act`` / ``respond(tools=...)`` take: a :class:`ToolFunctionDef`, a function, or a
dict of ``ToolFunctionDef``'s fields (the official SDK's ``ToolFunctionDefDict``)."""

_SECTION_RE = re.compile(r"^(?:Args|Arguments|Parameters|Params):[ \t]*$", re.MULTILINE)
_ARG_RE = re.compile(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def _split_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) of a Google-style docstring (dedented)."""
    match = _SECTION_RE.search(doc)
    if match is None:
        return doc.strip(), {}
    args: dict[str, str] = {}
    base: int | None = None
    current: str | None = None
    for line in doc[match.end() :].splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            break  # the next section (Returns:, Raises:...) or the end of this one
        if base is None:
            base = indent
        found = _ARG_RE.match(line.strip()) if indent <= base else None
        if found is not None:
            current = found.group(1)
            args[current] = found.group(2).strip()
        elif current is not None:
            args[current] = f"{args[current]} {line.strip()}".strip()
    return doc[: match.start()].strip(), args


@dataclasses.dataclass(frozen=True, slots=True)
class Tool:
    """One tool, ready to offer and to call."""

    name: str
    wire: dict[str, Any]
    arguments_type: type[msgspec.Struct]
    implementation: Callable[..., Any]
    is_async: bool

    def bind(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments for :attr:`implementation`, validated and converted.

        Raises ``msgspec.ValidationError`` when they do not match the parameters.
        """
        value = msgspec.convert(dict(arguments), self.arguments_type, strict=False)
        return {f: getattr(value, f) for f in self.arguments_type.__struct_fields__}


@dataclasses.dataclass(frozen=True, slots=True)
class ToolSet:
    """The tools of one call: by name, plus the ``llm.prediction.tools`` setting."""

    tools: dict[str, Tool]

    def setting(self) -> dict[str, Any]:
        """The ``llm.prediction.tools`` value."""
        return {"type": "toolArray", "tools": [t.wire for t in self.tools.values()]}


def _tool_from_def(definition: ToolFunctionDef) -> Tool:
    name = definition.name
    if not isinstance(name, str) or not name:
        raise LMStudioValueError(f"a tool name must be a non-empty string, got {name!r}")
    if not callable(definition.implementation):
        raise LMStudioValueError(f"tool {name!r}: implementation is not callable")
    if not isinstance(definition.description, str) or not definition.description.strip():
        raise LMStudioValueError(
            f"tool {name!r}: description must be a non-empty string (the model reads it to "
            f"decide when to call the tool), got {definition.description!r}"
        )
    if not isinstance(definition.parameters, Mapping):
        raise LMStudioValueError(f"tool {name!r}: parameters must be a mapping of name -> type")
    notes = definition.parameter_descriptions
    if not isinstance(notes, Mapping) or not all(isinstance(t, str) for t in notes.values()):
        raise LMStudioValueError(
            f"tool {name!r}: parameter_descriptions must be a mapping of parameter name -> "
            f"description (str), got {notes!r}"
        )
    unknown = [p for p in notes if p not in definition.parameters]
    if unknown:
        raise LMStudioValueError(
            f"tool {name!r}: parameter_descriptions names no parameter of the tool: "
            f"{', '.join(map(repr, unknown))} (its parameters: "
            f"{', '.join(map(repr, definition.parameters)) or 'none'})"
        )
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for pname, spec in definition.parameters.items():
        if not isinstance(pname, str) or not pname.isidentifier():
            raise LMStudioValueError(
                f"tool {name!r}: parameter name {pname!r} is not an identifier"
            )
        if isinstance(spec, Mapping):
            if "type" not in spec:
                raise LMStudioValueError(
                    f"tool {name!r}: parameter {pname!r} is a dict without a 'type' key"
                )
            default = spec.get("default", _NO_DEFAULT)
            hint = spec["type"]
        else:
            hint, default = spec, _NO_DEFAULT
        if isinstance(hint, str):
            raise LMStudioValueError(
                f"tool {name!r}: parameter {pname!r} has the type {hint!r}, a string: give a "
                "Python type (str, int, list[str], a Literal…), not a JSON-schema type name"
            )
        fields.append((pname, hint) if default is _NO_DEFAULT else (pname, hint, default))
    struct_name = "".join(part.capitalize() for part in re.split(r"\W+|_", name) if part)
    try:
        struct = msgspec.defstruct(
            f"{struct_name or 'Tool'}Parameters", fields, kw_only=True, forbid_unknown_fields=False
        )
        schema = inline_schema(msgspec.json.schema(struct))
    except (TypeError, ValueError, NameError, RuntimeError) as exc:
        # RuntimeError: msgspec refuses e.g. a parameter named "__secret" (name mangling)
        raise LMStudioValueError(
            f"tool {name!r}: cannot derive a JSON schema from its parameters: {exc}"
        ) from None
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for pname, text in definition.parameter_descriptions.items():
            prop = properties.get(pname)
            if isinstance(prop, dict) and "description" not in prop and text:
                prop["description"] = text
    schema.setdefault("properties", {})
    schema.setdefault("required", [])
    wire = {
        "type": "function",
        "function": {"name": name, "description": definition.description, "parameters": schema},
    }
    return Tool(
        name=name,
        wire=wire,
        arguments_type=struct,
        implementation=definition.implementation,
        is_async=inspect.iscoroutinefunction(definition.implementation),
    )


# Deriving a schema takes ~0.2 ms; act() and repeated respond(tools=...) calls reuse it for
# as long as the function object lives and is unchanged.
_FUNCTION_TOOLS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[tuple[Any, ...], Tool]] = (
    weakref.WeakKeyDictionary()
)


def _function_tool(function: Any) -> Tool:
    stamp = (
        function.__code__,
        function.__doc__,
        id(function.__defaults__),
        id(function.__kwdefaults__),
        id(function.__annotations__),
        function.__name__,
    )
    hit = _FUNCTION_TOOLS.get(function)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    tool = _tool_from_def(ToolFunctionDef.from_callable(function))
    _FUNCTION_TOOLS[function] = (stamp, tool)
    return tool


def parse_tools(tools: object) -> ToolSet:
    """Validate what a user passed as ``tools``: a non-empty list of functions,
    :class:`ToolFunctionDef` and dicts of its fields, with distinct names."""
    if isinstance(tools, ToolSet):
        return tools
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
        raise LMStudioValueError(
            f"tools must be a list of functions or ToolFunctionDef, got {type(tools).__name__}"
        )
    by_name: dict[str, Tool] = {}
    for item in tools:
        if isinstance(item, ToolFunctionDef):
            tool = _tool_from_def(item)
        elif isinstance(item, Mapping):  # the official SDK's ToolFunctionDefDict
            try:
                definition = ToolFunctionDef(**item)
            except TypeError as exc:
                raise LMStudioValueError(
                    "a tool dict needs exactly the keys name, description, parameters and "
                    f"implementation (optionally parameter_descriptions): {exc}"
                ) from None
            tool = _tool_from_def(definition)
        elif inspect.isfunction(item):
            tool = _function_tool(item)
        elif callable(item):
            tool = _tool_from_def(ToolFunctionDef.from_callable(item))
        else:
            raise LMStudioValueError(
                f"a tool must be a function or a ToolFunctionDef, got {type(item).__name__}"
            )
        if tool.name in by_name:
            raise LMStudioValueError(f"two tools are named {tool.name!r}; tool names must differ")
        by_name[tool.name] = tool
    if not by_name:
        raise LMStudioValueError("tools is empty: give at least one tool")
    return ToolSet(by_name)


# --- typed response formats ------------------------------------------------------------------


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """msgspec's ``{"$ref": "#/$defs/X", "$defs": {...}}`` -> one self-contained schema.

    Every reference is replaced by the definition it points to (models and LM Studio's
    grammar handle flat schemas best); only a recursive type keeps its ``$defs``.
    """
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema
    recursive: set[str] = set()

    def resolve(value: Any, stack: tuple[str, ...]) -> Any:
        if isinstance(value, list):
            return [resolve(v, stack) for v in value]
        if not isinstance(value, dict):
            return value
        ref = value.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            target = defs.get(name)
            if name in stack or not isinstance(target, dict):
                recursive.add(name)
                return value
            merged = {k: v for k, v in target.items() if k != "title"}
            merged.update({k: v for k, v in value.items() if k != "$ref"})
            return resolve(merged, (*stack, name))
        return {k: resolve(v, stack) for k, v in value.items() if k != "$defs"}

    root: dict[str, Any] = resolve(schema, ())
    if recursive:
        root["$defs"] = {k: v for k, v in defs.items() if k in recursive}
    return root


@dataclasses.dataclass(frozen=True, slots=True)
class ResponseFormat:
    """A typed structured-output request: the schema to send and how to read the reply."""

    schema: dict[str, Any]
    target: Any
    decode: Callable[[str], Any]
    """Raises ``ValueError`` (msgspec / pydantic validation errors are ValueErrors) on a
    reply that does not match."""


def _is_pydantic_model(value: object) -> bool:
    return (
        isinstance(value, type)
        and callable(getattr(value, "model_json_schema", None))
        and callable(getattr(value, "model_validate_json", None))
    )


def response_format(value: object) -> ResponseFormat:
    """What ``respond(..., response_format=value)`` means.

    * a msgspec ``Struct``, a dataclass, a ``TypedDict`` (or any type msgspec can decode):
      its ``msgspec.json.schema``; the reply is decoded into that type;
    * a pydantic model class (pydantic is optional): its ``model_json_schema()``; the reply is
      read with ``model_validate_json``;
    * a dict: a JSON schema as is; the reply is decoded as plain JSON.

    Anything else raises :class:`~lmstudio_async.ConfigError` (``field="response_format"``).
    """
    if isinstance(value, Mapping):
        schema = dict(value)
        try:
            msgspec.json.encode(schema)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(
                f"response_format: the JSON schema is not JSON-serializable: {exc}",
                field="response_format",
            ) from None
        return ResponseFormat(schema, dict, _decode_plain)
    if _is_pydantic_model(value):
        model: Any = value
        try:
            schema = dict(model.model_json_schema())
        except Exception as exc:
            raise ConfigError(
                f"response_format: {model.__name__}.model_json_schema() failed: {exc}",
                field="response_format",
            ) from None
        return ResponseFormat(schema, model, model.model_validate_json)
    if isinstance(value, type) or typing.get_origin(value) is not None:
        try:
            schema = inline_schema(msgspec.json.schema(value))
            decoder = msgspec.json.Decoder(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"response_format: cannot derive a JSON schema from {value!r}: {exc}",
                field="response_format",
            ) from None
        return ResponseFormat(schema, value, decoder.decode)
    raise ConfigError(
        "response_format must be a msgspec Struct, dataclass, TypedDict or pydantic model "
        f"class, or a JSON schema dict; got {type(value).__name__}",
        field="response_format",
    )


def _decode_plain(text: str) -> Any:
    return msgspec.json.decode(text)
