"""An in-memory table for ``--dry-run`` and unit tests: writes nothing to disk."""

from __future__ import annotations

from typing import Collection, Set

from popbsmtp.maps import MapWriter

TYPES = ("memory",)


class Writer(MapWriter):
    def open(self) -> None:
        self._keys: Set[str] = set()
        self.writes = 0

    def apply(self, add: Collection[str], remove: Collection[str]) -> None:
        self._keys.difference_update(remove)
        self._keys.update(add)
        self.writes += 1

    def keys(self) -> Set[str]:
        return set(self._keys)
