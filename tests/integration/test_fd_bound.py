"""No descriptor ceiling: the daemon's open descriptors stay under a bound
however many inodes the kernel caches (issue 16).

The daemon runs under a 1,024-descriptor limit (prlimit, which its children
inherit) and serves a tree of FD_BOUND_FILES files (100,000; fewer under a
sanitizer build, FD_BOUND_FILES in the environment): every file is created,
listed (`ls -lR`), stat'ed, read, renamed with its directory, re-wrapped
(`envelopefsctl rotate`) and re-keyed (`rotate --rekey`) without one error,
while a sampler counts /proc/PID/fd.  With one descriptor held per known
inode, the daemon would need 100,000.
"""
import json
import os
import subprocess
import threading
import time

import pytest

from mounts import CTL, DAEMON, Volume, is_mounted, unmount

LIMIT = 1024
FILES = int(os.environ.get("FD_BOUND_FILES", "100000"))
PER_DIR = 1000


def ctl(*args):
    proc = subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def content(d, i):
    return f"file {i} of directory {d}\n".encode()


class FdSampler(threading.Thread):
    """The most descriptors /proc/PID/fd showed, sampled every 20 ms."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.samples = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                n = len(os.listdir(f"/proc/{self.pid}/fd"))
            except FileNotFoundError:
                return
            self.peak = max(self.peak, n)
            self.samples += 1
            time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.join()
        return self.peak


@pytest.fixture
def limited(tmp_path):
    v = Volume(tmp_path)
    proc = subprocess.run(["prlimit", f"--nofile={LIMIT}:{LIMIT}", str(DAEMON),
                           str(v.backing), str(v.mnt)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert is_mounted(v.mnt)
    yield v
    unmount(v.mnt)


def dirs(top):
    return [top / f"d{d:03}" for d in range((FILES + PER_DIR - 1) // PER_DIR)]


def files_in(d_index):
    first = d_index * PER_DIR
    return range(first, min(first + PER_DIR, FILES))


def read_all(top):
    for d, path in enumerate(dirs(top)):
        for i in files_in(d):
            with open(path / f"f{i}", "rb") as f:
                assert f.read() == content(d, i), path / f"f{i}"


def test_tree_under_1024_descriptors(limited):
    v = limited
    status = v.status()
    pid = status["daemon"]["pid"]
    with open(f"/proc/{pid}/limits") as f:
        line = next(line for line in f if line.startswith("Max open files"))
    assert line.split()[3:5] == [str(LIMIT), str(LIMIT)], line
    assert status["inode_fds_bounded"] is True
    bound = LIMIT // 2  # the default max_fds: half the limit
    sampler = FdSampler(pid)
    sampler.start()
    started = time.monotonic()

    def phase(name):
        # Shown with the failure, if any: which step was slow or failed.
        print(f"{name}: {time.monotonic() - started:.1f} s, peak {sampler.peak} descriptors")

    for d, path in enumerate(dirs(v.mnt)):
        path.mkdir()
        for i in files_in(d):
            with open(path / f"f{i}", "wb") as f:
                f.write(content(d, i))
    phase("created")
    # The kernel keeps many more inodes than the daemon may keep descriptors.
    assert v.status()["inodes"] > 4 * LIMIT

    listing = subprocess.run(["ls", "-lR", str(v.mnt)], capture_output=True, text=True,
                             timeout=600)
    assert listing.returncode == 0 and listing.stderr == "", listing.stderr[:2000]
    assert sum(1 for line in listing.stdout.splitlines() if line.startswith("-")) == FILES
    phase("listed")

    for d, path in enumerate(dirs(v.mnt)):
        for i in files_in(d):
            assert os.stat(path / f"f{i}").st_size == len(content(d, i))
    read_all(v.mnt)
    phase("stat and read")

    # Renames: every directory (moving the whole tree), then each file of one.
    renamed = v.mnt / "renamed"
    renamed.mkdir()
    for path in dirs(v.mnt):
        os.rename(path, renamed / path.name)
    first = renamed / "d000"
    for i in files_in(0):
        os.rename(first / f"f{i}", first / f"g{i}")
    for i in files_in(0):
        os.rename(first / f"g{i}", first / f"f{i}")

    phase("renamed")
    ctl("keyring", "rotate", v.keyring)
    time.sleep(1.1)  # the local provider notices a rotated keyring within a second
    for extra in ([], ["--rekey"]):
        summary = json.loads(ctl("rotate", "--json", *extra, v.mnt))
        assert summary["failed"] == 0 and summary["files"] == FILES, summary
        phase(f"rotate {extra}")
    read_all(renamed)
    phase("read again")

    peak = sampler.finish()
    assert sampler.samples > 10
    status = v.status()
    assert status["inode_fds"] <= bound
    # The inode descriptors, plus FUSE's, the log's, the keyring's and a few
    # open files at a time: far under the limit, whatever the tree.
    assert peak <= bound + 64, f"{peak} descriptors at the peak"


@pytest.mark.parametrize("names", ["plain", "encrypted"])
def test_guarantees_with_eight_descriptors(tmp_path, names):
    """Every operation on inodes whose descriptors were closed and come back by handle."""
    v = Volume(tmp_path, names=names)
    v.mount("max_fds=8")
    try:
        m = v.mnt

        def churn():
            # More inodes touched than the cache keeps: every earlier fd is closed.
            for i in range(40):
                os.stat(m / "many" / f"n{i}")

        (m / "many").mkdir()
        for i in range(40):
            (m / "many" / f"n{i}").write_bytes(b"n%d" % i)
        (m / "a").mkdir()
        (m / "b").mkdir()
        (m / "a" / "file").write_bytes(b"content")
        os.link(m / "a" / "file", m / "b" / "link")
        os.symlink("a/file", m / "sym")
        os.setxattr(m / "a" / "file", "user.note", b"kept")
        churn()
        assert (m / "b" / "link").read_bytes() == b"content"
        assert os.readlink(m / "sym") == "a/file"
        assert os.getxattr(m / "a" / "file", "user.note") == b"kept"
        os.rename(m / "a", m / "b" / "moved")
        churn()
        assert (m / "b" / "moved" / "file").read_bytes() == b"content"
        assert os.stat(m / "b" / "link").st_nlink == 2
        os.chmod(m / "b" / "link", 0o600)
        churn()
        assert os.stat(m / "b" / "moved" / "file").st_mode & 0o777 == 0o600

        # An open file keeps working once unlinked, its inode's fd evicted or not.
        fd = os.open(m / "b" / "link", os.O_RDWR)
        os.unlink(m / "b" / "link")
        os.unlink(m / "b" / "moved" / "file")
        churn()
        os.pwrite(fd, b"CONTENT", 0)
        assert os.pread(fd, 100, 0) == b"CONTENT"
        assert os.fstat(fd).st_nlink == 0
        os.close(fd)

        # Names removed and made again (a backing inode number may come back):
        # each name reads its own file.
        held = os.open(m / "many" / "n0", os.O_PATH)
        for round_ in range(3):
            for i in range(40):
                os.unlink(m / "many" / f"n{i}")
            for i in range(40):
                (m / "many" / f"n{i}").write_bytes(b"r%d-%d" % (round_, i))
            for i in range(40):
                assert (m / "many" / f"n{i}").read_bytes() == b"r%d-%d" % (round_, i)
        os.close(held)

        (m / "empty").mkdir()
        os.mkfifo(m / "empty" / "fifo")
        churn()
        assert os.listdir(m / "empty") == ["fifo"]
        assert os.access(m / "empty" / "fifo", os.R_OK)
        os.statvfs(m / "empty")
        os.unlink(m / "empty" / "fifo")
        churn()
        os.rmdir(m / "empty")
        assert sorted(os.listdir(m)) == ["b", "many", "sym"]

        ctl("keyring", "rotate", v.keyring)
        time.sleep(1.1)
        summary = json.loads(ctl("rotate", "--json", v.mnt))
        assert summary["failed"] == 0, summary
        assert v.status()["inode_fds"] <= 8 + 1
    finally:
        v.unmount()
