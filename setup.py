"""Build hook for the one optional C extension; all metadata is in pyproject.toml.

``popbsmtp._needles`` speeds up the log prefilter (docs/benchmarks.md).  It
is optional: without a C compiler the build goes on and popbsmtp uses the
pure-Python search, which gives the same answers more slowly.  Set
``POPBSMTP_PURE_PYTHON=1`` to skip it on purpose, ``POPBSMTP_REQUIRE_EXTENSION=1``
to make a failed compilation fail the build (packages do).
"""

import os

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


EXTENSION = Extension(
    "popbsmtp._needles",
    ["popbsmtp/_needles.c"],
    optional=not _flag("POPBSMTP_REQUIRE_EXTENSION"),  # the RPM build sets it
)
setup(ext_modules=[] if _flag("POPBSMTP_PURE_PYTHON") else [EXTENSION])
