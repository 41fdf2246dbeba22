"""The service layer: REST API, SMTP ingress, outbox relay and real-time push over MailStore.

Needs the optional extra ``pip install lsmmail[server]`` (fastapi, uvicorn, aiosmtpd, httpx); the engine
and MailStore work without it. Entry points (docs/service.md):

* ``lsmmail.service.app.create_app(store, auth) -> FastAPI``
* ``lsmmail.service.server.serve(data_dir, http_host, http_port, smtp_host, smtp_port, ...)`` (blocking)
* ``lsmmail.service.auth.add_user(store_or_data_dir, address) -> token``
"""
