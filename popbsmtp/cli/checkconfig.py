"""``popbsmtp check-config`` and ``popbsmtp profiles``: what the settings say, and why.

``--explain`` prints every option with where its value came from, what
``ignore_networks`` resolves to and which log the daemon would follow.
"""

from __future__ import annotations

import argparse

from popbsmtp import config
from popbsmtp.cli.args import load_settings
from popbsmtp.errors import EXIT_OK
from popbsmtp.parse.addresses import parse_networks
from popbsmtp.profiles import registry, select
from popbsmtp.sources.choice import JOURNAL, choose_source


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_settings(args)
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
