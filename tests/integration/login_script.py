"""Scripted logins against a real Cyrus or Courier, and the check that
``popbsmtp test --json`` over the resulting log authorizes exactly the clients
that got in, with one login and one logout event per session.

Shared by test_cyrus_real.py, test_courier_real.py and capture_servers.py.  The
servers themselves are in cyrus_server.py / courier_server.py.
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import poplib
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    NamedTuple,
    Sequence,
    Set,
    Tuple,
    Type,
    Union,
)

import pytest
from mail_clients import imap_login, imap_session, pop3_login, pop3_session
from sandbox import SyslogServer, poll
from support import popbsmtp, successful_logins_seen, write_config

# protocol ("pop3"/"imap", "pop3/tls" after STARTTLS), source address, user, password
Attempt = Tuple[str, str, str, str]
# (log text, successful sessions, failed attempts) -> has the server logged them all?
Settled = Callable[[str, int, int], bool]


class ScriptedRun(NamedTuple):
    server: SyslogServer  # stopped: its logs are complete
    succeeded: Set[str]  # source addresses whose login the client saw succeed
    sessions: int  # successful logins


def standard_attempts(users: Dict[str, str]) -> List[Attempt]:
    """The login script both tests run.  users holds, in this order, alice, bob, a name
    forging the server's address field and one with quotes; alice and bob get in from
    127.0.0.5, 127.0.0.6 and ::1, the hostile names from 127.0.0.8, and 127.0.0.7 only
    ever fails (wrong password, unknown user, hostile name with a wrong password)."""
    (alice, alice_pw), (bob, bob_pw), (forger, forger_pw), (quoter, quoter_pw) = users.items()
    return [
        ("imap", "127.0.0.5", alice, alice_pw),
        ("pop3", "127.0.0.6", bob, bob_pw),
        ("imap", "::1", bob, bob_pw),
        ("pop3", "127.0.0.8", forger, forger_pw),
        ("imap", "127.0.0.8", quoter, quoter_pw),
        ("imap", "127.0.0.7", alice, "wrong"),
        ("pop3", "127.0.0.7", "nosuchuser", "x"),
        ("imap", "127.0.0.7", forger, "wrong"),
    ]


def attempt_logins(server: SyslogServer, attempts: Sequence[Attempt]) -> List[bool]:
    """Each attempt in turn, logging out after a success; whether each one got in."""
    results = []
    for how, source, user, password in attempts:
        protocol, _, secure = how.partition("/")
        login = pop3_login if protocol == "pop3" else imap_login
        port = server.pop3_port if protocol == "pop3" else server.imap_port
        results.append(login(port, user, password, (source, 0), tls=secure == "tls"))
    return results


@contextlib.contextmanager
def scripted_run(
    server_class: Type[SyslogServer],
    users: Dict[str, str],
    attempts: Sequence[Attempt],
    settled: Settled,
) -> Iterator[ScriptedRun]:
    """Run the attempts against a fresh server in a short directory under /tmp (nobody
    must traverse it, pytest's are 0700) and stop it once settled() says everything is
    logged; the directory is removed when the with block ends."""
    name = server_class.__name__.lower()
    with tempfile.TemporaryDirectory(
        prefix=f"popbsmtp-{name}-", dir="/tmp", ignore_cleanup_errors=True
    ) as work:
        with server_class(Path(work), users) as server:
            results = attempt_logins(server, attempts)
            sessions, failures = sum(results), len(results) - sum(results)
            server.wait_for_log(
                lambda text: settled(text, sessions, failures),
                f"{sessions} sessions and {failures} failures logged",
            )
        succeeded = {attempt[1] for attempt, ok in zip(attempts, results) if ok}
        yield ScriptedRun(server, succeeded, sessions)


def scripted_run_fixture(
    name: str,
    server_classes: Sequence[Type[SyslogServer]],
    users: Dict[str, str],
    attempts: Union[Sequence[Attempt], Callable[[Type[SyslogServer]], Sequence[Attempt]]],
    settled: Settled,
) -> Callable[..., Iterator[ScriptedRun]]:
    """A module-scoped fixture called name yielding the scripted_run of these arguments,
    once per server class (ids: the classes' VERSION); attempts may depend on the class."""

    @pytest.fixture(scope="module", name=name, params=server_classes,
                    ids=[getattr(c, "VERSION", c.__name__) for c in server_classes])  # fmt: skip
    def run_once(request: pytest.FixtureRequest) -> Iterator[ScriptedRun]:
        script = attempts(request.param) if callable(attempts) else attempts
        with scripted_run(request.param, users, script, settled) as run:
            yield run

    return run_once


def popbsmtp_test_json(tmp: Path, log: Path) -> Tuple[List[dict], dict]:
    """``popbsmtp test --json --profile auto`` over log: (events, summary)."""
    config = write_config(tmp, logfile=log, ignore_networks="none")
    result = popbsmtp("test", "-c", str(config), "--json", "--profile", "auto", str(log))
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return records[:-1], records[-1]["summary"]


def check_authorizes_exactly(
    run: ScriptedRun, which: str, tmp: Path, profile: str
) -> Tuple[Path, List[dict], List[dict]]:
    """The checks both real-server tests make on the "rfc3339" or "traditional" log;
    returns (that log, events, logout events)."""
    succeeded, sessions = run.succeeded, run.sessions
    log = run.server.rfc3339_log if which == "rfc3339" else run.server.traditional_log
    assert {"127.0.0.5", "127.0.0.6", "::1"} <= succeeded  # the ordinary users got in
    assert "127.0.0.7" not in succeeded
    events, summary = popbsmtp_test_json(tmp, log)
    assert successful_logins_seen(events) == succeeded
    assert "6.6.6.6" not in {e["raw_ip"] for e in events}
    assert summary["profiles_matched"] == [profile]
    assert summary["unrecognised_login_lines"] == []
    assert len([e for e in events if e["event"] == "login"]) == sessions
    logouts = [e for e in events if e["event"] == "logout"]
    assert len(logouts) == sessions
    return log, events, logouts


def stop_with_sessions_open(server: Any, log_text: Callable[[], str]) -> None:
    """Log alice in over IMAP from 127.0.0.20 and POP3 from ::1, wait until log_text()
    shows both logins, and stop the running server while both clients are connected."""
    # The clients' goodbyes after the stop find no server: that is expected.
    goodbyes = contextlib.suppress(OSError, imaplib.IMAP4.error, poplib.error_proto)
    with goodbyes, ExitStack() as sessions:
        imap = sessions.enter_context(
            imap_session(server.imap_port, "alice", "alice-pw", ("127.0.0.20", 0))
        )
        pop3 = sessions.enter_context(
            pop3_session(server.pop3_port, "alice", "alice-pw", ("::1", 0))
        )
        imap.noop()
        pop3.stat()
        poll(lambda: log_text().count("alice") >= 2, "both logins logged")
        server.stop()
