"""``client.repository``: search the model catalogue and download models.

``search_models`` returns :class:`ModelSearchResult` handles; a result's
:meth:`~ModelSearchResult.get_download_options` the :class:`DownloadOption` (files,
quantizations) it offers; an option's :meth:`~DownloadOption.download` downloads it with
progress and returns the model key to load. Cancelling the download (task cancel, a
deadline, Ctrl-C in sync code) sends the protocol ``cancel``.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import msgspec

from .._io.transport import ChannelStream, RemoteError
from .._protocol.messages import decode_reply
from .._protocol.repository import (
    DOWNLOAD_PACKET_DECODER,
    CompatibilityType,
    DownloadOptionData,
    DownloadOptionsReply,
    DownloadProgress,
    DownloadProgressPacket,
    DownloadSuccess,
    SearchReply,
    SearchResultData,
    StartFinalizing,
    search_param,
)
from ..errors import LMStudioValueError, ProtocolError
from .handle import USE_CLIENT_DEFAULT, TimeoutParam, log

if TYPE_CHECKING:
    from .client import AsyncClient

__all__ = ["DownloadOption", "DownloadProgressCallback", "ModelSearchResult", "RepositoryNamespace"]

DownloadProgressCallback: TypeAlias = Callable[[DownloadProgress], Any]
"""``on_progress(progress)``: a plain function or a coroutine function."""

_SEARCH_DECODER: Final = msgspec.json.Decoder(SearchReply)
_OPTIONS_DECODER: Final = msgspec.json.Decoder(DownloadOptionsReply)
_NAMESPACE: Final = "repository"


class DownloadOption:
    """One way to download a search result (a file / quantization); see :meth:`download`."""

    def __init__(self, client: AsyncClient, data: DownloadOptionData) -> None:
        self._client = client
        self._data = data

    def __repr__(self) -> str:
        flag = ", recommended" if self._data.recommended else ""
        return f"<DownloadOption {self._data.name!r} ({self._data.size_bytes} bytes{flag})>"

    @property
    def info(self) -> DownloadOptionData:
        """Everything LM Studio said about this option."""
        return self._data

    @property
    def name(self) -> str:
        """The file name."""
        return self._data.name

    @property
    def size_bytes(self) -> int:
        """Download size."""
        return self._data.size_bytes

    @property
    def quantization(self) -> str | None:
        """Quantization, e.g. ``"Q4_K_M"``."""
        return self._data.quantization

    @property
    def recommended(self) -> bool:
        """Whether LM Studio recommends this option for this machine."""
        return bool(self._data.recommended)

    async def download(
        self,
        on_progress: DownloadProgressCallback | None = None,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> str:
        """Download this option; returns the model key to load it with.

        ``on_progress(progress)`` gets each :class:`DownloadProgress`. ``timeout`` bounds
        the wait between two progress packets (and, with a ``total``, the whole download).
        Cancelling the call cancels the download on the server. Afterwards the model is in
        ``list_downloaded()`` and can be loaded.
        """
        if on_progress is not None and not callable(on_progress):
            raise LMStudioValueError(
                f"on_progress must be a function, got {type(on_progress).__name__}"
            )
        client = self._client
        timeouts, deadline = client._deadlines_for(timeout)
        subject = self._data.name
        sock = client._transport.socket(_NAMESPACE)
        stream = await sock.open_channel(
            "downloadModel",
            {"downloadIdentifier": self._data.download_identifier},
            deadline,
            timeouts.total,
            timeouts.connect,
        )
        try:
            what = f"Download of {subject!r}"
            while True:
                packet = await stream.next_packet(
                    DOWNLOAD_PACKET_DECODER, timeouts.idle, deadline, timeouts.total, what
                )
                if isinstance(packet, DownloadProgressPacket):
                    if on_progress is not None:
                        result = on_progress(packet.update)
                        if inspect.isawaitable(result):
                            await result
                elif isinstance(packet, DownloadSuccess):
                    key = packet.default_identifier
                    break
                elif isinstance(packet, StartFinalizing):
                    log.debug("download of %r: finalizing", subject)
        except RemoteError as exc:
            raise client._server_error(exc, "Download", subject) from None
        except BaseException:
            if not stream.finished:
                stream.send({"type": "cancel"})
                client._spawn(_drain(stream), f"lmstudio-download-reap-{subject}")
            raise
        await _drain(stream)
        return key


async def _drain(stream: ChannelStream) -> None:
    with contextlib.suppress(Exception):
        await stream.settle(DOWNLOAD_PACKET_DECODER, ())


class ModelSearchResult:
    """A model found by :meth:`RepositoryNamespace.search_models`."""

    def __init__(self, client: AsyncClient, data: SearchResultData) -> None:
        self._client = client
        self._data = data

    def __repr__(self) -> str:
        return f"<ModelSearchResult {self._data.name!r}>"

    @property
    def info(self) -> SearchResultData:
        """Everything LM Studio said about this result."""
        return self._data

    @property
    def name(self) -> str:
        """The model's name, e.g. ``"lmstudio-community/gemma-3-1b-it-GGUF"``."""
        return self._data.name

    @property
    def exact(self) -> bool:
        """Whether the name matched the search term exactly."""
        return bool(self._data.exact)

    @property
    def staff_pick(self) -> bool:
        """Whether LM Studio's staff picked this model."""
        return bool(self._data.staff_pick)

    async def get_download_options(
        self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT
    ) -> list[DownloadOption]:
        """The files / quantizations this model can be downloaded as."""
        raw = await self._client._rpc(
            _NAMESPACE,
            "getModelDownloadOptions",
            {"modelSearchResultIdentifier": self._data.identifier},
            timeout=timeout,
            operation="Get download options",
            subject=self._data.name,
        )
        if raw is None:
            raise ProtocolError(f"LM Studio sent no download options for {self._data.name!r}")
        options = decode_reply(_OPTIONS_DECODER, raw, "list of download options").results
        return [DownloadOption(self._client, o) for o in options]


class RepositoryNamespace:
    """``client.repository``: search for downloadable models and download them."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    def __repr__(self) -> str:
        return f"<RepositoryNamespace of {self._client!r}>"

    async def search_models(
        self,
        search_term: str | None = None,
        limit: int | None = None,
        compatibility_types: Sequence[CompatibilityType] | None = None,
        *,
        timeout: TimeoutParam = USE_CLIENT_DEFAULT,
    ) -> list[ModelSearchResult]:
        """Models matching ``search_term`` (``limit``: 1 to 25 results;
        ``compatibility_types``: e.g. ``["gguf"]``)."""
        raw = await self._client._rpc(
            _NAMESPACE,
            "searchModels",
            search_param(search_term, limit, compatibility_types),
            timeout=timeout,
            operation="Model search",
            subject=search_term,
        )
        if raw is None:
            raise ProtocolError("LM Studio sent no search results")
        results = decode_reply(_SEARCH_DECODER, raw, "list of search results").results
        return [ModelSearchResult(self._client, r) for r in results]
