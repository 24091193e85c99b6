"""A simulated model hub for the stand-in: the ``repository`` namespace.

``searchModels`` ``{"opts": {"searchTerm"?, "limit"?, "compatibilityTypes"?}}`` returns
``{"results": [{"name", "identifier": {"type": "hf"|"catalog", "identifier"}, "exact"?,
"staffPick"?}]}``; ``getModelDownloadOptions`` ``{"modelSearchResultIdentifier": {...}}``
returns ``{"results": [{"name", "quantization"?, "sizeBytes", "fitEstimation", "recommended"?,
"downloadIdentifier", "indexedModelIdentifier", "compatibilityType"}]}``; the ``downloadModel``
channel ``{"downloadIdentifier"}`` streams ``downloadProgress`` packets, then
``startFinalizing`` and ``success`` with ``defaultIdentifier`` (the new model's key), after
which the model is in ``listDownloadedModels`` and loadable. A ``cancel`` packet stops it:
the channel ends with an error and nothing is added.

The hub (``--hub FILE`` replaces the built-in one) is a JSON list of repositories::

    [{"name": "SmolLM2 360M Instruct",
      "identifier": "lmstudio-community/SmolLM2-360M-Instruct-GGUF",
      "type": "hf", "staffPick": false,
      "models": [ModelInfo, ...]}]

Each ``models`` entry is a downloaded-catalogue ``ModelInfo`` (as for ``--catalog``): one
download option each, the first one recommended; its ``path`` is the download identifier.

Search rule: every whitespace-separated word of the term appears (ignoring case) in the
repository's name or identifier or one of its model keys; ``exact`` when the term equals the
identifier, the name or a model key (ignoring case). Results keep hub order, at most
``limit`` (default 10, at most 25). ``compatibilityTypes`` keeps options of those formats.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from . import _schema as s
from ._catalog import CatalogError, model_entry, read_json_file, validate_catalog
from ._connection import ChannelContext, ChannelEndpoint, Connection, Namespace, RpcEndpoint
from ._errors import StandInError

__all__ = ["HubError", "default_hub", "load_hub_file", "repository_namespace", "validate_hub"]

DEFAULT_LIMIT = 10
MAX_LIMIT = 25
# Simulated download: this many progress packets, at the runtime's download speed.
PROGRESS_STEPS = 10
FINALIZE_SECONDS = 0.02


def _model(
    key: str,
    path: str,
    display: str,
    size: int,
    arch: str,
    params: str,
    quant: str,
    bits: int,
    max_ctx: int,
    *,
    domain: str = "llm",
    vision: bool = False,
    tools: bool = False,
) -> dict[str, Any]:
    return model_entry(
        domain=domain,
        key=key,
        display=display,
        path=path,
        size=size,
        arch=arch,
        params=params,
        quant=(quant, bits),
        max_ctx=max_ctx,
        vision=vision,
        tools=tools,
    )


_SMOL360 = "lmstudio-community/SmolLM2-360M-Instruct-GGUF"
_QWEN05 = "lmstudio-community/Qwen2.5-0.5B-Instruct-GGUF"
_GEMMA = "lmstudio-community/gemma-3-4b-it-GGUF"
_BGE = "CompendiumLabs/bge-small-en-v1.5-gguf"
_SMOL135 = "lmstudio-community/SmolLM2-135M-Instruct-GGUF"

_DEFAULT_HUB: list[dict[str, Any]] = [
    {
        "name": "SmolLM2 135M Instruct",
        "identifier": _SMOL135,
        "type": "hf",
        "staffPick": True,
        "models": [
            _model(
                "smollm2-135m-instruct",
                f"{_SMOL135}/SmolLM2-135M-Instruct-Q8_0.gguf",
                "SmolLM2 135M Instruct",
                144_811_328,
                "llama",
                "135M",
                "Q8_0",
                8,
                8192,
            )
        ],
    },
    {
        "name": "SmolLM2 360M Instruct",
        "identifier": _SMOL360,
        "type": "hf",
        "models": [
            _model(
                "smollm2-360m-instruct",
                f"{_SMOL360}/SmolLM2-360M-Instruct-Q8_0.gguf",
                "SmolLM2 360M Instruct",
                386_404_992,
                "llama",
                "360M",
                "Q8_0",
                8,
                8192,
            ),
            _model(
                "smollm2-360m-instruct@q4_k_m",
                f"{_SMOL360}/SmolLM2-360M-Instruct-Q4_K_M.gguf",
                "SmolLM2 360M Instruct",
                270_598_464,
                "llama",
                "360M",
                "Q4_K_M",
                4,
                8192,
            ),
        ],
    },
    {
        "name": "Qwen2.5 0.5B Instruct",
        "identifier": _QWEN05,
        "type": "hf",
        "staffPick": True,
        "models": [
            _model(
                "qwen2.5-0.5b-instruct",
                f"{_QWEN05}/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf",
                "Qwen2.5 0.5B Instruct",
                397_807_968,
                "qwen2",
                "0.5B",
                "Q4_K_M",
                4,
                32_768,
                tools=True,
            )
        ],
    },
    {
        "name": "Gemma 3 4B Instruct",
        "identifier": _GEMMA,
        "type": "hf",
        "models": [
            _model(
                "gemma-3-4b-it",
                f"{_GEMMA}/gemma-3-4b-it-Q4_K_M.gguf",
                "Gemma 3 4B Instruct",
                3_340_000_000,
                "gemma3",
                "4B",
                "Q4_K_M",
                4,
                131_072,
                vision=True,
            )
        ],
    },
    {
        "name": "BGE Small EN v1.5",
        "identifier": _BGE,
        "type": "hf",
        "models": [
            _model(
                "text-embedding-bge-small-en-v1.5",
                f"{_BGE}/bge-small-en-v1.5-q8_0.gguf",
                "BGE Small EN v1.5",
                36_700_000,
                "bert",
                "33M",
                "Q8_0",
                8,
                512,
                domain="embedding",
            )
        ],
    },
]


class HubError(ValueError):
    """A hub list (e.g. from ``--hub FILE``) is malformed."""


def default_hub() -> list[dict[str, Any]]:
    """A fresh, validated copy of the built-in hub."""
    return validate_hub(copy.deepcopy(_DEFAULT_HUB))


def validate_hub(raw: object) -> list[dict[str, Any]]:
    """Check a hub list and fill in ModelInfo defaults; raises :class:`HubError`."""
    if not isinstance(raw, list):
        raise HubError("the hub must be a JSON list of repositories")
    result: list[dict[str, Any]] = []
    downloads: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"hub entry {index}"
        if not isinstance(entry, dict):
            raise HubError(f"{where}: expected a JSON object")
        for name in ("name", "identifier"):
            if not isinstance(entry.get(name), str) or not entry[name]:
                raise HubError(f'{where}: "{name}" must be a non-empty string')
        kind = entry.get("type", "hf")
        if kind not in ("hf", "catalog"):
            raise HubError(f'{where}: "type" must be "hf" or "catalog"')
        if not isinstance(entry.get("staffPick", False), bool):
            raise HubError(f'{where}: "staffPick" must be a boolean')
        models = entry.get("models")
        if not isinstance(models, list) or not models:
            raise HubError(f'{where}: "models" must be a non-empty list of ModelInfo objects')
        try:
            checked = validate_catalog(models)
        except CatalogError as exc:
            raise HubError(f"{where}: {exc}") from None
        for model in checked:
            if model["path"].lower() in downloads:
                raise HubError(f'{where}: duplicate model path "{model["path"]}"')
            downloads.add(model["path"].lower())
        result.append(
            {
                "name": entry["name"],
                "identifier": entry["identifier"],
                "type": kind,
                "staffPick": entry.get("staffPick", False),
                "models": checked,
            }
        )
    return result


def load_hub_file(path: str | Path) -> list[dict[str, Any]]:
    return read_json_file(path, "hub", HubError, validate_hub)


# --- search -------------------------------------------------------------------------------------


def search(hub: list[dict[str, Any]], opts: dict[str, Any]) -> list[dict[str, Any]]:
    term = str(opts.get("searchTerm") or "").strip().lower()
    limit = opts.get("limit")
    limit = DEFAULT_LIMIT if limit is None else min(int(limit), MAX_LIMIT)
    kinds = opts.get("compatibilityTypes")
    results: list[dict[str, Any]] = []
    for repo in hub:
        keys = [str(m["modelKey"]).lower() for m in repo["models"]]
        haystack = " ".join([repo["name"].lower(), repo["identifier"].lower(), *keys])
        if term and not all(word in haystack for word in term.split()):
            continue
        if kinds is not None and not any(m["format"] in kinds for m in repo["models"]):
            continue
        entry: dict[str, Any] = {
            "name": repo["name"],
            "identifier": {"type": repo["type"], "identifier": repo["identifier"]},
        }
        if term and term in (repo["name"].lower(), repo["identifier"].lower(), *keys):
            entry["exact"] = True
        if repo["staffPick"]:
            entry["staffPick"] = True
        results.append(entry)
    return results[:limit]


def _fit(size: int, budget: int) -> str:
    if size <= budget // 2:
        return "fullGPUOffload"
    if size <= budget:
        return "partialGPUOffload"
    return "willNotFit"


def download_options(repo: dict[str, Any], budget: int) -> list[dict[str, Any]]:
    options: list[dict[str, Any]] = []
    for index, model in enumerate(repo["models"]):
        option: dict[str, Any] = {
            "name": str(model["path"]).rsplit("/", 1)[-1],
            "sizeBytes": model["sizeBytes"],
            "fitEstimation": _fit(int(model["sizeBytes"]), budget),
            "downloadIdentifier": model["path"],
            "indexedModelIdentifier": model["indexedModelIdentifier"],
            "compatibilityType": model["format"],
        }
        if isinstance(model.get("quantization"), dict):
            option["quantization"] = model["quantization"]["name"]
        if index == 0:
            option["recommended"] = True
        options.append(option)
    return options


# --- errors ---------------------------------------------------------------------------------------


def no_such_search_result(identifier: dict[str, Any]) -> StandInError:
    return StandInError(
        f'No model "{identifier.get("identifier")}" in the repository',
        cause="The identifier does not come from a searchModels result of this hub.",
    )


def no_such_download(download: str) -> StandInError:
    return StandInError(
        f'Unknown download identifier "{download}"',
        cause="Use a downloadIdentifier from getModelDownloadOptions.",
    )


def download_cancelled(download: str) -> StandInError:
    return StandInError(
        "Model download was cancelled",
        cause=f'The client cancelled downloading "{download}"; nothing was added.',
    )


# --- handlers -------------------------------------------------------------------------------------


def _hub(conn: Connection) -> list[dict[str, Any]]:
    hub: list[dict[str, Any]] = conn.rt.hub
    return hub


def _search(conn: Connection, param: dict[str, Any]) -> Any:
    return {"results": search(_hub(conn), param["opts"])}


def _options(conn: Connection, param: dict[str, Any]) -> Any:
    wanted = param["modelSearchResultIdentifier"]
    for repo in _hub(conn):
        if repo["identifier"] == wanted["identifier"] and repo["type"] == wanted["type"]:
            return {"results": download_options(repo, conn.rt.state.memory_budget)}
    raise no_such_search_result(wanted)


async def _download(ctx: ChannelContext, param: dict[str, Any]) -> None:
    download = param["downloadIdentifier"]
    found = next(
        (m for repo in _hub(ctx.conn) for m in repo["models"] if m["path"] == download), None
    )
    if found is None:
        raise no_such_download(download)
    model = copy.deepcopy(found)
    total = int(model["sizeBytes"])
    speed = float(ctx.runtime.download_bytes_per_second)
    delay = total / speed / PROGRESS_STEPS
    for step in range(1, PROGRESS_STEPS + 1):
        await ctx.pause(delay, lambda: download_cancelled(download))
        update = {
            "downloadedBytes": total * step // PROGRESS_STEPS,
            "totalBytes": total,
            "speedBytesPerSecond": speed,
        }
        await ctx.send({"type": "downloadProgress", "update": update})
    await ctx.send({"type": "startFinalizing"})
    await ctx.pause(FINALIZE_SECONDS, lambda: download_cancelled(download))
    state = ctx.conn.rt.state
    key = str(model["modelKey"]).lower()
    if not any(str(m["modelKey"]).lower() == key for m in state.catalog):
        state.catalog = [*state.catalog, model]
    await ctx.send({"type": "success", "defaultIdentifier": model["modelKey"]})


_COMPAT = s.literal("gguf", "safetensors", "onnx", "ggml", "mlx_placeholder", "torch_safetensors")
_RESULT_ID = s.obj({"type": s.literal("hf", "catalog"), "identifier": s.string})


def repository_namespace() -> Namespace:
    """``searchModels``, ``getModelDownloadOptions`` and the ``downloadModel`` channel."""
    rpc = {
        "searchModels": RpcEndpoint(
            s.obj(
                {
                    "opts": s.obj(
                        {},
                        {
                            "searchTerm": s.string,
                            "limit": s.integer(1),
                            "compatibilityTypes": s.array(_COMPAT),
                        },
                    )
                }
            ),
            _search,
        ),
        "getModelDownloadOptions": RpcEndpoint(
            s.obj({"modelSearchResultIdentifier": _RESULT_ID}), _options
        ),
    }
    channels = {
        "downloadModel": ChannelEndpoint(
            s.obj({"downloadIdentifier": s.string}),
            s.obj({"type": s.literal("cancel")}),
            _download,
        ),
    }
    return Namespace(rpc, channels)
