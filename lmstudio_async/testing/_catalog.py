"""The stand-in's catalogue of "downloaded" models (``ModelInfo`` objects, JS-HEAD field set)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["CatalogError", "default_catalog", "load_catalog_file", "validate_catalog"]

# Formats that both official SDKs accept (``pte`` would break the Python SDK).
_FORMATS = frozenset(
    {"gguf", "safetensors", "onnx", "ggml", "mlx_placeholder", "torch_safetensors"}
)


def model_entry(
    *,
    domain: str,
    key: str,
    display: str,
    path: str,
    size: int,
    arch: str,
    params: str,
    quant: tuple[str, int],
    max_ctx: int,
    vision: bool = False,
    tools: bool = False,
) -> dict[str, Any]:
    """One downloaded-model ``ModelInfo`` (the built-in catalogue's and hub's entries)."""
    info: dict[str, Any] = {
        "type": domain,
        "modelKey": key,
        "format": "gguf",
        "displayName": display,
        "publisher": path.split("/", 1)[0],
        "path": path,
        "sizeBytes": size,
        "indexedModelIdentifier": path,
        "deviceIdentifier": None,
        "paramsString": params,
        "architecture": arch,
        "quantization": {"name": quant[0], "bits": quant[1]},
        "maxContextLength": max_ctx,
    }
    if domain == "llm":
        info["vision"] = vision
        info["trainedForToolUse"] = tools
    return info


_DEFAULT_CATALOG: list[dict[str, Any]] = [
    model_entry(
        domain="llm",
        key="llama-3.2-1b-instruct",
        display="Llama 3.2 1B Instruct",
        path="hugging-quants/Llama-3.2-1B-Instruct-Q8_0-GGUF/llama-3.2-1b-instruct-q8_0.gguf",
        size=1_321_082_528,
        arch="llama",
        params="1B",
        quant=("Q8_0", 8),
        max_ctx=131_072,
        tools=True,
    ),
    model_entry(
        domain="embedding",
        key="text-embedding-nomic-embed-text-v1.5",
        display="Nomic Embed Text v1.5",
        path="nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.Q4_K_M.gguf",
        size=84_106_624,
        arch="nomic-bert",
        params="137M",
        quant=("Q4_K_M", 4),
        max_ctx=2048,
    ),
    model_entry(
        domain="llm",
        key="smollm2-135m-instruct",
        display="SmolLM2 135M Instruct",
        path="lmstudio-community/SmolLM2-135M-Instruct-GGUF/SmolLM2-135M-Instruct-Q8_0.gguf",
        size=144_811_328,
        arch="llama",
        params="135M",
        quant=("Q8_0", 8),
        max_ctx=8192,
    ),
    model_entry(
        domain="llm",
        key="mobilevlm_v2-1.7b",
        display="MobileVLM V2 1.7B",
        path="Blombert/MobileVLM_V2-1.7B-GGUF/ggml-model-q4_k.gguf",
        size=1_078_396_896,
        arch="llama",
        params="1.7B",
        quant=("Q4_K", 4),
        max_ctx=2048,
        vision=True,
    ),
    model_entry(
        domain="llm",
        key="qwen2.5-7b-instruct-1m",
        display="Qwen2.5 7B Instruct 1M",
        path="lmstudio-community/Qwen2.5-7B-Instruct-1M-GGUF/Qwen2.5-7B-Instruct-1M-Q4_K_M.gguf",
        size=4_683_073_536,
        arch="qwen2",
        params="7B",
        quant=("Q4_K_M", 4),
        max_ctx=1_010_000,
        tools=True,
    ),
]


class CatalogError(ValueError):
    """A catalogue (e.g. from ``--catalog FILE``) is not a valid list of ModelInfo objects."""


def default_catalog() -> list[dict[str, Any]]:
    """A fresh copy of the built-in catalogue."""
    return copy.deepcopy(_DEFAULT_CATALOG)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate_entry(index: int, raw: object) -> dict[str, Any]:
    where = f"catalog entry {index}"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    entry: dict[str, Any] = dict(raw)
    domain = entry.get("type")
    if domain not in ("llm", "embedding"):
        raise CatalogError(f'{where}: "type" must be "llm" or "embedding", got {domain!r}')
    for name in ("modelKey", "displayName", "path"):
        value = entry.get(name)
        if not isinstance(value, str) or not value:
            raise CatalogError(f'{where}: "{name}" must be a non-empty string')
    where = f'catalog entry {index} ("{entry["modelKey"]}")'
    if entry.get("format") not in _FORMATS:
        raise CatalogError(f'{where}: "format" must be one of {sorted(_FORMATS)}')
    for name in ("sizeBytes", "maxContextLength"):
        value = entry.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise CatalogError(f'{where}: "{name}" must be a positive integer')
    if domain == "llm":
        for name in ("vision", "trainedForToolUse"):
            entry.setdefault(name, False)
            if not isinstance(entry[name], bool):
                raise CatalogError(f'{where}: "{name}" must be a boolean')
    else:
        entry.pop("vision", None)
        entry.pop("trainedForToolUse", None)
    entry.setdefault("publisher", entry["path"].split("/", 1)[0])
    entry.setdefault("indexedModelIdentifier", entry["path"])
    entry.setdefault("deviceIdentifier", None)
    for name in ("publisher", "indexedModelIdentifier"):
        if not isinstance(entry[name], str):
            raise CatalogError(f'{where}: "{name}" must be a string')
    if entry["deviceIdentifier"] is not None:
        raise CatalogError(f'{where}: "deviceIdentifier" must be null (local models only)')
    for name in ("paramsString", "architecture"):
        if name in entry and not isinstance(entry[name], str):
            raise CatalogError(f'{where}: "{name}" must be a string when present')
    quant = entry.get("quantization")
    if quant is not None and not (
        isinstance(quant, dict)
        and isinstance(quant.get("name"), str)
        and _is_int(quant.get("bits"))
    ):
        raise CatalogError(f'{where}: "quantization" must be {{"name": str, "bits": int}}')
    if quant is None:
        entry.pop("quantization", None)
    return entry


def validate_catalog(entries: object) -> list[dict[str, Any]]:
    """Check a catalogue and fill in optional JS-HEAD fields; raises :class:`CatalogError`."""
    if not isinstance(entries, list):
        raise CatalogError("the catalog must be a JSON list of ModelInfo objects")
    result = [_validate_entry(i, raw) for i, raw in enumerate(entries)]
    seen: set[str] = set()
    for entry in result:
        key = entry["modelKey"].lower()
        if key in seen:
            raise CatalogError(f'duplicate modelKey "{entry["modelKey"]}" in catalog')
        seen.add(key)
    return result


def load_catalog_file(path: str | Path) -> list[dict[str, Any]]:
    """Read and validate a catalogue file (a JSON list of ModelInfo objects)."""
    return read_json_file(path, "catalog", CatalogError, validate_catalog)


def read_json_file(
    path: str | Path,
    what: str,
    error: type[ValueError],
    validate: Callable[[Any], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """Read the JSON file at ``path`` and ``validate`` it; every problem raises ``error``
    naming the ``what`` file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} file {str(path)!r}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{what} file {str(path)!r} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise error(f"{what} file {str(path)!r} is not valid JSON: nested too deeply") from None
    try:
        return validate(data)
    except error as exc:
        raise error(f"{what} file {str(path)!r}: {exc}") from None
