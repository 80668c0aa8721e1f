"""Keys, the DEK cache, tampering and mount-time failures through a real daemon."""
import errno
import os
import signal
import subprocess
import time

import pytest

from mounts import get, put, CTL, DAEMON, Volume, is_mounted, unmount, vol, hvol  # noqa: F401

BLOCK = 4096


def kms_calls(v):
    """(generate, unwrap) for files: a volume with encrypted names also unwraps its
    volume key, once per mount, which is not counted here."""
    k = v.status()["kms"]
    return k["generate"], k["unwrap"] - (1 if v.names == "encrypted" else 0)


def test_metadata_operations_never_call_the_kms(vol):
    m = vol.mnt
    put(m / "seed", b"x")  # one generate
    vol.remount()
    before = kms_calls(vol)
    os.mkdir(m / "d")
    (m / "d" / "touched").touch()
    (m / "seed").touch()
    os.stat(m / "seed")
    subprocess.run(["ls", "-lR", str(m)], check=True, capture_output=True)
    subprocess.run(["find", str(m)], check=True, capture_output=True)
    os.truncate(m / "seed", 0)  # truncation to zero needs no key
    os.unlink(m / "d" / "touched")
    os.rmdir(m / "d")
    assert kms_calls(vol) == before


def test_first_read_unwraps_once_then_cache(vol):
    m = vol.mnt
    put(m / "f", os.urandom(3 * BLOCK))
    assert kms_calls(vol) == (1, 0)
    vol.remount()
    assert kms_calls(vol) == (0, 0)
    data = get(m / "f")
    assert kms_calls(vol) == (0, 1)
    for _ in range(5):
        assert get(m / "f") == data
    os.link(m / "f", m / "g")
    assert get(m / "g") == data
    assert kms_calls(vol) == (0, 1)
    cache = vol.status()["cache"]
    assert cache["hits"] >= 1 and cache["entries"] == 1


def test_inode_number_reuse_never_gets_the_old_key(hvol):
    """A cached DEK outlives its file; a new file on the same inode number must not get it.

    The old file is deleted behind the daemon's back, in the backing directory
    (so its cache entry stays), the kernel is made to forget it, and copies of
    a file made by `envelopefsctl encrypt`, as another writer would, go into
    the backing directory until one lands on the old inode number.  Reading it through
    the mount must use its own record's key: with the old DEK it would fail
    authentication.
    """
    m = hvol.mnt
    put(m / "victim", b"old secret content")
    assert get(m / "victim") == b"old secret content"
    old_ino = os.stat(hvol.backing_path("victim")).st_ino
    os.unlink(hvol.backing_path("victim"))
    subprocess.run(["sync"], check=True)
    for _ in range(100):
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2")  # the kernel forgets the inode; the daemon closes its fd
        if hvol.status()["inodes"] == 0:
            break
        time.sleep(0.05)
    assert hvol.status()["cache"]["entries"] == 1
    # Another writer's file, made offline, copied byte for byte into new
    # backing files until one lands on the old inode number (earlier tests
    # may have freed many lower numbers first).
    template = hvol.backing_path("template")
    subprocess.run([str(CTL), "encrypt", str(hvol.backing), str(template)],
                   input=b"fresh content", check=True, capture_output=True)
    blob = template.read_bytes()
    reused = "template" if template.stat().st_ino == old_ino else None
    for i in range(0 if reused else 50000):
        path = hvol.backing_path(f"new{i}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, blob)
        ino = os.fstat(fd).st_ino
        os.close(fd)
        if ino == old_ino:
            reused = path.name
            break
    if reused is None:
        pytest.skip(f"backing filesystem did not reuse the inode number "
                    f"(daemon inodes: {hvol.status()['inodes']})")
    assert get(m / reused) == b"fresh content"
    assert hvol.status()["errors"]["integrity"] == 0


def test_tampered_block_gives_eio_and_logs(hvol):
    m = hvol.mnt
    data = os.urandom(4 * BLOCK)
    put(m / "f", data)
    hvol.unmount()
    backing = hvol.backing_path("f")
    size = os.path.getsize(backing)
    header = size - 4 * (BLOCK + 28)
    with open(backing, "r+b") as f:
        f.seek(header + 2 * (BLOCK + 28) + 100)  # inside block 2
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    hvol.mount()
    with open(m / "f", "rb") as f:
        assert f.read(2 * BLOCK) == data[:2 * BLOCK]
        with pytest.raises(OSError) as e:
            f.read(BLOCK)
        assert e.value.errno == errno.EIO
        f.seek(3 * BLOCK)
        assert f.read() == data[3 * BLOCK:]
    assert hvol.status()["errors"]["integrity"] >= 1


def test_truncated_backing_gives_eio(hvol):
    m = hvol.mnt
    put(m / "f", os.urandom(2 * BLOCK))
    hvol.unmount()
    backing = hvol.backing_path("f")
    os.truncate(backing, os.path.getsize(backing) - 5)
    hvol.mount()
    with pytest.raises(OSError) as e:
        get(m / "f")
    assert e.value.errno == errno.EIO


@pytest.mark.parametrize("damage", ["both-slots", "record-swap"])
def test_corrupt_or_foreign_key_record_gives_eio(hvol, damage):
    m = hvol.mnt
    put(m / "a", b"A" * 100)
    put(m / "b", b"B" * 100)
    hvol.unmount()
    a, b = hvol.backing_path("a"), hvol.backing_path("b")
    header = os.path.getsize(a) - (100 + 28)
    if damage == "both-slots":
        with open(a, "r+b") as f:
            f.write(b"\xff" * header)
    else:
        # b's record (valid, but wrapped for b's file ID) on a's content.
        with open(b, "rb") as f:
            rec = f.read(header)
        with open(a, "r+b") as f:
            f.write(rec)
    hvol.mount()
    with pytest.raises(OSError) as e:
        get(m / "a")
    assert e.value.errno == errno.EIO
    assert get(m / "b") == b"B" * 100


def test_torn_slot_falls_back_to_the_other(hvol):
    """A damaged second slot (a torn re-wrap) leaves the first record in charge."""
    m = hvol.mnt
    put(m / "a", b"content")
    hvol.unmount()
    a = hvol.backing_path("a")
    header = os.path.getsize(a) - (7 + 28)
    with open(a, "r+b") as f:
        f.seek(header // 2)
        f.write(os.urandom(header // 4))
    hvol.mount()
    assert get(m / "a") == b"content"


def test_backing_holds_no_plaintext(vol):
    m = vol.mnt
    marker = b"PLAINTEXT-MARKER-7f3a"
    put(m / "small", marker)
    put(m / "big", (marker + b"-") * 50000)
    with open(m / "sparse", "wb") as f:
        f.seek(100000)
        f.write(marker)
    os.setxattr(m / "small", "user.k", b"v")
    for root, dirs, files in os.walk(vol.backing):
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):  # the volume's directory IDs
                assert marker not in os.readlink(path).encode()
                continue
            with open(path, "rb") as f:
                assert marker not in f.read(), name


def test_wrong_or_missing_keyring_refuses_mount(tmp_path):
    v = Volume(tmp_path)
    v.mount()
    put(v.mnt / "f", b"secret")
    v.unmount()
    # Another keyring in place of the volume's.
    os.rename(v.keyring, tmp_path / "saved")
    subprocess.run([str(CTL), "keyring", "create", str(v.keyring)], check=True,
                   capture_output=True)
    proc = v.mount(check=False)
    assert proc.returncode == 4, proc.stderr
    assert str(v.keyring) in proc.stderr
    assert not is_mounted(v.mnt)
    # No keyring at all.
    os.unlink(v.keyring)
    proc = v.mount(check=False)
    assert proc.returncode == 4 and str(v.keyring) in proc.stderr
    # A keyring others can read.
    os.rename(tmp_path / "saved", v.keyring)
    os.chmod(v.keyring, 0o644)
    proc = v.mount(check=False)
    assert proc.returncode == 4 and "chmod" in proc.stderr
    os.chmod(v.keyring, 0o600)
    v.mount()
    assert get(v.mnt / "f") == b"secret"
    v.unmount()


def test_mount_refusals(tmp_path):
    (tmp_path / "notvol").mkdir()
    (tmp_path / "m").mkdir()
    proc = subprocess.run([str(DAEMON), str(tmp_path / "notvol"), str(tmp_path / "m")],
                          capture_output=True, text=True)
    assert proc.returncode == 3 and "envelopefsctl init" in proc.stderr
    v = Volume(tmp_path / "v" if (tmp_path / "v").mkdir() is None else None)
    v.mount()
    proc = v.mount(check=False)
    assert proc.returncode == 1 and "busy" in proc.stderr
    v.unmount()
    proc = subprocess.run([str(DAEMON), str(v.backing)], capture_output=True, text=True)
    assert proc.returncode == 2


def test_sigterm_unmounts_cleanly(tmp_path):
    v = Volume(tmp_path)
    proc = v.mount_foreground()
    put(v.mnt / "f", b"kept")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    assert not is_mounted(v.mnt)
    assert "keys wiped" in proc.stderr.read()
    v.mount()
    assert get(v.mnt / "f") == b"kept"
    v.unmount()


def test_fsynced_data_survives_kill_9(tmp_path):
    v = Volume(tmp_path)
    v.mount()
    data = os.urandom(5 * BLOCK + 7)
    fd = os.open(v.mnt / "f", os.O_RDWR | os.O_CREAT, 0o600)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)
    pid = int(subprocess.run(["pgrep", "-f", f"envelopefs.*{v.backing}"], capture_output=True,
                             text=True).stdout.split()[0])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    unmount(v.mnt)
    v.mount()
    assert get(v.mnt / "f") == data
    v.unmount()


def test_daemon_settings_file(tmp_path):
    v = Volume(tmp_path)
    cfg = tmp_path / "daemon.ini"
    cfg.write_text("[daemon]\ncache_entries = 2\ncache_max_age = 1\nlog_level = debug\n")
    v.mount(f"config={cfg}")
    for i in range(5):
        put(v.mnt / f"f{i}", b"x")
    for i in range(5):
        get(v.mnt / f"f{i}")
    st = v.status()["cache"]
    assert st["max_entries"] == 2 and st["entries"] <= 2 and st["evictions"] >= 3
    # Aged out while idle: past 1 s in whole seconds (up to 2 s) after the RELEASE that stamped
    # the last use, by a thread waking every second; 8 s for a loaded machine.
    deadline = time.monotonic() + 8
    while v.status()["cache"]["entries"] != 0:
        assert time.monotonic() < deadline, v.status()["cache"]
        time.sleep(0.2)
    v.unmount()
    cfg.write_text("[daemon]\nbogus = 1\n")
    proc = v.mount(f"config={cfg}", check=False)
    assert proc.returncode == 2 and "bogus" in proc.stderr


def test_envelopefsctl_status(vol):
    put(vol.mnt / "f", b"x" * 5000)
    vol.remount()
    get(vol.mnt / "f")
    out = subprocess.run([str(CTL), "status", str(vol.mnt)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    # With encrypted names the volume key was unwrapped at mount as well.
    unwraps = 2 if vol.names == "encrypted" else 1
    assert f"unwrap {unwraps}" in out.stdout and "misses 1" in out.stdout
    js = subprocess.run([str(CTL), "status", "--json", str(vol.mnt)], capture_output=True,
                        text=True, check=True).stdout
    import json
    assert json.loads(js)["kms"]["unwrap"] == unwraps
    other = subprocess.run([str(CTL), "status", str(vol.backing)], capture_output=True, text=True)
    assert other.returncode == 1 and "not the root of a mounted" in other.stderr


def test_read_ahead_window(tmp_path):
    """The mount reads ahead 4 MiB by default, as configured otherwise."""
    v = Volume(tmp_path)

    def window():
        dev = subprocess.run(["mountpoint", "-d", str(v.mnt)], capture_output=True, text=True,
                             check=True).stdout.strip()
        with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
            return int(f.read())

    v.mount()
    assert window() == 4096
    v.unmount()
    cfg = tmp_path / "daemon.ini"
    cfg.write_text("[daemon]\nread_ahead_kb = 512\n")
    v.mount(f"config={cfg}")
    assert window() == 512
    v.unmount()


def test_missing_key_xattr_on_content_is_eio_not_zeros(tmp_path):
    """xattr placement: a restore that dropped xattrs must not read as zeros or be re-keyed."""
    v = Volume(tmp_path, placement="xattr")
    v.mount()
    put(v.mnt / "f", b"q" * 7500)
    v.unmount()
    os.removexattr(v.backing / "f", "user.envelopefs.key")
    v.mount()
    with pytest.raises(OSError) as e:
        get(v.mnt / "f")
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        with open(v.mnt / "f", "ab") as f:
            f.write(b"Z")
    assert e.value.errno == errno.EIO
    assert "user.envelopefs.key" not in os.listxattr(v.backing / "f")
    v.unmount()


def test_replaced_file_key_leaves_the_cache(vol):
    put(vol.mnt / "victim", b"old")
    put(vol.mnt / "new", b"new")
    assert vol.status()["cache"]["entries"] == 2
    os.rename(vol.mnt / "new", vol.mnt / "victim")
    assert vol.status()["cache"]["entries"] == 1
    assert get(vol.mnt / "victim") == b"new"


def test_allow_other_without_default_permissions_refused(tmp_path):
    v = Volume(tmp_path)
    proc = v.mount("allow_other", "no_default_permissions", check=False)
    assert proc.returncode == 2 and "every user" in proc.stderr
    assert not is_mounted(v.mnt)


def test_fd_limit_raised_for_many_inodes(vol):
    """Every known inode holds an fd: the daemon takes all the fds it may have."""
    import resource
    pid = int(subprocess.run(["pgrep", "-f", f"envelopefs .*{vol.backing} "],
                             capture_output=True, text=True).stdout.split()[0])
    with open(f"/proc/{pid}/limits") as f:
        soft, hard = next(l for l in f if l.startswith("Max open files")).split()[3:5]
    assert soft == hard
    assert int(hard) >= resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def test_dek_pool_makes_new_file_keys_ahead(tmp_path):
    """With a pool, new files take keys made in the background; they decrypt after a remount, and
    after a master-key rotation no new file gets a key made under the old version."""
    v = Volume(tmp_path)
    cfg = tmp_path / "daemon.ini"
    cfg.write_text("[daemon]\ndek_pool = 8\n")
    v.mount(f"config={cfg}")
    deadline = time.monotonic() + 10
    while v.status()["pool"]["entries"] < 8 and time.monotonic() < deadline:
        time.sleep(0.05)
    pool = v.status()["pool"]
    assert pool["capacity"] == 8 and pool["entries"] == 8
    for i in range(20):
        put(v.mnt / f"f{i}", b"%d" % i * 1000)
    pool = v.status()["pool"]
    assert pool["hits"] >= 8 and pool["hits"] + pool["misses"] == 20

    subprocess.run([str(CTL), "keyring", "rotate", str(v.keyring)], check=True, capture_output=True)
    v.status()  # the daemon reads the current version: older keys in the pool are dropped
    for i in range(20, 30):
        put(v.mnt / f"f{i}", b"%d" % i * 1000)
    assert v.status()["pool"]["dropped"] >= 1
    v.remount()
    for i in range(30):
        assert get(v.mnt / f"f{i}") == b"%d" % i * 1000
        version = os.getxattr(v.mnt / f"f{i}", "trusted.envelopefs.key").split()[0]
        assert version == (b"1" if i < 20 else b"2"), i
    assert v.status()["pool"]["capacity"] == 8
    v.unmount()
    cfg.write_text("[daemon]\ndek_pool = lots\n")
    proc = v.mount(f"config={cfg}", check=False)
    assert proc.returncode == 2 and "dek_pool" in proc.stderr
