"""Build of lsmmail: metadata lives in pyproject.toml; this file only adds the optional C extension.

``cffi_modules`` compiles ``native/*.c`` into ``lsmmail._native`` (cffi API mode). The extension is
optional: without a C compiler (or with a failing compile) the install still succeeds and lsmmail runs on
its pure-Python twins (``lsmmail.native`` warns once). Set ``LSMMAIL_NO_NATIVE=1`` to skip the build.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that reports a failed native build instead of failing the install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler/platform failure means "no extension"
            self._warn(exc)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    @staticmethod
    def _warn(exc: BaseException) -> None:
        sys.stderr.write(
            f"WARNING: lsmmail's C extension was not built ({type(exc).__name__}: {exc}); "
            "lsmmail will run on its pure-Python twins.\n"
        )


kwargs: dict = {"cmdclass": {"build_ext": OptionalBuildExt}}
if os.environ.get("LSMMAIL_NO_NATIVE") != "1":
    kwargs["cffi_modules"] = ["native/build_native.py:ffibuilder"]

setup(**kwargs)
