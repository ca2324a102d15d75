"""Shared pieces of the benchmark scripts: inputs, configs, daemons, statistics.

Benchmarks are not tests: they pace traffic with sleeps and print figures;
they never assert.  Every script prints one JSON object on stdout (the rows
``bench/run`` puts in its table) and its progress on stderr.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def workdir(prefix: str) -> Path:
    """A 0755 temporary directory Postfix's unprivileged ``postmap`` can read."""
    path = Path(tempfile.mkdtemp(prefix=f"popbsmtp-bench-{prefix}-"))
    path.chmod(0o755)
    return path


def generate(out: Path, lines: int, *extra: str, script: str = "gen_maillog.py") -> Path:
    """Run a generator (a subprocess, so its memory is not ours)."""
    subprocess.run(
        [sys.executable, str(HERE / script), str(out), "--lines", str(lines), *extra],
        check=True,
    )
    return out


_POSTFIX_DIR: Optional[Path] = None


def postfix_dir() -> Path:
    """The benchmarks' own Postfix config dir (an empty main.cf), for postmap/postconf -c.

    The machine's /etc/postfix may have no main.cf; Postfix's tools then refuse to run.
    """
    global _POSTFIX_DIR
    if _POSTFIX_DIR is None:
        _POSTFIX_DIR = workdir("postfix")
        (_POSTFIX_DIR / "main.cf").write_text("")
        atexit.register(shutil.rmtree, _POSTFIX_DIR, True)
    return _POSTFIX_DIR


def write_config(directory: Path, **options: object) -> Path:
    values: Dict[str, object] = {
        "postfix_config_dir": postfix_dir(),
        "logfile": directory / "mail.log",
        "map": f"lmdb:{directory}/pbs",
        "state_dir": directory / "state",
        "ignore_networks": "none",
        "log_level": "info",  # the daemon says "following" at info
    }
    values.update(options)
    path = directory / "popbsmtp.conf"
    path.write_text("[popbsmtp]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()))
    return path


def settings(config: Path):  # -> popbsmtp.config.Settings
    from popbsmtp import config as cfg

    return cfg.load(str(config))


def seconds_until(probe: Callable[[], bool], since: float, timeout: float) -> Optional[float]:
    """How long after ``since`` (time.monotonic) ``probe`` first answered True,
    polled without pause; None when it did not within ``timeout``."""
    while time.monotonic() < since + timeout:
        if probe():
            return time.monotonic() - since
    return None


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: every figure was observed)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def emit(rows: List[Dict[str, object]]) -> None:
    print(json.dumps(rows))


class Daemon:
    """``popbsmtp run --foreground`` in a subprocess, stopped with SIGTERM."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.errfile = config.parent / "daemon.err"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, wait_ready: bool = True) -> Daemon:
        self._err = open(self.errfile, "ab")  # noqa: SIM115
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "popbsmtp", "run", "--foreground", "--config", str(self.config)],
            stdout=self._err,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)},
        )
        if wait_ready:
            self.wait_log("following ")
        return self

    def text(self) -> str:
        return self.errfile.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 120.0, count: int = 1) -> float:
        """Poll the daemon's output for ``needle``; return when it was seen."""
        deadline = time.monotonic() + timeout
        while self.text().count(needle) < count:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"daemon never logged {needle!r}:\n{self.text()[-2000:]}")
            time.sleep(0.002)
        return time.monotonic()

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def max_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return -1

    def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self._err.close()
        return code

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def postmap_query(spec: str, key: str) -> Optional[str]:
    command = ["postmap", "-c", str(postfix_dir()), "-q", key, spec]
    result = subprocess.run(command, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else None
