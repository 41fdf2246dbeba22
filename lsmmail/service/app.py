"""The REST API (FastAPI): ``create_app(store, auth) -> FastAPI``. Reference: docs/service.md.

Contract:

* Every ``/v1`` route needs ``Authorization: Bearer <token>`` and is scoped to the token's user. Ids are
  looked up only inside that user's keys, so another user's message, attachment or folder answers 404
  exactly like a missing one (same status, same body).
* Errors are RFC 9457 problem+json (lsmmail.service.problems). Bad input is 400/413/415/422, never 500.
* Store calls block (fdatasync), so sync routes run in the thread pool and async routes hand them to it.
* Server-sent-event streams wake on MailStore's change listener (the hub is registered at startup), so
  a change made by any writer in this process — a route, SMTP, the relay — is pushed at once.
"""


import asyncio
import base64
import binascii
import email
import email.policy
import email.utils
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, BinaryIO

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from lsmmail.mail import MailStore, OutgoingMessage, StateTooOld, UnknownMessage
from lsmmail.mail import compose as mail_compose

from . import models, problems
from .auth import TokenAuth
from .events import EventHub
from .idempotency import MAX_KEY_CHARS, IdempotencyKeys, IdempotentResult, KeyInFlight
from .problems import ProblemError
from .sanitize import sanitize_html

API_VERSION = "1.0.0"
#: Attachments are streamed in 64 KiB chunks (a socket-buffer-sized write; bounded per-write memory).
CHUNK = 64 * 1024
#: Page size bounds: 50 by default like the store; 200 keeps one response under ~100 KB of summaries.
MAX_LIMIT = 200
#: An SSE comment after 15 s without a wake-up keeps proxies (typical idle timeout 30-60 s) from closing
#: the stream.
KEEPALIVE = 15.0

_BINARY = {"type": "string", "format": "binary"}
_SAFE_INLINE = {"image/png", "image/jpeg", "image/gif", "image/webp", "application/pdf", "text/plain"}

IdPath = Annotated[str, Path(min_length=1, max_length=64)]
FolderPath = Annotated[str, Path(min_length=1, max_length=64)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[str | None, Query(max_length=512)]


def _problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {c: {"description": _DESCRIPTIONS.get(c, "Error"), "model": problems.Problem} for c in codes}


_DESCRIPTIONS = {400: "Bad request", 401: "Missing or invalid bearer token", 404: "Not found",
                 409: "Conflict", 410: "State too old: resync", 413: "Too large",
                 415: "Unsupported media type", 422: "Invalid request"}


class _SecurityHeaders:
    """Pure ASGI middleware (streams pass through untouched) adding headers to every response: mail is
    private (no caching) and never sniffed or framed."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"),
               (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY")]

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(store: MailStore, auth: TokenAuth | None = None, *, hub: EventHub | None = None,
               relay: Any = None, max_message_size: int | None = None) -> FastAPI:
    """Build the ASGI app over an open MailStore. ``auth`` defaults to TokenAuth(store); ``hub`` to a new
    EventHub, connected to the store's change listener while the app runs (lifespan); ``relay``
    (optional) gets ``wake()`` after a send with remote recipients. ``max_message_size`` overrides the
    store's limit for uploads (default: ``store.max_message_size``)."""
    auth = auth or TokenAuth(store)
    hub = hub or EventHub()
    idem = IdempotencyKeys(store)
    limit_raw = max_message_size or store.max_message_size
    # A JSON send carries attachments in base64 (4/3 of the bytes) plus JSON text: allow that much.
    limit_json = limit_raw * 4 // 3 + 64 * 1024

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        hub.attach(asyncio.get_running_loop())
        hub.connect(store)
        try:
            yield
        finally:
            hub.disconnect(store)
            hub.close()

    app = FastAPI(title="lsmmail", version=API_VERSION, lifespan=lifespan,
                  description="REST API of an lsmmail mail store. Errors are RFC 9457 problem+json.")
    app.state.store = store
    app.state.hub = hub
    app.state.auth = auth
    problems.install(app)
    app.add_middleware(_SecurityHeaders)
    bearer = HTTPBearer(auto_error=False, description="a token from `lsmmail user add`")

    def current_user(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        user = auth.authenticate(creds.credentials if creds is not None else None)
        if user is None:
            raise ProblemError(401, "unauthorized", "Unauthorized", "a valid bearer token is required",
                               headers={"WWW-Authenticate": "Bearer"})
        return user

    User = Annotated[str, Depends(current_user)]

    # ---- folders ---------------------------------------------------------------------------------------

    @app.get("/v1/folders", response_model=models.FolderList, responses=_problem_responses(401),
             tags=["folders"])
    def list_folders(user: User) -> models.FolderList:
        """The caller's folders (system folders first, then their own by name) with total and unread."""
        return models.FolderList(folders=[models.folder_out(f) for f in store.folders(user)])

    @app.post("/v1/folders", status_code=201, response_model=models.FolderOut,
              responses=_problem_responses(400, 401, 409, 422), tags=["folders"])
    def create_folder(user: User, body: models.FolderName) -> models.FolderOut:
        f = store.create_folder(user, body.name)
        return models.folder_out(f)

    @app.patch("/v1/folders/{folder_id}", response_model=models.FolderOut,
               responses=_problem_responses(400, 401, 404, 409, 422), tags=["folders"])
    def rename_folder(user: User, folder_id: FolderPath, body: models.FolderName) -> models.FolderOut:
        store.rename_folder(user, folder_id, body.name)
        return _folder(user, folder_id)

    @app.delete("/v1/folders/{folder_id}", response_model=models.FolderDeleted,
                responses=_problem_responses(401, 404, 409, 422), tags=["folders"])
    def delete_folder(user: User, folder_id: FolderPath) -> models.FolderDeleted:
        """Delete a user folder; its messages move to Trash."""
        moved = store.delete_folder(user, folder_id)
        return models.FolderDeleted(id=folder_id, moved_to_trash=moved)

    def _folder(user: str, folder_id: str) -> models.FolderOut:
        for f in store.folders(user):
            if f.id == folder_id or f.id.casefold() == folder_id.casefold():
                return models.folder_out(f)
        raise ProblemError(404, "not-found", "Not found")

    @app.get("/v1/folders/{folder_id}/messages", response_model=models.MessagePage,
             responses=_problem_responses(400, 401, 404, 422), tags=["messages"])
    def list_messages(user: User, folder_id: FolderPath, limit: Limit = 50, cursor: Cursor = None,
                      unread: bool = False) -> models.MessagePage:
        """A page of the folder, newest first. Pass ``next_cursor`` back as ``cursor`` for the next page;
        pages stay consistent while mail arrives (new mail sorts before the cursor)."""
        page = store.list_messages(user, folder_id, limit=limit, cursor=cursor, unread_only=unread)
        return models.MessagePage(items=[models.summary_out(s) for s in page.items],
                                  next_cursor=page.next_cursor)

    # ---- messages --------------------------------------------------------------------------------------

    send_body = {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SendRequest"}},
            "message/rfc822": {"schema": {"type": "string", "format": "binary"}},
        },
    }

    @app.post("/v1/messages", status_code=201, response_model=models.SendResult,
              responses=_problem_responses(400, 401, 409, 413, 415, 422),
              openapi_extra={"requestBody": send_body}, tags=["messages"])
    async def send_message(
        request: Request, response: Response, user: User,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                      max_length=MAX_KEY_CHARS)] = None,
    ) -> models.SendResult:
        """Send as the caller: a JSON message to build, or a raw ``message/rfc822`` upload whose From must
        be one of the caller's addresses. Recipients of this store get it in their INBOX; others are
        queued for the outbox relay. With ``Idempotency-Key`` a retried request sends exactly once (the
        replay answers 201 with the same id and ``Idempotent-Replayed: true``)."""
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/json", "message/rfc822"):
            raise ProblemError(415, "unsupported-media-type", "Unsupported media type",
                               "send application/json or message/rfc822")
        limit = limit_json if ctype == "application/json" else limit_raw
        body = await _read_body(request, limit)
        result, replayed = await run_in_threadpool(_send, user, ctype, body, idempotency_key)
        response.headers["Location"] = f"/v1/messages/{result.message_id}"
        if replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return models.SendResult(id=result.message_id, folder_id="Sent")

    def _send(user: str, ctype: str, body: bytes, key: str | None) -> tuple[IdempotentResult, bool]:
        fp = idem.fingerprint(ctype, body)
        token = None
        if key is not None:
            prior = idem.lookup(user, key)
            if prior is not None:
                if prior.fingerprint != fp:
                    raise ProblemError(422, "idempotency-key-reused", "Idempotency-Key reused",
                                       "this key was used for a different request")
                return prior, True
            try:
                token = idem.begin(user, key)
            except KeyInFlight as exc:
                raise ProblemError(409, "idempotency-key-in-flight", "Request in progress",
                                   "a request with this Idempotency-Key is still being processed") from exc
        try:
            raw = _build_raw(user, ctype, body, key)
            mid = store.send(user, raw)
            result = IdempotentResult(mid, fp)
            if key is not None:
                idem.record(user, key, result)
        finally:
            if token is not None:
                idem.end(token)
        if relay is not None:
            relay.wake()
        return result, False

    def _build_raw(user: str, ctype: str, body: bytes, key: str | None) -> bytes:
        addresses = store.addresses(user)
        if not addresses:
            raise ProblemError(422, "no-address", "No sender address", "this user has no address")
        if ctype == "message/rfc822":
            msg = email.message_from_bytes(body, policy=email.policy.default)
            try:
                senders = [a for _, a in email.utils.getaddresses(msg.get_all("From", []))]
            except Exception:  # noqa: BLE001 - malformed header: treat as no usable From
                senders = []
            own = {a.casefold() for a in addresses}
            if not senders or any(s.casefold() not in own for s in senders):
                raise ProblemError(422, "invalid-sender", "Invalid sender",
                                   "From must be one of your addresses")
            return body
        try:
            req = models.SendRequest.model_validate_json(body)
        except ValidationError as exc:
            errs = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
                    for e in exc.errors()]
            raise ProblemError(422, "validation", "Invalid request", json.dumps(errs)[:2000]) from exc
        atts = []
        for i, a in enumerate(req.attachments):
            try:
                data = base64.b64decode(a.content_base64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ProblemError(422, "validation", "Invalid request",
                                   f"attachments[{i}].content_base64 is not valid base64") from exc
            atts.append((a.filename, a.content_type, data))
        out = OutgoingMessage(to=req.to, cc=req.cc, bcc=req.bcc, subject=req.subject, text=req.text,
                              html=req.html, attachments=atts, in_reply_to=req.in_reply_to)
        if not (req.to or req.cc or req.bcc):
            raise ProblemError(422, "no-recipients", "No recipients", "give at least one of to, cc, bcc")
        try:
            raw = mail_compose.build(addresses[0], out)
        except ValueError as exc:  # InvalidAddress, or header values email refuses (CR/LF in subject)
            raise ProblemError(422, "invalid-message", "Invalid message", str(exc)) from exc
        if key is not None:
            raw = _set_message_id(raw, idem.message_id_for(user, key, addresses[0].rpartition("@")[2]))
        return raw

    @app.get("/v1/messages/{message_id}", response_model=models.MessageOut,
             responses=_problem_responses(401, 404, 422), tags=["messages"])
    def get_message(user: User, message_id: IdPath) -> models.MessageOut:
        """The whole message: headers, text, sanitised HTML and the attachment list."""
        m = store.get_message(user, message_id)
        return models.message_out(m, sanitize_html(m.html))

    @app.patch("/v1/messages/{message_id}", response_model=models.Summary,
               responses=_problem_responses(400, 401, 404, 422), tags=["messages"])
    def patch_message(user: User, message_id: IdPath, body: models.MessagePatch) -> models.Summary:
        """Set ``is_read`` and/or move to ``folder_id``. An unknown target folder is 422."""
        if body.is_read is None and body.folder_id is None:
            raise ProblemError(422, "validation", "Invalid request", "give is_read and/or folder_id")
        store.get_summary(user, message_id)  # 404 before anything else
        if body.folder_id is not None:
            if not any(f.id.casefold() == body.folder_id.casefold() for f in store.folders(user)):
                raise ProblemError(422, "unknown-folder", "Unknown folder", "folder_id names no folder")
            store.move(user, message_id, body.folder_id)
        if body.is_read is not None:
            store.mark_read(user, message_id, body.is_read)
        return models.summary_out(store.get_summary(user, message_id))

    @app.delete("/v1/messages/{message_id}", response_model=models.DeleteResult,
                responses=_problem_responses(400, 401, 404, 422), tags=["messages"])
    def delete_message(user: User, message_id: IdPath) -> models.DeleteResult:
        """Move to Trash; a message already in Trash is deleted for good."""
        before = store.get_summary(user, message_id)
        store.delete(user, message_id)
        status = "purged" if before.folder_id == "Trash" else "trashed"
        return models.DeleteResult(id=before.id, status=status)

    @app.get("/v1/messages/{message_id}/raw", response_class=Response,
             responses={200: {"content": {"message/rfc822": {"schema": _BINARY}},
                              "description": "the message byte for byte"},
                        **_problem_responses(401, 404, 422)}, tags=["messages"])
    def get_raw(user: User, message_id: IdPath) -> StreamingResponse:
        f = store.open_raw(user, message_id)
        headers = {"Content-Disposition": f'attachment; filename="{message_id}.eml"',
                   "Content-Length": str(_size(f))}
        return StreamingResponse(_chunks(f), media_type="message/rfc822", headers=headers)

    @app.get("/v1/messages/{message_id}/attachments/{part}", response_class=StreamingResponse,
             responses={200: {"content": {"*/*": {"schema": _BINARY}},
                              "description": "the decoded attachment, with its content type"},
                        **_problem_responses(401, 404, 422)}, tags=["messages"])
    def get_attachment(user: User, message_id: IdPath,
                       part: Annotated[int, Path(ge=0, le=100_000)]) -> StreamingResponse:
        """The decoded attachment, streamed, with its content type. Types a browser could execute are
        served as ``attachment`` (download), never inline."""
        m = store.get_message(user, message_id)
        if part >= len(m.attachments):
            raise ProblemError(404, "not-found", "Not found")
        info = m.attachments[part]
        f = store.open_attachment(user, message_id, part)
        ctype = _safe_content_type(info.content_type)
        disposition = "inline" if ctype in _SAFE_INLINE else "attachment"
        headers = {"Content-Disposition": _disposition(disposition, info.filename or f"part{part}"),
                   "Content-Length": str(_size(f)),
                   "Content-Security-Policy": "default-src 'none'; sandbox"}
        return StreamingResponse(_chunks(f), media_type=ctype, headers=headers)

    @app.get("/v1/threads/{thread_id}", response_model=models.ThreadOut,
             responses=_problem_responses(401, 404, 422), tags=["messages"])
    def get_thread(user: User, thread_id: IdPath) -> models.ThreadOut:
        """The messages of a thread, oldest first."""
        items = store.thread(user, thread_id)
        if not items:
            raise ProblemError(404, "not-found", "Not found")
        return models.ThreadOut(thread_id=thread_id, items=[models.summary_out(s) for s in items])

    # ---- search and sync -------------------------------------------------------------------------------

    @app.get("/v1/search", response_model=models.MessagePage,
             responses=_problem_responses(400, 401, 422), tags=["search"])
    def search(user: User, q: Annotated[str, Query(min_length=1, max_length=1000)], limit: Limit = 50,
               cursor: Cursor = None) -> models.MessagePage:
        """Gmail-style query (words, "phrases", from: to: cc: subject: has:attachment filename:
        is:read|unread in:folder before: after:, OR, -term, parentheses); newest first."""
        page = store.search(user, q, limit=limit, cursor=cursor)
        return models.MessagePage(items=[models.summary_out(s) for s in page.items],
                                  next_cursor=page.next_cursor)

    @app.get("/v1/changes", response_model=models.ChangesOut,
             responses=_problem_responses(401, 410, 422), tags=["sync"])
    def changes(user: User, since: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None
                ) -> models.ChangesOut:
        """Ids created, updated and deleted since state ``since`` and the new state. Without ``since``:
        empty lists and the current state (start here). 410 when the state is older than the change log
        (resync by listing)."""
        if since is None:
            return models.ChangesOut(created=[], updated=[], deleted=[], new_state=store.state(user))
        c = store.changes(user, since)
        return models.ChangesOut(created=c.created, updated=c.updated, deleted=c.deleted,
                                 new_state=c.new_state)

    @app.get("/v1/events", response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                              "description": "server-sent events (see docs/service.md)"},
                        **_problem_responses(401, 422)}, tags=["sync"])
    async def events(
        request: Request, user: User,
        since: Annotated[str | None, Query(pattern=r"^[0-9]{1,19}$")] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)] = None,
    ) -> StreamingResponse:
        """Server-sent events: ``message.created`` (new mail; data = the summary), ``message.updated``
        (data = the summary), ``message.deleted`` (data = {id}), ``resync`` (the state is too old).
        Each event's id is the state after it: reconnect with Last-Event-ID (or ?since=) to resume."""
        start = since
        if start is None and last_event_id is not None and last_event_id.isdigit():
            start = last_event_id
        if start is None:
            start = await run_in_threadpool(store.state, user)
        return StreamingResponse(_event_stream(user, start), media_type="text/event-stream",
                                 headers={"X-Accel-Buffering": "no"})

    async def _event_stream(user: str, state: str) -> AsyncIterator[bytes]:
        # No polling. Every mailbox write in this process goes through MailStore, which calls the hub after
        # the commit (one process per data directory: the engine's LOCK), so a change always sets ``ev``.
        # The event is cleared *before* the state is compared, so a write landing between the comparison
        # and the wait leaves ``ev`` set and the wait returns at once: no wake-up falls in the gap (this
        # also covers writes between the route reading ``state`` and ``subscribe``). The keepalive timeout
        # loops through the comparison too, which would bound the delay at 15 s if a wake-up were ever lost.
        ev = hub.subscribe(user)
        try:
            yield _sse("ready", {"state": state}, state)
            while not hub.closing:
                ev.clear()
                chunks, state = await run_in_threadpool(_pending_events, user, state)
                for chunk in chunks:
                    yield chunk
                try:
                    await asyncio.wait_for(ev.wait(), timeout=KEEPALIVE)
                except TimeoutError:
                    yield b": keepalive\n\n"
        finally:
            hub.unsubscribe(user, ev)

    def _pending_events(user: str, state: str) -> tuple[list[bytes], str]:
        # In a worker thread: state() takes the user's lock, which a writer holds across its fdatasync.
        if store.state(user) == state:
            return [], state
        try:
            c = store.changes(user, state)
        except StateTooOld:
            now = store.state(user)
            return [_sse("resync", {"state": now}, now)], now
        out = []
        for kind, ids in (("message.created", c.created), ("message.updated", c.updated)):
            for mid in ids:
                try:
                    data: dict = models.summary_out(store.get_summary(user, mid)).model_dump(
                        mode="json", by_alias=True)
                except UnknownMessage:  # gone again since: the next round reports it deleted
                    continue
                out.append(_sse(kind, data, c.new_state))
        for mid in c.deleted:
            out.append(_sse("message.deleted", {"id": mid}, c.new_state))
        return out, c.new_state

    # ---- OpenAPI: every error response is problem+json --------------------------------------------------

    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description,
                             routes=app.routes)
        comps = schema.setdefault("components", {}).setdefault("schemas", {})
        send_schema = models.SendRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in send_schema.pop("$defs", {}).items():
            comps.setdefault(name, sub)
        comps["SendRequest"] = send_schema
        for name in ("HTTPValidationError", "ValidationError"):
            comps.pop(name, None)
        ref = {"$ref": "#/components/schemas/Problem"}
        for path_item in schema.get("paths", {}).values():
            for op in path_item.values():
                for code, resp in op.get("responses", {}).items():
                    if code[0] in "45":
                        resp["content"] = {problems.MEDIA_TYPE: {"schema": ref}}
                if "security" in op:
                    op["responses"].setdefault("401", {"description": "Missing or invalid bearer token",
                                                       "content": {problems.MEDIA_TYPE: {"schema": ref}}})
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, "too-large", "Request too large", f"the limit is {limit} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > limit:
            raise ProblemError(413, "too-large", "Request too large", f"the limit is {limit} bytes")
    return bytes(buf)


def _set_message_id(raw: bytes, message_id: str) -> bytes:
    msg = email.message_from_bytes(raw, policy=email.policy.SMTP)
    del msg["Message-ID"]
    msg["Message-ID"] = message_id
    return msg.as_bytes()


def _safe_content_type(ctype: str) -> str:
    c = (ctype or "").split(";")[0].strip().lower()
    main, _, sub = c.partition("/")
    if not main or not sub or not all(ch.isalnum() or ch in "!#$&^_.+-" for ch in main + sub):
        return "application/octet-stream"
    return c


def _disposition(kind: str, filename: str) -> str:
    from urllib.parse import quote

    ascii_name = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename)[:200]
    return f"{kind}; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename[:200], safe='')}"


def _size(f: BinaryIO) -> int:
    size = f.seek(0, 2)
    f.seek(0)
    return size


def _chunks(f: BinaryIO) -> Iterator[bytes]:
    with f:
        while chunk := f.read(CHUNK):
            yield chunk


def _sse(event: str, data: dict, event_id: str) -> bytes:
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=True)  # one line: no \n inside
    return f"id: {event_id}\nevent: {event}\ndata: {payload}\n\n".encode()
