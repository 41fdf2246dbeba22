"""Fixtures of the search tests: the real engine on pytest's tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import lsmmail


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "db"


@pytest.fixture
def db(db_path: Path) -> Iterator[object]:
    d = lsmmail.DB.open(db_path)
    try:
        yield d
    finally:
        d.close()
