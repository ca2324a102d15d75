"""dovecot.conf for the test harness, in Dovecot 2.3's syntax and in 2.4's.

Both say the same thing: POP3 and IMAP on 127.0.0.1 and ::1, STARTTLS offered with a
throw-away certificate but plaintext allowed, PLAIN/LOGIN/APOP/CRAM-MD5, a passwd-file
of test users, mail as ``nobody`` in a chroot, no auth penalty or failure delay (tests
stay fast).  2.4 renamed most of these settings and made the version lines mandatory;
nothing else differs.  Writes no file itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Optional


class Conf(NamedTuple):
    """What either syntax needs; paths are absolute and seen the same by the server."""

    run: Path  # base_dir
    state: Path
    mail: Path  # mail_chroot
    passwd: Path
    uid: int
    gid: int
    pop3_port: int
    imap_port: int
    log: str  # "syslog" or a file
    username_chars: Optional[str]  # "" allows any name, None keeps Dovecot's default
    auth_verbose: bool
    cert: Path
    key: Path


# The anvil listener is off to disable the per-IP auth penalty (up to 15 s per failed
# login from one IP); auth_failure_delay = 0 likewise keeps tests fast.  auth runs as
# root because it reads the passwd-file from pytest's 0700 tree.  Dovecot refuses mail
# access as root, so mail processes run as nobody inside mail_chroot: pytest's 0700
# temp directories are not traversable by nobody, but the chroot is entered while root.
_SERVICES = """\
service auth {{
  user = root
}}
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {c.imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {c.pop3_port}
  }}
  inet_listener pop3s {{
    port = 0
  }}
}}
"""


def _common(c: Conf) -> str:
    chars = "" if c.username_chars is None else f"auth_username_chars = {c.username_chars}\n"
    return (
        f"base_dir = {c.run}\nstate_dir = {c.state}\nprotocols = pop3 imap\n"
        "listen = 127.0.0.1, ::1\nauth_mechanisms = plain login apop cram-md5\n"
        f"auth_failure_delay = 0\nauth_verbose = {'yes' if c.auth_verbose else 'no'}\n"
        f"{chars}log_path = {c.log}\nmail_uid = {c.uid}\nmail_gid = {c.gid}\n"
        f"mail_chroot = {c.mail}\n"
    )


def conf_23(c: Conf) -> str:
    """Dovecot 2.3's dovecot.conf."""
    return (
        _common(c)
        + f"ssl = yes\nssl_cert = <{c.cert}\nssl_key = <{c.key}\n"
        + "disable_plaintext_auth = no\nmail_location = maildir:~/Maildir\n"
        + f"passdb {{\n  driver = passwd-file\n  args = {c.passwd}\n}}\n"
        + f"userdb {{\n  driver = passwd-file\n  args = {c.passwd}\n}}\n"
        + _SERVICES.format(c=c)
    )


def conf_24(c: Conf) -> str:
    """Dovecot 2.4's dovecot.conf: the version lines first, then renamed settings."""
    return (
        "dovecot_config_version = 2.4.0\ndovecot_storage_version = 2.4.0\n"
        + _common(c)
        + f"ssl = yes\nssl_server_cert_file = {c.cert}\nssl_server_key_file = {c.key}\n"
        + "auth_allow_cleartext = yes\nmail_driver = maildir\nmail_path = ~/Maildir\n"
        + f"passdb passwd-file {{\n  passwd_file_path = {c.passwd}\n}}\n"
        + f"userdb passwd-file {{\n  passwd_file_path = {c.passwd}\n}}\n"
        + _SERVICES.format(c=c)
    )
