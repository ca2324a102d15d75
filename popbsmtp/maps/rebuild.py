"""Tables built by Postfix's own ``postmap`` and renamed into place.

For ``hash:``, ``btree:``, ``cdb:``, ``dbm:`` (and ``lmdb:`` with
``map_writer = rebuild``): the whole key set is kept in memory; a rebuild
writes it as a ``postmap`` source into a private ``mkdtemp`` directory next
to the table, runs ``postmap TYPE:source`` there, and renames the result
over the live file.  A reader therefore sees the old or the new table, never
a half-written one, and the new inode (the old one's link count drops to 0)
makes every running smtpd notice the change before its next connection,
even for two rebuilds within one second (docs/maps.md).  Rebuilds are
coalesced: at most one per ``max(MIN_INTERVAL, last build time / 2)``; the core
loop learns when to come back from :meth:`Writer.pending`.  This module does
not write tables in place and never runs ``postmap -i``/``-d``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from typing import Collection, List, Optional, Set

from popbsmtp import postfix
from popbsmtp.errors import MapError
from popbsmtp.maps import MapSpec, MapWriter
from popbsmtp.maps._files import apply_ownership, check_plain_file

TYPES = ("hash", "btree", "cdb", "dbm")
# lmdb is rebuilt only when the admin asks for it (map_writer = rebuild).
SUFFIXES = {
    "hash": (".db",),
    "btree": (".db",),
    "cdb": (".cdb",),
    "dbm": (".pag", ".dir"),
    "lmdb": (".lmdb",),
}
# Between the end of one rebuild and the start of the next: max(MIN_INTERVAL,
# half the last rebuild's time), so a burst costs few rebuilds, rebuilding
# takes at most 2/3 of the time, and a login shows in ~2.5 rebuild times.
MIN_INTERVAL = 0.1
POSTMAP_TIMEOUT = 300
STALE_AGE = 600.0
_TMP_PREFIX = ".popbsmtp-rebuild-"
_KEY = re.compile(r"[0-9a-f.:]+")  # what addresses.postfix_key produces, nothing else
log = logging.getLogger(__name__)


class Writer(MapWriter):
    _keys: Optional[Set[str]] = None
    _dirty = False
    _built_at = 0.0  # time.monotonic() of the last rebuild
    _cost = 0.0  # seconds the last rebuild took
    _inode: Optional[int] = None

    @property
    def files(self) -> Collection[str]:
        return tuple(self.spec.path + s for s in SUFFIXES[self.spec.type])

    @property
    def _primary(self) -> str:
        return self.spec.path + SUFFIXES[self.spec.type][0]

    def open(self) -> None:
        self._postmap = _require_postmap(self.spec.type, self.options.postfix_dir)
        directory = os.path.dirname(self.spec.path)
        _remove_stale(directory)
        try:
            present = [f for f in self.files if os.path.lexists(f)]
            for name in present:
                check_plain_file(name)
        except OSError as exc:
            raise MapError(f"cannot open {self.spec}: {exc}") from None
        if len(present) < len(self.files):
            # smtpd answers 451 for its whole life when the table is missing.
            self._keys = set()
            self._rebuild()
            log.info("created empty table %s", self.spec)
        else:
            self._inode = os.lstat(self._primary).st_ino

    # -- writing ---------------------------------------------------------

    def apply(self, add: Collection[str], remove: Collection[str]) -> None:
        if not add and not remove:
            return
        if self._keys is None:
            self._keys = self._read_back()
        self._keys.difference_update(k.lower() for k in remove)
        self._keys.update(_checked(add))
        self._dirty = True
        if self.pending() == 0:
            self.flush()

    def replace(self, keys: Collection[str]) -> None:
        """Rebuild now with exactly ``keys`` (reconcile; not rate limited)."""
        self._keys = _checked(keys)
        self._dirty = True
        self.flush()

    def empty(self) -> int:
        """Rebuild empty now; a deferred rebuild is dropped, an unreadable file replaced."""
        try:
            held = len(self._read_back())
        except MapError:
            held = 0  # unreadable or torn: replaced all the same
        self.replace(())
        return held

    def pending(self) -> Optional[float]:
        """Seconds until a deferred rebuild is due; None when none is waiting."""
        if not self._dirty:
            return None
        interval = max(MIN_INTERVAL, self._cost / 2)
        return max(0.0, self._built_at + interval - time.monotonic())

    def flush(self) -> None:
        if self._dirty:
            self._rebuild()

    def _rebuild(self) -> None:
        started = time.monotonic()
        keys = list(self._keys or ())  # postmap needs no order; sorting 100k keys costs 0.1 s
        directory = os.path.dirname(self.spec.path)
        try:
            work = tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=directory)
        except OSError as exc:
            raise MapError(f"cannot create a temporary directory in {directory}: {exc}") from None
        try:
            source = os.path.join(work, "table")
            self._write_source(source, keys)
            self._run_postmap(source)
            self._install(source)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        self._dirty = False
        self._built_at = time.monotonic()
        self._cost = self._built_at - started
        log.debug("rebuilt %s: %d keys in %.3fs", self.spec, len(keys), self._cost)

    def _write_source(self, source: str, keys: List[str]) -> None:
        line_end = f" {self.value}\n"
        text = line_end.join(keys) + line_end if keys else ""
        try:
            fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(text)
        except OSError as exc:
            raise MapError(f"cannot write {source}: {exc}") from None

    def _run_postmap(self, source: str) -> None:
        run_postmap([*self._postmap, f"{self.spec.type}:{source}"], f"postmap for {self.spec}")

    def _install(self, source: str) -> None:
        """Set mode/owner on the built file(s), flush them, rename each over the live one."""
        try:
            for suffix in SUFFIXES[self.spec.type]:
                built = source + suffix
                os.chmod(built, self.options.mode)
                apply_ownership(built, self.options)
                fd = os.open(built, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)  # a crash must not leave a renamed but empty table
                finally:
                    os.close(fd)
            for suffix in SUFFIXES[self.spec.type]:
                os.rename(source + suffix, self.spec.path + suffix)
            self._inode = os.lstat(self._primary).st_ino
        except OSError as exc:
            raise MapError(f"installing the rebuilt {self.spec} failed: {exc}") from None

    # -- reading ---------------------------------------------------------

    def keys(self) -> Set[str]:
        """What the table file holds now (after any deferred rebuild)."""
        self.flush()
        return self._read_back()

    def _read_back(self) -> Set[str]:
        return read_keys(self.spec, self.options.postfix_dir)

    def healthy(self) -> bool:
        try:
            return all(os.path.isfile(f) for f in self.files) and (
                os.lstat(self._primary).st_ino == self._inode
            )
        except OSError:
            return False

    def close(self) -> None:
        """Write a deferred rebuild before stopping: the map must show the last grants."""
        if self._dirty:
            try:
                self.flush()
            except MapError as exc:
                log.error("%s (the table is rebuilt at the next start)", exc)


def _checked(keys: Collection[str]) -> Set[str]:
    """Lower-cased keys; anything but an address would corrupt the source format."""
    found = {k.lower() for k in keys}
    bad = [k for k in found if not _KEY.fullmatch(k)]
    if bad:
        raise MapError(f"refusing to write non-address key(s) {sorted(bad)[:3]}")
    return found


def read_keys(spec: MapSpec, postfix_dir: str = postfix.DEFAULT_CONFIG_DIR) -> Set[str]:
    """The keys a table file holds, for any file type Postfix can list.

    ``postmap -s`` (it takes the reader's lock, so it is safe next to the
    direct lmdb writer), except for cdb, which Postfix cannot list.
    """
    if spec.type == "cdb":  # postmap -s: "sequence operation is not supported"
        return cdb_keys(spec.path + ".cdb")
    postmap = _require_postmap(spec.type, postfix_dir)
    output = run_postmap([*postmap, "-s", str(spec)], f"reading {spec}")
    return {line.split("\t", 1)[0].lower() for line in output.splitlines() if line}


def run_postmap(cmd: List[str], what: str) -> str:
    """Run postmap; its output, or a MapError saying ``what`` failed and why."""
    try:
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=POSTMAP_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MapError(f"{what} failed: {exc}") from None
    if result.returncode != 0:
        detail = result.stderr.strip().splitlines()
        raise MapError(f"{what} failed: {detail[-1] if detail else '?'}")
    return result.stdout


def cdb_keys(path: str) -> Set[str]:
    """Keys of a cdb file: 256 (offset, length) pairs, then key/data records."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise MapError(f"reading {path} failed: {exc}") from None
    if len(data) < 2048:
        raise MapError(f"{path} is not a cdb file (too short)")
    end = min(struct.unpack_from("<I", data, 8 * i)[0] for i in range(256))
    keys: Set[str] = set()
    pos = 2048
    while pos + 8 <= end:
        klen, dlen = struct.unpack_from("<II", data, pos)
        key = data[pos + 8 : pos + 8 + klen]
        keys.add(key.rstrip(b"\0").decode("ascii", "replace").lower())
        pos += 8 + klen + dlen
    return keys


def _require_postmap(kind: str, postfix_dir: str) -> List[str]:
    """postmap with ``-c DIR``, or a MapError saying why it cannot run."""
    if postfix.find_tool("postmap") is None:
        raise MapError(f"{kind}: tables are built with Postfix's postmap, which is not installed")
    try:
        return postfix.tool_command("postmap", postfix_dir)
    except postfix.PostfixError as exc:
        raise MapError(str(exc)) from None


def _remove_stale(directory: str) -> None:
    """Remove work directories a killed daemon left behind (only old, only ours)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if not entry.name.startswith(_TMP_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            info = entry.stat(follow_symlinks=False)
            if info.st_uid == os.geteuid() and time.time() - info.st_mtime > STALE_AGE:
                shutil.rmtree(entry.path, ignore_errors=True)
