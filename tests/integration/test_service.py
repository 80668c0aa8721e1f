"""Boot and service integration (issue 7): the systemd unit template and the
fstab recipe in tools/systemd/.

systemd is not PID 1 here, so the unit is checked with `systemd-analyze
verify`, and what it relies on is tested directly: its ExecStart line, run
as systemd would run it, exits 0 only with the mount live and non-zero (4)
with unusable keys, leaving nothing mounted or running; SIGTERM (systemd's
stop) and umount end the daemon cleanly with status 0; the documented fstab
options work through `mount -a -T`.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mounts import CTL, DAEMON, REPO, Volume, get, is_mounted, put
from test_durability import daemon_pid

UNIT = REPO / "tools" / "systemd" / "envelopefs@.service.in"  # @bindir@: where it is installed
FSTAB = REPO / "tools" / "systemd" / "fstab.example"


def unit_for_test(tmp_path):
    """The template with the build's daemon in place of the installed one."""
    text = UNIT.read_text().replace("@bindir@/envelopefs", str(DAEMON))
    assert str(DAEMON) in text
    path = tmp_path / "units" / "envelopefs@.service"
    path.parent.mkdir()
    path.write_text(text)
    return path


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_unit_template_verifies(tmp_path):
    unit = unit_for_test(tmp_path)
    proc = subprocess.run(["systemd-analyze", "verify", "--man=no", "envelopefs@srv-data.service"],
                          cwd=unit.parent, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def exec_start(tmp_path, mountpoint, env_file_text):
    """The unit's ExecStart for @mountpoint, expanded as systemd expands it:
    %f is the mountpoint, ${VAR} from Environment= then EnvironmentFile=."""
    env = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            k, v = line.split("=", 1)[1].split("=", 1)
            env[k] = v
    for line in env_file_text.splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            env[k.strip()] = v.strip()
    start = next(l for l in UNIT.read_text().splitlines() if l.startswith("ExecStart="))
    words = start.split("=", 1)[1].split()
    words[0] = str(DAEMON) if words[0] == "@bindir@/envelopefs" else words[0]
    return [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w).replace("%f", str(mountpoint))
            for w in words]


def wait_gone(pid):
    for _ in range(200):
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.05)
    return False


def test_unit_exec_start_mounts_and_sigterm_stops_cleanly(tmp_path):
    v = Volume(tmp_path)
    settings = tmp_path / "daemon.ini"
    settings.write_text("[daemon]\ncache_max_age = 60\n")
    argv = exec_start(tmp_path, v.mnt, f"BACKING={v.backing}\nOPTIONS=allow_other,config={settings}\n")
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # Type=forking: when ExecStart returns 0, the mount is already live.
    assert is_mounted(v.mnt)
    put(v.mnt / "f", b"service data")
    pid = daemon_pid(v)
    os.kill(pid, signal.SIGTERM)  # systemctl stop
    assert wait_gone(pid)
    assert not is_mounted(v.mnt)
    v.mount()
    assert get(v.mnt / "f") == b"service data"
    v.unmount()


def test_umount_ends_the_daemon_with_status_0(tmp_path):
    """What systemd sees of its main process when the volume is unmounted
    under it (SIGTERM: test_fs_keys.py::test_sigterm_unmounts_cleanly)."""
    v = Volume(tmp_path)
    daemon = v.mount_foreground()
    put(v.mnt / "f", b"x")
    subprocess.run(["umount", str(v.mnt)], check=True)
    assert daemon.wait(timeout=30) == 0
    assert "keys wiped" in daemon.stderr.read()
    assert not is_mounted(v.mnt)


def test_unusable_keys_fail_the_start(tmp_path):
    v = Volume(tmp_path)
    argv = exec_start(tmp_path, v.mnt, f"BACKING={v.backing}\n")
    os.chmod(v.keyring, 0o644)  # refused: readable by others
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4 and "chmod 600" in proc.stderr
    assert not is_mounted(v.mnt)
    os.chmod(v.keyring, 0o600)
    v.keyring.rename(tmp_path / "elsewhere")  # gone (an unreachable KMS fails the same way)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    assert not is_mounted(v.mnt)
    # Nothing is left running for the volume.
    assert subprocess.run(["pgrep", "-f", f"envelopefs.*{v.backing}"],
                          capture_output=True).stdout == b""


@pytest.fixture
def mount_helper_path():
    """mount.fuse3 looks for the daemon on its own PATH, as after `meson install`."""
    installed = Path("/usr/local/sbin/envelopefs")
    ours = not os.path.lexists(installed)
    if ours:
        os.symlink(DAEMON, installed)
    yield
    if ours:
        os.unlink(installed)


def fstab_line(backing, mnt, settings):
    """The documented example line, pointed at this volume."""
    line = next(l for l in FSTAB.read_text().splitlines() if l and not l.startswith("#"))
    fields = line.split()
    assert fields[2] == "fuse.envelopefs"
    opts = fields[3].replace("/etc/envelopefs/daemon.ini", str(settings))
    return f"{backing} {mnt} fuse.envelopefs {opts} 0 0\n"


def test_fstab_recipe_mount_a(tmp_path, mount_helper_path):
    v = Volume(tmp_path)
    settings = tmp_path / "daemon.ini"
    settings.write_text("[daemon]\ncache_entries = 7\n")
    fstab = tmp_path / "fstab"
    fstab.write_text(fstab_line(v.backing, v.mnt, settings))
    proc = subprocess.run(["mount", "-a", "-T", str(fstab)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    try:
        assert is_mounted(v.mnt)
        opts = [l.split()[3] for l in open("/proc/self/mounts") if l.split()[1] == str(v.mnt)][0]
        assert "allow_other" in opts and "default_permissions" in opts
        assert v.status()["cache"]["max_entries"] == 7  # config= reached the daemon
        put(v.mnt / "f", b"via fstab")
        assert get(v.mnt / "f") == b"via fstab"
        pid = daemon_pid(v)
    finally:
        subprocess.run(["umount", str(v.mnt)], check=True)
    assert wait_gone(pid)  # umount ends the daemon
    # Keys unusable: the mount fails (systemd marks the .mount unit failed).
    os.chmod(v.keyring, 0o644)
    fstab.write_text(fstab_line(v.backing, v.mnt, settings).replace(",nofail", ""))
    proc = subprocess.run(["mount", "-a", "-T", str(fstab)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0 and "chmod 600" in proc.stderr
    assert not is_mounted(v.mnt)


def test_status_for_operators(tmp_path):
    """`envelopefsctl status`: what an operator checks on a service's volume."""
    v = Volume(tmp_path)
    cfg = tmp_path / "daemon.ini"
    cfg.write_text("[daemon]\nwriteback_cache = false\ncache_entries = 9\n")
    v.mount(f"config={cfg}")
    try:
        put(v.mnt / "f", b"x" * 10000)
        time.sleep(1.1)
        human = subprocess.run([str(CTL), "status", str(v.mnt)], capture_output=True, text=True,
                               check=True).stdout
        lines = {l[:11].strip(): l[11:] for l in human.splitlines()}  # "label      value"
        js = json.loads(subprocess.run([str(CTL), "status", "--json", str(v.mnt)],
                                       capture_output=True, text=True, check=True).stdout)
        assert lines["volume"].strip() == js["volume"] and len(js["volume"]) == 36
        assert lines["kms"].startswith("local, master key local:")
        assert "limit 9 entries" in lines["dek cache"] and js["cache"]["max_entries"] == 9
        assert js["uptime"] >= 1 and re.fullmatch(r"0d 00h 00m 0\ds", lines["uptime"].strip())
        assert js["daemon"] == {"pid": daemon_pid(v), "version": js["daemon"]["version"],
                                "writeback_cache": False, "xattrs": True,
                                "handle_killpriv_v2": True, "shared": False}
        assert js["backing_fs"]["fs"] == lines["fs"].split(",")[0] and not js["backing_fs"]["shared"]
        assert lines["fs"].split(",")[1].strip() == "shared mode off"
        assert lines["daemon"].startswith(f"pid {daemon_pid(v)}, envelopefs ")
        assert lines["daemon"].strip().endswith("writeback cache off")
    finally:
        v.unmount()
