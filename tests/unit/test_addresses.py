import netaddr
import pytest
from support import postfix_dir

from popbsmtp.errors import ConfigError
from popbsmtp.parse.addresses import IgnoredNetworks, normalise, parse_networks, postfix_key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("::FFFF:192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0:0:0:0:0:5", "2001:db8::5"),
        ("[2001:db8::5]", "2001:db8::5"),
        ("::1", "::1"),
        ("127.0.0.5", "127.0.0.5"),
        ("::0.2.0.3", "::0.2.0.3"),  # glibc inet_ntop form, as smtpd looks it up
    ],
)
def test_keys_match_what_smtpd_looks_up(text, key):
    assert postfix_key(text) == key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unknown",
        "0.0.0.0",
        "::",
        "255.255.255.255",
        "224.0.0.1",
        "ff02::1",
        "fe80::1%eth0",
        "1.2.3",
        "1.2.3.4.5",
        "01.2.3.4",
        "192.0.2.1/24",
        "192.0.2.",
        "١٢٣.٠.٠.١",
        "2001:db8::5::1",
        "1:2:3:4:5:6:7:8:9",
        "a" * 100,
        " 192.0.2.1",
    ],
)
def test_anything_but_one_host_address_is_refused(text):
    assert normalise(text) is None


def test_ignored_networks_from_cidrs_and_postfix_brackets(tmp_path):
    listing = tmp_path / "nets"
    listing.write_text("# office\n198.51.100.0/24\n")
    nets = parse_networks(f"10.0.0.0/8, [2001:db8::]/32 {listing}")
    assert "10.1.2.3" in nets and "2001:db8::5" in nets and "198.51.100.9" in nets
    assert "192.0.2.1" not in nets


def test_mynetworks_is_asked_from_postconf():
    nets = parse_networks("mynetworks", postconf_dir=postfix_dir())
    assert "mynetworks =" in nets.describe
    assert "127.0.0.1" in nets  # Debian's default mynetworks always has loopback


def test_bad_network_is_a_config_error():
    with pytest.raises(ConfigError, match="not a network"):
        parse_networks("10.0.0.0/33")


def test_none_ignores_nothing():
    assert "127.0.0.1" not in IgnoredNetworks.none()
    assert parse_networks("none").networks == netaddr.IPSet()
