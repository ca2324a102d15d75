"""The options every configured command takes, and the settings they make.

Command-line values override the config file's; nothing here runs a command.
"""

from __future__ import annotations

import argparse
from typing import Dict

from popbsmtp import config


def load_settings(args: argparse.Namespace) -> config.Settings:
    overrides: Dict[str, str] = {
        "logfile": args.logfile,
        "map": args.map,
        "grace": args.grace,
        "postfix_config_dir": args.postfix_dir,
    }
    overrides.update(getattr(args, "overrides", {}))  # the pop-before-smtp command's
    return config.load(args.config, overrides)


def common_options() -> argparse.ArgumentParser:
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
