"""Tiny zod-like validators for envelopes and endpoint parameters.

A check takes a value and returns ``None`` when it is valid or a short description of the
problem otherwise. ``MISSING`` stands for an absent key (JavaScript's ``undefined``).
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any, Final

Check = Callable[[Any], "str | None"]


class _Missing:
    def __repr__(self) -> str:
        return "undefined"


MISSING: Final = _Missing()

DOMAINS: Final = ("llm", "embedding", "drafter", "imageGen", "transcription", "tts")
LAYER_NAMES: Final = frozenset(
    {
        "currentlyEditing",
        "currentlyLoaded",
        "apiOverride",
        "conversationSpecific",
        "conversationGlobal",
        "preset",
        "serverSession",
        "httpServerRequestOverride",
        "completeModeFormatting",
        "instance",
        "userModelDefault",
        "virtualModel",
        "modelDefault",
        "hardware",
    }
)


def is_int(value: Any) -> bool:
    """A JSON number that is an integer (``1.0`` counts, as in JavaScript)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value) and value.is_integer()


def is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def string(value: Any) -> str | None:
    return None if isinstance(value, str) else "Expected string"


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "Expected boolean"


def anything(value: Any) -> str | None:
    return None if value is not MISSING else "Required"


def integer(minimum: float | None = None, maximum: float | None = None) -> Check:
    return _in_range(is_int, "Expected integer", minimum, maximum)


def number(minimum: float | None = None, maximum: float | None = None) -> Check:
    return _in_range(is_number, "Expected number", minimum, maximum)


def _in_range(
    kind: Callable[[Any], bool], expected: str, minimum: float | None, maximum: float | None
) -> Check:
    def check(value: Any) -> str | None:
        if not kind(value):
            return expected
        if minimum is not None and value < minimum:
            return f"Number must be greater than or equal to {minimum:g}"
        if maximum is not None and value > maximum:
            return f"Number must be less than or equal to {maximum:g}"
        return None

    return check


def reasonable_key(value: Any) -> str | None:
    if not isinstance(value, str):
        return "Expected string"
    if not 1 <= len(value) <= 1024:
        return "String must contain between 1 and 1024 characters"
    if value == "__proto__":
        return "Invalid key"
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        return "String must not contain control characters"
    return None


def literal(*options: Any) -> Check:
    # Python's True == 1 and False == 0, JavaScript's === does not: a boolean matches only a
    # boolean option, a number only a number option.
    def same(value: Any, option: Any) -> bool:
        return isinstance(value, bool) == isinstance(option, bool) and value == option

    def check(value: Any) -> str | None:
        if any(same(value, option) for option in options):
            return None
        return f"Expected one of {list(options)}"

    return check


def nullable(inner: Check) -> Check:
    def check(value: Any) -> str | None:
        return None if value is None else inner(value)

    return check


def array(inner: Check) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, list):
            return "Expected array"
        for index, item in enumerate(value):
            problem = inner(item)
            if problem is not None:
                return f"[{index}]: {problem}"
        return None

    return check


def union(*checks: Check) -> Check:
    def check(value: Any) -> str | None:
        problems = [c(value) for c in checks]
        if any(p is None for p in problems):
            return None
        return "Invalid input (" + "; ".join(p for p in problems if p) + ")"

    return check


def tagged(key: str, variants: Mapping[str, Check]) -> Check:
    """zod's ``discriminatedUnion``: the object's ``key`` picks the one schema it must match."""
    expected = " | ".join(f"'{tag}'" for tag in variants)

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "Expected object" if value is not MISSING else "Required"
        tag = value.get(key)
        inner = variants.get(tag) if isinstance(tag, str) else None
        if inner is None:
            return f"{key}: Invalid discriminator value. Expected {expected}"
        return inner(value)

    return check


def record(inner: Check) -> Check:
    """zod's ``record``: an object whose every value passes ``inner``."""

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "Expected object" if value is not MISSING else "Required"
        for name, item in value.items():
            problem = inner(item)
            if problem is not None:
                return f"{name}: {problem}"
        return None

    return check


def obj(required: Mapping[str, Check], optional: Mapping[str, Check] | None = None) -> Check:
    """An object with the given required and optional keys (extra keys are stripped, as zod)."""
    optional = optional or {}

    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "Expected object" if value is not MISSING else "Required"
        for name, inner in required.items():
            if name not in value:
                return f"{name}: Required"
            problem = inner(value[name])
            if problem is not None:
                return f"{name}: {problem}"
        for name, inner in optional.items():
            if name in value:
                problem = inner(value[name])
                if problem is not None:
                    return f"{name}: {problem}"
        return None

    return check


def void(value: Any) -> str | None:
    return None if value is MISSING else "Expected undefined (omit the key)"


# --- shared protocol shapes -------------------------------------------------------------

model_query = obj(
    {},
    {
        "domain": literal(*DOMAINS),
        "identifier": reasonable_key,
        "path": reasonable_key,
        "vision": boolean,
        "deviceIdentifier": nullable(string),
    },
)

model_specifier = union(
    obj({"type": literal("query"), "query": model_query}),
    obj({"type": literal("instanceReference"), "instanceReference": string}),
)

kv_config = obj({"fields": array(obj({"key": string}, {"value": lambda v: None}))})

kv_config_stack = obj(
    {"layers": array(obj({"layerName": literal(*sorted(LAYER_NAMES)), "config": kv_config}))}
)

ttl = integer(minimum=1)
