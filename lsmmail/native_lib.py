"""Loading the native core: the cffi extension and the helpers every binding module shares.

``lsmmail._native`` is a cffi API-mode extension built from ``native/*.c`` (setup.py,
``native/build_native.py``). This module imports it once and exposes:

* ``_lib`` / ``_ffi``: the extension, or ``None`` if it was not built (``BUILT``). The ``*_native``
  functions use these even under ``LSMMAIL_PURE=1``, so differential tests and benchmarks can compare.
* ``lib`` / ``ffi``: what the engine dispatches on; ``None`` when not built or ``LSMMAIL_PURE=1``
  (``PURE_FORCED``); ``AVAILABLE`` says which.
* ``_new`` (only when ``BUILT``): a cffi allocator without zero-fill; ``_check``: the C return code
  convention (-1 -> ``Corruption``, -3 -> ``InvalidArgument``, -2 ``_ESPACE`` is the caller's to handle);
  ``_cumulative``: end offsets for passing a list of byte strings to C as one concatenation.

It never raises on a missing extension: :mod:`lsmmail.native` reports that once with a warning. Import
the names from :mod:`lsmmail.native`, which re-exports them; the binding modules import them from here.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from typing import Any

from .engine.errors import Corruption, InvalidArgument

#: The compiled extension (``None`` if it was not built). The ``*_native`` functions use it even under
#: ``LSMMAIL_PURE=1``, so differential tests and benchmarks can always compare both sides.
_lib: Any = None
_ffi: Any = None
try:
    from . import _native  # type: ignore[attr-defined]

    _lib, _ffi = _native.lib, _native.ffi
except ImportError as _exc:  # pragma: no cover - depends on how the package was installed
    _import_error: ImportError | None = _exc
else:
    _import_error = None

BUILT = _lib is not None
PURE_FORCED = os.environ.get("LSMMAIL_PURE", "") == "1"

#: What the engine dispatches on: the extension, or ``None`` when it is missing or LSMMAIL_PURE=1.
lib: Any = None if PURE_FORCED else _lib
ffi: Any = None if PURE_FORCED else _ffi
AVAILABLE = lib is not None

_ECORRUPT, _ESPACE, _EINVAL = -1, -2, -3
_u32 = struct.Struct("<I")
_u64 = struct.Struct("<Q")
if BUILT:
    # Scratch arrays are written by C before Python reads them, so skip cffi's zero-fill.
    _new = _ffi.new_allocator(should_clear_after_alloc=False)


def _check(rc: int, what: str) -> int:
    if rc == _ECORRUPT:
        raise Corruption(f"malformed {what}")
    if rc == _EINVAL:
        raise InvalidArgument(f"invalid argument to native {what}")
    return rc


def split_at(data: bytes, ends: Sequence[int]) -> list[bytes]:
    """``data`` cut at the cumulative offsets ``ends`` (the layout the kernels return packed outputs in:
    piece i is ``data[ends[i-1]:ends[i]]``)."""
    out = []
    a = 0
    for b in ends:
        out.append(data[a:b])
        a = b
    return out


def _cumulative(items: Sequence[bytes]) -> list[int]:
    out = []
    total = 0
    for it in items:
        total += len(it)
        out.append(total)
    return out
