import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Subprocesses find the `popbsmtp` script of the interpreter running the tests (.venv).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
for sub in ("", "integration"):
    path = os.path.join(HERE, sub)
    if path not in sys.path:
        sys.path.insert(0, path)

import grp  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

# Shared checking helpers keep pytest's detailed assertion messages.
pytest.register_assert_rewrite("login_script", "support")


@pytest.fixture
def pf_tmp():
    """A temp dir Postfix's unprivileged processes can traverse (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="popbsmtp-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sockdir():
    """The socket's directory as the packages make it: mode 2750, group postfix."""
    path = Path(tempfile.mkdtemp(prefix="popbsmtp-run-", dir="/tmp"))
    os.chown(path, -1, grp.getgrnam("postfix").gr_gid)
    path.chmod(0o2750)
    yield path
    for name in os.listdir(path):
        os.unlink(path / name)
    path.rmdir()


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="long variants (also env POPBSMTP_LONG=1)")


@pytest.fixture(autouse=True)
def _stop_leftover_daemons():
    """Kill daemons a failing test left running (by the PIDs the tests started)."""
    from support import Daemon

    yield
    while Daemon.started:
        Daemon.started.pop().kill()
