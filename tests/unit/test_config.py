import pytest

from popbsmtp import config
from popbsmtp.config.distros import Distro, detect
from popbsmtp.config.values import duration
from popbsmtp.errors import ConfigError
from popbsmtp.maps import MapSpec

DEBIAN = Distro("debian", "debian", "/var/log/mail.log", "rfc3339")


def write(path, text):
    path.write_text(text)
    return str(path)


def test_defaults_come_from_schema_and_distro(tmp_path):
    cfg = write(tmp_path / "p.conf", "[popbsmtp]\nmap = lmdb:/tmp/x\n")
    settings = config.load(cfg, distro=DEBIAN)
    assert settings.logfile == "auto"
    assert settings.source == "auto" and settings.journal_directory == ""
    assert settings.grace == 1800
    assert settings.map == MapSpec("lmdb", "/tmp/x")
    assert settings.sources["map"] == f"{cfg}:2"
    assert settings.map_value == "OK"
    assert settings.ignore_networks == "mynetworks"
    assert settings.state_dir == "/var/lib/popbsmtp"


def test_conf_d_in_lexical_order_then_command_line(tmp_path):
    cfg = write(tmp_path / "popbsmtp.conf", "[popbsmtp]\ngrace = 10m\nmap_value = OK\n")
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d" / "20-b.conf", "[popbsmtp]\ngrace = 20m\n")
    write(tmp_path / "conf.d" / "10-a.conf", "[popbsmtp]\n\ngrace = 5m\nmap_value = RELAY\n")
    write(tmp_path / "conf.d" / "ignored.txt", "[popbsmtp]\ngrace = 1s\n")
    settings = config.load(cfg, distro=DEBIAN)
    assert settings.grace == 1200
    assert settings.sources["grace"] == f"{tmp_path}/conf.d/20-b.conf:2"
    assert settings.map_value == "RELAY"
    assert settings.sources["map_value"] == f"{tmp_path}/conf.d/10-a.conf:4"
    settings = config.load(cfg, {"grace": "90s"}, distro=DEBIAN)
    assert settings.grace == 90 and settings.sources["grace"] == "command line"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[popbsmtp]\nlogfile = /x\ngrase = 5m\n", r"p\.conf:3: grase: unknown key"),
        ("[popbsmtp]\n\ngrace = 5 minutes\n", r"p\.conf:3: grace: '5 minutes' is not a duration"),
        ("[popbsmtp]\ngrace = 0s\n", r"p\.conf:2: grace: a duration must be greater than zero"),
        ("[popbsmtp]\nmap = lmdb:relative\n", r"p\.conf:2: map: .*TYPE:/absolute/path"),
        ("[popbsmtp]\nmap_mode = 0666\n", r"p\.conf:2: map_mode: .*world-writable"),
        ("[popbsmtp]\nmax_entries = -1\n", r"p\.conf:2: max_entries: must be greater than zero"),
        ("[popbsmtp]\nlog_format = json\n", r"p\.conf:2: log_format: 'json' is not one of"),
        ("[other]\ngrace = 5m\n", r"p\.conf:1: unknown section \[other\]"),
        ("grace = 5m\n", r"p\.conf:1: File contains no section headers"),
        ("[popbsmtp]\ngrace = 5m\ngrace = 6m\n", r"p\.conf:3: .*already exists"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path, text, message):
    cfg = write(tmp_path / "p.conf", text)
    with pytest.raises(ConfigError, match=message):
        config.load(cfg, distro=DEBIAN)


def test_missing_explicit_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(str(tmp_path / "nope.conf"))


def test_bad_command_line_value_is_reported_as_such(tmp_path):
    cfg = write(tmp_path / "p.conf", "[popbsmtp]\n")
    with pytest.raises(ConfigError, match="command line: grace:"):
        config.load(cfg, {"grace": "soon"}, distro=DEBIAN)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("1h", 3600), ("1h30m", 5400)]
)
def test_durations(text, seconds):
    assert duration(text) == seconds


@pytest.mark.parametrize(
    ("os_release", "logfile"),
    [
        ('ID="rhel"\nVERSION_ID="9.4"\n', "/var/log/maillog"),
        ('ID=almalinux\nID_LIKE="rhel centos fedora"\n', "/var/log/maillog"),
        ("ID=fedora\n", "/var/log/maillog"),
        ("ID=debian\nVERSION_ID=12\n", "/var/log/mail.log"),
        ("ID=ubuntu\nID_LIKE=debian\n", "/var/log/mail.log"),
        ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "/var/log/mail"),
        ("ID=freebsd\n", "/var/log/maillog"),
    ],
)
def test_distro_log_paths(tmp_path, os_release, logfile):
    path = tmp_path / "os-release"
    path.write_text(os_release)
    assert detect(str(path)).logfile == logfile
