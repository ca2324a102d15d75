"""``lmdb:`` tables written in place, under Postfix's own locking protocol.

Postfix opens ``name.lmdb`` with ``MDB_NOSUBDIR|MDB_NOLOCK`` and serialises
readers and writers with a POSIX ``fcntl`` lock on the file itself
(docs/maps.md).  So: ``lock=False`` for LMDB, ``fcntl.lockf`` (not
``flock``, which Postfix ignores) held exclusively around each write
transaction, an in-process mutex because POSIX locks do not exclude threads,
and the lock fd is never closed while another fd of the file is in use.
Keys and values carry a trailing NUL, as ``postmap`` writes them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import tempfile
import threading
from typing import Callable, Collection, Iterator, Optional, Set, Union

import lmdb

from popbsmtp.errors import MapError
from popbsmtp.maps import MapWriter
from popbsmtp.maps._files import apply_ownership, check_plain_file

TYPES = ("lmdb",)
log = logging.getLogger(__name__)

_INITIAL_SIZE = 16 << 20
_MAX_GROWTHS = 8


class Writer(MapWriter):
    _env: Optional[lmdb.Environment] = None
    _lock_fd: Optional[int] = None

    @property
    def filename(self) -> str:
        return self.spec.path + ".lmdb"

    @property
    def files(self) -> Collection[str]:
        return (self.filename,)

    def open(self) -> None:
        self._mutex = threading.Lock()
        try:
            if not os.path.lexists(self.filename):
                self._create()
            check_plain_file(self.filename)
            self._attach()
        except (OSError, lmdb.Error) as exc:
            self.close()
            raise MapError(f"cannot open {self.filename}: {exc}") from None
        except MapError:
            self.close()
            raise

    def _create(self) -> None:
        """Build an empty table under a temporary name, then rename it in.

        A reader can never find a half-initialised file, and smtpd never
        sees the table missing once we started.
        """
        directory = os.path.dirname(self.filename)
        fd, tmp = tempfile.mkstemp(prefix=".popbsmtp-", suffix=".lmdb", dir=directory)
        try:
            os.close(fd)
            env = lmdb.open(tmp, subdir=False, lock=False, map_size=_INITIAL_SIZE, create=True)
            with env.begin(write=True) as txn:
                txn.put(b"\0popbsmtp-init", b"", dupdata=False)
                txn.delete(b"\0popbsmtp-init")
            env.sync(True)
            env.close()
            os.chmod(tmp, self.options.mode)
            apply_ownership(tmp, self.options)
            os.rename(tmp, self.filename)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        log.info("created empty table %s", self.filename)

    def _attach(self) -> None:
        self._lock_fd = os.open(self.filename, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        self._inode = os.fstat(self._lock_fd).st_ino
        self._env = lmdb.open(
            self.filename, subdir=False, lock=False, map_size=_INITIAL_SIZE, create=False
        )
        # lmdb opens by name: make sure nobody swapped in a symlink or another
        # file between our O_NOFOLLOW open and LMDB's.
        check_plain_file(self.filename)
        if os.lstat(self.filename).st_ino != self._inode:
            raise MapError(f"{self.filename} was replaced while opening it")
        size = self._env.info()["map_size"]
        if size < _INITIAL_SIZE:
            self._env.set_mapsize(_INITIAL_SIZE)

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[lmdb.Environment]:
        if self._env is None or self._lock_fd is None:
            raise MapError(f"{self.filename} is not open")
        with self._mutex:
            fcntl.lockf(self._lock_fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield self._env
            finally:
                fcntl.lockf(self._lock_fd, fcntl.LOCK_UN)

    def apply(self, add: Collection[str], remove: Collection[str]) -> None:
        if not add and not remove:
            return
        value = self.value.encode() + b"\0"

        def change(txn: lmdb.Transaction) -> None:
            for key in remove:
                txn.delete(_raw(key))
            for key in add:
                txn.put(_raw(key), value)

        self._write(change)

    def replace(self, keys: Collection[str]) -> None:
        """Exactly ``keys``, streamed: no set of every key, on either side, in memory.

        One transaction deletes what the grants lack and puts what the table
        lacks or holds with another value (``map_value`` changed); at a
        million grants a set of the table's keys would double the daemon's
        memory for the moment of the reconcile.
        """
        value = self.value.encode() + b"\0"

        def change(txn: lmdb.Transaction) -> None:
            stale = [k for k in txn.cursor().iternext(values=False) if _text(k) not in keys]
            for raw in stale:
                txn.delete(raw)
            for key in keys:
                raw = _raw(key)
                if txn.get(raw) != value:
                    txn.put(raw, value)

        self._write(change)

    def empty(self) -> int:
        """Drop every key in one write transaction (Postfix sees all or none gone)."""
        held = 0

        def change(txn: lmdb.Transaction) -> None:
            nonlocal held
            held = txn.stat()["entries"]
            txn.drop(self._env.open_db(txn=txn), delete=False)  # type: ignore[union-attr]

        self._write(change)
        return held

    def differs(self, keys: Collection[str]) -> bool:
        """The same comparison as :meth:`keys` ``!= keys``, streamed (see :meth:`replace`)."""
        try:
            with self._locked(exclusive=False) as env, env.begin() as txn:
                if txn.stat()["entries"] != len(keys):
                    return True
                return any(_text(k) not in keys for k in txn.cursor().iternext(values=False))
        except (OSError, lmdb.Error) as exc:
            raise MapError(f"reading {self.filename} failed: {exc}") from None

    def _write(self, change: Callable[[lmdb.Transaction], None]) -> None:
        """Run ``change`` in one write transaction under Postfix's lock, growing the map."""
        for _ in range(_MAX_GROWTHS):
            try:
                with self._locked(exclusive=True) as env, env.begin(write=True) as txn:
                    change(txn)
                return
            except lmdb.MapFullError:
                self._grow()
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)  # type: ignore[union-attr]
            except (OSError, lmdb.Error) as exc:
                raise MapError(f"writing {self.filename} failed: {exc}") from None
        raise MapError(f"{self.filename}: table kept growing past its map size")

    def _grow(self) -> None:
        assert self._env is not None
        size = self._env.info()["map_size"] * 2
        log.info("growing %s map size to %d MiB", self.filename, size >> 20)
        self._env.set_mapsize(size)

    def keys(self) -> Set[str]:
        try:
            with self._locked(exclusive=False) as env, env.begin() as txn:
                return {_text(k) for k in txn.cursor().iternext(values=False)}
        except (OSError, lmdb.Error) as exc:
            raise MapError(f"reading {self.filename} failed: {exc}") from None

    def healthy(self) -> bool:
        try:
            info = os.lstat(self.filename)
        except OSError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_ino == getattr(self, "_inode", None)

    def close(self) -> None:
        # Close LMDB first and the lock fd last: closing any fd of the file
        # drops our POSIX locks, and we hold none at this point.
        if self._env is not None:
            self._env.close()
            self._env = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def _raw(key: str) -> bytes:
    """A grant table key as Postfix stores and looks it up: lower case, with its NUL."""
    return key.lower().encode() + b"\0"


def _text(raw: Union[bytes, memoryview]) -> str:
    """A stored key as the grant table spells it (Postfix stores it with its NUL)."""
    return bytes(raw).rstrip(b"\0").decode("ascii", "replace")
