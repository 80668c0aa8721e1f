"""envelopefsctl import SRC DEST (issue 7, "Import and export").

The reference is `rsync -aHAX SRC/ MNT2/` into a second volume: the imported
tree must look the same through the mount (types, owners, modes, mtimes,
xattrs, hard links, symlink targets, device numbers, content), keep SRC's
holes (rsync without -S does not), leave SRC untouched, and finish an
interrupted or damaged import when run again.
"""
import hashlib
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from mounts import CTL, Volume, is_mounted

MIB = 1 << 20


def import_(src, dest, *opts, check=True):
    proc = subprocess.run([str(CTL), "import", *opts, str(src), str(dest)], capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def make_tree(src):
    """Every kind of entry import must carry, with odd owners, modes and times."""
    (src / "docs" / "deep" / "er").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "shared").mkdir(mode=0o2775)
    os.chown(src / "shared", 0, 3000)
    os.chmod(src / "shared", 0o2775)
    (src / "tmp").mkdir()
    os.chmod(src / "tmp", 0o1777)
    for size in (0, 1, 4095, 4096, 4097, 100_000):
        (src / "docs" / f"f{size}").write_bytes(os.urandom(size))
    (src / "docs" / "deep" / "er" / "name with spaces\nand newline").write_bytes(b"odd name")
    (src / "owned").write_bytes(b"belongs to 1234:5678")
    os.chown(src / "owned", 1234, 5678)
    os.chmod(src / "owned", 0o640)
    (src / "setuid").write_bytes(b"#!/bin/sh\n")
    os.chmod(src / "setuid", 0o4755)
    (src / "private").write_bytes(b"secret")
    os.chmod(src / "private", 0o400)
    # Hard links: three names of one file across directories, two of a FIFO.
    (src / "docs" / "linked").write_bytes(b"one inode" * 1000)
    os.link(src / "docs" / "linked", src / "docs" / "deep" / "linked2")
    os.link(src / "docs" / "linked", src / "linked3")
    os.mkfifo(src / "fifo")
    os.link(src / "fifo", src / "docs" / "fifo2")
    # Symlinks: relative, absolute, dangling, owned by someone else.
    os.symlink("docs/f4096", src / "rel-link")
    os.symlink("/etc/hostname", src / "abs-link")
    os.symlink("nowhere/at/all", src / "dangling")
    os.chown(src / "dangling", 42, 43, follow_symlinks=False)
    # Special files.
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(src / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 200))
    subprocess.run([sys.executable, "-c", "import socket,sys; socket.socket(socket.AF_UNIX)"
                    ".bind(sys.argv[1])", str(src / "sock")], check=True)
    # Sparse: holes at the start, in the middle and at the end.
    with open(src / "sparse", "wb") as f:
        f.truncate(16 * MIB)
        f.seek(2 * MIB)
        f.write(b"A" * 10_000)
        f.seek(10 * MIB + 123)
        f.write(os.urandom(70_000))
    # Xattrs on files and directories, in user.* and trusted.*.
    os.setxattr(src / "docs" / "f1", "user.mime_type", b"text/plain")
    os.setxattr(src / "docs" / "f1", "user.empty", b"")
    os.setxattr(src / "docs", "user.project", b"\x00binary\xff")
    os.setxattr(src / "owned", "trusted.app", b"root-only tag")
    # Times with nanoseconds, on every kind (directories last, after their content).
    for i, (d, names, files) in enumerate(sorted(os.walk(src, topdown=False))):
        for j, n in enumerate(names + files):
            t = 1_000_000_000 + i * 1000 + j
            os.utime(os.path.join(d, n), ns=(t * 10**9 + 7, t * 10**9 + 123456789),
                     follow_symlinks=False)
    os.utime(src, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9 + 1))


def snapshot(root, with_ctime=False):
    """Everything import must carry, by relative path; hard links by group."""
    entries, groups = {}, {}
    for d, names, files in os.walk(root):
        for n in names + files + ([] if d != str(root) else ["."]):
            p = os.path.join(d, n) if n != "." else d
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            e = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                 "uid": st.st_uid, "gid": st.st_gid,
                 "mtime": st.st_mtime_ns if not stat.S_ISLNK(st.st_mode) else None,
                 "xattrs": {k: os.getxattr(p, k, follow_symlinks=False)
                            for k in os.listxattr(p, follow_symlinks=False)}}
            if with_ctime:
                e["ctime"] = st.st_ctime_ns
                e["atime"] = st.st_atime_ns
            if stat.S_ISREG(st.st_mode):
                e["size"] = st.st_size
                with open(p, "rb") as f:
                    e["sha256"] = hashlib.sha256(f.read()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                e["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                e["rdev"] = st.st_rdev
            if not stat.S_ISDIR(st.st_mode) and st.st_nlink > 1:
                groups.setdefault(st.st_ino, []).append(rel)
            entries[rel] = e
    links = sorted(sorted(g) for g in groups.values())
    return entries, links


def assert_same(got, want):
    """Snapshots equal; on failure, name the entries that differ."""
    diff = {k: (got[0].get(k), want[0].get(k)) for k in set(got[0]) | set(want[0])
            if got[0].get(k) != want[0].get(k)}
    assert diff == {}
    assert got[1] == want[1]


@pytest.fixture
def trees(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
    one, two = Volume(tmp_path / "one"), Volume(tmp_path / "two")
    yield src, one, two
    for v in (one, two):
        v.unmount()


def test_import_matches_rsync_and_keeps_holes(trees):
    src, one, two = trees
    one.mount()
    two.mount()
    # A first walk settles the atimes that reading moves (relatime), so
    # that any later change is import's.
    snapshot(src)
    before = snapshot(src, with_ctime=True)
    proc = import_(src, one.mnt / "data")
    assert "errors:       0" in proc.stdout
    assert "differ" in proc.stdout and ", 0 differ" in proc.stdout
    assert "copied:       12 files" in proc.stdout, proc.stdout
    # Not a terminal: plain progress lines, the last of each phase at 100 %.
    assert "\r" not in proc.stderr
    assert "import: 100%" in proc.stderr and "verify: 100%" in proc.stderr, proc.stderr
    subprocess.run(["rsync", "-aHAX", f"{src}/", f"{two.mnt}/data/"], check=True,
                   capture_output=True)
    imported, reference = snapshot(one.mnt / "data"), snapshot(two.mnt / "data")
    assert_same(imported, reference)
    assert imported[0]["sparse"]["size"] == 16 * MIB
    assert len(imported[1]) == 2  # the file's three names and the FIFO's two
    # SRC was only read: not even an atime or ctime moved.
    assert snapshot(src, with_ctime=True) == before
    # Holes stay holes in the backing file; rsync's copy wrote 16 MiB of zeros.
    kept = os.stat(one.backing_path("data/sparse")).st_blocks * 512
    full = os.stat(two.backing_path("data/sparse")).st_blocks * 512
    assert kept < 1 * MIB < 15 * MIB < full
    # And it all survives a remount.
    one.remount()
    assert_same(snapshot(one.mnt / "data"), reference)


def test_rerun_finishes_a_damaged_import_and_verifies(trees):
    src, one, _ = trees
    one.mount()
    import_(src, one.mnt)
    reference = snapshot(src)
    # Damage it as an interruption would: a half-written file (its mtime
    # is not SRC's), a missing subtree, a missing link, a stale metadata.
    with open(one.mnt / "docs" / "f100000", "r+b") as f:
        f.truncate(50_000)
    subprocess.run(["rm", "-rf", str(one.mnt / "docs" / "deep")], check=True)
    os.unlink(one.mnt / "linked3")
    os.unlink(one.mnt / "sock")
    os.chmod(one.mnt / "owned", 0o777)
    proc = import_(src, one.mnt)
    # f100000 and the odd name, and the first name of the linked file if the
    # walk meets its removed name (deep/linked2) first.
    assert ("copied:       2 files" in proc.stdout and "kept:         10 files" in proc.stdout
            or "copied:       3 files" in proc.stdout and "kept:         9 files" in proc.stdout
            ), proc.stdout
    assert_same(snapshot(one.mnt), reference)
    # A kept file is still verified: a tampered backing block is caught.
    one.unmount()
    backing = one.backing_path("docs/f4097")
    data, st = bytearray(backing.read_bytes()), os.stat(backing)
    data[len(data) // 2] ^= 0x40
    backing.write_bytes(bytes(data))
    os.utime(backing, ns=(st.st_atime_ns, st.st_mtime_ns))  # size and mtime as imported
    one.mount()
    proc = import_(src, one.mnt, check=False)
    assert proc.returncode != 0
    assert "docs/f4097" in proc.stderr and "Input/output error" in proc.stderr


def daemons_of(backing):
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if argv[0].endswith(b"envelopefs") and str(backing).encode() in argv:
            pids.append(int(pid))
    return pids


def test_import_into_backing_dir_privately_and_resume(trees, tmp_path):
    src, one, _ = trees
    with open(src / "big", "wb") as f:
        f.write(os.urandom(24 * MIB))
    reference = snapshot(src)
    # Killed mid-way: its private mount and daemon go with it.
    proc = subprocess.Popen([str(CTL), "import", str(src), str(one.backing)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        if daemons_of(one.backing):
            break
        time.sleep(0.01)
    assert daemons_of(one.backing), "no private daemon"
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(200):
        if not daemons_of(one.backing):
            break
        time.sleep(0.05)
    assert daemons_of(one.backing) == []
    # Nobody else ever saw the mount.
    assert not any("envelopefs-import" in line for line in open("/proc/self/mounts"))
    out = import_(src, one.backing).stdout
    assert "errors:       0" in out
    one.mount()
    assert_same(snapshot(one.mnt), reference)
    # A mounted backing directory is refused: two daemons must not share it.
    refused = import_(src, one.backing, check=False)
    assert refused.returncode == 1 and "is mounted" in refused.stderr


def test_import_refuses_what_it_cannot_do(tmp_path, trees):
    src, one, _ = trees
    plain = tmp_path / "plain"
    plain.mkdir()
    proc = import_(src, plain, check=False)
    assert proc.returncode == 2 and "neither inside a mounted envelopefs" in proc.stderr
    one.mount()
    proc = import_(one.mnt, one.mnt / "x", check=False)
    assert proc.returncode == 2 and "overlap" in proc.stderr
    proc = import_(tmp_path / "missing", one.mnt, check=False)
    assert proc.returncode == 2
    assert not is_mounted(tmp_path / "plain")
