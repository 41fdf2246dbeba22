"""Every REST endpoint, through httpx against a real uvicorn server process."""

from __future__ import annotations

import base64
import concurrent.futures
import smtplib
import uuid

from .helpers import TEST_SIZE_LIMIT, Service, rfc822

PROBLEM = "application/problem+json"


def _send(svc: Service, user: str, **fields: object) -> str:
    with svc.client(user) as c:
        r = c.post("/v1/messages", json=fields)
        assert r.status_code == 201, r.text
        return r.json()["id"]


def _inbox_ids(c, folder: str = "INBOX") -> list[str]:  # noqa: ANN001
    out, cursor = [], None
    for _ in range(1000):
        params = {"limit": 50, **({"cursor": cursor} if cursor else {})}
        page = c.get(f"/v1/folders/{folder}/messages", params=params).json()
        out += [m["id"] for m in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("pagination did not end")


def _assert_problem(r, status: int) -> dict:  # noqa: ANN001
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"]
    return body


def test_send_json_delivers_locally_and_files_sent_copy(service: Service) -> None:
    att = base64.b64encode(b"%PDF-1.4 fake pdf bytes").decode()
    sent = _send(service, "alice", to=["bob@example.com"], cc=["carol@example.org"], bcc=[],
                 subject="Quarterly invoice", text="Please find the invoice attached.",
                 html='<p onclick="x()">Hi <script>alert(1)</script><a href="javascript:evil()">x</a></p>',
                 attachments=[{"filename": "invoice.pdf", "content_type": "application/pdf",
                               "content_base64": att}])
    with service.client("alice") as c:
        msg = c.get(f"/v1/messages/{sent}").json()
        assert msg["folder_id"] == "Sent" and msg["is_read"] is True
    with service.client("bob") as c:
        page = c.get("/v1/folders/INBOX/messages", params={"limit": 5}).json()
        hit = [m for m in page["items"] if m["subject"] == "Quarterly invoice"]
        assert len(hit) == 1 and hit[0]["has_attachments"] and not hit[0]["is_read"]
        mid = hit[0]["id"]
        full = c.get(f"/v1/messages/{mid}").json()
        assert full["text"].strip() == "Please find the invoice attached."
        assert "<script" not in full["html"] and "onclick" not in full["html"]
        assert "javascript:" not in full["html"] and "Hi" in full["html"]
        assert full["from"] == [{"name": "", "address": "alice@example.com"}]
        assert full["attachments"][0]["filename"] == "invoice.pdf"
        a = c.get(full["attachments"][0]["url"])
        assert a.status_code == 200 and a.content == b"%PDF-1.4 fake pdf bytes"
        assert a.headers["content-type"] == "application/pdf"
        assert a.headers["x-content-type-options"] == "nosniff"
        raw = c.get(f"/v1/messages/{mid}/raw")
        assert raw.headers["content-type"] == "message/rfc822"
        assert b"Subject: Quarterly invoice" in raw.content and b"Bcc" not in raw.content
        _assert_problem(c.get(f"/v1/messages/{mid}/attachments/1"), 404)
    with service.client("carol") as c:
        assert any(m["subject"] == "Quarterly invoice"
                   for m in c.get("/v1/folders/INBOX/messages").json()["items"])


def test_dangerous_attachment_types_download_not_inline(service: Service) -> None:
    html = base64.b64encode(b"<script>alert(1)</script>").decode()
    _send(service, "alice", to=["bob@example.com"], subject="html attachment", text="see",
          attachments=[{"filename": "x.html", "content_type": "text/html", "content_base64": html}])
    with service.client("bob") as c:
        r = c.get("/v1/search", params={"q": 'subject:"html attachment"'}).json()
        mid = r["items"][0]["id"]
        a = c.get(f"/v1/messages/{mid}/attachments/0")
        assert a.status_code == 200 and a.content == b"<script>alert(1)</script>"
        assert a.headers["content-disposition"].startswith("attachment;")
        assert "sandbox" in a.headers["content-security-policy"]


def test_send_raw_rfc822_and_sender_must_be_own_address(service: Service) -> None:
    raw = rfc822("alice@example.com", "bob@example.com", "raw upload", msgid=f"{uuid.uuid4()}@example.com")
    with service.client("alice") as c:
        r = c.post("/v1/messages", content=raw, headers={"Content-Type": "message/rfc822"})
        assert r.status_code == 201, r.text
        assert r.headers["location"] == f"/v1/messages/{r.json()['id']}"
        assert c.get(f"/v1/messages/{r.json()['id']}/raw").content == raw  # Sent copy is byte-exact
        forged = rfc822("bob@example.com", "carol@example.org", "forged")
        _assert_problem(c.post("/v1/messages", content=forged, headers={"Content-Type": "message/rfc822"}),
                        422)
        _assert_problem(c.post("/v1/messages", content=b"hi", headers={"Content-Type": "text/plain"}), 415)


def test_idempotent_post_sends_exactly_once(service: Service) -> None:
    key = str(uuid.uuid4())
    body = {"to": ["bob@example.com"], "subject": f"idem {key}", "text": "once"}
    with service.client("alice") as c:
        first = c.post("/v1/messages", json=body, headers={"Idempotency-Key": key})
        assert first.status_code == 201
        # Retries, some concurrent: all answer the same id; exactly one message exists.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda _: c.post("/v1/messages", json=body, headers={"Idempotency-Key": key}),
                               range(6)))
        assert all(r.status_code == 201 and r.json()["id"] == first.json()["id"] for r in rs)
        assert all(r.headers.get("idempotent-replayed") == "true" for r in rs)
        changed = dict(body, text="different")
        _assert_problem(c.post("/v1/messages", json=changed, headers={"Idempotency-Key": key}), 422)
    with service.client("bob") as c:
        found = c.get("/v1/search", params={"q": f'subject:"idem {key}"'}).json()["items"]
        assert len(found) == 1
    with service.client("alice") as c:
        sent = c.get("/v1/search", params={"q": f'subject:"idem {key}" in:sent'}).json()["items"]
        assert len(sent) == 1


def test_folders_counts_and_crud(service: Service) -> None:
    with service.client("carol") as c:
        before = {f["id"]: f for f in c.get("/v1/folders").json()["folders"]}
        assert {"INBOX", "Sent", "Trash", "Spam"} <= set(before)
        r = c.post("/v1/folders", json={"name": "Receipts"})
        assert r.status_code == 201
        fid = r.json()["id"]
        _assert_problem(c.post("/v1/folders", json={"name": "receipts"}), 409)
        _assert_problem(c.post("/v1/folders", json={"name": ""}), 422)
        _assert_problem(c.post("/v1/folders", json={"nam": "x"}), 422)
        assert c.patch(f"/v1/folders/{fid}", json={"name": "Bills"}).json()["name"] == "Bills"
        _assert_problem(c.patch("/v1/folders/INBOX", json={"name": "Other"}), 409)
        _assert_problem(c.delete("/v1/folders/Sent"), 409)
        _assert_problem(c.patch("/v1/folders/f99999", json={"name": "x"}), 404)
    mid = _send(service, "alice", to=["carol@example.org"], subject="to be filed", text="x")
    with service.client("carol") as c:
        inbox_id = next(m["id"] for m in c.get("/v1/folders/INBOX/messages").json()["items"]
                        if m["subject"] == "to be filed")
        folders0 = c.get("/v1/folders").json()["folders"]
        unread_before = next(f for f in folders0 if f["id"] == "INBOX")["unread"]
        moved = c.patch(f"/v1/messages/{inbox_id}", json={"folder_id": fid, "is_read": True}).json()
        assert moved["folder_id"] == fid and moved["is_read"]
        folders = {f["id"]: f for f in c.get("/v1/folders").json()["folders"]}
        assert folders[fid]["total"] == 1 and folders[fid]["unread"] == 0
        assert folders["INBOX"]["unread"] == unread_before - 1
        assert c.delete(f"/v1/folders/{fid}").json() == {"id": fid, "moved_to_trash": 1}
        assert inbox_id in _inbox_ids(c, "Trash")
        _assert_problem(c.get(f"/v1/folders/{fid}/messages"), 404)
    assert mid


def test_patch_delete_and_changes(service: Service) -> None:
    with service.client("bob") as c:
        state = c.get("/v1/changes").json()["new_state"]
    mid_sent = _send(service, "alice", to=["bob@example.com"], subject="sync me", text="x")
    assert mid_sent
    with service.client("bob") as c:
        ch = c.get("/v1/changes", params={"since": state}).json()
        assert len(ch["created"]) == 1 and ch["updated"] == [] and ch["deleted"] == []
        mid = ch["created"][0]
        assert c.patch(f"/v1/messages/{mid}", json={"is_read": True}).json()["is_read"] is True
        _assert_problem(c.patch(f"/v1/messages/{mid}", json={}), 422)
        _assert_problem(c.patch(f"/v1/messages/{mid}", json={"folder_id": "NoSuchFolder"}), 422)
        _assert_problem(c.patch(f"/v1/messages/{mid}", json={"is_read": "maybe"}), 422)
        ch2 = c.get("/v1/changes", params={"since": ch["new_state"]}).json()
        assert ch2["updated"] == [mid]
        assert c.delete(f"/v1/messages/{mid}").json() == {"id": mid, "status": "trashed"}
        assert c.delete(f"/v1/messages/{mid}").json() == {"id": mid, "status": "purged"}
        _assert_problem(c.get(f"/v1/messages/{mid}"), 404)
        _assert_problem(c.delete(f"/v1/messages/{mid}"), 404)
        ch3 = c.get("/v1/changes", params={"since": ch2["new_state"]}).json()
        assert ch3["deleted"] == [mid]
        _assert_problem(c.get("/v1/changes", params={"since": "abc"}), 422)
        _assert_problem(c.get("/v1/changes", params={"since": "999999999"}), 410)


def test_thread_and_search_errors(service: Service) -> None:
    _send(service, "alice", to=["bob@example.com"], subject="thread root", text="first")
    with service.client("bob") as c:
        root = c.get("/v1/search", params={"q": 'subject:"thread root"'}).json()["items"][0]
        t = c.get(f"/v1/threads/{root['thread_id']}").json()
        assert [m["id"] for m in t["items"]] == [root["id"]]
        _assert_problem(c.get("/v1/search", params={"q": '"unterminated'}), 400)
        _assert_problem(c.get("/v1/search", params={"q": ""}), 422)
        _assert_problem(c.get("/v1/search", params={"q": "x", "cursor": "!!"}), 400)
        _assert_problem(c.get("/v1/search", params={"q": "x", "limit": 0}), 422)
        _assert_problem(c.get("/v1/folders/INBOX/messages", params={"cursor": "bm9wZQ"}), 400)
        _assert_problem(c.get("/v1/threads/not-an-id"), 404)


def test_auth_required_and_isolated(service: Service) -> None:
    mid = _send(service, "alice", to=["bob@example.com"], subject="private to bob", text="secret")
    with service.client("bob") as c:
        bob_mid = c.get("/v1/search", params={"q": 'subject:"private to bob"'}).json()["items"][0]
    bob_id, thread = bob_mid["id"], bob_mid["thread_id"]
    missing = str(uuid.UUID(bob_id)).replace(bob_id[-4:], "0000")
    with service.client(None) as anon:
        for path in ["/v1/folders", f"/v1/messages/{bob_id}", "/v1/search?q=x", "/v1/changes"]:
            r = anon.get(path)
            _assert_problem(r, 401)
            assert r.headers["www-authenticate"] == "Bearer"
        _assert_problem(anon.get("/v1/folders", headers={"Authorization": "Bearer lsm_wrong"}), 401)
        _assert_problem(anon.get("/v1/folders", headers={"Authorization": "Basic Ym9iOng="}), 401)
    with service.client("carol") as c:
        # Every way to reach bob's message answers exactly like a message that never existed.
        for path in ["/v1/messages/{}", "/v1/messages/{}/raw", "/v1/messages/{}/attachments/0"]:
            theirs, nothing = c.get(path.format(bob_id)), c.get(path.format(missing))
            assert theirs.status_code == nothing.status_code == 404
            assert {**theirs.json(), "instance": None} == {**nothing.json(), "instance": None}
        for call in (lambda m: c.patch(f"/v1/messages/{m}", json={"is_read": True}),
                     lambda m: c.delete(f"/v1/messages/{m}")):
            assert call(bob_id).status_code == call(missing).status_code == 404
        assert c.get(f"/v1/threads/{thread}").status_code == 404
        assert c.get(f"/v1/messages/{mid}").status_code == 404  # alice's Sent copy
        assert c.get("/v1/search", params={"q": "secret"}).json()["items"] == []
        ch = c.get("/v1/changes", params={"since": "0"}).json()
        assert bob_id not in ch["created"] + ch["updated"]
    with service.client("bob") as c:  # and bob still has it, unread
        assert c.get(f"/v1/messages/{bob_id}").json()["is_read"] is False


def test_pagination_stable_while_mail_arrives(service: Service) -> None:
    with service.client("carol") as c:
        c.post("/v1/folders", json={"name": "Paging"})
        fid = next(f["id"] for f in c.get("/v1/folders").json()["folders"] if f["name"] == "Paging")
    smtp = smtplib.SMTP("127.0.0.1", service.smtp_port, timeout=30)
    try:
        ids = []
        for i in range(23):
            smtp.sendmail("x@remote.test", ["carol@example.org"],
                          rfc822("x@remote.test", "carol@example.org", f"page {i}", msgid=f"pg{i}@remote"))
        with service.client("carol") as c:
            for m in c.get("/v1/folders/INBOX/messages", params={"limit": 23}).json()["items"]:
                assert m["subject"].startswith("page ")
                c.patch(f"/v1/messages/{m['id']}", json={"folder_id": fid})
                ids.append(m["id"])
            seen, cursor, n = [], None, 0
            while True:
                params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
                page = c.get(f"/v1/folders/{fid}/messages", params=params).json()
                seen += [m["id"] for m in page["items"]]
                # New mail arrives between pages (newer than everything listed) and is filed here too.
                smtp.sendmail("x@remote.test", ["carol@example.org"],
                              rfc822("x@remote.test", "carol@example.org", f"late {n}", msgid=f"late{n}@r"))
                late = c.get("/v1/search", params={"q": f'subject:"late {n}"'}).json()["items"][0]["id"]
                c.patch(f"/v1/messages/{late}", json={"folder_id": fid})
                n += 1
                cursor = page["next_cursor"]
                if cursor is None:
                    break
                assert n < 50
            assert seen == ids  # every original exactly once, newest first, none of the late arrivals
            unread = c.get(f"/v1/folders/{fid}/messages", params={"unread": True, "limit": 200}).json()
            assert len(unread["items"]) == 23 + n
    finally:
        smtp.quit()


def test_size_limit_413_and_openapi(service: Service) -> None:
    with service.client("alice") as c:
        big = base64.b64encode(b"x" * TEST_SIZE_LIMIT).decode()
        r = c.post("/v1/messages", json={"to": ["bob@example.com"], "subject": "big", "text": "x",
                                         "attachments": [{"filename": "b", "content_base64": big}]})
        _assert_problem(r, 413)
        raw = rfc822("alice@example.com", "bob@example.com", "big raw", body="y" * TEST_SIZE_LIMIT)
        _assert_problem(c.post("/v1/messages", content=raw, headers={"Content-Type": "message/rfc822"}), 413)
        _assert_problem(c.post("/v1/messages", content=b"{not json", headers={"Content-Type":
                                                                            "application/json"}), 422)
        _assert_problem(c.post("/v1/messages", json={"to": ["not an address"], "text": "x"}), 422)
        _assert_problem(c.post("/v1/messages", json={"subject": "nobody"}), 422)
        _assert_problem(c.post("/v1/messages", json={"to": ["bob@example.com"], "attachments": [
            {"filename": "a", "content_base64": "***"}]}), 422)
        _assert_problem(c.get("/v1/nowhere"), 404)
        _assert_problem(c.put("/v1/folders"), 405)
        doc = c.get("/openapi.json").json()
        paths = doc["paths"]
        for p in ["/v1/messages", "/v1/folders", "/v1/folders/{folder_id}/messages",
                  "/v1/messages/{message_id}", "/v1/messages/{message_id}/raw",
                  "/v1/messages/{message_id}/attachments/{part}",
                  "/v1/search", "/v1/changes", "/v1/events", "/v1/folders/{folder_id}"]:
            assert p in paths
        body = paths["/v1/messages"]["post"]["requestBody"]["content"]
        assert set(body) == {"application/json", "message/rfc822"}
        assert "application/problem+json" in paths["/v1/search"]["get"]["responses"]["400"]["content"]
        # JSON that is not UTF-8 cannot be parsed at all: 400, and every JSON-body operation documents it
        # (schemathesis found the undocumented status).
        bad = c.post("/v1/folders", content=b'{"name": "\xff"}', headers={"Content-Type": "application/json"})
        _assert_problem(bad, 400)
        assert bad.json()["type"].endswith("/malformed-body")
        for path, method in [("/v1/folders", "post"), ("/v1/folders/{folder_id}", "patch"),
                             ("/v1/messages", "post"), ("/v1/messages/{message_id}", "patch")]:
            assert "400" in paths[path][method]["responses"], (path, method)
