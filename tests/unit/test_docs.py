from pathlib import Path

from popbsmtp.config import SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def test_every_option_is_documented():
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [o.name for o in SCHEMA if f"`{o.name}`" not in text]
    assert not missing, f"document these options in docs/configuration.md: {missing}"
