"""Watchdog glue: file-system events only *wake* the core loop.

The observer watches directories (the log's, and the control spool), never
files, so rotation and late re-creation are seen; what the event says is
ignored beyond "something under a path we care about changed" — the tail
``stat()``s for the truth.  A slow safety poll in the reaper covers events
the kernel or watchdog dropped.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Iterable, List

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _Waker(FileSystemEventHandler):
    def __init__(self, wake: threading.Event, names: Iterable[str]) -> None:
        self.wake = wake
        self.names = set(names)

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        for path in paths:
            path = os.fsdecode(path)
            if path and (not self.names or os.path.basename(path).startswith(tuple(self.names))):
                self.wake.set()
                return


class Watcher:
    """Watch some directories; set ``wake`` when a relevant name changes.

    ``targets`` maps directory → name prefixes (empty = everything in it).
    A directory that does not exist yet is simply not watched: the safety
    poll finds the file when it appears.
    """

    def __init__(self, wake: threading.Event, targets: dict) -> None:
        self.wake = wake
        self.targets = targets
        self._observer = Observer()
        self._observer.daemon = True
        self.watched: List[str] = []

    def start(self) -> None:
        for directory, names in self.targets.items():
            if not os.path.isdir(directory):
                log.info("%s does not exist yet; relying on the safety poll", directory)
                continue
            try:
                self._observer.schedule(_Waker(self.wake, names), directory, recursive=False)
                self.watched.append(directory)
            except OSError as exc:
                log.warning("cannot watch %s (%s); relying on the safety poll", directory, exc)
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        if self._observer.is_alive():
            self._observer.join(timeout=5)
