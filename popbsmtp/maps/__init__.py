"""Postfix lookup tables the grant table is projected into.

One module per backend, named by the table type the administrator writes in
``map = TYPE:/path``; each module lists its ``TYPES`` and defines a
``Writer``.  The registry refuses unknown types with the list of known ones.
The map is never the truth: a writer can always be rebuilt from the grants.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Collection, Dict, Mapping, Optional, Set, Tuple, Type

from popbsmtp.errors import ConfigError

EXACT_IPV6_FIX = "exact IPv6 grants need map = socketmap:..., or set ipv6_scope = neighbours"


@dataclass(frozen=True)
class MapSpec:
    """``TYPE:/path`` as Postfix spells it; ``path`` is without suffix."""

    type: str
    path: str

    def __str__(self) -> str:
        return f"{self.type}:{self.path}"

    @property
    def served(self) -> bool:
        """Answered by the daemon itself over a socket (``socketmap:``), not a file."""
        return not self.path.startswith("/")

    @classmethod
    def parse(cls, text: str) -> MapSpec:
        text = text.strip()
        if text.startswith("socketmap:"):
            from popbsmtp.maps.socketmap import parse_endpoint

            parse_endpoint(text[len("socketmap:") :])  # a ConfigError says what is wrong
            return cls("socketmap", text[len("socketmap:") :])
        match = re.fullmatch(r"([a-z0-9_]+):(/[^\s\0]+)", text)
        if not match:
            raise ConfigError(f"{text!r} is not a Postfix table TYPE:/absolute/path")
        return cls(match.group(1), match.group(2))


@dataclass(frozen=True)
class MapOptions:
    """How files are created: mode and optional owner/group for Postfix to read."""

    mode: int = 0o644
    owner: str = ""
    group: str = ""
    # The Postfix instance whose postmap/postconf build and check the table.
    postfix_dir: str = "/etc/postfix"


class MapWriter(ABC):
    """Write a set of client keys, all with one value, into a Postfix table.

    Implementations must never let a Postfix reader see a torn table and must
    create the table in :meth:`open` so smtpd never finds it missing.
    """

    # A table answered at lookup time (socketmap) compares each key's expiry
    # with the clock itself: the keeper then tells it every expiry that was
    # set or changed (:meth:`retime`) before it calls apply() or replace().
    expiring = False
    #: Whether smtpd also looks a client up by partial keys in this table type
    #: (every "fixed" table: lmdb, hash, btree, cdb, SQL); False for tables
    #: asked at lookup time with the full address only (socketmap).
    partial_lookups = True

    @classmethod
    def partial_answers(cls, spec: MapSpec) -> bool:
        """Whether a partial-key lookup of smtpd can find a compressed IPv6 key in
        this very table (a pgsql: table's query may exclude them)."""
        return cls.partial_lookups

    @classmethod
    def exact_ipv6_fix(cls, spec: MapSpec) -> str:
        """What gets compressed IPv6 keys granted exactly, for the refusal message."""
        return EXACT_IPV6_FIX

    #: Whether the table is a file in a directory the daemon writes (False for
    #: a database, whose file the daemon only reads, and for a served socket).
    writes_files = True

    def __init__(self, spec: MapSpec, value: str, options: MapOptions = MapOptions()) -> None:
        self.spec = spec
        self.value = value
        self.options = options

    @abstractmethod
    def open(self) -> None:
        """Create the table if missing (empty) and get ready to write."""

    @abstractmethod
    def apply(self, add: Collection[str], remove: Collection[str]) -> None:
        """Add and delete keys; raise :class:`MapError` on failure."""

    def retime(self, expiries: Mapping[str, float]) -> None:  # noqa: B027 - only if expiring
        """Learn when these keys expire (epoch seconds); only called when ``expiring``."""

    def replace(self, keys: Collection[str]) -> None:
        """Make the table hold exactly ``keys`` (reconcile)."""
        current = self.keys()
        wanted = set(keys)
        self.apply(wanted - current, current - wanted)

    def empty(self) -> int:
        """Withdraw every key but keep the (empty) table; return how many it held.

        The daemon does this when it stops, so no client keeps relaying on a
        grant nobody will expire.  The file stays: smtpd answers 451 for a
        missing table, an empty one lets it decide as if no client were granted.
        """
        held = len(self.keys())
        self.replace(())
        return held

    @abstractmethod
    def keys(self) -> Set[str]:
        """Read back the keys the table holds now."""

    def differs(self, keys: Collection[str]) -> bool:
        """True unless the table holds exactly ``keys`` (a set or a dict's keys view)."""
        return self.keys() != set(keys)

    def healthy(self) -> bool:
        """False when the table file vanished or was replaced behind our back."""
        return True

    def pending(self) -> Optional[float]:
        """Seconds until deferred work is due (a batching writer), or None.

        The core loop wakes up by then and calls :meth:`flush`.
        """
        return None

    def flush(self) -> None:  # noqa: B027 - only batching writers defer work
        """Do deferred work now; raise :class:`MapError` on failure."""

    def close(self) -> None:  # noqa: B027 - most writers hold nothing open
        """Release files; the table stays in place for Postfix."""

    @property
    def files(self) -> Collection[str]:
        """The file(s) Postfix reads, for messages and ``doctor``."""
        return ()


def _discover() -> Dict[str, Type[MapWriter]]:
    found: Dict[str, Type[MapWriter]] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name in getattr(module, "TYPES", ()):
            found[name] = module.Writer
    return found


def partial_lookups(spec: MapSpec) -> bool:
    """Whether smtpd's partial-key lookups can find a compressed IPv6 key in ``spec``.

    Then an IPv6 key such as ``2001:db8::1`` also answers for every client
    whose address is written ``2001:db8::1:…``.  The table decides, not only
    its type: a ``pgsql:`` file whose query is guarded never answers such a
    key.  Unknown types count as yes.
    """
    found = _discover().get(spec.type)
    return True if found is None else found.partial_answers(spec)


def exact_ipv6_fix(spec: MapSpec) -> str:
    """How the admin gets compressed IPv6 logins granted exactly in ``spec``'s place."""
    found = _discover().get(spec.type) or MapWriter
    return found.exact_ipv6_fix(spec)


def writes_files(kind: str) -> bool:
    """Whether a ``kind:`` table is a file the daemon writes (its directory is checked)."""
    found = _discover().get(kind)
    return True if found is None else found.writes_files


def known_types() -> Tuple[str, ...]:
    """Every table type some module here writes, sorted (``memory`` is for tests)."""
    return tuple(sorted(_discover()))


def writer_class(
    kind: str, method: str = "auto", postfix_dir: str = "/etc/postfix"
) -> Type[MapWriter]:
    """The writer for a table type, or a ConfigError naming the supported ones.

    ``method`` is the ``map_writer`` option: ``direct`` (in place, lmdb),
    ``rebuild`` (postmap + rename, maps/rebuild.py) or ``auto`` (direct
    where a direct writer exists).  A real table's type must also be one
    that this Postfix reads (``postconf -m``), when postconf is installed.
    """
    known = _discover()
    from popbsmtp.maps import rebuild  # the registry above already imported it

    if method == "rebuild" and kind in rebuild.SUFFIXES:
        chosen: Optional[Type[MapWriter]] = rebuild.Writer
    elif method == "direct" and known.get(kind) is rebuild.Writer:
        raise ConfigError(f"there is no direct writer for {kind}: tables", key="map_writer")
    else:
        chosen = known.get(kind)
    postfix_types = _postfix_types(postfix_dir)
    if chosen is None or (kind != "memory" and postfix_types and kind not in postfix_types):
        usable = [k for k in sorted(known) if k != "memory"]
        if postfix_types:
            usable = [k for k in usable if k in postfix_types]
        postfix_says = f"; this Postfix reads (postconf -m): {', '.join(postfix_types)}"
        raise ConfigError(
            f"table type {kind!r} is not supported; supported: {', '.join(usable)}"
            + (postfix_says if postfix_types else ""),
            key="map",
        )
    return chosen


def _postfix_types(postfix_dir: str) -> Tuple[str, ...]:
    from popbsmtp import postfix

    try:
        return postfix.supported_types(postfix_dir)
    except postfix.PostfixError:
        return ()  # no Postfix here: the rebuild writer then reports the missing postmap


def open_writer(
    spec: MapSpec, value: str, options: MapOptions = MapOptions(), method: str = "auto"
) -> MapWriter:
    writer = writer_class(spec.type, method, options.postfix_dir)(spec, value, options)
    writer.open()
    return writer
