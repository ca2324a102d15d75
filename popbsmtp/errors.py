"""Error classes and the exit codes they map to.

Every error an administrator can cause (bad config, unsupported map type,
unsafe directory) is a :class:`PopbsmtpError` with a message that says what
to fix; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Optional

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CONFIG = 78  # EX_CONFIG from sysexits.h, what init systems expect


class PopbsmtpError(Exception):
    """An error the administrator can act on; ``str()`` is the whole message."""

    exit_code = EXIT_ERROR


class ConfigError(PopbsmtpError):
    """A configuration value is wrong; names the file, line and key."""

    exit_code = EXIT_CONFIG

    def __init__(
        self,
        message: str,
        *,
        key: Optional[str] = None,
        source: Optional[str] = None,
    ) -> None:
        self.key = key
        self.source = source
        where = ""
        if source:
            where = f"{source}: "
        if key:
            where += f"{key}: "
        super().__init__(where + message)


class StartupError(PopbsmtpError):
    """The daemon cannot start (missing tool, unsafe path, locked state)."""


class SetupError(StartupError):
    """A setting or a permission keeps the daemon from starting: exit 78.

    An init system that restarts a failed service (systemd's
    ``Restart=on-failure``) would otherwise retry forever; the unit's
    ``RestartPreventExitStatus=78`` stops it until the administrator acts.
    The message is one line naming the file or setting and the fix.
    """

    exit_code = EXIT_CONFIG


class MapError(PopbsmtpError):
    """Writing the Postfix table failed; the daemon retries, tools report it."""
