"""Read a Postfix lmdb table the way Postfix does: shared fcntl lock, read-only, no LMDB lock."""

from __future__ import annotations

import fcntl
import os
from typing import Set

import lmdb


class TableReader:
    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY)
        self.env = lmdb.open(path, subdir=False, lock=False, readonly=True, create=False)

    def _locked(self):  # noqa: ANN202 - a tiny context helper
        class Locked:
            def __enter__(inner):  # noqa: N805
                fcntl.lockf(self.fd, fcntl.LOCK_SH)

            def __exit__(inner, *exc):  # noqa: N805
                fcntl.lockf(self.fd, fcntl.LOCK_UN)

        return Locked()

    def keys(self) -> Set[str]:
        with self._locked():
            try:
                with self.env.begin() as txn:
                    return {k.rstrip(b"\0").decode() for k in txn.cursor().iternext(values=False)}
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
                return self.keys()

    def count(self) -> int:
        with self._locked():
            try:
                return self.env.stat()["entries"]
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
                return self.count()

    def close(self) -> None:
        self.env.close()
        os.close(self.fd)
