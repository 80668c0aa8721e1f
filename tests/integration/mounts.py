"""Mount fixtures for the daemon tests: real volumes, real FUSE mounts.

A Volume is a backing directory initialised by `envelopefsctl init` with its
keyring beside it; Volume.mount() runs the real daemon on a mountpoint and
waits until the mount is live (the daemon's own contract: exit 0 only then).
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("ENVELOPEFS_BUILD_ROOT", REPO / "build"))
DAEMON = BUILD / "fs" / "envelopefs"
CTL = BUILD / "tools" / "envelopefsctl"
STATUS_XATTR = "trusted.envelopefs.status"


def put(path, data):
    with open(path, "wb") as f:
        f.write(data)


def get(path):
    with open(path, "rb") as f:
        return f.read()


def get_when_back(path, within=20):
    """Read @path until it opens: a KMS back after an outage answers once the breaker's cool-down and
    the failed file's hold are over and no probe is in flight (the DEK pool's refill may be one)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return get(path)
        except OSError:
            assert time.monotonic() < deadline, f"{path}: no recovery after the KMS came back"
            time.sleep(0.2)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def daemon_pid(path):
    """The pid of the daemon serving the mount at @path, or None."""
    try:
        return json.loads(os.getxattr(path, STATUS_XATTR))["daemon"]["pid"]
    except (OSError, ValueError, KeyError):
        return None


def wait_exited(pid, timeout=30):
    """Wait until process @pid is gone (or a zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return
        except (FileNotFoundError, ProcessLookupError):
            return
        time.sleep(0.02)


def unmount(path):
    """Unmount and wait for the daemon to exit, as systemd does: after the kernel lets go of
    the mount, the daemon still records the clean unmount in the backing (the volume epoch,
    docs/FORMAT.md), and a test that copies or removes the backing next must not race it."""
    pid = daemon_pid(path) if is_mounted(path) else None
    if is_mounted(path):
        subprocess.run(["fusermount3", "-u", str(path)], check=False)
    for _ in range(100):
        if not is_mounted(path):
            break
        time.sleep(0.05)
    else:
        subprocess.run(["umount", "-l", str(path)], check=False)
    if pid:
        wait_exited(pid)


class Volume:
    def __init__(self, root, placement="header", block_size=4096, names="plain"):
        self.root = Path(root)
        self.backing = self.root / "backing"
        self.mnt = self.root / "mnt"
        self.keyring = self.root / "keyring"
        self.placement = placement
        self.block_size = block_size
        self.names = names
        self.backing.mkdir()
        self.mnt.mkdir()
        header = "file" if placement == "header" else "xattr"
        subprocess.run([str(CTL), "init", "--keyring", str(self.keyring), "--header", header,
                        "--block-size", str(block_size), "--names", names, str(self.backing)],
                       check=True, capture_output=True)

    def mount(self, *options, check=True, env=None):
        self.options = options
        args = [str(DAEMON)]
        for opt in options:
            args += ["-o", opt]
        args += [str(self.backing), str(self.mnt)]
        proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)
        if check:
            assert proc.returncode == 0, proc.stderr
            assert is_mounted(self.mnt)
        return proc

    def mount_foreground(self):
        """The daemon with -f, as a child whose exit status the test reads; returns once
        the mount is live."""
        daemon = subprocess.Popen([str(DAEMON), "-f", str(self.backing), str(self.mnt)],
                                  stderr=subprocess.PIPE, text=True)
        for _ in range(200):
            if is_mounted(self.mnt):
                return daemon
            time.sleep(0.05)
        daemon.kill()
        raise AssertionError(f"not mounted: {daemon.communicate()[1]}")

    def unmount(self):
        unmount(self.mnt)

    def remount(self):
        """Unmount and mount again with the same options."""
        self.unmount()
        self.mount(*self.options)

    def status(self):
        return json.loads(os.getxattr(self.mnt, STATUS_XATTR))

    def backing_path(self, name):
        """Backing file of a plaintext path relative to the mount."""
        if self.names == "plain":
            return self.backing / name
        parent, _, base = name.rpartition("/")
        out = subprocess.run([str(CTL), "ls", "--backing", str(self.backing), parent or "/"],
                             check=True, capture_output=True, text=True).stdout
        for line in out.splitlines():
            shown, path = line[2:].split("\t")
            if shown == base:
                return Path(path)
        raise FileNotFoundError(name)


@pytest.fixture(params=["header", "xattr", "header-encnames"])
def vol(request, tmp_path):
    """Both placements with plain names, and header placement with encrypted names."""
    placement, _, names = request.param.partition("-")
    v = Volume(tmp_path, placement=placement, names="encrypted" if names else "plain")
    v.mount()
    yield v
    v.unmount()


@pytest.fixture
def hvol(tmp_path):
    """Header placement only, for tests about the backing bytes themselves."""
    v = Volume(tmp_path, placement="header")
    v.mount()
    yield v
    v.unmount()


@pytest.fixture(params=[("header", True), ("xattr", True), ("header", False), ("xattr", False)],
                ids=["header-wb", "xattr-wb", "header-direct", "xattr-direct"])
def cvol(request, tmp_path):
    """Both placements, with the kernel's writeback cache on (the default) and off."""
    placement, writeback = request.param
    v = Volume(tmp_path, placement=placement)
    settings = tmp_path / "daemon.ini"
    settings.write_text(f"[daemon]\nwriteback_cache = {'true' if writeback else 'false'}\n")
    v.mount(f"config={settings}")
    yield v
    v.unmount()
