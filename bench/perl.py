#!/usr/bin/env python3
"""popbsmtp against the Perl pop-before-smtp 1.50, side by side, one run, same file.

The Perl tool is fetched at bench time from a git snapshot (``--perl-repo``,
``git archive HEAD``) into a temporary directory and never committed.  Its
Perl modules come from Debian (installed with apt-get when missing);
Net::IP::Lite, which Debian does not package, is replaced by a minimal
stand-in with the three calls the script makes (cheaper than the real module,
so the Perl figures are if anything flattering).

Its config (written here, as ``pop-before-smtp-conf.pl`` would be) follows
the shipped "Dovecot 2.2 POP3/IMAP when using syslog" pattern, with a
``$logtime_pat`` for RFC 3339 stamps, ``127.0.0.0/8`` as mynetworks (no
Postfix needed) and a log reader that ends the process at the end of the
file instead of sleeping there (its shipped reader is otherwise unchanged).

Measured, best of ``--repeat``, all on one generated realistic log
(``bench/gen_dovecot.py``: 1M lines, about 2% logins each closed by its
logout, RFC 3339, ending now so every login is still within grace):

(a) the daemon's full path, an empty state to a complete lmdb map (the
    ``Service.step()`` bench/throughput.py times), against Perl as a daemon
    with its DB writes (a Berkeley DB hash, one flock + sync per new
    address), from its first line to the end of the file;
(b) ``popbsmtp test --json FILE >/dev/null`` against
    ``pop-before-smtp --nowrite --reprocess`` (each line's own time) and
    against plain ``--nowrite`` (the clock's time: no date parsing per
    line, the faster of the two), whole processes, interpreter start-up
    included on both sides.

The clients are IPv4 unless ``--ipv6-share`` says otherwise: for an IPv6
address the Perl tool's mynetworks check (Net::Netmask's findNetblock)
computes with Math::BigInt, about 5 ms a login, which would make the
comparison one of that module rather than of the two tools.

Both tools are configured for the same job.  The Perl config names one
server's pattern; popbsmtp gets what ``popbsmtp migrate`` makes of that
config (``profiles = dovecot``: the admin's own migration), and the same
measures are also taken with popbsmtp's default ``profiles = auto`` (every
profile's rules searched on every line), printed as extra rows.

Times are wall-clock (the Perl tool's syncs are part of its cost), best of
``--repeat``, the runs of each pair in turn so a busy machine weighs on both;
the CPU seconds are printed beside them.

    perl.py [--lines 1000000] [--repeat 3] [--log FILE] [--perl-repo DIR]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

from common import ROOT, emit, log, workdir, write_config

PERL_REPO = "/work/.mirror/computersalat+pop-before-smtp/repo"
GENERATOR = Path(__file__).resolve().parent / "gen_dovecot.py"
# Perl module -> Debian package (apt-cache search); DB_File ships with perl itself.
PERL_DEPS = {
    "Date::Parse": "libtimedate-perl",
    "Date::Format": "libtimedate-perl",
    "Net::Netmask": "libnet-netmask-perl",
    "File::Tail": "libfile-tail-perl",
    "DB_File": "perl",
    "Time::HiRes": "perl",
}
IP_LITE = r"""package Net::IP::Lite;
# Bench-time stand-in: Debian does not package Net::IP::Lite.  Only what
# pop-before-smtp 1.50 calls: new, is_ipv6ipv4, address, ip_transform.
use strict;
use Exporter 'import';
our @EXPORT = qw(ip_transform);
sub new { my ($class, $ip) = @_; return bless { ip => $ip }, $class; }
sub address { return $_[0]{ip}; }
sub is_ipv6ipv4 { return $_[0]{ip} =~ /^::ffff:\d+\.\d+\.\d+\.\d+$/i; }
sub ip_transform { my ($ip) = @_; $ip =~ s/^::ffff://i; return $ip; }
1;
"""
# The shipped pattern for Dovecot 2.2+ via syslog (pop-before-smtp-conf.pl);
# [LOGTIME] is replaced by $logtime_pat, here RFC 3339 (Debian 12 rsyslog).
CONFIG = r"""use strict;
use vars qw($pat $logtime_pat $grace $mynet_func $tail_getline_func %file_tail);
use Time::HiRes ();
$logtime_pat = '(\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))';
$pat = '^[LOGTIME] \S+ dovecot: (?:imap|pop3)-login: ' .
    'Login: user=\S+, method=\S+, rip=(.*), lip=';
$grace = 30*60;
$mynet_func = sub { '127.0.0.0/8' };
$file_tail{'name'} = '@LOG@';
# The shipped reader (tail_getline) sleeps at the end of the file; end the run there.
my $t0 = Time::HiRes::time();
$tail_getline_func = sub {
    while ($::tail_buf !~ /\n/) {
        my $got = sysread(TAIL, $::tail_buf, 2048, length($::tail_buf));
        if (!$got) {
            printf STDERR "pbs-bench: end of file after %.6f s\n", Time::HiRes::time() - $t0;
            exit 0;
        }
    }
    return main::tail_getline();
};
1;
"""


def ensure_perl_deps() -> None:
    missing = [
        m
        for m in PERL_DEPS
        if subprocess.run(["perl", f"-M{m}", "-e1"], capture_output=True).returncode
    ]
    packages = sorted({PERL_DEPS[m] for m in missing})
    if packages:
        log(f"installing {', '.join(packages)} for {', '.join(missing)}")
        subprocess.run(
            ["apt-get", "install", "-y", "-q", *packages], check=True, stdout=subprocess.DEVNULL
        )


def fetch_perl(repo: str, into: Path) -> Path:
    """The tool's source at the snapshot's HEAD, plus the Net::IP::Lite stand-in."""
    archive = subprocess.run(
        ["git", "--git-dir", repo, "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    script = into / "pop-before-smtp"
    version = re.search(rb"\$VERSION = '([^']+)'", script.read_bytes())
    log(f"Perl pop-before-smtp {version.group(1).decode() if version else '?'} from {repo}")
    lib = into / "lib" / "Net" / "IP"
    lib.mkdir(parents=True)
    (lib / "Lite.pm").write_text(IP_LITE)
    return script


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_perl(script: Path, config: Path, *args: str) -> Tuple[float, float, float]:
    """(whole process, its own time from config load to end of file, CPU), seconds."""
    lib = script.parent / "lib"
    cmd = ["perl", f"-I{lib}", str(script), f"--config={config}", *args]
    cpu, start = children_cpu(), time.perf_counter()
    result = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=900
    )
    whole, cpu = time.perf_counter() - start, children_cpu() - cpu
    found = re.search(r"pbs-bench: end of file after ([0-9.]+) s", result.stderr)
    if result.returncode != 0 or found is None:
        raise SystemExit(f"perl failed ({result.returncode}): {result.stderr[-2000:]}")
    return whole, float(found.group(1)), cpu


def perl_db_keys(db: Path) -> int:
    code = (
        "use DB_File; use Fcntl; tie my %h, 'DB_File', $ARGV[0], O_RDONLY, 0, $DB_HASH "
        "or die $!; print scalar(keys %h)"
    )
    return int(
        subprocess.run(
            ["perl", "-e", code, str(db)], check=True, capture_output=True, text=True
        ).stdout
    )


def popbsmtp_full_path(source: Path, lines: int, profiles: str) -> Dict[str, float]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import full_path

    return full_path(source, lines, profiles)


def migrated_profiles(config: Path) -> str:
    """The ``profiles`` line ``popbsmtp migrate`` writes for the Perl config."""
    out = subprocess.run(
        [sys.executable, "-m", "popbsmtp", "migrate", str(config)],
        capture_output=True, text=True, check=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout  # fmt: skip
    found = re.search(r"^profiles = (\S+)$", out, re.MULTILINE)
    if found is None:
        raise SystemExit(f"popbsmtp migrate wrote no profiles line:\n{out}")
    return found.group(1)


def popbsmtp_test(config: Path, source: Path) -> Tuple[float, float]:
    """(whole process, CPU), seconds."""
    cmd = [sys.executable, "-m", "popbsmtp", "test", "--config", str(config), "--json", str(source)]
    cpu, start = children_cpu(), time.perf_counter()
    subprocess.run(
        cmd,
        stdout=subprocess.DEVNULL,
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return time.perf_counter() - start, children_cpu() - cpu


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--ipv6-share", default="0", help="of the generated log's clients")
    parser.add_argument("--log", type=Path, default=None, help="use this log (must be fresh)")
    parser.add_argument("--perl-repo", default=PERL_REPO, help="git dir of pop-before-smtp")
    args = parser.parse_args(argv)
    ensure_perl_deps()
    base = workdir("perl")
    try:
        script = fetch_perl(args.perl_repo, Path(tempfile.mkdtemp(dir=base)))
        source = args.log or base / "mail.log"
        if not source.exists():
            log(f"generating {args.lines} realistic Dovecot lines")
            subprocess.run(
                [
                    sys.executable,
                    str(GENERATOR),
                    str(source),
                    "--lines",
                    str(args.lines),
                    "--ipv6-share",
                    args.ipv6_share,
                ],
                check=True,
            )
        lines = sum(block.count(b"\n") for block in _blocks(source))
        config = base / "pbs-conf.pl"
        config.write_text(CONFIG.replace("@LOG@", str(source)))
        migrated = migrated_profiles(config)
        log(f"popbsmtp migrate made profiles = {migrated} of the Perl config")
        kinds = (migrated, "auto") if migrated != "auto" else ("auto",)
        pconfig = {}
        for kind in kinds:
            (base / kind).mkdir()
            pconfig[kind] = write_config(
                base / kind, ignore_networks="127.0.0.0/8", log_level="warning", profiles=kind
            )
        full: Dict[str, List[Tuple[float, float]]] = {kind: [] for kind in kinds}
        test: Dict[str, List[Tuple[float, float]]] = {kind: [] for kind in kinds}
        perl_w, perl_r, perl_n = [], [], []
        perl_keys, grants = 0, {}
        for run in range(args.repeat):
            for kind in kinds:
                info = popbsmtp_full_path(source, lines, kind)
                full[kind].append((info["seconds"], info["cpu"]))
                grants[kind] = info["grants"]
            db = base / f"pbs-{run}"
            perl_w.append(run_perl(script, config, f"--dbfile={db}"))
            perl_keys = perl_db_keys(db.with_suffix(".db"))
            for kind in kinds:
                test[kind].append(popbsmtp_test(pconfig[kind], source))
            perl_r.append(run_perl(script, config, "--nowrite", "--reprocess"))
            perl_n.append(run_perl(script, config, "--nowrite"))
            log(
                f"run {run + 1}: full path "
                + ", ".join(f"{k} {full[k][-1][0]:.3f} s ({grants[k]} grants)" for k in kinds)
                + f"; perl with writes {perl_w[-1][1]:.3f} s ({perl_keys} keys); test --json "
                + ", ".join(f"{k} {test[k][-1][0]:.3f} s" for k in kinds)
                + f"; perl --nowrite --reprocess {perl_r[-1][0]:.3f} s,"
                f" perl --nowrite {perl_n[-1][0]:.3f} s"
            )
        # (a) both without start-up: the Service's step, Perl's loop to the end of the file
        a_perl = min(perl_w, key=lambda r: r[1])
        b_reproc, b_plain = min(perl_r), min(perl_n)
        load = os.getloadavg()
        where = f"{lines:,} lines, best of {args.repeat}, load {load[0]:.1f}/{load[1]:.1f}"
        rows = []
        for kind in kinds:
            a_ours, b_ours = min(full[kind]), min(test[kind])
            label = f"profiles = {kind}" + (" (migrated)" if kind == migrated else "")
            rows += [
                {
                    "measure": f"full path vs Perl 1.50 with writes, {label}",
                    "value": f"{a_perl[1] / a_ours[0]:.1f}x",
                    "detail": f"popbsmtp {a_ours[0]:.3f} s ({lines / a_ours[0]:,.0f} lines/s, CPU "
                    f"{a_ours[1]:.2f} s, {grants[kind]:,} grants, lmdb); Perl "
                    f"{a_perl[1]:.3f} s ({lines / a_perl[1]:,.0f} lines/s, CPU "
                    f"{a_perl[2]:.2f} s, {perl_keys:,} keys, DB_File hash); {where}",
                },
                {
                    "measure": f"`popbsmtp test --json` vs Perl `--nowrite --reprocess`, {label}",
                    "value": f"{b_reproc[0] / b_ours[0]:.2f}x",
                    "detail": f"popbsmtp {b_ours[0]:.3f} s (CPU {b_ours[1]:.2f} s), Perl "
                    f"{b_reproc[0]:.3f} s (CPU {b_reproc[2]:.2f} s); whole processes; {where}",
                },
                {
                    "measure": f"`popbsmtp test --json` vs Perl `--nowrite`, {label}",
                    "value": f"{b_plain[0] / b_ours[0]:.2f}x",
                    "detail": f"popbsmtp {b_ours[0]:.3f} s, Perl {b_plain[0]:.3f} s (CPU "
                    f"{b_plain[2]:.2f} s); whole processes; {where}",
                },
            ]
        emit(rows)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


def _blocks(path: Path):
    with open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 20)
            if not block:
                return
            yield block


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
