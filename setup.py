"""Build hook for the optional C extensions; all metadata is in pyproject.toml.

``popbsmtp._needles`` speeds up the log prefilter and ``popbsmtp._envelope``
the split of a candidate line's syslog envelope (docs/benchmarks.md).  They
are optional: without a C compiler the build goes on and popbsmtp uses the
pure-Python search and regexes, which give the same answers more slowly.  Set
``POPBSMTP_PURE_PYTHON=1`` to skip them on purpose, ``POPBSMTP_REQUIRE_EXTENSION=1``
to make a failed compilation fail the build (packages do).
"""

import os

from setuptools import Extension, setup


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


EXTENSIONS = [
    Extension(
        f"popbsmtp.{name}",
        [f"popbsmtp/{name}.c"],
        optional=not _flag("POPBSMTP_REQUIRE_EXTENSION"),  # the RPM build sets it
    )
    for name in ("_needles", "_envelope")
]
setup(ext_modules=[] if _flag("POPBSMTP_PURE_PYTHON") else EXTENSIONS)
