"""What every model handle shares: the deadline sentinel and :class:`_ModelHandle`.

The namespaces in :mod:`.client` create handles; the inference mixins in :mod:`.inference`
extend them. Both import this module, so neither needs the other.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, TypeAlias, TypeVar

import msgspec

from .._protocol.endpoints import instance_specifier
from .._protocol.info import (
    EmbeddingModelInfo,
    EmbeddingModelInstanceInfo,
    LlmInfo,
    LlmInstanceInfo,
    decode_instance_info,
)
from .._protocol.kvconfig import KvConfig, fields_to_load_config
from .._protocol.messages import decode_reply
from ..config import EmbeddingLoadConfig, LlmLoadConfig
from ..errors import ModelNotFoundError, ProtocolError
from ..types import Timeouts

if TYPE_CHECKING:
    from .client import _ModelNamespace

__all__ = ["USE_CLIENT_DEFAULT", "TimeoutParam"]

log = logging.getLogger("lmstudio_async")

_KV_CONFIG_DECODER: Final = msgspec.json.Decoder(KvConfig)


class _UseClientDefault:
    """Sentinel: use the client's deadlines for this call."""

    _instance: ClassVar[_UseClientDefault | None] = None

    def __new__(cls) -> _UseClientDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "USE_CLIENT_DEFAULT"

    def __reduce__(self) -> str:
        return "USE_CLIENT_DEFAULT"


USE_CLIENT_DEFAULT: Final[_UseClientDefault] = _UseClientDefault()
"""Default of every ``timeout=`` parameter: the client's own :class:`Timeouts`."""

TimeoutParam: TypeAlias = "float | Timeouts | _UseClientDefault | None"



_HandleT = TypeVar("_HandleT", bound="_ModelHandle[Any, Any]")
_InfoT = TypeVar("_InfoT", LlmInfo, EmbeddingModelInfo)
_InstanceT = TypeVar("_InstanceT", LlmInstanceInfo, EmbeddingModelInstanceInfo)
_ConfigT = TypeVar("_ConfigT", LlmLoadConfig, EmbeddingLoadConfig)


class _ModelHandle(Generic[_InstanceT, _ConfigT]):
    """A loaded model instance; tied to that instance, not just its identifier."""

    _domain: ClassVar[Literal["llm", "embedding"]]

    def __init__(self, namespace: _ModelNamespace[Any, Any, Any, Any], info: _InstanceT) -> None:
        self._namespace = namespace
        self._info: _InstanceT = info

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.identifier!r} ({self.model_key})>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _ModelHandle):
            return NotImplemented
        return bool(self._info.instance_reference == other._info.instance_reference)

    def __hash__(self) -> int:
        return hash(self._info.instance_reference)

    @property
    def identifier(self) -> str:
        """The instance identifier (unique among loaded instances)."""
        return self._info.identifier

    @property
    def model_key(self) -> str:
        """Key of the downloaded model this instance was loaded from."""
        return self._info.model_key

    @property
    def instance_reference(self) -> str:
        """The server's immutable reference to this exact instance."""
        return self._info.instance_reference

    @property
    def info(self) -> _InstanceT:
        """Instance info as last received (see :meth:`get_info` for a fresh copy)."""
        return self._info

    def _specifier(self) -> dict[str, Any]:
        return instance_specifier(self._info.instance_reference)

    async def get_info(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> _InstanceT:
        """Fresh instance info (context length, TTL, last-used time…).

        Raises :class:`ModelNotFoundError` naming the identifier once the instance is gone.
        """
        return await self._get_info(timeout, f"Get info of {self.identifier!r}")

    async def _get_info(self, timeout: TimeoutParam, operation: str) -> _InstanceT:
        ns = self._namespace
        raw = await ns._client._rpc(
            ns._name,
            "getModelInfo",
            {"specifier": self._specifier(), "throwIfNotFound": True},
            timeout=timeout,
            operation=operation,
            subject=self.identifier,
        )
        if raw is None:
            raise ModelNotFoundError.client_side(
                f"Model instance {self.identifier!r} is no longer loaded",
                subject=self.identifier,
                domain=ns._name,
            )
        info: _InstanceT = decode_instance_info(raw)  # type: ignore[assignment]
        self._info = info
        return info

    async def get_load_config(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> _ConfigT:
        """The effective load config of this instance, as typed fields."""
        ns = self._namespace
        raw = await ns._client._rpc(
            ns._name,
            "getLoadConfig",
            {"specifier": self._specifier()},
            timeout=timeout,
            operation=f"Get load config of {self.identifier!r}",
            subject=self.identifier,
        )
        if raw is None:
            raise ProtocolError(f"LM Studio sent no load config for {self.identifier!r}")
        kv = decode_reply(_KV_CONFIG_DECODER, raw, "load config")
        return fields_to_load_config(self._domain, kv.fields)  # type: ignore[return-value]

    async def get_context_length(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> int:
        """Context length the instance was loaded with."""
        return (await self.get_info(timeout=timeout)).context_length

    @property
    def device(self) -> str | None:
        """The LM Link device the instance is loaded on; ``None``: the local machine."""
        return self._info.device_identifier

    async def unload(self, *, timeout: TimeoutParam = USE_CLIENT_DEFAULT) -> None:
        """Unload this instance (from its LM Link device, if any). Raises
        :class:`ModelNotFoundError` if it is already gone, also when a newer instance has
        taken its identifier since: LM Studio unloads by identifier, so this first asks
        whether this very instance is still loaded (as the JS SDK does). ``timeout``
        bounds both calls together."""
        ns = self._namespace
        timeouts, deadline = ns._client._deadlines_for(timeout)
        info = await self._get_info(timeouts, f"Unload of {self.identifier!r}")
        # On its own device only (deviceIdentifier null for a local one, as the JS SDK
        # sends): with LM Link, another device may have an instance of that identifier.
        await ns._unload(info.identifier, info.device_identifier, timeouts, deadline, exact=True)
