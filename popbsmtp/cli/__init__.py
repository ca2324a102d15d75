"""Command line: the parser, and dispatch to the module of each command family.

``run`` (:mod:`.run`), the grant commands ``list/add/remove/flush/withdraw``
(:mod:`.admin`), ``test`` (:mod:`.logtest`), ``check-config`` and
``profiles`` (:mod:`.checkconfig`), ``demo``, ``migrate``, ``pgsql-init`` and
``doctor``; each is a short function calling library code.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Dict, List, Optional

from popbsmtp import __version__, config
from popbsmtp.cli.admin import cmd_add, cmd_flush, cmd_list, cmd_remove, cmd_withdraw
from popbsmtp.cli.args import common_options, load_settings
from popbsmtp.cli.checkconfig import cmd_check_config, cmd_profiles
from popbsmtp.cli.logtest import cmd_test
from popbsmtp.cli.run import cmd_run
from popbsmtp.errors import EXIT_ERROR, EXIT_OK, PopbsmtpError

log = logging.getLogger("popbsmtp")


def cmd_doctor(args: argparse.Namespace) -> int:
    from popbsmtp import doctor

    return doctor.main(
        load_settings(args), args.fix_hint, sys.stdout, dns=args.dns, probe=args.probe
    )


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


def build_parser() -> argparse.ArgumentParser:
    common = common_options()
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
