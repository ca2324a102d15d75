"""``popbsmtp migrate``: a Perl pop-before-smtp config, as a popbsmtp.conf.

The Perl file is read, never run (:mod:`popbsmtp.cli.perlconf`).  Values are
carried over where popbsmtp has the same notion; a login regex is never
carried over: the server it was written for is recognised from the program
names it matches and popbsmtp's own profile for that server replaces it.
Everything else is listed with the reason it has no equivalent, so the
admin decides instead of the tool guessing.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, TextIO, Tuple

from popbsmtp import config
from popbsmtp.cli.perlconf import CodeRef, PerlConfig, PerlSyntax, read
from popbsmtp.config.values import format_duration
from popbsmtp.errors import EXIT_OK, ConfigError, PopbsmtpError

At = Callable[[str], str]  # "$name" -> "$name (file:line)"
PERL_DEFAULT_CONFIG = "/etc/pop-before-smtp-conf.pl"
PERL_DEFAULT_DBFILE = "/etc/postfix/pop-before-smtp"

# Program names a pattern matches -> (profile, log_format or "").  Checked in
# order on the pattern with its backslashes removed; the own-log shapes first.
_SERVERS: Tuple[Tuple[Tuple[str, ...], str, str], ...] = (
    (("^dovecot: [LOGTIME]",), "dovecot", "dovecot"),
    (("^(?:imap|pop3)-login: [LOGTIME]", "^imap-login: [LOGTIME]"), "dovecot1", "dovecot"),
    (("dovecot",), "dovecot", ""),
    (("IMAP User", "log on successful"), "apple", "apple"),
    (("[LOGTIME] [popper]", "[LOGTIME] [d+] Stats"), "qpopper", "qpopper"),
    (("popper",), "qpopper", ""),
    (("gnu-pop3d",), "gnu-pop3d", ""),
    (("vchkpw", "vpopmail"), "vpopmail", ""),
    (("cucipop",), "cucipop", ""),
    (("vm-pop3d",), "vm-pop3d", ""),
    (("spop3d",), "spop3d", ""),
    (("popa3d",), "popa3d", ""),
    (("perdition",), "perdition", ""),
    (("teapop",), "teapop", ""),
    (("LOGIN, user=", "couriertcp"), "courier", ""),
    (("cyrus", "User logged in"), "cyrus", ""),
    (("ipop3", "imapd", "imaps?d"), "uw", ""),
)

# The Perl tool's table back-ends, by the tie function the config selects.
_TIES = {"": "hash", "tie_BerkeleyDB": "hash", "tie_NDBM": "dbm", "tie_CDB": "cdb"}
_NOT_POSTFIX = {
    "tie_tcprules": "qmail tcprules",
    "tie_courier": "Courier's smtpaccess",
    "tie_sendmail": "Sendmail's popauth map",
}


# The sample's own blocks, which this translation covers: the log file search
# (a distribution default here), multi-line matching (the $PID_pat check) and
# bare local declarations.
_KNOWN_BLOCKS = re.compile(
    r"if \(!-f \$file_tail\{'name'\}\)|if \(defined\(\$PID_pat\)|my\s*(?:\$\w+|\([^)]*\));$"
)


@dataclass
class Migration:
    source: str
    settings: List[Tuple[str, str, str]] = field(default_factory=list)  # key, value, from
    untranslated: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def set(self, key: str, value: str, origin: str) -> None:
        try:
            config.BY_NAME[key].parse(value)
        except ValueError as exc:
            self.untranslated.append(f"{origin}: {value!r} is not a valid {key} ({exc})")
            return
        self.settings = [s for s in self.settings if s[0] != key] + [(key, value, origin)]

    def value(self, key: str) -> Optional[str]:
        return next((v for k, v, _ in self.settings if k == key), None)


def identify(pattern: str) -> Optional[Tuple[str, str]]:
    """The (profile, log_format) a Perl login pattern was written for, if known."""
    plain = pattern.replace("\\", "")
    for needles, profile, log_format in _SERVERS:
        if any(n in plain for n in needles):
            return profile, log_format
    return None


def load_perl(path: str) -> PerlConfig:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            text = handle.read(2 << 20)
        return read(text)
    except OSError as exc:
        raise ConfigError(f"cannot read the Perl config: {exc.strerror}", source=path) from None
    except PerlSyntax as exc:
        raise ConfigError(str(exc), source=path) from None


def translate(conf: PerlConfig, source: str, flags: Optional[Dict[str, str]] = None) -> Migration:
    """``flags``: the Perl tool's command-line values (watchlog, dbfile, grace)."""
    flags = flags or {}
    m = Migration(source)

    def at(name: str) -> str:
        line = conf.lines.get(name)
        return f"{name} ({source}:{line})" if line else name

    _logfile(conf, m, flags, at)
    _profiles(conf, m, at)
    _map(conf, m, flags, at)
    grace = flags.get("grace", conf.scalars.get("grace"))
    if grace is not None:
        origin = "--grace" if "grace" in flags else at("$grace")
        if isinstance(grace, (int, str)) and str(grace).isdigit() and int(grace) > 0:
            m.set("grace", format_duration(int(grace)), origin)
        else:
            m.untranslated.append(f"{origin}: {grace!r} is not a number of seconds")
    else:
        m.set("grace", "30m", "the Perl tool's default $grace (30*60)")
    _networks(conf, m, at)
    _logging(conf, m, at)
    _remaining(conf, m, at)
    for line, text in conf.unknown:
        if _KNOWN_BLOCKS.match(text):
            continue
        m.untranslated.append(f"{source}:{line}: `{text}`: not a setting this reader knows")
    return m


def _logfile(conf: PerlConfig, m: Migration, flags: Dict[str, str], at: At) -> None:
    tail = dict(conf.hashes.get("file_tail", {}))
    name = flags.get("watchlog", tail.pop("name", None))
    origin = "--watchlog" if "watchlog" in flags else at("$file_tail{name}")
    if name == "-" or conf.scalars.get("tail_getline_func") == CodeRef("getline_stdin"):
        m.untranslated.append(
            f"{origin}: the log read from standard input (a syslog pipe): popbsmtp follows a"
            " file or the journal; point logfile at the file syslog writes"
        )
    elif isinstance(name, str):
        m.set("logfile", name, origin)
    else:
        m.notes.append(
            "logfile: the Perl config searched /var/log/mail/info, /var/log/mail.log, ..."
            " at start; popbsmtp uses its distribution's default (check-config --explain)"
        )
    for key in tail:
        m.untranslated.append(
            f"{at('$file_tail{' + key + '}')}: File::Tail tuning; popbsmtp follows the log"
            " with file events and a poll_interval safety poll"
        )


def _profiles(conf: PerlConfig, m: Migration, at: At) -> None:
    if "custom_match" in conf.subs or "login" in conf.lists:
        m.untranslated.append(
            f"{at('sub custom_match')}: a custom matching routine cannot be translated;"
            " profiles = auto tries every popbsmtp profile (see 'popbsmtp profiles')"
        )
        m.set("profiles", "auto", "custom_match")
        return
    if isinstance(conf.scalars.get("PID_pat"), str):
        key, pattern = "$PID_pat", str(conf.scalars["PID_pat"])
    elif isinstance(conf.scalars.get("pat"), str):
        key, pattern = "$pat", str(conf.scalars["pat"])
    else:
        m.set("profiles", "uw", "no $pat: the Perl tool's default pattern is UW ipop3d/imapd")
        return
    found = identify(pattern)
    if found is None:
        m.untranslated.append(
            f"{at(key)}: a custom regex for a server popbsmtp does not recognise; set"
            " profiles by hand ('popbsmtp profiles') and check with 'popbsmtp test LOG'"
        )
        m.set("profiles", "auto", f"{key} not recognised")
        return
    profile, log_format = found
    m.set("profiles", profile, f"{at(key)} matches {profile} logins")
    m.notes.append(
        f"{key}: the regex itself is not carried over; popbsmtp's {profile} profile replaces"
        " it (check with 'popbsmtp test LOG' on a copy of your log)"
    )
    if log_format:
        m.set("log_format", log_format, f"{at(key)} reads {profile}'s own log file")
    if "out_pat" in conf.scalars or "OUT_pat" in conf.scalars:
        m.notes.append("$out_pat: logouts are followed by the profile itself where it has them")
    if "logtime_pat" in conf.scalars:
        m.notes.append(f"{at('$logtime_pat')}: popbsmtp reads the timestamp itself (log_format)")


def _map(conf: PerlConfig, m: Migration, flags: Dict[str, str], at: At) -> None:
    tie = conf.scalars.get("tie_func", CodeRef(""))
    tie_name = tie.name if isinstance(tie, CodeRef) else "?"
    dbfile = flags.get("dbfile", conf.scalars.get("dbfile", PERL_DEFAULT_DBFILE))
    origin = "--dbfile" if "dbfile" in flags else at("$dbfile")
    if tie_name in _NOT_POSTFIX:
        m.untranslated.append(
            f"{at('$tie_func')}: writes {_NOT_POSTFIX[tie_name]}, not a Postfix table;"
            " popbsmtp serves Postfix only"
        )
        return
    kind = _TIES.get(tie_name)
    if kind is None:
        m.untranslated.append(
            f"{at('$tie_func')}: a custom table routine ({tie_name}); map is left as hash:"
        )
        kind = "hash"
    m.set("map", f"{kind}:{dbfile}", f"{origin}, written as {kind} (the Perl back-end)")
    if kind == "hash":
        m.notes.append(
            "map: hash: is the Berkeley DB table the Perl tool wrote and Postfix reads today;"
            " where Postfix's default_database_type is lmdb, switch to lmdb: and edit"
            " check_client_access to match"
        )
    value = conf.scalars.get("dbvalue")
    if isinstance(value, str) and value.lower() != "ok":
        m.set("map_value", value, at("$dbvalue"))
    for key in ("flock", "flock_func", "sync_func", "add_func", "del_func"):
        if key in conf.scalars:
            m.untranslated.append(
                f"{at('$' + key)}: table locking and syncing are popbsmtp's own (the table is"
                " replaced atomically)"
            )


def _networks(conf: PerlConfig, m: Migration, at: At) -> None:
    if "mynets" in conf.lists:
        m.notes.append(
            f"{at('@mynets')}: the Perl tool replaced @mynets with $mynet_func's result at"
            " start, so this assignment had no effect"
        )
    func = conf.scalars.get("mynet_func", CodeRef("mynet_postfix"))
    name = func.name if isinstance(func, CodeRef) else ""
    if name == "mynet_postfix":
        m.set("ignore_networks", "mynetworks", "the Perl default: postconf mynetworks")
    elif conf.subs.get(name) is not None:
        nets = str(conf.subs[name]).split()
        m.set("ignore_networks", ", ".join(nets) or "none", at(f"sub {name}"))
    else:
        m.untranslated.append(
            f"{at('$mynet_func')}: a custom network routine; ignore_networks stays mynetworks"
        )
        m.set("ignore_networks", "mynetworks", "default")


def _logging(conf: PerlConfig, m: Migration, at: At) -> None:
    if conf.scalars.get("debug"):
        m.set("log_level", "debug", at("$debug"))
    logto = conf.scalars.get("logto")
    if logto == "-":
        m.set("log_target", "stderr", at("$logto"))
    elif isinstance(logto, str):
        m.set("log_target", logto, at("$logto"))
    elif conf.scalars.get("log_func") == CodeRef("syslog"):
        m.set("log_target", "syslog", at("$log_func"))
    elif "log_func" in conf.scalars:
        m.untranslated.append(f"{at('$log_func')}: a custom logging routine")


def _remaining(conf: PerlConfig, m: Migration, at: At) -> None:
    if conf.scalars.get("write") == 0:
        m.untranslated.append(f"{at('$write')}: no config equivalent; use 'popbsmtp run --dry-run'")
    if conf.scalars.get("reprocess"):
        m.untranslated.append(f"{at('$reprocess')}: use 'popbsmtp test LOG' to replay a log")
    if "ENV" in conf.hashes:
        m.untranslated.append(f"{at('$ENV{PATH}')}: popbsmtp runs postconf/postmap from PATH")


def render(m: Migration) -> str:
    out = [
        f"# popbsmtp.conf translated by 'popbsmtp migrate' from {m.source}",
        "# (a Perl pop-before-smtp 1.x config); review it, then 'popbsmtp check-config'.",
        "[popbsmtp]",
    ]
    for key, value, origin in m.settings:
        out += [f"# from {origin}", f"{key} = {value}"]
    if m.notes:
        out += ["", "# Notes:"] + [f"#   {n}" for n in m.notes]
    out += ["", "# Not translated:"]
    out += [f"#   {u}" for u in m.untranslated] or ["#   (nothing)"]
    return "\n".join(out) + "\n"


def write_new(dest: str, text: str, force: bool) -> None:
    """Mode 0644; without ``force`` an existing file (or symlink) is never touched."""
    folder = os.path.dirname(os.path.abspath(dest))
    if not force:
        try:
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            raise PopbsmtpError(f"{dest} exists; add --force to replace it") from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(text)
        return
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".popbsmtp-migrate.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o644)
            handle.write(text)
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        raise


def run_migrate(path: str, dest: Optional[str], force: bool, out: TextIO, err: TextIO) -> int:
    migration = translate(load_perl(path), path)
    text = render(migration)
    if dest is None:
        out.write(text)
    else:
        try:
            write_new(dest, text, force)
        except OSError as exc:
            raise PopbsmtpError(f"cannot write {dest}: {exc.strerror}") from None
        print(f"wrote {dest}", file=err)
    for item in migration.untranslated:
        print(f"not translated: {item}", file=err)
    return EXIT_OK
