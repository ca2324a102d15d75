"""The one option schema, and reading it from files with exact provenance.

Every option has a type, a default and help text; the schema drives parsing,
validation, the shipped commented config file and ``check-config --explain``.
Files are INI (stdlib configparser), section ``[popbsmtp]``: the main file,
then ``conf.d/*.conf`` beside it in lexical order, then command-line flags.
Every error names the file, line and key.  Nothing here touches the network,
the log or the map; ``mynetworks`` is resolved when the daemon starts.
"""

from __future__ import annotations

import configparser
import glob
import os
import re
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

from popbsmtp import postfix
from popbsmtp.config import values as kinds
from popbsmtp.config.distros import KNOWN_DISTROS, Distro, detect, distro_name, named_distro
from popbsmtp.errors import ConfigError
from popbsmtp.maps import MapSpec

if TYPE_CHECKING:
    from popbsmtp.profiles import JournalTrust

DEFAULT_CONFIG = "/etc/popbsmtp/popbsmtp.conf"
SECTION = "popbsmtp"
Default = Union[str, Callable[[Distro, Dict[str, Any]], Tuple[str, str]]]


@dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str], Any]
    default: Default
    help: str
    # Shown in the shipped config when ``default`` is computed at run time.
    example: str = ""


def _default_map(_: Distro, values: Dict[str, Any]) -> Tuple[str, str]:
    postfix_dir = values["postfix_config_dir"]
    try:
        kind = postfix.parameter("default_database_type", postfix_dir) or "lmdb"
    except postfix.PostfixError:  # no (configured) Postfix here yet: lmdb is the forward path
        return "lmdb:/etc/postfix/pop-before-smtp", f"no main.cf in {postfix_dir}: lmdb"
    return f"{kind}:/etc/postfix/pop-before-smtp", f"postconf default_database_type = {kind}"


SCHEMA: Tuple[Option, ...] = (
    Option(
        "distro",
        distro_name,
        "auto",
        "Whose defaults to use for logfile: auto (from /etc/os-release), or one of "
        + ", ".join(KNOWN_DISTROS)
        + ".",
    ),
    Option(
        "source",
        kinds.choice("auto", "file", "journal"),
        "auto",
        "Where logins are read: file (logfile), journal (the systemd journal, read with"
        " journalctl) or auto: an explicitly set logfile, else the distribution's mail log"
        " when it is being written (non-empty, modified within a day), else the journal."
        "  check-config --explain says which was chosen and why.",
    ),
    Option(
        "logfile",
        kinds.path_or_auto,
        "auto",
        "The mail log to follow, or auto: the distribution's (/etc/os-release):"
        " /var/log/maillog on RHEL, Alma, Rocky, Fedora; /var/log/mail.log on Debian,"
        " Ubuntu; /var/log/mail on SUSE.  Debian 12+ and Fedora install no syslog daemon"
        " by default, so there is none and source = auto reads the journal.",
    ),
    Option(
        "journal_directory",
        kinds.optional_path,
        "",
        "Read the journal files in this directory (journalctl --directory) instead of the"
        " system journal; empty for the system journal.",
    ),
    Option(
        "journal_trust",
        kinds.journal_trust,
        "",
        "Which journal entries may speak for a server, per profile, replacing that"
        " profile's defaults key by key: PROFILE:uid=U|U,comm=C|C,exe=/PATH,unit=NAME|*"
        " separated by ';', e.g. dovecot:uid=0,comm=log|dovecot.  Only entries whose"
        " journald fields (_UID, _COMM or _EXE, _SYSTEMD_UNIT when present) match grant;"
        " the others are counted and logged.  Empty: every profile's defaults.",
    ),
    Option(
        "log_format",
        kinds.log_format,
        "auto",
        "Log line format: auto (the syslog formats, decided for each line), rfc3164"
        " (Nov 27 04:48:08 host prog: ...), rfc3339, rfc5424, or a server's own log file:"
        " dovecot (Dovecot's log_path), qpopper (its trace file) or apple; auto never reads"
        " those three.",
    ),
    Option(
        "profiles",
        kinds.word_list,
        "auto",
        "POP/IMAP server profiles (comma list, see 'popbsmtp profiles'), or auto for all.",
    ),
    Option(
        "postfix_config_dir",
        kinds.absolute_path,
        "/etc/postfix",
        "The configuration directory of the Postfix instance whose smtpd reads the table"
        " (postmulti -l lists them): every postconf and postmap popbsmtp runs is given"
        " -c with it.  It must hold a main.cf.",
    ),
    Option(
        "map",
        kinds.map_spec,
        _default_map,
        "The Postfix table, TYPE:/path, as written in check_client_access.  The default type"
        " is Postfix's default_database_type (postconf), lmdb without Postfix.  The daemon"
        " creates the table, so it needs write access to the directory: running as the"
        " packaged user popbsmtp, use a directory it owns, e.g."
        " lmdb:/etc/postfix/popbsmtp/clients (see docs/install.md).  Or"
        " socketmap:unix:/run/popbsmtp/socketmap:popbsmtp (or socketmap:inet:127.0.0.1:PORT:NAME):"
        " the daemon answers Postfix's lookups itself, exactly, expiring at lookup time"
        " (docs/maps.md).",
        "lmdb:/etc/postfix/pop-before-smtp",
    ),
    Option(
        "grants_from",
        kinds.grants_from,
        "log",
        "Where the grants come from: log (the daemon follows logfile or the journal and"
        " decides, as on a POP/IMAP host), or pgsql:/etc/postfix/popbsmtp-pgsql.cf on an SMTP"
        " host: the daemon is then a socketmap front that mirrors the unexpired rows every"
        " POP/IMAP host writes to that shared table (map = pgsql: there) and answers smtpd"
        " from the mirror; map must be socketmap:... and the table needs the trigger"
        " popbsmtp pgsql-init creates (docs/several-hosts.md).  A front never writes the table.",
    ),
    Option(
        "stale_after",
        kinds.bounded_duration(1.0, 60.0),
        "5s",
        "With grants_from = pgsql:...: how long the front may answer from its mirror after"
        " the database last answered it (1s to 60s).  Past that it cannot see withdrawals,"
        " so every lookup gets TEMP (smtpd: 4xx, the client retries) until the database is"
        " back and read again.",
    ),
    Option(
        "map_writer",
        kinds.choice("auto", "direct", "rebuild"),
        "auto",
        "How the table is written: direct (lmdb, in place), rebuild (postmap, then rename;"
        " hash, btree, cdb, dbm, lmdb) or auto (direct where possible).",
    ),
    Option(
        "map_value", kinds.map_value, "OK", "The value written for each client (OK, RELAY, ...)."
    ),
    Option("map_mode", kinds.file_mode, "0644", "File mode of the table (Postfix must read it)."),
    Option("map_owner", kinds.text, "", "Owner of the table file (empty: the daemon's user)."),
    Option(
        "map_group",
        kinds.text,
        "",
        "Group of the table file (empty: the daemon's group); for socketmap: the socket's"
        " group, which Postfix must be in (empty: postfix).",
    ),
    Option(
        "ipv6_scope",
        kinds.choice("exact", "neighbours"),
        "exact",
        "exact: an IPv6 client is entered only where its grant covers that one address:"
        " always in a socketmap: table and in a pgsql: table whose query is guarded"
        " (pgsql-init writes it so); in a table Postfix also searches by partial keys"
        " (lmdb, hash, btree, cdb, an unguarded pgsql) only when its address has all"
        " eight groups written out, other IPv6 logins are refused and logged.  neighbours:"
        " enter them anyway; a grant of P::S then also lets every address written P::S:..."
        " relay.",
    ),
    Option(
        "grace",
        kinds.duration,
        "30m",
        "How long a client may relay after its login (s, m, h, d, e.g. 30m; at most 30d).",
    ),
    Option(
        "max_session",
        kinds.duration,
        "24h",
        "For servers that log logouts (Dovecot, Courier, UW, Cyrus) a client stays"
        " authorized while its session is open and grace starts at the logout; a session"
        " whose logout is never logged is held at most this long after its login.",
    ),
    Option(
        "ignore_networks",
        kinds.text,
        "mynetworks",
        "Clients never entered: CIDRs, /files, 'mynetworks' (asks postconf) or 'none'.",
    ),
    Option(
        "max_entries",
        kinds.positive_int,
        "100000",
        "Most clients in the table; new logins are refused (and logged) when full.",
    ),
    Option(
        "max_line_length", kinds.positive_int, "8192", "Longer log lines are counted and skipped."
    ),
    Option(
        "state_dir",
        kinds.absolute_path,
        "/var/lib/popbsmtp",
        "Where grants and the log position are kept.",
    ),
    Option(
        "poll_interval",
        kinds.duration,
        "2s",
        "Safety poll of the log and the map, in case a file event is lost.",
    ),
    Option("log_level", kinds.log_level, "info", "debug, info, warning or error."),
    Option(
        "log_target",
        kinds.log_target,
        "auto",
        "Where the daemon logs: syslog (facility mail, ident popbsmtp), stderr, an absolute"
        " file path (re-opened on SIGHUP), or auto: syslog with --daemonize, else stderr.",
    ),
)
BY_NAME = {opt.name: opt for opt in SCHEMA}


@dataclass(frozen=True)
class Settings:
    """The effective configuration, typed and frozen: one field per option.

    ``sources`` and ``raw`` say where each value came from and how it was
    written (``check-config --explain``).  A reload builds a new Settings
    (:meth:`reloaded`); nothing ever changes one in place, so every part of
    the daemon that holds one sees a consistent whole.
    """

    distro: str
    source: str
    logfile: str
    journal_directory: str
    journal_trust: Mapping[str, JournalTrust]
    log_format: str
    profiles: List[str]
    postfix_config_dir: str
    map: MapSpec
    grants_from: str
    stale_after: float
    map_writer: str
    map_value: str
    map_mode: int
    map_owner: str
    map_group: str
    ipv6_scope: str
    grace: float
    max_session: float
    ignore_networks: str
    max_entries: int
    max_line_length: int
    state_dir: str
    poll_interval: float
    log_level: str
    log_target: str
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    raw: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def explain(self) -> List[Tuple[str, str, str]]:
        return [(o.name, self.raw[o.name], self.sources[o.name]) for o in SCHEMA]

    def changed(self, new: Settings, applied: Tuple[str, ...] = ()) -> List[str]:
        """The options whose text differs in ``new``, other than ``applied``."""
        return [n for n in new.raw if new.raw[n] != self.raw.get(n) and n not in applied]

    def reloaded(self, new: Settings, names: Tuple[str, ...]) -> Settings:
        """These settings with the options ``names`` (and their origins) taken from ``new``."""
        sources = {**self.sources, **{n: new.sources[n] for n in names}}
        raw = {**self.raw, **{n: new.raw[n] for n in names}}
        changes: Dict[str, Any] = {n: getattr(new, n) for n in names}
        return replace(
            self, **changes, sources=MappingProxyType(sources), raw=MappingProxyType(raw)
        )


def config_files(main: str) -> List[str]:
    directory = os.path.join(os.path.dirname(main), "conf.d")
    return [main, *sorted(glob.glob(os.path.join(glob.escape(directory), "*.conf")))]


def load(
    path: Optional[str] = None,
    overrides: Optional[Dict[str, str]] = None,
    distro: Optional[Distro] = None,
) -> Settings:
    """Read the config; ``path=None`` means the default file, which may be absent."""
    main = path or DEFAULT_CONFIG
    if path is not None and not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    raw: Dict[str, Tuple[str, str]] = {}
    for name in config_files(main):
        if os.path.exists(name):
            raw.update(_read(name))
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = (value, "command line")
    return _resolve(raw, distro or detect())


def _read(path: str) -> Dict[str, Tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="\0")
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        parser.read_string(text, source=path)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file: {exc}", source=path) from None
    except configparser.Error as exc:
        line = getattr(exc, "lineno", None)
        where = f"{path}:{line}" if line else path
        raise ConfigError(_first_line(exc), source=where) from None
    lines = _key_lines(text)
    found: Dict[str, Tuple[str, str]] = {}
    for section in parser.sections():
        if section != SECTION:
            line = lines.get((section, None), 0)
            raise ConfigError(
                f"unknown section [{section}] (use [{SECTION}])", source=f"{path}:{line}"
            )
        for key, value in parser.items(section):
            where = f"{path}:{lines.get((section, key), 0)}"
            if key not in BY_NAME:
                raise ConfigError(
                    f"unknown key; known keys: {', '.join(BY_NAME)}", key=key, source=where
                )
            found[key] = (value, where)
    return found


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _key_lines(text: str) -> Dict[Tuple[str, Optional[str]], int]:
    lines: Dict[Tuple[str, Optional[str]], int] = {}
    section = ""
    for number, line in enumerate(text.splitlines(), 1):
        head = re.match(r"\s*\[([^\]]+)\]", line)
        if head:
            section = head.group(1).strip()
            lines.setdefault((section, None), number)
            continue
        key = re.match(r"([^\s=:#;][^=:]*?)\s*[=:]", line)
        if key:
            lines[(section, key.group(1).strip().lower())] = number
    return lines


def _resolve(raw: Dict[str, Tuple[str, str]], distro: Distro) -> Settings:
    if "distro" in raw and raw["distro"][0].strip() != "auto":
        try:  # explicit: overrides detection, and decides the distro defaults below
            distro = named_distro(raw["distro"][0].strip())
        except ValueError as exc:
            raise ConfigError(str(exc), key="distro", source=raw["distro"][1]) from None
    values: Dict[str, Any] = {}
    sources: Dict[str, str] = {}
    texts: Dict[str, str] = {}
    for opt in SCHEMA:
        if opt.name in raw:
            text, source = raw[opt.name]
        elif callable(opt.default):
            text, source = opt.default(distro, values)
        else:
            text, source = opt.default, "default"
        try:
            values[opt.name] = opt.parse(text)
        except ValueError as exc:
            raise ConfigError(str(exc), key=opt.name, source=source) from None
        sources[opt.name], texts[opt.name] = source, text.strip()
    _check_front(values, sources)
    return Settings(**values, sources=MappingProxyType(sources), raw=MappingProxyType(texts))


def _check_front(values: Dict[str, Any], sources: Dict[str, str]) -> None:
    """A front answers from its mirror over a socket: no other table type can do that."""
    if values["grants_from"] != "log" and values["map"].type != "socketmap":
        raise ConfigError(
            f"grants_from = {values['grants_from']} makes the daemon a socketmap front: "
            f"set map = socketmap:unix:/run/popbsmtp/socketmap:popbsmtp (map is {values['map']})",
            key="grants_from",
            source=sources["grants_from"],
        )


#: What the packages (RPM, .deb) set in the popbsmtp.conf they ship: a table in
#: the directory they create for the service user, so that the first start
#: works (the built-in default lies in /etc/postfix, which that user cannot write).
PACKAGED: Dict[str, str] = {"map": "lmdb:/etc/postfix/popbsmtp/clients"}


def render_default_config(packaged: Optional[Dict[str, str]] = None) -> str:
    """The shipped ``popbsmtp.conf``: every option, commented, at its default.

    ``packaged`` (default :data:`PACKAGED`) are set for real after their
    commented default, each marked as the package's choice.
    """
    import textwrap

    packaged = PACKAGED if packaged is None else packaged

    out = [
        "# popbsmtp configuration.  Every option is shown commented out at its",
        "# default; uncomment and change what you need.  Files in conf.d/*.conf",
        "# beside this one are read after it.  See popbsmtp.conf(5), and",
        "# 'popbsmtp check-config --explain' for the values in effect.",
        "",
        f"[{SECTION}]",
    ]
    for opt in SCHEMA:
        shown = opt.default if isinstance(opt.default, str) else opt.example
        out += ["", *textwrap.wrap(opt.help, 76, initial_indent="# ", subsequent_indent="# ")]
        out.append(f"#{opt.name} = {shown}".rstrip())
        if opt.name in packaged:
            out += ["# Set by the package (its directory is made for the service user):"]
            out.append(f"{opt.name} = {packaged[opt.name]}")
    return "\n".join(out) + "\n"
