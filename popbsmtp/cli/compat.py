"""``pop-before-smtp``: the Perl tool's command line, run by popbsmtp.

Init scripts, cron lines and habits call ``pop-before-smtp --daemon=PIDFILE
--watchlog=… --dbfile=…``.  This command takes those options and runs the
popbsmtp action that does the same: ``--daemon`` is ``popbsmtp run
--daemonize``, ``--list`` is ``popbsmtp list``, ``--dumpconfig`` is
``check-config --explain``, ``--nowrite --reprocess`` is ``popbsmtp test``.
``--config FILE`` (a Perl config) is translated on the fly by the migrate
code, over popbsmtp's own config file (which keeps what the Perl file has no
word for, such as state_dir).  An option popbsmtp cannot honour exits 2 with
the popbsmtp way of doing it, rather than doing something else silently.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Tuple

from popbsmtp import __version__
from popbsmtp.cli.migrate import load_perl, translate
from popbsmtp.errors import EXIT_OK, EXIT_USAGE, PopbsmtpError


class Unsupported(Exception):
    """An option the Perl tool had and popbsmtp does another way."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pop-before-smtp",
        description="The Perl pop-before-smtp's options, run by popbsmtp (see popbsmtp(8)).",
    )
    p.add_argument("--config", metavar="FILE", help="a Perl pop-before-smtp-conf.pl, translated")
    p.add_argument("--write", dest="write", action="store_true", default=True)
    p.add_argument("--nowrite", dest="write", action="store_false", help="write no table")
    p.add_argument("--debug", dest="debug", action="store_true", help="log debug to stdout")
    p.add_argument("--nodebug", dest="debug", action="store_false")
    p.add_argument("--flock", "--noflock", dest="flock", action="store_true", help="no effect")
    p.add_argument("--reprocess", action="store_true", help="with --nowrite: popbsmtp test")
    p.add_argument("--noreprocess", dest="reprocess", action="store_false")
    p.add_argument("--watchlog", "--logfile", metavar="FILE", help="the mail log")
    p.add_argument("--dbfile", metavar="FILE", help="the table, without .db (hash: type)")
    p.add_argument("--logto", metavar="FILE", help="our own log: a file, or - for stdout")
    p.add_argument("--grace", metavar="SECONDS", type=int, help="relay time after a login")
    p.add_argument(
        "--daemon", metavar="PIDFILE", nargs="?", const="/run/popbsmtp.pid", help="detach"
    )
    p.add_argument("--version", action="store_true", help="print the version")
    p.add_argument("--dumpconfig", action="store_true", help="check-config --explain")
    p.add_argument("--list", action="store_true", help="popbsmtp list")
    p.add_argument(
        "--popbsmtp-config",
        metavar="FILE",
        help="popbsmtp's own config under the Perl one (default /etc/popbsmtp/popbsmtp.conf)",
    )
    p.add_argument("--postfix-dir", metavar="DIR", help="popbsmtp's --postfix-dir")
    return p


def plan(opts: argparse.Namespace) -> Tuple[List[List[str]], Dict[str, str], List[str]]:
    """The popbsmtp command lines to run, the settings they get, and notes."""
    overrides: Dict[str, str] = {}
    notes: List[str] = []
    flags: Dict[str, str] = {}
    if opts.watchlog == "-":
        raise Unsupported(
            "--watchlog=- (the log on standard input): popbsmtp follows a file; point"
            " --watchlog at the file syslog writes, or replay a log with 'popbsmtp test -'"
        )
    if opts.grace is not None and opts.grace <= 0:
        raise Unsupported("--grace must be a positive number of seconds")
    for name in ("watchlog", "dbfile"):
        if getattr(opts, name):
            flags[name] = os.path.abspath(getattr(opts, name))
    if opts.grace is not None:
        flags["grace"] = str(opts.grace)
    if opts.config:
        migration = translate(load_perl(opts.config), opts.config, flags)
        overrides.update({key: value for key, value, _ in migration.settings})
        notes += [f"not translated: {item}" for item in migration.untranslated]
    else:  # the Perl tool's --dbfile always meant its Berkeley DB hash table
        if "watchlog" in flags:
            overrides["logfile"] = flags["watchlog"]
        if "dbfile" in flags:
            overrides["map"] = f"hash:{flags['dbfile']}"
        if "grace" in flags:
            overrides["grace"] = f"{flags['grace']}s"
    if opts.debug:
        overrides.update(log_level="debug", log_target="stderr")
    if opts.logto:
        overrides["log_target"] = "stderr" if opts.logto == "-" else os.path.abspath(opts.logto)
    common: List[str] = []
    base = opts.popbsmtp_config
    if base:
        common += ["--config", base]
    if opts.postfix_dir:
        common += ["--postfix-dir", opts.postfix_dir]
    if opts.version or opts.dumpconfig or opts.list:
        steps = []
        if opts.dumpconfig:
            steps.append(["check-config", "--explain", *common])
        if opts.list:
            steps.append(["list", *common])
        return steps, overrides, notes
    if opts.reprocess and opts.write:
        raise Unsupported(
            "--reprocess with writing: popbsmtp keeps its own read position and grants"
            " across restarts; see what a whole log grants with 'popbsmtp test LOG'"
            " (pop-before-smtp --nowrite --reprocess), grant by hand with 'popbsmtp add IP'"
        )
    if opts.reprocess:
        return [["test", *common]], overrides, notes
    run = ["run"]
    if opts.daemon is not None:
        run += ["--daemonize", "--pidfile", os.path.abspath(opts.daemon)]
    else:
        run += ["--foreground"]
    if not opts.write:
        run.append("--dry-run")
    return [run + common], overrides, notes


def main(argv: Optional[List[str]] = None) -> int:
    from popbsmtp import cli

    opts = build_parser().parse_args(argv)
    try:
        steps, overrides, notes = plan(opts)
    except Unsupported as exc:
        print(f"pop-before-smtp: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except PopbsmtpError as exc:
        print(f"pop-before-smtp: error: {exc}", file=sys.stderr)
        return exc.exit_code
    if opts.version:
        print(f"version: popbsmtp {__version__} (pop-before-smtp compatibility command)")
    if opts.config and (opts.debug or opts.dumpconfig):
        print(f"config file: {opts.config} (translated by popbsmtp migrate)")
        for note in notes:
            print(f"pop-before-smtp: {note}", file=sys.stderr)
    status = EXIT_OK
    for step in steps:
        if opts.debug:
            shown = " ".join(step + [f"{k}={v}" for k, v in sorted(overrides.items())])
            print(f"pop-before-smtp: running popbsmtp {shown}", file=sys.stderr)
        sys.stdout.flush()
        status = cli.main(step, overrides=overrides) or status
    return status


if __name__ == "__main__":
    sys.exit(main())
