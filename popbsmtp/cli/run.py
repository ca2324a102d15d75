"""``popbsmtp run``: build the service (or a socketmap front), detach if asked, run.

The service itself (:mod:`popbsmtp.daemon.service`) knows nothing of the
command line or of signals; this module is where they meet it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Optional, Union

from popbsmtp.cli.args import load_settings
from popbsmtp.config import Settings
from popbsmtp.daemon import logsetup, notify
from popbsmtp.daemon.daemonize import Detached
from popbsmtp.daemon.front import Front
from popbsmtp.daemon.service import Service
from popbsmtp.errors import EXIT_ERROR, EXIT_OK, PopbsmtpError

log = logging.getLogger("popbsmtp")


def cmd_run(args: argparse.Namespace) -> int:
    settings = load_settings(args)
    if args.daemonize and args.foreground:
        raise PopbsmtpError("--daemonize and --foreground exclude each other")
    detached = None
    if args.daemonize:
        from popbsmtp.daemon.daemonize import daemonize

        if args.config:  # the daemon runs in /, and re-reads the file on SIGHUP
            args.config = os.path.abspath(args.config)
        detached = daemonize(args.pidfile)  # returns in the daemon only
    try:
        _run(settings, args, detached)
    except PopbsmtpError as exc:
        if detached is not None:
            detached.failed(exc.exit_code)  # main() prints the message next
        raise
    return EXIT_OK


def _run(settings: Settings, args: argparse.Namespace, detached: Optional[Detached]) -> None:
    logsetup.setup(settings.log_level, target=settings.log_target, daemon=detached is not None)
    service: Union[Service, Front]
    if settings.grants_from != "log":
        if args.dry_run:
            raise PopbsmtpError(f"--dry-run: grants_from = {settings.grants_from} writes nothing")
        service = Front(settings, loader=lambda: load_settings(args))
    else:
        service = Service(settings, dry_run=args.dry_run, loader=lambda: load_settings(args))
    _install_signals(service)

    def on_ready() -> None:
        notify.ready()
        if detached is not None:
            detached.ready()

    service.run(on_ready=on_ready)


def _install_signals(service: Union[Service, Front]) -> None:
    requests = service.requests

    def on_stop(signum: int, _frame: object) -> None:
        if requests.stopping:
            log.warning("second signal %d: exiting at once", signum)
            # State and map are written atomically, so nothing is left torn.
            os._exit(EXIT_ERROR)
        log.info("signal %d: stopping", signum)
        requests.stop()

    def on_hup(_signum: int, _frame: object) -> None:
        requests.reload()  # the loop logs it: no logging inside a handler

    def on_usr1(_signum: int, _frame: object) -> None:
        requests.statistics()  # logged by the loop after its next batch

    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGUSR1, on_usr1)
