"""Errors as RFC 9457 problem details (``application/problem+json``).

Every error the API returns has this shape, whatever raised it: a ProblemError from a route, a typed
MailError from the store (mapped by MAIL_ERRORS), a request that fails validation (422), an unknown
route (404) or method (405). An unexpected exception becomes a 500 problem without internals in the body
(it is logged); bad input must never reach that path, and the schemathesis test checks it does not.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from lsmmail.engine.errors import InvalidArgument
from lsmmail.mail import errors as mail_errors

log = logging.getLogger("lsmmail.service")

PROBLEM_TYPE_BASE = "https://lsmmail.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """RFC 9457 problem details. ``errors`` lists field-level validation failures (422 only)."""

    type: str = Field("about:blank", description="URI naming the problem type")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[dict[str, Any]] | None = None


class ProblemError(Exception):
    """Raise from a route to answer with a problem. ``kind`` becomes the type URI's last segment."""

    def __init__(self, status: int, kind: str, title: str, detail: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or title)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = headers


# Mail-layer errors -> (status, kind, title). Unknown message / attachment / folder in the PATH are 404
# (another user's id looks exactly like a missing one: the store scopes every lookup by user).
MAIL_ERRORS: list[tuple[type[Exception], int, str, str]] = [
    (mail_errors.UnknownMessage, 404, "not-found", "Not found"),
    (mail_errors.UnknownAttachment, 404, "not-found", "Not found"),
    (mail_errors.UnknownFolder, 404, "not-found", "Not found"),
    (mail_errors.FolderExists, 409, "folder-exists", "A folder with this name exists"),
    (mail_errors.FolderNotAllowed, 409, "folder-not-allowed", "Not allowed on a system folder"),
    (mail_errors.MessageTooLarge, 413, "too-large", "Message too large"),
    (mail_errors.InvalidAddress, 422, "invalid-address", "Invalid address"),
    (mail_errors.InvalidCursor, 400, "invalid-cursor", "Invalid cursor"),
    (mail_errors.StateTooOld, 410, "state-too-old", "State too old: resync"),
    (mail_errors.UnknownUser, 401, "unauthorized", "Unauthorized"),
]


def problem_response(status: int, kind: str, title: str, detail: str | None = None, *,
                     instance: str | None = None, headers: dict[str, str] | None = None,
                     errors: list[dict[str, Any]] | None = None) -> JSONResponse:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + kind if kind else "about:blank",
                            "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def map_exception(exc: Exception) -> tuple[int, str, str, str | None] | None:
    """(status, kind, title, detail) for an exception we understand, else None."""
    if isinstance(exc, ProblemError):
        return exc.status, exc.kind, exc.title, exc.detail
    for cls, status, kind, title in MAIL_ERRORS:
        if isinstance(exc, cls):
            detail = None if status in (401, 404) else str(exc)  # never echo ids of other users' things
            return status, kind, title, detail
    if type(exc).__name__ == "QuerySyntaxError":  # lsmmail.search.QuerySyntaxError (ValueError)
        return 400, "invalid-query", "Invalid search query", str(exc)
    if isinstance(exc, InvalidArgument):
        return 400, "invalid-argument", "Invalid argument", str(exc)
    return None


def _safe_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors():
        out.append({"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))})
    return out


def install(app: FastAPI) -> None:
    """Register the exception handlers that turn everything into problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.kind, exc.title, exc.detail,
                                instance=request.url.path, headers=exc.headers)

    @app.exception_handler(mail_errors.MailError)
    async def _mail(request: Request, exc: Exception) -> JSONResponse:
        mapped = map_exception(exc)
        if mapped is None:
            return await _unexpected(request, exc)
        status, kind, title, detail = mapped
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return problem_response(status, kind, title, detail, instance=request.url.path, headers=headers)

    @app.exception_handler(ValueError)
    async def _value(request: Request, exc: ValueError) -> JSONResponse:
        mapped = map_exception(exc)
        if mapped is None:
            # Plain ValueErrors from the store are about values in the request (e.g. a folder name with a
            # control character): well-formed JSON with an unacceptable value is 422.
            return problem_response(422, "invalid-value", "Invalid value", str(exc),
                                    instance=request.url.path)
        status, kind, title, detail = mapped
        return problem_response(status, kind, title, detail, instance=request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(422, "validation", "Invalid request", "the request failed validation",
                                instance=request.url.path, errors=_safe_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # 400 here is FastAPI's "There was an error parsing the body" (JSON that is not UTF-8): every
        # operation with a JSON body documents it.
        kind = {400: "malformed-body", 404: "not-found", 405: "method-not-allowed",
                401: "unauthorized"}.get(exc.status_code, "http")
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, str(exc.detail))
        return problem_response(exc.status_code, kind, title, instance=request.url.path,
                                headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return problem_response(500, "internal", "Internal error", instance=request.url.path)
