"""Follow the systemd journal through ``journalctl -o json``, resuming at a cursor.

``journalctl --follow --after-cursor=C`` (or ``--since=@T`` when there is no
cursor yet) runs as a child process; a reader thread turns each JSON line
into an immutable :class:`Entry` (envelope, sender, cursor) and queues it,
and the core loop takes them with :meth:`JournalSource.read_entries`.  The
cursor of the last entry taken is the read position saved with the grants,
so a restart resumes right after it: no rotation, no offsets.  A
subprocess, not the python-systemd binding: it needs no compiled module in
the venv or the noarch packages, and ``journalctl`` is on every systemd
system (docs/architecture.md).  Whether an entry may grant is not decided
here: see :mod:`popbsmtp.sources.trust` and the service.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import queue
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import IO, Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional, Tuple

from popbsmtp.errors import PopbsmtpError
from popbsmtp.parse.envelope import Envelope
from popbsmtp.parse.matcher import Login, Matcher
from popbsmtp.sources.generation import TailStats
from popbsmtp.sources.trust import Sender, TrustCheck

log = logging.getLogger(__name__)

FIELDS = (
    "MESSAGE", "SYSLOG_IDENTIFIER", "SYSLOG_PID", "_PID", "_HOSTNAME", "_TRANSPORT",
    "_UID", "_COMM", "_EXE", "_SYSTEMD_UNIT",
)  # fmt: skip
# journalctl writes a cursor as key=value pairs of hex digits and ';'.
_CURSOR = re.compile(r"[A-Za-z0-9=;_-]{1,512}")
QUEUED = 10_000  # entries read ahead of the core loop; journalctl waits beyond that
RESTART_AFTER = 2.0  # seconds between a journalctl that ended and the next


@dataclass(frozen=True)
class JournalCursor:
    """Where a restart resumes in the journal (saved like a file position)."""

    cursor: str
    directory: str = ""  # "" is the system journal

    def to_json(self) -> Dict[str, str]:
        return {"journal_cursor": self.cursor, "journal_directory": self.directory}

    @classmethod
    def from_json(cls, data: Dict[str, object]) -> JournalCursor:
        cursor = data["journal_cursor"]
        if not isinstance(cursor, str) or not _CURSOR.fullmatch(cursor):
            raise ValueError("journal_cursor is not a journal cursor")
        return cls(cursor, str(data.get("journal_directory", "")))


class Entry(NamedTuple):
    cursor: Optional[str]
    envelope: Optional[Envelope]  # None: no usable MESSAGE/identifier/time
    sender: Sender
    overlong: bool = False


def _text(value: object) -> Optional[str]:
    """A field as text: journalctl writes non-UTF-8 values as byte arrays; a
    field sent twice is a list of values, which is refused (None)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return None


def _number(value: object) -> Optional[int]:
    text = _text(value)
    return int(text) if text is not None and text.isdigit() and len(text) <= 19 else None


def parse_entry(line: bytes, max_message: int) -> Optional[Entry]:
    """One ``journalctl -o json`` line; None when it is no JSON object."""
    try:
        data = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    get = data.get
    sender = Sender(_number(get("_UID")), _text(get("_COMM")), _text(get("_EXE")),
                    _text(get("_SYSTEMD_UNIT")))  # fmt: skip
    cursor = get("__CURSOR")
    cursor = cursor if isinstance(cursor, str) and _CURSOR.fullmatch(cursor) else None
    message, program = _text(get("MESSAGE")), _text(get("SYSLOG_IDENTIFIER"))
    usec = _number(get("__REALTIME_TIMESTAMP"))
    if message is None or program is None or usec is None:
        return Entry(cursor, None, sender)
    if len(message.encode("utf-8", "replace")) > max_message:
        return Entry(cursor, None, sender, overlong=True)
    if "\n" in message or "\r" in message:  # no server writes one; a file line cannot hold it
        return Entry(cursor, None, sender)
    pid = _number(get("SYSLOG_PID"))
    if pid is None and _text(get("_TRANSPORT")) != "syslog":
        pid = _number(get("_PID"))  # native or stdout: no tag, the sender's pid
    envelope = Envelope(usec / 1e6, _text(get("_HOSTNAME")) or "", program, pid, message)
    return Entry(cursor, envelope, sender)


def journalctl_command(
    directory: str = "",
    *,
    cursor: Optional[str] = None,
    since: Optional[float] = None,
    follow: bool = True,
    last: Optional[int] = None,
) -> List[str]:
    """The argv that prints the journal from ``cursor`` (or ``since``) as JSON lines."""
    argv = [shutil.which("journalctl") or "journalctl", "--output=json", "--all", "--no-pager",
            "--quiet", "--output-fields=" + ",".join(FIELDS)]  # fmt: skip
    if directory:
        argv.append("--directory=" + directory)
    if follow:
        argv += ["--follow", "--no-tail"]
    if last is not None:
        argv.append(f"--lines={last}")
    if cursor is not None:
        argv.append("--after-cursor=" + cursor)
    elif since is not None:
        argv.append(f"--since=@{max(0, int(since))}")
    return argv


def read_lines(handle: IO[bytes], limit: int) -> Iterator[bytes]:
    """Lines of ``handle`` without the newline; a longer one yields b"" (counted overlong)."""
    while True:
        line = handle.readline(limit + 1)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line[:-1]
            continue
        if len(line) <= limit:  # the last line, without newline: journalctl was cut short
            return
        while line and not line.endswith(b"\n"):
            line = handle.readline(limit + 1)
        yield b""


def json_limit(max_line_length: int) -> int:
    """Longest JSON line read: a message of ``max_line_length`` bytes, escaped, and the rest."""
    return 6 * max_line_length + 16384


class JournalSource:
    """The followed journal; the core loop calls read_entries(), position, close()."""

    def __init__(
        self,
        directory: str,
        position: Optional[JournalCursor] = None,
        *,
        since: float,
        wake: Callable[[], None],
        max_line_length: int = 8192,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory = directory
        self._cursor: Optional[str] = None
        self._since = since
        self._wake = wake
        self.max_line_length = max_line_length
        self.clock = clock
        self.stats = TailStats()
        self.more = False
        self._queue: queue.Queue = queue.Queue(QUEUED)
        self._proc: Optional[subprocess.Popen] = None
        self._started = float("-inf")
        self._taken = 0  # entries taken from the current journalctl
        self._errors: List[str] = []
        self._stderr_thread: Optional[threading.Thread] = None
        self.resume(position)

    def resume(self, position: Optional[JournalCursor]) -> None:
        """Where to resume, known once the saved state is read (before the first read);
        a cursor saved for another journal directory is not ours."""
        if self._proc is not None:
            raise RuntimeError("resume() after journalctl started")
        mine = position is not None and position.directory == self.directory
        self._cursor = position.cursor if mine and position is not None else None

    @property
    def position(self) -> Optional[JournalCursor]:
        return JournalCursor(self._cursor, self.directory) if self._cursor else None

    def describe(self) -> str:
        return f"the journal in {self.directory}" if self.directory else "the systemd journal"

    def read_entries(self, budget: int = 4096) -> List[Entry]:
        """The entries queued now, at most ``budget`` (``more`` says whether more wait)."""
        taken: List[Entry] = []
        self.more = False
        self._ensure_running()
        while len(taken) < budget:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                break
            if entry is None:  # the reader saw journalctl's output end
                self._ended()
                break
            taken.append(entry)
            self.stats.lines += 1
            self.stats.overlong += entry.overlong
            if entry.cursor is not None:
                self._cursor = entry.cursor
        else:
            self.more = True
        self._taken += len(taken)
        return taken

    def _ensure_running(self) -> None:
        if self._proc is not None or self.clock() < self._started + RESTART_AFTER:
            return
        argv = journalctl_command(self.directory, cursor=self._cursor, since=self._since)
        self._started, self._taken = self.clock(), 0
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, close_fds=True)  # fmt: skip
        except OSError as exc:
            self._error(f"cannot run journalctl: {exc.strerror}")
            return
        self._proc = proc
        self._errors = []
        limit = json_limit(self.max_line_length)
        reader = threading.Thread(
            target=self._reader, args=(proc.stdout, limit), name="popbsmtp-journal", daemon=True
        )
        self._stderr_thread = threading.Thread(
            target=self._stderr, args=(proc.stderr,), name="popbsmtp-journal-err", daemon=True
        )
        reader.start()
        self._stderr_thread.start()
        log.debug("started %s", " ".join(argv))

    def _reader(self, handle: IO[bytes], limit: int) -> None:
        """Thread: parse journalctl's lines into entries; never touches the loop's state."""
        with contextlib.suppress(OSError, ValueError):
            for line in read_lines(handle, limit):
                self._queue.put(_entry(line, self.max_line_length))
                self._wake()
        self._queue.put(None)
        self._wake()

    def _stderr(self, handle: IO[bytes]) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in read_lines(handle, 4096):
                if len(self._errors) < 8:
                    self._errors.append(line.decode("utf-8", "replace"))

    def _ended(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        code = _reap(proc)
        if self._stderr_thread is not None:
            self._stderr_thread.join(1.0)  # its pipe ends with the process
        why = "; ".join(self._errors) or f"exit status {code}"
        if self._cursor is not None and self._taken == 0 and "cursor" in why.lower():
            log.warning("journal cursor not usable (%s); reading from the grace window", why)
            self._cursor = None
        else:
            self._error(f"journalctl ended ({why}); starting it again")
        self._wake()  # the reaper's poll brings the restart; this makes it prompt

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        if message != self.stats.last_error:
            log.error("%s", message)
        self.stats.last_error = message

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            _reap(proc)
        with contextlib.suppress(queue.Empty):  # a reader blocked on a full queue ends too
            while True:
                self._queue.get_nowait()


def _sender_ok(trust: TrustCheck, sender: Sender, refusals: List[str], profile: str) -> bool:
    why = trust.refusal(profile, sender)
    if why is not None:
        refusals.append(why)
    return why is None


_NOBODY = Sender(None, None, None, None)
_OVERLONG = Entry(None, None, _NOBODY, overlong=True)
_NOT_JSON = Entry(None, None, _NOBODY)


def _entry(line: bytes, max_message: int) -> Entry:
    """What :func:`read_lines` gave: b"" stands for an overlong line."""
    if not line:
        return _OVERLONG
    return parse_entry(line, max_message) or _NOT_JSON


class JournalError(PopbsmtpError):
    """journalctl could not read the journal asked for."""


def _reap(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(5.0)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def read_journal(
    directory: str = "", *, max_line_length: int = 8192, last: Optional[int] = None
) -> Iterator[Entry]:
    """Every entry of a journal (the last ``last``), for ``popbsmtp test`` and ``doctor``.

    Raises JournalError when journalctl cannot run or fails.
    """
    argv = journalctl_command(directory, follow=False, last=last)
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)  # fmt: skip
    except OSError as exc:
        raise JournalError(f"cannot run journalctl: {exc.strerror}") from None
    assert proc.stdout is not None and proc.stderr is not None
    try:
        for line in read_lines(proc.stdout, json_limit(max_line_length)):
            yield _entry(line, max_line_length)
    finally:
        proc.stdout.close()
        errors = proc.stderr.read(4096).decode("utf-8", "replace").strip()
        code = _reap(proc)
    if code != 0:
        raise JournalError(f"journalctl failed: {errors or f'exit status {code}'}")


def match_entries(
    entries: Iterable[Entry], matcher: Matcher, trust: TrustCheck
) -> Iterator[Tuple[int, Entry, Optional[Login], Optional[str]]]:
    """(number, entry, event or None, refusal) for each entry with a message.

    ``refusal`` is None when the entry's sender may speak for the profile
    that recognised it, else why not: such an entry must grant, end or join
    nothing.  Counts lines, overlong and unparseable entries in the
    matcher's statistics, as the file path does.
    """
    stats = matcher.stats
    for number, entry in enumerate(entries, 1):
        stats.lines += 1
        if entry.envelope is None:
            if entry.overlong:
                stats.overlong += 1
            else:
                stats.unparseable += 1
            continue
        refusals: List[str] = []
        sender_ok = functools.partial(_sender_ok, trust, entry.sender, refusals)
        # Trust is asked before the matcher learns anything from the entry: a forged
        # start-up line must not change which version's login form counts.
        login = matcher.match_envelope(entry.envelope, sender_ok)
        if login is None:
            yield number, entry, None, None
            continue
        stats.candidates += 1
        yield number, entry, login, refusals[0] if refusals else None
