"""Fixtures of the service tests: one real server process per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .helpers import ServerProc, Service, make_users


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One server for a test module: users alice, bob, carol; the header-rules demo filter on."""
    data = tmp_path_factory.mktemp("svc") / "data"
    tokens = make_users(data, "alice@example.com", "bob@example.com", "carol@example.org")
    srv = ServerProc(data, ["--spam-header-filter"]).start()
    try:
        yield Service(srv, tokens)
    finally:
        code = srv.stop()
        assert code == 0, srv.log.read_text() if srv.log else ""
