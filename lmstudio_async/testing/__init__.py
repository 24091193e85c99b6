"""A stand-in LM Studio server (model-management API) for tests, demos and development.

Self-contained: depends only on the standard library, aiohttp and msgspec.
See docs/stand-in.md.
"""

from ._catalog import CatalogError, default_catalog, load_catalog_file, validate_catalog
from ._cli import add_arguments, main, serve, server_from_args
from ._server import (
    DEFAULT_PORT,
    FAULT_KINDS,
    CancelRecord,
    Faults,
    Frame,
    StandInServer,
    ThreadedStandInServer,
    parse_api_token,
)
from ._state import InstanceSnapshot

__all__ = [
    "DEFAULT_PORT",
    "FAULT_KINDS",
    "CancelRecord",
    "CatalogError",
    "Faults",
    "Frame",
    "InstanceSnapshot",
    "StandInServer",
    "ThreadedStandInServer",
    "add_arguments",
    "default_catalog",
    "load_catalog_file",
    "main",
    "parse_api_token",
    "serve",
    "server_from_args",
    "validate_catalog",
]
