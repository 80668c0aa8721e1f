"""fsync, fdatasync, O_SYNC, O_DSYNC and directory fsync reach the backing store
before they return (issue 7, "Multi-user and durability semantics").

What these tests can and cannot prove.  A kill -9 of the daemon loses what
the daemon (or, with the writeback cache, the kernel's FUSE page cache) has
not yet written to the backing files; it does not drop the backing
filesystem's own page cache, so "remount and the data is there" shows that
the synced data had left the daemon and the FUSE cache, not that it was on
the disk.  Three checks together cover the path:

  1. Right after the sync returns the daemon is frozen (SIGSTOP), and the
     backing file is decrypted offline with `envelopefsctl decrypt`: the
     synced bytes are in the backing file, complete and authentic, with no
     help from the daemon.
  2. The daemon is then killed with SIGKILL, the mount is torn down, the
     volume is mounted again, and the data reads back.
  3. strace shows the daemon calling fsync/fdatasync on that very backing
     file for each kind of sync, and not for a plain write: the request is
     passed on to the backing filesystem, which is what makes it durable
     against power loss (the daemon replies only after the call returns,
     see envfs_fsync).  Proving the disk's own cache flush would need a
     power cut, which no test here can do.
"""
import os
import re
import signal
import subprocess
import time

import pytest

from mounts import CTL, Volume, get, is_mounted, unmount

BLOCK = 4096


def daemon_pid(v):
    """The daemon serving @v (its command line names the backing and mount dirs)."""
    want = [str(v.backing), str(v.mnt)]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        # BACKING MOUNTPOINT, wherever the options are (mount.fuse3 puts them last).
        pairs = list(zip(argv, argv[1:]))
        if argv[0].endswith("envelopefs") and tuple(want) in pairs:
            return int(pid)
    raise AssertionError(f"no daemon for {v.mnt}")


def decrypt_offline(v, name):
    cp = subprocess.run([str(CTL), "decrypt", str(v.backing), str(v.backing_path(name))],
                        capture_output=True, timeout=60)
    assert cp.returncode == 0, cp.stderr.decode()
    return cp.stdout


def write_fsync(path, data):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, data)
    os.fsync(fd)
    os.close(fd)


def write_fdatasync(path, data):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, data[:BLOCK + 100])
    os.fdatasync(fd)
    os.pwrite(fd, data[BLOCK + 100:], BLOCK + 100)  # grows the file: the size must stick too
    os.fdatasync(fd)
    os.close(fd)


def write_flag(flag):
    def write(path, data):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o644)
        for off in range(0, len(data), 3000):  # each write(2) is durable on its own
            os.write(fd, data[off:off + 3000])
        os.close(fd)
    return write


def write_rename_dirsync(path, data):
    """The classic atomic replace: temporary file, fsync, rename, fsync the directory."""
    tmp = path.with_name(path.name + ".tmp")
    write_fsync(tmp, data)
    os.rename(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(dfd)
    os.close(dfd)


SYNCS = {
    "fsync": write_fsync,
    "fdatasync": write_fdatasync,
    "o_sync": write_flag(os.O_SYNC),
    "o_dsync": write_flag(os.O_DSYNC),
    "dir_fsync": write_rename_dirsync,
}


def mount_with_cache(v, tmp_path, writeback):
    settings = tmp_path / "daemon.ini"
    settings.write_text(f"[daemon]\nwriteback_cache = {'true' if writeback else 'false'}\n")
    v.mount(f"config={settings}")


@pytest.mark.parametrize("placement", ["header", "xattr"])
@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "direct"])
def test_synced_data_survives_kill_9(tmp_path, writeback, placement):
    v = Volume(tmp_path, placement=placement)
    mount_with_cache(v, tmp_path, writeback)
    os.mkdir(v.mnt / "d")
    expected = {}
    for i, (name, write) in enumerate(SYNCS.items()):
        data = os.urandom(3 * BLOCK + 1000 + i)
        path = v.mnt / "d" / name
        write(path, data)
        expected[f"d/{name}"] = data
    # Overwrite in the middle of an already durable file, then sync again.
    path = v.mnt / "d" / "fsync"
    with open(path, "r+b") as f:
        f.seek(BLOCK - 10)
        f.write(b"Z" * 30)
        f.flush()  # out of Python's buffer, or the fsync has nothing to sync
        os.fsync(f.fileno())
    d = bytearray(expected["d/fsync"])
    d[BLOCK - 10:BLOCK + 20] = b"Z" * 30
    expected["d/fsync"] = bytes(d)

    pid = daemon_pid(v)
    os.kill(pid, signal.SIGSTOP)
    try:
        # 1. The backing files already hold every synced byte, decryptable
        #    without the daemon.  (Nothing may touch the mount meanwhile.)
        for name, data in expected.items():
            assert decrypt_offline(v, name) == data, name
        assert not os.path.exists(v.backing_path("d/dir_fsync.tmp"))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGCONT)
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.05)
    unmount(v.mnt)
    assert not is_mounted(v.mnt)
    # 2. Mounted again, everything synced is there.
    mount_with_cache(v, tmp_path, writeback)
    try:
        for name, data in expected.items():
            assert get(v.mnt / name) == data, name
        assert sorted(os.listdir(v.mnt / "d")) == sorted(SYNCS)
    finally:
        v.unmount()


def wait_traced(pid, tracer):
    """Until @tracer has seized every thread of @pid (strace says nothing when it has)."""
    for _ in range(200):
        tids = os.listdir(f"/proc/{pid}/task")
        tracers = []
        for tid in tids:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                tracers += [int(l.split()[1]) for l in f if l.startswith("TracerPid:")]
        if tracers and all(t == tracer for t in tracers):
            return
        time.sleep(0.02)
    raise AssertionError("strace did not attach")


def traced(v, action, syscalls):
    """Run @action while strace watches the daemon's @syscalls; strace's lines
    (file descriptors shown with their paths)."""
    log = v.root / "strace.log"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-y", "-e", "trace=" + ",".join(syscalls),
                               "-o", str(log), "-p", str(daemon_pid(v))],
                              stderr=subprocess.PIPE)
    try:
        wait_traced(daemon_pid(v), tracer.pid)
        action()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    return log.read_text().splitlines()


def traced_syncs(v, action):
    """Run @action while strace watches the daemon; the fsync/fdatasync calls
    it made on files of the backing directory, as (call, path)."""
    calls = []
    for line in traced(v, action, ["fsync", "fdatasync"]):
        for call in ("fdatasync(", "fsync("):
            if call in line and "= 0" in line:
                path = line.split("<", 1)[1].split(">", 1)[0]
                calls.append((call[:-1], os.path.relpath(path, v.backing)))
    return calls


@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "direct"])
def test_each_sync_reaches_the_backing_file(tmp_path, writeback):
    v = Volume(tmp_path)
    mount_with_cache(v, tmp_path, writeback)
    try:
        data = os.urandom(2 * BLOCK)
        # Control: a plain write and close makes the daemon sync nothing.
        plain = traced_syncs(v, lambda: (v.mnt / "plain").write_bytes(data))
        assert plain == []
        for name, write in SYNCS.items():
            calls = traced_syncs(v, lambda: write(v.mnt / name, data))
            target = os.path.relpath(v.backing_path(name), v.backing)
            if name == "dir_fsync":
                tmp = os.path.relpath(v.backing_path(name + ".tmp"), v.backing)
                assert ("fsync", tmp) in calls, calls
                assert ("fsync", ".") in calls, calls  # the directory itself
            elif name in ("fdatasync", "o_dsync"):
                assert ("fdatasync", target) in calls, calls
            else:
                assert ("fsync", target) in calls, calls
    finally:
        v.unmount()


# The writeback cache keeps a file's mtime in the kernel and sends it before
# every fsync and close; the daemon sets it on the backing file at a full
# fsync, a close, any other SETATTR, a forget or unmount (fs/mtime.h).

def test_mtime_reaches_the_backing_file_at_fsync_and_close(tmp_path):
    v = Volume(tmp_path)
    v.mount()
    try:
        path, backing = v.mnt / "f", v.backing_path("f")
        explicit = 1_000_000_000 * 1_500_000_000 + 123_456_789
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        os.write(fd, b"x" * 5000)
        os.fdatasync(fd)
        os.utime(path, ns=(explicit, explicit))
        assert os.stat(path).st_mtime_ns == explicit
        os.fsync(fd)
        # What the full fsync made durable is on the backing file itself.
        assert os.stat(backing).st_mtime_ns == explicit
        os.pwrite(fd, b"y" * 100, 10)
        seen = os.fstat(fd).st_mtime_ns  # the kernel's, for the write just done
        assert seen != explicit
        os.close(fd)
        assert os.stat(backing).st_mtime_ns == seen
        v.remount()
        assert os.stat(path).st_mtime_ns == seen
    finally:
        v.unmount()


def test_fsynced_mtime_survives_kill_9(tmp_path):
    v = Volume(tmp_path)
    v.mount()
    path = v.mnt / "f"
    explicit = 1_000_000_000 * 1_400_000_000 + 987_654_321
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"x" * 5000)
    os.utime(path, ns=(explicit, explicit))
    os.fsync(fd)
    pid = daemon_pid(v)
    os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if not os.path.exists(f"/proc/{pid}"):
            break
        time.sleep(0.05)
    try:
        os.close(fd)
    except OSError:
        pass  # the daemon is gone
    unmount(v.mnt)
    v.mount()
    try:
        assert os.stat(path).st_mtime_ns == explicit
        assert get(path) == b"x" * 5000
    finally:
        v.unmount()


def test_a_commit_loop_neither_sets_nor_asks_times(tmp_path):
    """A database commit (an in-place write and an fdatasync) must not make
    the daemon set the backing file's times, nor ask for its ctime or mtime:
    either makes the backing inode dirty for fdatasync (asking does on a
    multigrain-timestamp filesystem, by making the next write stamp a
    fine-grained time), and each commit would then write the inode too."""
    v = Volume(tmp_path)
    v.mount()
    try:
        path = v.mnt / "wal"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.write(fd, b"\0" * (16 * BLOCK))
        os.fsync(fd)

        def commits():
            for i in range(20):
                os.pwrite(fd, os.urandom(2 * BLOCK), (i % 8) * 2 * BLOCK)
                os.fdatasync(fd)
                time.sleep(0.01)  # let the kernel's mtime move on

        lines = traced(v, commits, ["utimensat", "futimesat", "newfstatat", "fstat", "statx",
                                    "fdatasync"])
        os.close(fd)
        target = str(v.backing_path("wal"))
        on_file = [l for l in lines if f"<{target}>" in l or f"/{v.backing_path('wal').name}" in l]
        assert sum("fdatasync(" in l for l in on_file) == 20, lines
        # The first write since the last close reads the mtime the kernel
        # shows, once (fs/mtime.h); starting strace closed a forked copy of fd.
        masks = [m.group(1) for m in (re.search(r'statx\([^,]*, "[^"]*", [^,]*, ([^,]+), ', l)
                                      for l in on_file) if m]
        assert sum("STATX_MTIME" in m for m in masks) <= 1, lines
        for mask in masks:
            assert "STATX_CTIME" not in mask and "STATX_BASIC_STATS" not in mask, mask
            assert "STATX_ALL" not in mask, mask
        for line in on_file:
            assert "utimensat(" not in line and "futimesat(" not in line, line
            assert "fstat(" not in line and "newfstatat(" not in line, line
    finally:
        v.unmount()


def test_written_files_keep_the_mtime_the_mount_showed(tmp_path):
    """The daemon's write-back moves the backing file's mtime after the kernel
    stamped its own; a file created and written within one clock tick gets no
    SETATTR from the kernel.  The mtime seen before a remount is the one after."""
    v = Volume(tmp_path)
    v.mount()
    try:
        names = [f"f{i}" for i in range(40)]
        for i, name in enumerate(names):
            (v.mnt / name).write_bytes(os.urandom(3000 * (i % 5 + 1)))
        seen = {n: os.stat(v.mnt / n).st_mtime_ns for n in names}
        v.remount()
        assert {n: os.stat(v.mnt / n).st_mtime_ns for n in names} == seen
        assert {n: os.stat(v.backing_path(n)).st_mtime_ns for n in names} == seen
    finally:
        v.unmount()
