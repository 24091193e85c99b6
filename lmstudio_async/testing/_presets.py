"""Prediction presets for the stand-in: ``fuzzyPresetIdentifier`` on ``predict``.

A preset is a named prediction config. The stand-in's preset file (``--presets FILE``, which
replaces the built-in set) is a JSON list of objects::

    [{"identifier": "@local:concise", "name": "Concise",
      "operation": {"fields": [{"key": "llm.prediction.temperature", "value": 0.2}]}}]

``operation`` is a KVConfig of ``llm.prediction.*`` keys (LM Studio's own preset files keep the
prediction settings under that name). Layering follows the SDK docs: the client's config
overrides the preset, and the preset overrides the defaults.

Resolution of a (fuzzy) identifier, first match wins (a guess; LM Studio only says it
"supports limited fuzzy matching"): the exact identifier; the identifier ignoring case; the
part after the scope (``concise`` for ``@local:concise``) ignoring case; the display name
ignoring case. No match: ``generic.presetNotFound`` with a sample of the presets.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from ._errors import SAMPLE_SIZE, StandInError

__all__ = [
    "PresetError",
    "default_presets",
    "load_presets_file",
    "preset_fields",
    "resolve_preset",
    "validate_presets",
]


def _preset(identifier: str, name: str, **fields: Any) -> dict[str, Any]:
    return {
        "identifier": identifier,
        "name": name,
        "operation": {"fields": [{"key": k, "value": v} for k, v in fields.items()]},
    }


_DEFAULT_PRESETS: list[dict[str, Any]] = [
    _preset("@local:deterministic", "Deterministic", **{"llm.prediction.temperature": 0}),
    _preset(
        "@local:concise",
        "Concise",
        **{
            "llm.prediction.temperature": 0.3,
            "llm.prediction.maxPredictedTokens": {"checked": True, "value": 24},
        },
    ),
    _preset(
        "@local:creative",
        "Creative",
        **{
            "llm.prediction.temperature": 1.2,
            "llm.prediction.topPSampling": {"checked": True, "value": 0.98},
        },
    ),
]


class PresetError(ValueError):
    """A preset list (e.g. from ``--presets FILE``) is malformed."""


def default_presets() -> list[dict[str, Any]]:
    return copy.deepcopy(_DEFAULT_PRESETS)


def validate_presets(raw: object) -> list[dict[str, Any]]:
    """Check a preset list; raises :class:`PresetError` naming the bad entry."""
    if not isinstance(raw, list):
        raise PresetError("presets must be a JSON list of preset objects")
    result: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"preset {index}"
        if not isinstance(entry, dict):
            raise PresetError(f"{where}: expected a JSON object")
        identifier = entry.get("identifier")
        if not isinstance(identifier, str) or not identifier:
            raise PresetError(f'{where}: "identifier" must be a non-empty string')
        name = entry.get("name", identifier)
        if not isinstance(name, str):
            raise PresetError(f'{where}: "name" must be a string')
        fields = entry.get("operation", {"fields": []})
        if not isinstance(fields, dict) or not isinstance(fields.get("fields"), list):
            raise PresetError(f'{where}: "operation" must be {{"fields": [...]}}')
        for field in fields["fields"]:
            if not (
                isinstance(field, dict)
                and isinstance(field.get("key"), str)
                and field["key"].startswith("llm.prediction.")
                and "value" in field
            ):
                raise PresetError(
                    f'{where}: each field must be {{"key": "llm.prediction.…", "value": …}}'
                )
        if identifier in seen:
            raise PresetError(f'duplicate preset identifier "{identifier}"')
        seen.add(identifier)
        result.append({"identifier": identifier, "name": name, "operation": fields})
    return result


def load_presets_file(path: str | Path) -> list[dict[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise PresetError(f"cannot read presets file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PresetError(f"presets file {str(path)!r} is not valid JSON: {exc}") from exc
    try:
        return validate_presets(data)
    except PresetError as exc:
        raise PresetError(f"presets file {str(path)!r}: {exc}") from None


def _scoped_name(identifier: str) -> str:
    return identifier.rsplit(":", 1)[-1].lower()


def preset_not_found(fuzzy: str, presets: list[dict[str, Any]]) -> StandInError:
    sample = [{"identifier": p["identifier"], "name": p["name"]} for p in presets[:SAMPLE_SIZE]]
    return StandInError(
        f'Cannot find a preset with identifier "{fuzzy}"',
        display_data={
            "code": "generic.presetNotFound",
            "specifiedFuzzyPresetIdentifier": fuzzy,
            "availablePresetsSample": sample,
            "totalAvailablePresets": len(presets),
        },
    )


def resolve_preset(presets: list[dict[str, Any]], fuzzy: str) -> dict[str, Any]:
    """The preset ``fuzzy`` names (rule: module docstring); raises ``presetNotFound``."""
    low = fuzzy.lower()
    tests = (
        lambda p: p["identifier"] == fuzzy,
        lambda p: p["identifier"].lower() == low,
        lambda p: _scoped_name(p["identifier"]) == _scoped_name(fuzzy),
        lambda p: p["name"].lower() == low,
    )
    for test in tests:
        for preset in presets:
            if test(preset):
                return preset
    raise preset_not_found(fuzzy, presets)


def preset_fields(preset: dict[str, Any]) -> dict[str, Any]:
    """The preset's settings as a collapsed ``{key: value}`` config layer."""
    return {f["key"]: f["value"] for f in preset["operation"]["fields"]}
