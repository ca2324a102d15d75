"""The socketmap server alone: netstrings, exact answers at lookup time, hostile clients.

Real sockets and the real server thread; a fake clock for the expiry edge.
Postfix itself asks it in tests/integration/test_socketmap_smtpd.py.
"""

from __future__ import annotations

import os
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import wait_for

from popbsmtp.errors import ConfigError, MapError
from popbsmtp.maps import MapSpec, open_writer
from popbsmtp.maps._socketserver import (
    MAX_REQUEST,
    NetstringError,
    SocketmapServer,
    encode,
    parse,
    reply_for,
)
from popbsmtp.maps.socketmap import Snapshot, Writer, check_socket_directory, parse_endpoint

# -- netstrings ---------------------------------------------------------------


@given(st.binary(max_size=MAX_REQUEST), st.binary(max_size=50))
def test_netstring_round_trip_and_any_split(payload, rest):
    wire = encode(payload) + rest
    assert parse(wire) == (payload, len(encode(payload)))
    for cut in range(len(encode(payload))):
        assert parse(wire[:cut]) == (None, 0)  # incomplete is never an answer


@given(st.binary(max_size=2000))
@settings(max_examples=500)
def test_hostile_bytes_never_crash_nor_exceed_the_limit(data):
    try:
        payload, used = parse(data)
    except NetstringError:
        return
    if payload is None:
        assert used == 0
        assert len(data) <= len(str(MAX_REQUEST)) + 1 + MAX_REQUEST + 1
    else:
        assert len(payload) <= MAX_REQUEST
        assert data[:used] == encode(payload)


@pytest.mark.parametrize(
    "wire",
    [b"99999:", b"1025:" + b"x" * 1025 + b",", b"abc", b"-1:", b"01:a,", b"3:abc;", b":"],
)
def test_bad_netstrings_are_refused_early(wire):
    with pytest.raises(NetstringError):
        parse(wire)


def test_requests_need_a_name_and_a_key():
    def answer(name: str, key: str) -> bytes:
        return f"OK {name}/{key}".encode()

    assert reply_for(b"pbs 192.0.2.1", answer) == b"OK pbs/192.0.2.1"
    assert reply_for(b"pbs", answer).startswith(b"PERM")
    assert reply_for(b" 192.0.2.1", answer).startswith(b"PERM")
    assert reply_for(b"pbs \xff", answer).startswith(b"PERM")
    assert reply_for(b"pbs a\nb", answer).startswith(b"PERM")


# -- endpoints and directories ----------------------------------------------------


def test_endpoints():
    assert parse_endpoint("unix:/run/popbsmtp/sock:pbs").path == "/run/popbsmtp/sock"
    point = parse_endpoint("inet:127.0.0.1:8461:pbs")
    assert (point.host, point.port, point.name) == ("127.0.0.1", 8461, "pbs")
    assert parse_endpoint("inet:[::1]:8461:pbs").host == "::1"
    spec = MapSpec.parse("socketmap:unix:/run/popbsmtp/sock:pbs")
    assert spec.served and str(spec) == "socketmap:unix:/run/popbsmtp/sock:pbs"
    assert not MapSpec.parse("lmdb:/etc/postfix/pbs").served


@pytest.mark.parametrize(
    "text",
    [
        "socketmap:inet:0.0.0.0:8461:pbs",
        "socketmap:inet:192.0.2.1:8461:pbs",
        "socketmap:inet:mail.example:8461:pbs",
        "socketmap:inet:[2001:db8::1]:8461:pbs",
        "socketmap:inet:127.0.0.1:0:pbs",
        "socketmap:inet:127.0.0.1:70000:pbs",
        "socketmap:unix:relative/sock:pbs",
        "socketmap:unix:/run/sock",
    ],
)
def test_other_endpoints_are_refused_at_config_time(text):
    with pytest.raises(ConfigError):
        MapSpec.parse(text)


def test_socket_directory_must_be_private(tmp_path):
    good = tmp_path / "run"
    good.mkdir(mode=0o750)
    good.chmod(0o750)
    check_socket_directory(str(good))
    for mode in (0o755, 0o770, 0o751, 0o757):
        good.chmod(mode)
        with pytest.raises(MapError, match="chmod 2750"):
            check_socket_directory(str(good))
    with pytest.raises(MapError, match="install -d"):
        check_socket_directory(str(tmp_path / "missing"))
    good.chmod(0o750)
    os.chown(good, 4242, -1)
    with pytest.raises(MapError, match="belongs to uid 4242"):
        check_socket_directory(str(good))


def test_a_root_daemon_trusts_the_service_users_directory(tmp_path, monkeypatch):
    """The SysV script runs the daemon as root on the directory made for popbsmtp."""
    import pwd

    from popbsmtp.maps import _files

    monkeypatch.setattr(_files, "SERVICE_USER", "nobody")  # no popbsmtp user here
    made = tmp_path / "run"
    made.mkdir()
    made.chmod(0o2750)
    os.chown(made, pwd.getpwnam("nobody").pw_uid, -1)
    check_socket_directory(str(made))  # as root (the tests chown): trusted
    monkeypatch.setattr(_files, "SERVICE_USER", "no-such-user-here")
    with pytest.raises(MapError, match="not to the daemon's user"):
        check_socket_directory(str(made))


# -- answers ----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sockdir():
    path = Path(tempfile.mkdtemp(prefix="popbsmtp-sock-", dir="/tmp"))
    path.chmod(0o750)
    yield path
    for name in os.listdir(path):
        os.unlink(path / name)
    path.rmdir()


@pytest.fixture
def writer(sockdir):
    opened = open_writer(MapSpec.parse(f"socketmap:unix:{sockdir}/sock:pbs"), "OK")
    assert isinstance(opened, Writer)
    yield opened
    opened.close()


def ask(path: str, *requests: bytes, sock: socket.socket = None) -> list:
    own = sock is None
    if own:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(path)
    replies = []
    buffer = b""
    try:
        for request in requests:
            sock.sendall(encode(request))
            while True:
                payload, used = parse(buffer, 100_000)
                if payload is not None:
                    buffer = buffer[used:]
                    replies.append(payload)
                    break
                chunk = sock.recv(4096)
                assert chunk, "server closed the connection"
                buffer += chunk
    finally:
        if own:
            sock.close()
    return replies


def test_exact_key_and_expiry_to_the_millisecond(writer, sockdir):
    clock = Clock()
    writer.clock = clock
    writer.retime({"192.0.2.1": clock.now + 10, "2001:db8::1": clock.now + 10})
    writer.apply({"192.0.2.1", "2001:db8::1"}, set())
    path = str(sockdir / "sock")
    keys = [
        b"pbs 192.0.2.1",
        b"pbs 2001:DB8::1",
        b"pbs 2001:db8::1:5",
        b"pbs 192.0.2",
        b"pbs unknown",
    ]
    assert ask(path, *keys) == [b"OK OK", b"OK OK", b"NOTFOUND ", b"NOTFOUND ", b"NOTFOUND "]
    assert ask(path, b"other 192.0.2.1") == [b"PERM unknown map name"]
    clock.now += 9.999
    assert ask(path, b"pbs 192.0.2.1") == [b"OK OK"]
    clock.now += 0.001  # now == expiry: over, although the core loop did not run
    assert ask(path, b"pbs 192.0.2.1") == [b"NOTFOUND "]
    # An extension is seen; a removal too.
    writer.retime({"192.0.2.1": clock.now + 5})
    assert ask(path, b"pbs 192.0.2.1") == [b"OK OK"]
    writer.apply(set(), {"192.0.2.1"})
    assert ask(path, b"pbs 192.0.2.1") == [b"NOTFOUND "]
    assert writer.keys() == {"2001:db8::1"}


def test_socket_mode_group_and_gone_after_close(sockdir):
    spec = MapSpec.parse(f"socketmap:unix:{sockdir}/sock:pbs")
    opened = open_writer(spec, "OK")
    info = os.lstat(sockdir / "sock")
    assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o660
    import grp

    assert info.st_gid == grp.getgrnam("postfix").gr_gid
    assert opened.healthy()
    opened.close()
    assert not (sockdir / "sock").exists()


def test_unsafe_directory_refused_at_open(sockdir):
    sockdir.chmod(0o755)
    with pytest.raises(MapError, match="mode 0755"):
        open_writer(MapSpec.parse(f"socketmap:unix:{sockdir}/sock:pbs"), "OK")


def test_snapshot_merges_keep_answers():
    snap = Snapshot({"a": 5.0}, {"a": 0.0, "b": 7.0})
    assert snap.expiry("a") == 0.0 and snap.expiry("b") == 7.0 and snap.expiry("c") == 0.0
    assert snap.merged() == {"b": 7.0}


def test_many_changes_stay_exact(writer):
    now = time.time()
    wanted = {f"10.0.{i // 250}.{i % 250}": now + 60 + i for i in range(5000)}
    for start in range(0, 5000, 100):
        batch = dict(list(wanted.items())[start : start + 100])
        writer.retime(batch)
        writer.apply(set(batch), set())
    gone = list(wanted)[::3]
    writer.apply(set(), set(gone))
    for key in gone:
        del wanted[key]
    assert writer.keys() == set(wanted)
    assert all(writer.snapshot.expiry(k) == v for k, v in wanted.items())


# -- hostile clients never stall the others -----------------------------------------


@pytest.fixture
def server(sockdir):
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(sockdir / "s"))
    listener.listen(16)
    served = SocketmapServer(
        listener, lambda name, key: b"OK yes", request_timeout=0.5, idle_timeout=2.0
    )
    served.start()
    yield served, str(sockdir / "s")
    served.stop()


def _closed_by_server(sock: socket.socket) -> bool:
    try:
        return sock.recv(100) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_stalled_garbage_and_huge_clients(server):
    served, path = server
    stalled, garbage, huge = (socket.socket(socket.AF_UNIX) for _ in range(3))
    for sock in (stalled, garbage, huge):
        sock.settimeout(5)
        sock.connect(path)
    try:
        stalled.sendall(b"20:pbs 192")  # half a request, then silence
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
        huge.sendall(b"9999999:")
        started = time.monotonic()
        assert ask(path, b"pbs 192.0.2.1", b"pbs 192.0.2.2") == [b"OK yes", b"OK yes"]
        assert time.monotonic() - started < 0.5  # not held up by the stalled one
        assert _closed_by_server(garbage) and _closed_by_server(huge)
        assert _closed_by_server(stalled)  # after its request deadline
        assert time.monotonic() - started < 4
        # A client that keeps its connection gets answers on it, request after request.
        keep = socket.socket(socket.AF_UNIX)
        keep.settimeout(5)
        keep.connect(path)
        with keep:
            for _ in range(3):
                assert ask(path, b"pbs 192.0.2.9", sock=keep) == [b"OK yes"]
    finally:
        for sock in (stalled, garbage, huge):
            sock.close()
    wait_for(lambda: served.served >= 5, timeout=2, what="requests counted")


def test_trickling_a_request_does_not_extend_its_deadline(server):
    _, path = server
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    with sock:
        started = time.monotonic()
        sock.sendall(b"500:")
        for _ in range(20):  # one byte every 0.1 s, never a whole request
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
        assert _closed_by_server(sock)
        assert time.monotonic() - started < 1.5  # request_timeout 0.5 s from the first byte


def test_a_request_in_pieces_is_answered(server):
    _, path = server
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    with sock:
        for piece in (b"1", b"3:pbs 1", b"92.0.2.1", b","):
            sock.sendall(piece)
        assert sock.recv(100) == encode(b"OK yes")


def test_grant_table_reports_moved_expiries():
    from popbsmtp.grants import GrantTable

    table = GrantTable()
    table.grant("192.0.2.1", 100.0, "dovecot", "r")
    assert table.take_retimed() == {"192.0.2.1": 100.0}  # an addition carries its expiry
    table.take_changes()
    table.grant("192.0.2.1", 150.0, "dovecot", "r")  # extended: no map change ...
    table.grant("192.0.2.1", 120.0, "dovecot", "r")  # (never shortened by grant)
    assert table.take_changes() == (set(), set())
    assert table.take_retimed() == {"192.0.2.1": 150.0}  # ... but a new expiry
    table.set_expiry("192.0.2.1", 110.0, "manual", "add")
    table.grant("192.0.2.2", 90.0, "dovecot", "r")
    table.remove("192.0.2.2")
    assert table.take_retimed() == {"192.0.2.1": 110.0}
    assert table.take_retimed() == {}


def test_a_client_that_does_not_read_is_dropped_others_answered(server):
    _, path = server
    greedy = socket.socket(socket.AF_UNIX)
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    greedy.settimeout(5)
    greedy.connect(path)
    with greedy:
        request = encode(b"pbs 192.0.2.1") * 100
        dropped = False
        try:
            for _ in range(3000):  # up to ~2.7 MB of replies it never reads
                greedy.sendall(request)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            dropped = True
        assert ask(path, b"pbs 192.0.2.2") == [b"OK yes"]  # the others are answered
        assert dropped


def test_the_core_loop_publishes_extensions_and_removals(tmp_path, sockdir):
    """Service → keeper → socketmap: an extended grant answers OK past its first expiry."""
    from support import append, dovecot_login, write_config

    from popbsmtp import config
    from popbsmtp.daemon.service import Service

    clock = Clock()
    clock.now = time.time()
    table = f"socketmap:unix:{sockdir}/sock:pbs"
    settings = config.load(str(write_config(tmp_path, grace="60s", map=table)))
    svc = Service(settings, clock=clock)
    log = tmp_path / "mail.log"
    append(log, dovecot_login("2001:db8::9", clock.now - 50))  # 10 s left
    svc.start()
    try:
        writer = svc.keeper.writer
        assert isinstance(writer, Writer)
        writer.clock = clock
        path = str(sockdir / "sock")
        first = svc.table.get("2001:db8::9").expires
        assert writer.snapshot.expiry("2001:db8::9") == first
        clock.now += 5
        append(log, dovecot_login("2001:db8::9", clock.now))  # extended: no map change
        svc.step()
        assert writer.snapshot.expiry("2001:db8::9") == svc.table.get("2001:db8::9").expires
        clock.now = first + 1  # past the first expiry, before the step expires anything
        assert ask(path, b"pbs 2001:db8::9") == [b"OK OK"]
        assert svc.table.remove("2001:db8::9")
        svc.step()
        assert ask(path, b"pbs 2001:db8::9") == [b"NOTFOUND "]
    finally:
        svc.shutdown()
    assert not (sockdir / "sock").exists()
