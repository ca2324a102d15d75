"""Which log the daemon follows: a mail log file or the systemd journal.

``source = file`` follows ``logfile`` (``auto``: the distribution's mail log),
``source = journal`` the journal (``journal_directory``, or the system's).
``source = auto``, the default, follows an explicitly set ``logfile``; with
``logfile = auto`` it follows the distribution's mail log when that file is
*being written*, the journal otherwise.  Being written means: a non-empty
regular file modified within :data:`RECENT` (a day: a quiet server may log no
mail for hours, while a mail log left behind after rsyslog was removed stops
changing).  A system without a syslog daemon (Debian 12 and 13, Fedora) has
no such file, so it gets the journal.  The choice is made when the daemon
starts and is reported with its reason by ``check-config --explain``,
``doctor`` and the daemon's start-up line; nothing here reads a log.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from typing import Any, Optional

from popbsmtp.config.distros import detect, named_distro
from popbsmtp.config.values import format_duration

FILE = "file"
JOURNAL = "journal"
RECENT = 24 * 3600.0
# Where journald keeps the system journal: volatile, then persistent.
SYSTEM_JOURNALS = ("/run/log/journal", "/var/log/journal")


@dataclass(frozen=True)
class SourceChoice:
    kind: str  # FILE or JOURNAL
    path: str  # the log file, or the journal directory ("" = the system journal)
    reason: str

    def describe(self) -> str:
        if self.kind == FILE:
            return self.path
        return f"the journal in {self.path}" if self.path else "the systemd journal"


def distro_mail_log(settings: Any) -> str:
    """The mail log ``logfile = auto`` means: the configured or detected distribution's."""
    distro = detect() if settings.distro == "auto" else named_distro(settings.distro)
    return distro.logfile


def choose_source(
    settings: Any, now: Optional[float] = None, mail_log: Optional[str] = None
) -> SourceChoice:
    """The source ``settings`` ask for, looking at the file system where they leave it
    open; ``mail_log`` stands for the distribution's mail log (tests)."""
    now = time.time() if now is None else now
    journal_dir = settings.journal_directory
    explicit = settings.logfile != "auto"
    path = settings.logfile if explicit else (mail_log or distro_mail_log(settings))
    if settings.source == JOURNAL:
        return SourceChoice(JOURNAL, journal_dir, "source = journal")
    if settings.source == FILE:
        return SourceChoice(FILE, path, "source = file")
    if explicit:
        return SourceChoice(FILE, path, f"source = auto, logfile = {path}")
    if journal_dir:
        return SourceChoice(JOURNAL, journal_dir, "source = auto, journal_directory is set")
    written = being_written(path, now)
    if written is None:
        return SourceChoice(FILE, path, f"{path} is being written")
    if journal_available():
        return SourceChoice(JOURNAL, "", f"{path} {written}, and the system has a journal")
    return SourceChoice(FILE, path, f"{path} {written}, and there is no journal: waiting for it")


def being_written(path: str, now: float) -> Optional[str]:
    """None when ``path`` is a mail log being written, else why it is not."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "does not exist"
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    if info.st_size == 0:
        return "is empty"
    if now - info.st_mtime > RECENT:
        return f"was last written {format_duration(round(now - info.st_mtime))} ago"
    return None


def journal_available() -> bool:
    """journalctl is installed and journald keeps a system journal here."""
    if shutil.which("journalctl", path=os.environ.get("PATH", "") + ":/usr/bin:/bin") is None:
        return False
    return any(os.path.isdir(d) for d in SYSTEM_JOURNALS)
