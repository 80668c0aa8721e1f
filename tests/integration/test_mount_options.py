"""Daemon settings as mount options (issue 18): every [daemon] setting is also
`-o NAME=VALUE`, which wins over config=FILE; --help lists them all; an
unknown option or a bad value is refused naming it; a foreground start prints
no libfuse warning.  Each setting is checked by its effect on a real mount."""
import errno
import os
import re
import subprocess
import time

import pytest

from mounts import DAEMON, Volume, is_mounted, put


def help_settings():
    """NAME of every `NAME=VALUES` line of --help's settings list."""
    out = subprocess.run([str(DAEMON), "--help"], capture_output=True, text=True,
                         check=True).stdout
    block = out.split("envelopefs options (-o):", 1)[1].split("FUSE options:", 1)[0]
    return re.findall(r"^    ([a-z_]+)=", block, re.M)


def test_help_lists_every_setting():
    names = help_settings()
    for expected in ["cache_entries", "cache_max_age", "attr_timeout", "entry_timeout",
                     "writeback_cache", "xattrs", "read_ahead_kb", "log_level", "dek_pool", "prefetch",
                     "shared"]:
        assert expected in names


@pytest.fixture
def v(tmp_path):
    vol = Volume(tmp_path)
    yield vol
    vol.unmount()


@pytest.mark.parametrize("option, field, expected", [
    ("cache_entries=17", ("cache", "max_entries"), 17),
    ("cache_max_age=33", ("cache", "max_age"), 33),
    ("writeback_cache=false", ("daemon", "writeback_cache"), False),
    ("dek_pool=3", ("pool", "capacity"), 3),
    ("prefetch=true", ("prefetch", "enabled"), True),  # auto: off on the local keyring
    ("shared=true", ("daemon", "shared"), True),       # auto: off on a local backing
])
def test_setting_as_mount_option(v, option, field, expected):
    v.mount(option)
    section, key = field
    assert v.status()[section][key] == expected


def test_mount_option_wins_over_config_file(v, tmp_path):
    ini = tmp_path / "daemon.ini"
    ini.write_text("[daemon]\ncache_entries = 7\ncache_max_age = 9\n")
    v.mount("cache_entries=11", f"config={ini}")  # after config= on the line, still wins
    status = v.status()
    assert status["cache"]["max_entries"] == 11
    assert status["cache"]["max_age"] == 9


def test_read_ahead_kb(v):
    v.mount("read_ahead_kb=2048")
    dev = os.stat(v.mnt).st_dev
    with open(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb") as f:
        assert int(f.read()) == 2048


def test_attr_and_entry_timeouts(v):
    """A change made under the daemon (in the backing) shows at once with the
    kernel's caches off, and not with them at a day."""
    def probe(options):
        v.mount(*options)
        put(v.mnt / "f", b"x")
        os.chmod(v.mnt / "f", 0o600)
        os.stat(v.mnt / "f")  # now in the kernel's caches
        os.chmod(v.backing / "f", 0o640)
        os.rename(v.backing / "f", v.backing / "g")
        try:
            seen = os.stat(v.mnt / "f").st_mode & 0o777
        except FileNotFoundError:
            seen = None
        v.unmount()
        os.rename(v.backing / "g", v.backing / "f")
        os.unlink(v.backing / "f")
        return seen

    assert probe(["attr_timeout=86400", "entry_timeout=86400"]) == 0o600
    assert probe(["attr_timeout=0", "entry_timeout=0"]) is None


def test_xattrs_false(v):
    """With xattrs=false the mount has none, as a file system without them:
    EOPNOTSUPP for every name and an empty list; what the backing holds
    shows again with the default, and the daemon's own names still answer."""
    v.mount()
    put(v.mnt / "f", b"x")
    os.setxattr(v.mnt / "f", "user.kept", b"v")
    v.unmount()

    v.mount("xattrs=false")
    assert os.listxattr(v.mnt / "f") == []
    for name in ["user.kept", "security.selinux", "system.posix_acl_access", "trusted.x"]:
        with pytest.raises(OSError) as e:
            os.getxattr(v.mnt / "f", name)
        assert e.value.errno == errno.EOPNOTSUPP, name
    for call in [lambda: os.setxattr(v.mnt / "f", "user.new", b"1"),
                 lambda: os.removexattr(v.mnt / "f", "user.kept")]:
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EOPNOTSUPP
    assert v.status()["daemon"]["xattrs"] is False  # the daemon's own name still answers
    v.unmount()

    v.mount()
    assert os.getxattr(v.mnt / "f", "user.kept") == b"v"
    assert os.listxattr(v.mnt / "f") == ["user.kept"]


def foreground(v, *options):
    """Start the daemon with -f, return its stderr up to the unmount."""
    args = [str(DAEMON), "-f"]
    for opt in options:
        args += ["-o", opt]
    daemon = subprocess.Popen(args + [str(v.backing), str(v.mnt)], stderr=subprocess.PIPE,
                              text=True)
    for _ in range(200):
        if is_mounted(v.mnt):
            break
        time.sleep(0.05)
    v.unmount()
    return daemon.communicate(timeout=30)[1]


def test_log_level_and_no_libfuse_warning(v):
    default = foreground(v)
    assert "mounted" in default  # info is logged by default
    assert "Ignoring invalid" not in default and "max threads" not in default, default
    assert "mounted" not in foreground(v, "log_level=error")


@pytest.mark.parametrize("option, message", [
    ("no_such_option=1", "no_such_option"),
    ("log_level=loud", "log_level"),
    ("cache_entries=-1", "cache_entries"),
    ("dek_pool", "dek_pool needs a value"),
])
def test_refused_naming_it(v, option, message):
    proc = v.mount(option, check=False)
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr
    assert not is_mounted(v.mnt)
