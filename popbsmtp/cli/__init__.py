"""Command line: each subcommand is a short function calling library code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from typing import Dict, List, Optional, Union

from popbsmtp import __version__, config
from popbsmtp.cli import admin
from popbsmtp.cli.logtest import iso, open_input, run_test
from popbsmtp.config.values import duration, format_duration
from popbsmtp.daemon import logsetup, notify
from popbsmtp.daemon.front import Front
from popbsmtp.daemon.service import Service, build_matcher
from popbsmtp.errors import EXIT_ERROR, EXIT_OK, PopbsmtpError
from popbsmtp.grants import when
from popbsmtp.parse.addresses import InvalidAddress, parse_networks, postfix_key
from popbsmtp.parse.matcher import Matcher
from popbsmtp.policy import Policy, ipv6_exact_only, ipv6_refusal, policy_for
from popbsmtp.profiles import registry, select
from popbsmtp.sources.choice import JOURNAL, choose_source

log = logging.getLogger("popbsmtp")


def _settings(args: argparse.Namespace) -> config.Settings:
    overrides: Dict[str, str] = {
        "logfile": args.logfile,
        "map": args.map,
        "grace": args.grace,
        "postfix_config_dir": args.postfix_dir,
    }
    overrides.update(getattr(args, "overrides", {}))  # the pop-before-smtp command's
    return config.load(args.config, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.daemonize and args.foreground:
        raise PopbsmtpError("--daemonize and --foreground exclude each other")
    detached = None
    if args.daemonize:
        from popbsmtp.daemon.daemonize import daemonize

        if args.config:  # the daemon runs in /, and re-reads the file on SIGHUP
            args.config = os.path.abspath(args.config)
        detached = daemonize(args.pidfile)  # returns in the daemon only
    logsetup.setup(settings.log_level, target=settings.log_target, daemon=detached is not None)
    service: Union[Service, Front]
    if settings.grants_from != "log":
        if args.dry_run:
            raise PopbsmtpError(f"--dry-run: grants_from = {settings.grants_from} writes nothing")
        service = Front(settings, loader=lambda: _settings(args))
    else:
        service = Service(settings, dry_run=args.dry_run, loader=lambda: _settings(args))
    _install_signals(service)

    def on_ready() -> None:
        notify.ready()
        if detached is not None:
            detached.ready()

    service.run(on_ready=on_ready)
    return EXIT_OK


def _install_signals(service: Union[Service, Front]) -> None:
    def on_stop(signum: int, _frame: object) -> None:
        if service.stopping:
            log.warning("second signal %d: exiting at once", signum)
            # State and map are written atomically, so nothing is left torn.
            os._exit(EXIT_ERROR)
        log.info("signal %d: stopping", signum)
        service.stop()

    def on_hup(_signum: int, _frame: object) -> None:
        service.request_reload()  # the loop logs it: no logging inside a handler

    def on_usr1(_signum: int, _frame: object) -> None:
        service.request_statistics()  # logged by the loop after its next batch

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_usr1)


def _not_a_front(settings: config.Settings, command: str) -> None:
    """A front holds no grants of its own: they are the POP/IMAP hosts' rows."""
    if settings.grants_from != "log":
        raise PopbsmtpError(
            f"{command}: this host is a socketmap front (grants_from = {settings.grants_from});"
            f" run popbsmtp {command} on the POP/IMAP host that granted the client"
        )


def cmd_list(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _not_a_front(settings, "list")
    rows = admin.grants(settings)
    if args.read_map:
        from popbsmtp.doctor import compare_map

        return compare_map(settings, {row[0] for row in rows}, sys.stdout)
    if args.json:
        for ip, expires, profile, rule in rows:
            print(json.dumps({"ip": ip, "expires": iso(expires), "profile": profile, "rule": rule}))
        return EXIT_OK
    now = time.time()
    for ip, expires, profile, rule in rows:
        left = format_duration(max(1, round(expires - now)))
        print(f"{ip:<40} until {when(expires)}  ({left} left)  {profile}/{rule}")
    print(f"{len(rows)} client(s) authorized", file=sys.stderr)
    return EXIT_OK


def _key(text: str) -> str:
    try:
        return postfix_key(text)
    except InvalidAddress as exc:
        raise PopbsmtpError(f"{text!r}: {exc}") from None


def cmd_add(args: argparse.Namespace) -> int:
    ip = _key(args.ip)
    request = {"op": "add", "ip": ip, "grace": args.for_ and duration(args.for_)}
    settings = _settings(args)
    _not_a_front(settings, "add")
    refused = ipv6_refusal(ip, ipv6_exact_only(settings))
    if refused:
        raise PopbsmtpError(f"not added: {refused}")
    who = admin.perform(settings, request)
    print(f"added {request['ip']} ({who})")
    return EXIT_OK


def cmd_remove(args: argparse.Namespace) -> int:
    request = {"op": "remove", "ip": _key(args.ip)}
    settings = _settings(args)
    _not_a_front(settings, "remove")
    if request["ip"] not in {row[0] for row in admin.grants(settings)}:
        print(f"{request['ip']} is not granted; nothing to remove", file=sys.stderr)
        return EXIT_ERROR
    who = admin.perform(settings, request)
    print(f"removed {request['ip']} ({who})")
    return EXIT_OK


def cmd_flush(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _not_a_front(settings, "flush")
    who = admin.perform(settings, {"op": "flush"})
    print(f"flushed ({who})")
    return EXIT_OK


def cmd_withdraw(args: argparse.Namespace) -> int:
    """Empty the table after the daemon stopped (ExecStopPost, init script, package erase)."""
    if args.dry_run:
        return EXIT_OK  # a dry run never wrote the table
    if not os.path.exists(args.config or config.DEFAULT_CONFIG):
        return EXIT_OK  # removed or never configured: no table of ours to empty
    settings = _settings(args)
    held = admin.withdraw(settings)
    if held is None:
        print(
            f"popbsmtp is running ({settings.state_dir}/lock is held): {settings.map} is left to it"
        )
    elif held:
        print(
            f"withdrew {held} client(s) from {settings.map}; the saved grants "
            "return when the daemon starts"
        )
    return EXIT_OK


def cmd_test(args: argparse.Namespace) -> int:
    settings = _settings(args)
    matcher = build_matcher(settings, args.profile)
    ignored = parse_networks(settings.ignore_networks, postconf_dir=settings.postfix_config_dir)
    policy = policy_for(settings, ignored, matcher.profiles)
    now = time.time() if args.now is None else _parse_now(args.now)
    if args.journal is not None and args.file:
        raise PopbsmtpError("give a log file or --journal, not both")
    chosen = None if args.file or args.journal is not None else choose_source(settings, now)
    if args.journal is not None or (chosen is not None and chosen.kind == JOURNAL):
        # --journal DIR; --journal alone (journal_directory, else the system's); or no
        # file given and the daemon's source is the journal
        directory = args.journal or (chosen.path if chosen else "") or settings.journal_directory
        _test_journal(directory, settings, matcher, policy, now, args.json)
    else:
        source = args.file or (chosen.path if chosen else settings.logfile)
        with open_input(source, sys.stdin.buffer) as handle:
            run_test(
                handle,
                matcher,
                policy,
                now=now,
                out=sys.stdout,
                as_json=args.json,
                max_entries=settings.max_entries,
            )
    if args.read_map:
        from popbsmtp.doctor import compare_map

        return compare_map(settings, {row[0] for row in admin.grants(settings)}, sys.stdout)
    return EXIT_OK


def _test_journal(directory: str, settings: config.Settings, matcher: Matcher, policy: Policy,
                  now: float, as_json: bool) -> None:  # fmt: skip
    """Every entry of that journal, with the journal trust the daemon applies."""
    from popbsmtp.cli.journaltest import run_journal_test
    from popbsmtp.sources.journal import read_journal
    from popbsmtp.sources.trust import TrustCheck

    run_journal_test(
        read_journal(directory, max_line_length=settings.max_line_length),
        matcher,
        TrustCheck(matcher.profiles, settings.journal_trust),
        policy,
        now=now,
        out=sys.stdout,
        as_json=as_json,
        max_entries=settings.max_entries,
    )


def _parse_now(text: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(text).timestamp()


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = _settings(args)
    select(settings.profiles)
    networks = parse_networks(settings.ignore_networks, postconf_dir=settings.postfix_config_dir)
    if args.explain:
        for name, value, source in settings.explain():
            print(f"{name} = {value}".ljust(56) + f"  # {source}")
        print(f"# ignore_networks resolves to: {networks.describe}")
        _explain_source(settings)
    else:
        print("configuration OK")
    return EXIT_OK


def _explain_source(settings: config.Settings) -> None:
    """Which log the daemon would follow now, why, and whom it trusts in the journal."""
    from popbsmtp.sources.trust import TrustCheck

    if settings.grants_from != "log":
        print(f"# source: {settings.grants_from}, as a socketmap front (no log is read)")
        return
    chosen = choose_source(settings)
    print(f"# source: {chosen.describe()} ({chosen.reason})")
    if chosen.kind == JOURNAL:
        profiles = select(settings.profiles)
        trust = TrustCheck(profiles, settings.journal_trust)
        for profile in profiles:
            if profile.name not in trust.untrusted_profiles:
                print(f"# journal trust {profile.name}: {trust.describe(profile.name)}")
        if trust.untrusted_profiles:
            names = ", ".join(trust.untrusted_profiles)
            print(f"# no journal trust (grant nothing from the journal): {names}")


def cmd_profiles(args: argparse.Namespace) -> int:
    for profile in registry().values():
        print(f"{profile.name:<12} {profile.description}")
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from popbsmtp import doctor

    return doctor.main(_settings(args), args.fix_hint, sys.stdout, dns=args.dns, probe=args.probe)


def cmd_pgsql_init(args: argparse.Namespace) -> int:
    from popbsmtp.cli import pgsqlinit

    pgsqlinit.run(args.dsn, args.file, args.table, args.value, args.host_name, args.force)
    print(f"created table {args.table}; wrote {args.file}: use map = pgsql:{args.file}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from popbsmtp.cli.demo import run_demo

    return run_demo(args.dir, args.duration)


def cmd_migrate(args: argparse.Namespace) -> int:
    from popbsmtp.cli.migrate import run_migrate

    return run_migrate(args.file, args.write, args.force, sys.stdout, sys.stderr)


def _common() -> argparse.ArgumentParser:
    """Options every configured command takes."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help=f"config file (default {config.DEFAULT_CONFIG}, plus conf.d/*.conf)",
    )
    common.add_argument("--logfile", metavar="PATH", help="mail log to follow")
    common.add_argument("--map", metavar="TYPE:/PATH", help="the Postfix table (map option)")
    common.add_argument("--grace", metavar="DURATION", help="relay time after login, e.g. 30m")
    common.add_argument(
        "--postfix-dir",
        metavar="DIR",
        help="the Postfix instance's config directory (postfix_config_dir; default /etc/postfix)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="popbsmtp",
        description="Let POP3/IMAP users relay through Postfix after logging in.",
        epilog="See popbsmtp(8) and popbsmtp.conf(5).",
    )
    parser.add_argument("--version", action="version", version=f"popbsmtp {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", parents=[common], help="run the daemon")
    run.add_argument(
        "--foreground",
        "-f",
        action="store_true",
        help="do not detach; log to stderr (the default without --daemonize)",
    )
    run.add_argument("--daemonize", "-d", action="store_true", help="detach (SysV init)")
    run.add_argument("--pidfile", default="/run/popbsmtp.pid", help="pidfile with --daemonize")
    run.add_argument("--dry-run", action="store_true", help="match and log, write no map")
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", parents=[common], help="show authorized clients")
    lst.add_argument("--json", action="store_true", help="one JSON object per client")
    lst.add_argument("--read-map", action="store_true", help="read the table back, compare")
    lst.set_defaults(func=cmd_list)

    add = sub.add_parser("add", parents=[common], help="authorize a client by hand")
    add.add_argument("ip")
    add.add_argument("--for", dest="for_", metavar="DURATION", help="instead of grace")
    add.set_defaults(func=cmd_add)
    rem = sub.add_parser("remove", parents=[common], help="withdraw a client")
    rem.add_argument("ip")
    rem.set_defaults(func=cmd_remove)
    sub.add_parser("flush", parents=[common], help="withdraw every client").set_defaults(
        func=cmd_flush
    )

    wdr = sub.add_parser(
        "withdraw",
        parents=[common],
        help="empty the table while no daemon runs (after a stop or crash)",
    )
    # It takes `popbsmtp run`'s options too: units and scripts pass it the same $OPTIONS.
    wdr.add_argument("--dry-run", action="store_true", help="do nothing (as a dry-run daemon)")
    for flag in ("--foreground", "--daemonize"):
        wdr.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    wdr.add_argument("--pidfile", help=argparse.SUPPRESS)
    wdr.set_defaults(func=cmd_withdraw)

    test = sub.add_parser("test", parents=[common], help="show what a log would authorize")
    test.add_argument(
        "file", nargs="?", help="log file, or - for stdin (default: the configured source)"
    )
    test.add_argument(
        "--journal",
        nargs="?",
        const="",
        metavar="DIR",
        help="read the journal (files in DIR, else journal_directory, else the system's)",
    )
    test.add_argument("--profile", "-p", action="append", help="profile(s) to try; auto = all")
    test.add_argument("--json", action="store_true", help="one JSON object per event")
    test.add_argument("--now", help=argparse.SUPPRESS)
    test.add_argument("--read-map", action="store_true", help="then read the table back")
    test.set_defaults(func=cmd_test)

    chk = sub.add_parser("check-config", parents=[common], help="validate the configuration")
    chk.add_argument("--explain", action="store_true", help="show each value and its origin")
    chk.set_defaults(func=cmd_check_config)

    sub.add_parser("profiles", help="list the server profiles").set_defaults(func=cmd_profiles)

    doc = sub.add_parser(
        "doctor", parents=[common], help="check that Postfix really consults the table"
    )
    doc.add_argument("--fix-hint", action="store_true", help="print the postconf fix commands")
    doc.add_argument(
        "--dns",
        nargs="?",
        const="system",
        metavar="SERVER",
        help="also ask DNS whether each blocklist lists everyone (resolv.conf's or SERVER[:PORT])",
    )
    doc.add_argument(
        "--probe",
        action="store_true",
        help="grant a test client for a moment and ask the real smtpd (sends no mail)",
    )
    doc.set_defaults(func=cmd_doctor)

    mig = sub.add_parser("migrate", help="translate a Perl pop-before-smtp-conf.pl")
    mig.add_argument("file", help="the Perl config, e.g. /etc/pop-before-smtp-conf.pl")
    mig.add_argument(
        "--write",
        nargs="?",
        const=config.DEFAULT_CONFIG,
        metavar="DEST",
        help=f"write it to DEST (default {config.DEFAULT_CONFIG}) instead of printing it",
    )
    mig.add_argument("--force", action="store_true", help="with --write: replace DEST")
    mig.set_defaults(func=cmd_migrate)

    pg = sub.add_parser("pgsql-init", help="create the shared PostgreSQL table and its file")
    pg.add_argument("--dsn", required=True, help="libpq connection string or URI")
    pg.add_argument("file", help="pgsql_table(5) file to write (map = pgsql:FILE)")
    pg.add_argument("--table", default="popbsmtp_grants", help="table name")
    pg.add_argument("--value", default="OK", help="what the query answers")
    pg.add_argument("--host-name", help="the rows' host (default: this host's name)")
    pg.add_argument("--force", action="store_true", help="overwrite FILE")
    pg.set_defaults(func=cmd_pgsql_init)

    demo = sub.add_parser("demo", help="run on a demo log and lmdb map in ./popbsmtp-demo")
    demo.add_argument("--dir", default="popbsmtp-demo")
    demo.add_argument("--duration", type=float, default=0, help="stop after N seconds")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Optional[List[str]] = None, overrides: Optional[Dict[str, str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.overrides = overrides or {}
    try:
        return int(args.func(args))
    except PopbsmtpError as exc:
        print(f"popbsmtp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:
        print(f"popbsmtp: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        return EXIT_OK
