"""The one decision point: what an event from the log means for relaying.

:meth:`Policy.decide` takes one event the matcher recognised (a login, a
logout, the other half of a two-line login) and the time, and answers with
:class:`Decision` values: grant until T, hold while the session is open (at
most until T), release (the session ended: grace runs until T), refuse
(with the reason), or note a logout of no open session.  A server's own
start-up or shutdown line releases every open session.  It owns what the
answer depends on: ignored networks, ``grace``, ``max_session`` and the open
sessions (:mod:`popbsmtp.policy.sessions`).  It reads the grant table to know what
is granted now, and never writes it: :func:`apply` does, for the daemon and
for ``popbsmtp test`` alike, so both report the same decisions from the same
code.  It reads no log and writes no map.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence

from popbsmtp.config import Settings
from popbsmtp.grants import GrantTable
from popbsmtp.maps import EXACT_IPV6_FIX, exact_ipv6_fix, partial_lookups
from popbsmtp.parse.addresses import IgnoredNetworks
from popbsmtp.parse.matcher import Login
from popbsmtp.policy.sessions import Release, SessionTracker
from popbsmtp.profiles import AUTH, CONNECT, LOGOUT, SERVER, Profile

GRANT = "grant"
HOLD = "hold"
RELEASE = "release"
REFUSE = "refuse"
UNKNOWN_LOGOUT = "unknown-logout"
TWO_LINE = frozenset({CONNECT, AUTH})  # halves of a login that sessions.resolve joins


_make = tuple.__new__  # a named tuple without its generated __new__: a third of the cost


class Decision(NamedTuple):
    """What one event means for one address.

    ``until`` is the expiry a grant, hold or release sets (0 otherwise);
    ``exact`` marks a release that may shorten the grant, because the hold
    being ended was this policy's own (a manual ``add`` or a longer grant
    from another rule is never shortened).
    """

    kind: str
    ip: Optional[str]
    until: float
    event: Login
    reason: Optional[str] = None
    exact: bool = False


IPV6_WIDER = (
    "IPv6 key {ip} is not written out in full, so in a table Postfix also searches by"
    " partial keys it would let every address written {ip}:... relay too; {fix}"
)


def exact_ipv6_key(key: str) -> bool:
    """Whether an IPv6 key can be no other address's partial key: all eight groups.

    smtpd cuts an IPv6 address back at each ``:``; only a key with eight groups
    (no ``::``) cannot be the start of a longer address's text.
    """
    return key.count(":") == 7 and "::" not in key


def ipv6_refusal(ip: str, exact_only: bool, fix: str = EXACT_IPV6_FIX) -> Optional[str]:
    """Why an IPv6 key may not go into the table, or None (IPv4 always may)."""
    if exact_only and ":" in ip and not exact_ipv6_key(ip):
        return IPV6_WIDER.format(ip=ip, fix=fix)
    return None


def refusal(
    event: Login,
    now: float,
    window: float,
    ignored: IgnoredNetworks,
    ipv6_exact_only: bool = False,
    ipv6_fix: str = EXACT_IPV6_FIX,
) -> Optional[str]:
    """Why a login must not be granted, or None when it may be."""
    if event.ip is None:
        return f"invalid address {event.raw_ip!r}: {event.invalid or 'no address'}"
    if event.ip in ignored:
        return "ignored network"
    if event.time + window <= now:
        return "too old"
    if ":" not in event.ip:
        return None  # IPv4: one address whatever the table
    return ipv6_refusal(event.ip, ipv6_exact_only, ipv6_fix)


class Policy:
    """Decides; holds the sessions it needs to.  Owned by the core loop."""

    def __init__(
        self,
        grace: float,
        max_session: float,
        ignored: IgnoredNetworks,
        profiles: Optional[Sequence[Profile]] = None,
        *,
        ipv6_exact_only: bool = False,
        ipv6_fix: str = EXACT_IPV6_FIX,
    ) -> None:
        self.ignored = ignored
        # Refuse IPv6 keys that would also grant their neighbours (file tables).
        self.ipv6_exact_only = ipv6_exact_only
        self.ipv6_fix = ipv6_fix
        self.sessions = SessionTracker(
            grace, max_session, list(profiles) if profiles is not None else None
        )

    def restore_refusal(self, ip: str) -> Optional[str]:
        """Why a saved grant may not go back into the table at start, or None.

        The table type or ``ipv6_scope`` may have changed since it was made:
        a compressed IPv6 key granted under ``neighbours`` (or into a guarded
        pgsql: table, or a socketmap) would otherwise reach a table Postfix
        also searches by partial keys, and its neighbours would relay.
        """
        return ipv6_refusal(ip, self.ipv6_exact_only, self.ipv6_fix)

    @property
    def grace(self) -> float:
        return self.sessions.grace

    def reconfigure(self, grace: float, ignored: IgnoredNetworks) -> None:
        """Reload: new logins get the new grace; open sessions and grants stay."""
        self.ignored = ignored
        self.sessions.grace = grace
        self.sessions.max_session = max(self.sessions.max_session, grace)

    def decide(self, found: Login, now: float, table: GrantTable) -> List[Decision]:
        """The decisions one recognised event leads to, in the order to apply them."""
        event = found
        if found.event in TWO_LINE:
            joined = self.sessions.resolve(found)  # joins the two lines; None for a connect
            if joined is None:
                return []
            event = joined
        if event.event == SERVER:  # the server started or stopped: its sessions are over
            return [_released(r, event) for r in self.sessions.server_event(event, now, table)]
        if event.event == LOGOUT:
            release = self.sessions.logout(event, now, table)
            if release is None:
                return [Decision(UNKNOWN_LOGOUT, event.ip, 0.0, event, "no open session")]
            return [_released(release, event)]
        window = self.sessions.window(event)
        reason = refusal(event, now, window, self.ignored, self.ipv6_exact_only, self.ipv6_fix)
        if reason is not None:
            return [Decision(REFUSE, event.ip, 0.0, event, reason)]
        until, ended, held = self.sessions.login(event, now, table)
        granted = _make(Decision, (HOLD if held else GRANT, event.ip, until, event, None, False))
        return [*(_released(r, event) for r in ended), granted] if ended else [granted]

    def window(self, profile: str, rule: str) -> float:
        """How long after its time a grant of this rule may last (clock caps)."""
        return self.sessions.window_of(profile, rule)


def _released(release: Release, event: Login) -> Decision:
    return _make(Decision, (RELEASE, release.ip, release.until, event, None, release.exact))


def apply(decision: Decision, table: GrantTable) -> bool:
    """Carry one decision out on the grant table; False when nothing changed for it
    (refused, a full table, a release of an address no longer granted)."""
    kind, ip, event = decision.kind, decision.ip, decision.event
    if ip is None or kind in (REFUSE, UNKNOWN_LOGOUT):
        return False
    if kind == RELEASE:
        if ip not in table:
            return False  # refused, expired or removed by request: nothing to extend
        if decision.exact:
            return table.set_expiry(ip, decision.until, event.profile, event.rule)
    return table.grant(ip, decision.until, event.profile, event.rule)


def ipv6_exact_only(settings: Settings) -> bool:
    """Whether the configured table needs IPv6 keys written out in full (the default).

    The table decides (:func:`popbsmtp.maps.partial_lookups`): a socketmap, or
    a pgsql: file whose query never answers compressed keys, takes them all.
    """
    return settings.ipv6_scope == "exact" and partial_lookups(settings.map)


def policy_for(settings: Settings, ignored: IgnoredNetworks, profiles: Sequence[Profile]) -> Policy:
    """The policy the settings describe (the daemon and ``popbsmtp test`` alike)."""
    return Policy(
        settings.grace,
        settings.max_session,
        ignored,
        profiles,
        ipv6_exact_only=ipv6_exact_only(settings),
        ipv6_fix=exact_ipv6_fix(settings.map),
    )
