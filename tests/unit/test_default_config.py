"""The shipped config and man page are generated from the option schema, and current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from popbsmtp import postfix
from popbsmtp.config import PACKAGED, SCHEMA, load, render_default_config
from popbsmtp.config.distros import Distro

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "init" / "popbsmtp.conf"
REGENERATE = (
    "python3 -c 'from popbsmtp.config import render_default_config as r; print(r(), end=\"\")'"
    " > init/popbsmtp.conf"
)
RHEL = Distro("rhel", "rhel", "/var/log/maillog", "rfc3164")


def test_shipped_config_is_the_rendered_schema():
    assert SHIPPED.read_text() == render_default_config(), f"out of date; run: {REGENERATE}"


def test_every_option_is_present_commented_with_its_help():
    text = render_default_config()
    for opt in SCHEMA:
        lines = re.findall(rf"^#{opt.name} = ?(.*)$", text, re.M)
        assert len(lines) == 1, f"{opt.name} appears {len(lines)} times"
        first_words = " ".join(opt.help.split()[:3])
        assert first_words in " ".join(text.replace("# ", " ").split()), opt.name
    active = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
    assert active == ["[popbsmtp]"] + [f"{k} = {v}" for k, v in PACKAGED.items()]


def test_the_packaged_map_is_a_table_in_the_directory_the_packages_make():
    assert PACKAGED == {"map": "lmdb:/etc/postfix/popbsmtp/clients"}
    unit = (ROOT / "init" / "popbsmtp.service").read_text()
    assert "ReadWritePaths=-/etc/postfix/popbsmtp\n" in unit
    spec = (ROOT / "packaging" / "rpm" / "popbsmtp.spec").read_text()
    assert "%dir %attr(0755,%{name},%{name}) %{_sysconfdir}/postfix/%{name}\n" in spec


def test_shipped_config_loads_to_the_defaults_but_the_packaged_map(tmp_path):
    path = tmp_path / "popbsmtp.conf"
    path.write_text(render_default_config())
    shipped = load(str(path), distro=RHEL)
    assert [name for name, src in shipped.sources.items() if src.startswith(str(path))] == ["map"]
    assert str(shipped.map) == PACKAGED["map"]
    bare = tmp_path / "bare.conf"
    bare.write_text(render_default_config(packaged={}))
    assert all(src != str(bare) for src in load(str(bare), distro=RHEL).sources.values())


def test_uncommented_values_are_the_real_defaults(tmp_path, monkeypatch):
    """Uncommenting every line changes nothing (computed defaults: as on RHEL with lmdb)."""
    monkeypatch.setattr(postfix, "find_tool", lambda _name: None)  # no postconf: lmdb
    path = tmp_path / "popbsmtp.conf"
    path.write_text(re.sub(r"^#(\w+ =)", r"\1", render_default_config({}), flags=re.M))
    uncommented = load(str(path), distro=RHEL)
    empty = tmp_path / "empty.conf"
    empty.write_text("[popbsmtp]\n")
    defaults = load(str(empty), distro=RHEL)
    for opt in SCHEMA:
        assert uncommented.sources[opt.name].startswith(str(path)), opt.name
        assert uncommented.raw[opt.name] == defaults.raw[opt.name], opt.name


def test_conf_man_page_is_rendered_from_the_schema():
    result = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "man" / "render.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    page = (ROOT / "docs" / "man" / "popbsmtp.conf.5").read_text()
    for opt in SCHEMA:
        assert f".B {opt.name}\n" in page, opt.name
