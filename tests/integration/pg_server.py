"""A real PostgreSQL server for tests: initdb + pg_ctl in a temp dir, loopback only.

initdb refuses root, so the cluster belongs to the unprivileged ``postgres``
user (Debian's postgresql package creates it).  Connections are trusted on
127.0.0.1 only; the server is stopped by :meth:`PgServer.stop` (a fixture
finaliser), never left running.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path
from typing import List

from postfix_instance import free_port

USER = "postgres"


def _bin(tool: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    if not found:
        raise AssertionError(f"{tool} is not installed; run .ci/setup (Debian's postgresql)")
    return found[-1]


class PgServer:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "pg"
        self.data = self.dir / "data"
        self.port = free_port()
        self.dbname = "popbsmtp"
        self.dsn = f"host=127.0.0.1 port={self.port} user={USER} dbname={self.dbname}"

    def _as_user(self, *cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runuser", "-u", USER, "--", *cmd],
            capture_output=True,
            text=True,
            timeout=120,
            cwd="/",
        )

    def _check(self, result: subprocess.CompletedProcess, what: str) -> None:
        if result.returncode != 0:
            log = (
                (self.dir / "server.log").read_text() if (self.dir / "server.log").exists() else ""
            )
            raise AssertionError(f"{what} failed: {result.stdout}{result.stderr}{log[-2000:]}")

    def init(self) -> PgServer:
        self.dir.mkdir(parents=True)
        shutil.chown(self.dir, USER)
        self._check(
            self._as_user(_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", USER),
            "initdb",
        )
        return self

    def start(self) -> PgServer:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._check(
            self._as_user(
                _bin("pg_ctl"),
                "-D",
                str(self.data),
                "-o",
                options,
                "-l",
                str(self.dir / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ),
            "pg_ctl start",
        )
        return self

    def createdb(self) -> PgServer:
        self._check(
            self._as_user(_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), self.dbname),
            "createdb",
        )
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._as_user(_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def sql(self, statement: str) -> List[tuple]:
        import psycopg

        with psycopg.connect(self.dsn, connect_timeout=5) as conn:
            cur = conn.execute(statement)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []


def started(workdir: Path) -> PgServer:
    server = PgServer(workdir).init()
    try:
        return server.start().createdb()
    except BaseException:
        server.stop()
        raise


__all__ = ["PgServer", "started"]
