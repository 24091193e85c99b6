"""The stand-in's HTTP interfaces, served on the WebSocket API's port and sharing its state.

* OpenAI-compatible: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
  ``/v1/embeddings``, ``/v1/responses``;
* LM Studio REST v0: ``/api/v0/models[/{model}]``, ``/api/v0/chat/completions``,
  ``/api/v0/completions``, ``/api/v0/embeddings``;
* LM Studio REST v1: ``/api/v1/models``, ``/api/v1/models/load``, ``/api/v1/models/unload``,
  ``/api/v1/chat``.

Every answer is computed by the same state and prediction engine as the WebSocket API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from .. import _errors as err
from . import openai_compat, rest_v0, rest_v1
from .common import MAX_BODY_BYTES, HttpError, error_response, from_standin, release_held

if TYPE_CHECKING:
    from .._server import Runtime

__all__ = ["MAX_BODY_BYTES", "install"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_PREFIXES = ("/v1/", "/api/")


def _is_http_api(path: str) -> bool:
    return path.startswith(_PREFIXES) or path in ("/v1", "/api")


def _authorized(rt: Runtime, request: web.Request) -> bool:
    if rt.token is None or rt.faults.ignore_auth:
        return True
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    identifier, passkey = rt.token
    return scheme.lower() == "bearer" and value.strip() == f"sk-lm-{identifier}:{passkey}"


def _middleware(rt: Runtime) -> Middleware:
    @web.middleware
    async def http_api(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if not _is_http_api(path):
            return await handler(request)
        if not _authorized(rt, request):
            # v1 type invalid_request: LM Studio's v1 error types have no authentication
            # type, and LM Studio 0.4 was seen answering a missing token with this one.
            # /v1 and v0 say authentication_error (OpenAI's type for a 401).
            return error_response(
                HttpError(
                    401,
                    "This server requires an API token: send 'Authorization: Bearer <token>' "
                    "with a valid LM Studio API token",
                    code="invalid_api_key",
                ),
                path,
            )
        try:
            return await handler(request)
        except HttpError as exc:
            return error_response(exc, path)
        except err.StandInError as exc:
            return error_response(from_standin(exc), path)
        except RecursionError:
            # Only input nested about a thousand levels deep gets here (msgspec decodes it
            # close to Python's recursion limit, and handling it goes deeper still).
            return error_response(
                HttpError(400, "The request is nested too deeply", code="invalid_json"), path
            )
        except web.HTTPRequestEntityTooLarge:
            return error_response(
                HttpError(
                    413,
                    f"The request body is larger than the limit of {MAX_BODY_BYTES} bytes",
                    code="request_too_large",
                ),
                path,
            )
        except ConnectionResetError:
            transport = request.transport
            if transport is None or transport.is_closing():
                # The client went away (e.g. it gave up while its request waited for a
                # just-in-time load): nothing can reach it; end quietly rather than have
                # aiohttp log the failed write as an error.
                gone = HttpError(400, "The client went away", code="client_gone")
                return error_response(gone, path)
            raise
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed) as exc:
            return error_response(
                HttpError(
                    exc.status,
                    f"Unexpected endpoint or method. ({request.method} {path})",
                    code="unknown_endpoint",
                    kind="invalid_request",
                ),
                path,
            )
        finally:
            release_held(rt.state, request)  # the request's work on its model has ended

    return http_api


def install(app: web.Application, rt: Runtime) -> None:
    """Add the HTTP routes and their auth/error middleware to the stand-in's application."""

    def bind(fn: Callable[[Runtime, web.Request], Awaitable[web.StreamResponse]]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            return await fn(rt, request)

        return handler

    async def v1_models(_request: web.Request) -> web.StreamResponse:
        from .common import json_response

        return json_response(openai_compat.list_models(rt))

    async def chat_openai(request: web.Request) -> web.StreamResponse:
        return await openai_compat.chat_completions(rt, request, native=False)

    async def chat_v0(request: web.Request) -> web.StreamResponse:
        return await openai_compat.chat_completions(rt, request, native=True)

    async def completions_openai(request: web.Request) -> web.StreamResponse:
        return await openai_compat.completions(rt, request, native=False)

    async def completions_v0(request: web.Request) -> web.StreamResponse:
        return await openai_compat.completions(rt, request, native=True)

    app.middlewares.append(_middleware(rt))
    r = app.router
    r.add_get("/v1/models", v1_models)
    r.add_post("/v1/chat/completions", chat_openai)
    r.add_post("/v1/completions", completions_openai)
    r.add_post("/v1/embeddings", bind(openai_compat.embeddings))
    r.add_post("/v1/responses", bind(openai_compat.responses))
    r.add_get("/api/v0/models", bind(rest_v0.list_models))
    r.add_get("/api/v0/models/{model:.+}", bind(rest_v0.get_model))
    r.add_post("/api/v0/chat/completions", chat_v0)
    r.add_post("/api/v0/completions", completions_v0)
    r.add_post("/api/v0/embeddings", bind(openai_compat.embeddings))
    r.add_get("/api/v1/models", bind(rest_v1.list_models))
    r.add_post("/api/v1/models/load", bind(rest_v1.load))
    r.add_post("/api/v1/models/unload", bind(rest_v1.unload))
    r.add_post("/api/v1/chat", bind(rest_v1.chat))
