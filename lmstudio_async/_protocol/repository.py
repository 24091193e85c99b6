"""The ``repository`` namespace (model search and download): pure, no I/O.

``searchModels`` ``{"opts": {searchTerm?, limit?, compatibilityTypes?}}`` returns
``{"results": [ModelSearchResultEntryData]}``; ``getModelDownloadOptions``
``{"modelSearchResultIdentifier": {...}}`` returns ``{"results": [DownloadOptionData]}``;
the ``downloadModel`` channel (``{"downloadIdentifier"}``) sends ``downloadProgress``,
``startFinalizing`` and ``success {defaultIdentifier}`` (protocol.md §5.4).
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

from lmstudio_async.errors import LMStudioValueError

__all__ = [
    "DOWNLOAD_PACKET_DECODER",
    "CompatibilityType",
    "DownloadOptionData",
    "DownloadOptionsReply",
    "DownloadProgress",
    "DownloadProgressPacket",
    "DownloadSuccess",
    "SearchReply",
    "SearchResultData",
    "StartFinalizing",
    "search_param",
]

CompatibilityType: TypeAlias = Literal[
    "gguf", "safetensors", "onnx", "ggml", "mlx_placeholder", "torch_safetensors"
]
"""Model file formats a search can be limited to."""

_COMPATIBILITY: tuple[str, ...] = (
    "gguf",
    "safetensors",
    "onnx",
    "ggml",
    "mlx_placeholder",
    "torch_safetensors",
)


class SearchResultData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What LM Studio said about one search result (``ModelSearchResult.info``; the
    protocol's ``ModelSearchResultEntryData``)."""

    name: str
    """The model's name, e.g. ``"lmstudio-community/gemma-3-1b-it-GGUF"``."""
    identifier: dict[str, Any]
    """LM Studio's identifier of the result (opaque; sent back for its download options)."""
    exact: bool | None = None
    """Whether the name matched the search term exactly (``None``: not said)."""
    staff_pick: bool | None = None
    """Whether LM Studio's staff picked this model (``None``: not said)."""


class SearchReply(msgspec.Struct, frozen=True):
    results: list[SearchResultData]


class DownloadOptionData(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """What LM Studio said about one download option (``DownloadOption.info``; one
    ``getModelDownloadOptions`` result)."""

    name: str
    """The file name."""
    size_bytes: int
    """Download size."""
    download_identifier: str
    """LM Studio's identifier of the file to download."""
    indexed_model_identifier: str
    """The file's identifier in LM Studio's model index."""
    fit_estimation: str | None = None
    """LM Studio's guess of how the model fits this machine, e.g. ``"fullGPUOffload"``,
    ``"partialGPUOffload"`` or ``"willNotFit"``."""
    quantization: str | None = None
    """The quantization, e.g. ``"Q4_K_M"``, when LM Studio knows it."""
    recommended: bool | None = None
    """Whether LM Studio recommends this option for this machine (``None``: not said)."""


class DownloadOptionsReply(msgspec.Struct, frozen=True):
    results: list[DownloadOptionData]


class DownloadProgress(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """Progress of a download (``on_progress`` of :meth:`DownloadOption.download`)."""

    downloaded_bytes: int
    """Bytes downloaded so far."""
    total_bytes: int
    """Size of the download."""
    speed_bytes_per_second: float = 0.0
    """Current speed."""

    @property
    def fraction(self) -> float:
        """``downloaded_bytes / total_bytes`` in [0, 1]."""
        if self.total_bytes <= 0:
            return 0.0
        return min(max(self.downloaded_bytes / self.total_bytes, 0.0), 1.0)


class _DownloadPacket(msgspec.Struct, tag_field="type", rename="camel", kw_only=True):
    pass


class DownloadProgressPacket(_DownloadPacket, tag="downloadProgress"):
    update: DownloadProgress


class StartFinalizing(_DownloadPacket, tag="startFinalizing"):
    pass


class DownloadSuccess(_DownloadPacket, tag="success"):
    default_identifier: str


DOWNLOAD_PACKET_DECODER: msgspec.json.Decoder[
    DownloadProgressPacket | StartFinalizing | DownloadSuccess
] = msgspec.json.Decoder(DownloadProgressPacket | StartFinalizing | DownloadSuccess)


def search_param(
    search_term: str | None, limit: int | None, compatibility_types: Any
) -> dict[str, Any]:
    """Parameter of ``searchModels``, checked."""
    opts: dict[str, Any] = {}
    if search_term is not None:
        if not isinstance(search_term, str):
            raise LMStudioValueError(
                f"search_term must be a string, got {type(search_term).__name__}"
            )
        opts["searchTerm"] = search_term
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 25:
            raise LMStudioValueError(f"limit must be an integer from 1 to 25, got {limit!r}")
        opts["limit"] = limit
    if compatibility_types is not None:
        if isinstance(compatibility_types, str):
            compatibility_types = [compatibility_types]
        if not isinstance(compatibility_types, list | tuple | set | frozenset):
            raise LMStudioValueError(
                "compatibility_types must be a list of names such as 'gguf', "
                f"got {type(compatibility_types).__name__}"
            )
        types = list(compatibility_types)
        bad = [t for t in types if t not in _COMPATIBILITY]
        if bad:
            raise LMStudioValueError(
                f"unknown compatibility type(s) {bad!r}; known: {', '.join(_COMPATIBILITY)}"
            )
        opts["compatibilityTypes"] = types
    return {"opts": opts}
