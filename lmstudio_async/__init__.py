"""lmstudio_async: manage models in LM Studio's memory from asyncio, threads and scripts.

Async::

    async with lmstudio_async.AsyncClient() as client:
        llm = await client.llm.model("llama-3.2-1b-instruct")

Sync::

    with lmstudio_async.Client() as client:
        llm = client.llm.model("llama-3.2-1b-instruct")
"""

from ._async.agent import ActResult
from ._async.client import (
    LLM,
    LOAD_CANCEL_GRACE_SECONDS,
    AsyncClient,
    EmbeddingModel,
    EmbeddingNamespace,
    LlmNamespace,
    SystemNamespace,
)
from ._async.files import FilesNamespace
from ._async.handle import USE_CLIENT_DEFAULT
from ._async.inference import PredictionStream
from ._async.pool import AsyncModelPool, PoolCounters, PoolLease, PoolStats
from ._async.repository import DownloadOption, ModelSearchResult, RepositoryNamespace
from ._protocol.chat import Chat, ChatMessage
from ._protocol.files import FileHandle
from ._protocol.info import (
    EmbeddingModelInfo,
    EmbeddingModelInstanceInfo,
    EstimateResult,
    LlmInfo,
    LlmInstanceInfo,
    MemoryEstimate,
    ModelInfo,
    ModelInstanceInfo,
    Quantization,
)
from ._protocol.prediction import PredictionConfig
from ._protocol.repository import DownloadOptionData, DownloadProgress, SearchResultData
from ._protocol.results import (
    Fragment,
    PredictionResult,
    PredictionRoundResult,
    PredictionStats,
    StructuredResult,
)
from ._protocol.tools import ToolCallRequest, ToolCallResult, ToolFunctionDef
from ._sync.client import (
    Client,
    SyncDownloadOption,
    SyncEmbeddingModel,
    SyncEmbeddingNamespace,
    SyncFilesNamespace,
    SyncLLM,
    SyncLlmNamespace,
    SyncModelSearchResult,
    SyncRepositoryNamespace,
    SyncSystemNamespace,
    configure_default_client,
    embedding_model,
    get_default_client,
    llm,
)
from ._sync.pool import ModelPool, SyncPoolLease
from ._sync.stream import SyncPredictionStream
from .config import EmbeddingLoadConfig, LlmLoadConfig
from .errors import (
    AuthenticationError,
    ClientClosedError,
    ConfigError,
    ConfigMismatchError,
    ConfigMismatchWarning,
    DeviceNotFoundError,
    DomainMismatchError,
    DraftModelError,
    HostDownError,
    IdentifierTakenError,
    InsufficientMemoryError,
    LMStudioConnectionError,
    LMStudioError,
    LMStudioTimeoutError,
    LMStudioValueError,
    LoopThreadError,
    ModelNotFoundError,
    ModelUnloadedError,
    PoolFullError,
    PoolTimeoutError,
    PresetNotFoundError,
    ProtocolError,
    ServerError,
    StructuredOutputError,
    ToolCallError,
    UnsupportedEndpointError,
    VisionNotSupportedError,
)
from .types import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL,
    DEFAULT_KEEPALIVE_TIMEOUT,
    DEFAULT_TIMEOUTS,
    Timeouts,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_TIMEOUTS",
    "LLM",
    "LOAD_CANCEL_GRACE_SECONDS",
    "USE_CLIENT_DEFAULT",
    "ActResult",
    "AsyncClient",
    "AsyncModelPool",
    "AuthenticationError",
    "Chat",
    "ChatMessage",
    "Client",
    "ClientClosedError",
    "ConfigError",
    "ConfigMismatchError",
    "ConfigMismatchWarning",
    "DeviceNotFoundError",
    "DomainMismatchError",
    "DownloadOption",
    "DownloadOptionData",
    "DownloadProgress",
    "DraftModelError",
    "EmbeddingLoadConfig",
    "EmbeddingModel",
    "EmbeddingModelInfo",
    "EmbeddingModelInstanceInfo",
    "EmbeddingNamespace",
    "EstimateResult",
    "FileHandle",
    "FilesNamespace",
    "Fragment",
    "HostDownError",
    "IdentifierTakenError",
    "InsufficientMemoryError",
    "LMStudioConnectionError",
    "LMStudioError",
    "LMStudioTimeoutError",
    "LMStudioValueError",
    "LlmInfo",
    "LlmInstanceInfo",
    "LlmLoadConfig",
    "LlmNamespace",
    "LoopThreadError",
    "MemoryEstimate",
    "ModelInfo",
    "ModelInstanceInfo",
    "ModelNotFoundError",
    "ModelPool",
    "ModelSearchResult",
    "ModelUnloadedError",
    "PoolCounters",
    "PoolFullError",
    "PoolLease",
    "PoolStats",
    "PoolTimeoutError",
    "PredictionConfig",
    "PredictionResult",
    "PredictionRoundResult",
    "PredictionStats",
    "PredictionStream",
    "PresetNotFoundError",
    "ProtocolError",
    "Quantization",
    "RepositoryNamespace",
    "SearchResultData",
    "ServerError",
    "StructuredOutputError",
    "StructuredResult",
    "SyncDownloadOption",
    "SyncEmbeddingModel",
    "SyncEmbeddingNamespace",
    "SyncFilesNamespace",
    "SyncLLM",
    "SyncLlmNamespace",
    "SyncModelSearchResult",
    "SyncPoolLease",
    "SyncPredictionStream",
    "SyncRepositoryNamespace",
    "SyncSystemNamespace",
    "SystemNamespace",
    "Timeouts",
    "ToolCallError",
    "ToolCallRequest",
    "ToolCallResult",
    "ToolFunctionDef",
    "UnsupportedEndpointError",
    "VisionNotSupportedError",
    "__version__",
    "configure_default_client",
    "embedding_model",
    "get_default_client",
    "llm",
]
