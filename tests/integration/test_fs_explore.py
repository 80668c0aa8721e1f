"""Differential content explorer: one random operation sequence on the mount and on ext4.

The same seeded sequence of file-data operations runs against two files on a
mounted volume and two files in a plain local directory (the reference).  After
every operation the return values and errnos must match, and so must the sizes;
the full contents are compared at checkpoints, after dropping the page cache
and after remounting.  Operations: pwrite/pread/write through O_RDWR, O_RDONLY
and O_WRONLY|O_APPEND descriptors, ftruncate, fallocate in every mode, SEEK_DATA/
SEEK_HOLE, shared mmap writes and reads, copy_file_range and sendfile between the
files, truncate by path, O_TRUNC opens, fsync/fdatasync, posix_fadvise(DONTNEED),
close and reopen, drop_caches, remount.

ENVFS_EXPLORE_SEED=N replays one sequence (the seed is in every failure message);
ENVFS_EXPLORE_OPS=N sets the number of operations per volume variant (a soak).
"""
import ctypes
import errno
import mmap
import os
import random
import subprocess
import time

import pytest

from mounts import cvol  # noqa: F401

BLOCK = 4096
DEFAULT_OPS = 700
MTIME_SAMPLE = 0.1  # share of operations whose effect on the mtime is compared

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_COLLAPSE_RANGE = 0x08
FALLOC_FL_ZERO_RANGE = 0x10
FALLOC_FL_INSERT_RANGE = 0x20
FALLOC_MODES = [0, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                FALLOC_FL_ZERO_RANGE, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE]
# README.md ("File content behaves as on a local file system ... with these
# differences"): envelopefs does not shift file contents; these modes fail with
# EOPNOTSUPP on the mount (any other answer is compared with ext4).
UNSUPPORTED_MODES = {FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE}

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def fallocate(fd, mode, off, length):
    if libc.fallocate(fd, mode, off, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def outcome(fn):
    """("ok", value) or ("err", errno name): what the two sides must agree on."""
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


CLOCK_REALTIME_COARSE = 5  # linux/time.h


def clock_past(mtimes):
    """Wait until the clock the kernel stamps files with is past all @mtimes (ns), so
    that a change after this gets a later mtime on any file system; False if that
    takes over a second (an mtime in the future).

    One tick of CLOCK_REALTIME_COARSE is not enough.  Since Linux 6.13 the kernel
    stamps a file with the later of that clock and the multigrain floor
    (current_time(), ktime_get_coarse_real_ts64_mg()): the latest fine-grained time a
    multigrain file system handed out, as ext4 does to a file whose times were read.
    The floor can be ahead of the coarse clock by more than a tick (seen: 7 ms with
    4 ms ticks, when a tick came late).  A FUSE inode, which keeps its own mtime under
    the writeback cache, is no multigrain one: stamped with a floor ext4 had just set,
    it gets that very time again after one more coarse tick, so a write leaves its
    mtime as it was where ext4, stamping a fine-grained time, moves it.  Once the
    coarse clock is past an mtime every stamp is later; the floor is never ahead of
    the real time, so that takes a tick or two."""
    latest, deadline = max(mtimes), time.monotonic() + 1
    while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= latest:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def fs_type(path):
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], check=True,
                          capture_output=True, text=True).stdout.strip()


class Side:
    """Two files and three descriptors on each: read-write, read-only, append."""
    KINDS = {"rw": os.O_RDWR, "ro": os.O_RDONLY, "ap": os.O_WRONLY | os.O_APPEND}

    def __init__(self, directory):
        self.paths = [directory / "a", directory / "b"]
        for p in self.paths:
            os.close(os.open(p, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644))
        self.fds = {}

    def open_all(self):
        for i, p in enumerate(self.paths):
            for kind, flags in self.KINDS.items():
                self.fds[i, kind] = os.open(p, flags)

    def close_all(self):
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def size(self, i):
        return os.fstat(self.fds[i, "rw"]).st_size

    def content(self, i):
        fd, size = self.fds[i, "ro"], self.size(i)
        return os.pread(fd, size + 1, 0) if size else b""


def data_ranges(fd, size):
    """[(start, end)] of data by SEEK_DATA/SEEK_HOLE, or raise on an impossible answer."""
    ranges, pos = [], 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            assert e.errno == errno.ENXIO, f"SEEK_DATA at {pos}: {e}"
            break
        assert pos <= start < size, f"SEEK_DATA at {pos} -> {start}, size {size}"
        assert not ranges or start > pos, f"SEEK_HOLE answered {pos}, which is data"
        end = os.lseek(fd, start, os.SEEK_HOLE)
        assert start < end <= size, f"SEEK_HOLE at data {start} -> {end}, size {size}"
        ranges.append((start, end))
        pos = end
    return ranges


def uncovered(inner, outer):
    """Bytes of the ranges @inner outside the union of @outer."""
    missing = []
    for start, end in inner:
        pos = start
        for o_start, o_end in outer:
            if o_end <= pos or o_start >= end:
                continue
            if o_start > pos:
                missing.append((pos, o_start))
            pos = max(pos, o_end)
        if pos < end:
            missing.append((pos, end))
    return missing


class Explorer:
    def __init__(self, vol, ref_dir, seed):
        self.vol = vol
        self.seed = seed
        self.rng = random.Random(seed)
        self.mount = Side(vol.mnt)
        self.ref = Side(ref_dir)
        self.sides = (self.mount, self.ref)
        self.log = []
        self.step = 0
        self.mtimes = None
        self.mtime_exempt = self.mtime_exempt_since_checkpoint = False
        self.writeback = vol.status()["daemon"]["writeback_cache"]

    def fail(self, what):
        recent = "\n  ".join(self.log[-25:])
        pytest.fail(f"ENVFS_EXPLORE_SEED={self.seed} step {self.step}: {what}\n"
                    f"last operations:\n  {recent}", pytrace=False)

    def check(self, cond, what):
        if not cond:
            self.fail(what)

    # Parameters: block edges, the end of file, far beyond it, zero lengths.
    def offset(self, size):
        r = self.rng.random()
        if r < 0.35:
            return self.rng.randrange(0, size + 2 * BLOCK)
        if r < 0.65:
            return max(0, self.rng.randrange(0, 10) * BLOCK + self.rng.choice([-1, 0, 0, 1]))
        if r < 0.9:
            return max(0, size + self.rng.choice([-BLOCK, -1, 0, 0, 1, BLOCK - 1, BLOCK]))
        if r < 0.97:
            return self.rng.randrange(0, 48) * BLOCK + self.rng.randrange(0, BLOCK)
        return self.rng.randrange(100, 400) * BLOCK + self.rng.randrange(0, BLOCK)

    def length(self):
        return self.rng.choice([0, 1, 2, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK,
                                self.rng.randrange(1, 3 * BLOCK),
                                self.rng.randrange(1, 3 * BLOCK),
                                self.rng.randrange(1, 40 * BLOCK),
                                self.rng.choice([self.rng.randrange(1, 40 * BLOCK),
                                                 # past FUSE's 1 MiB max_write, now and then
                                                 self.rng.randrange(256 * BLOCK, 400 * BLOCK)])])

    def both(self, desc, fn):
        """Run fn(side) on the mount, then on the reference; the outcomes must match."""
        self.log.append(desc)
        got = [outcome(lambda s=s: fn(s)) for s in self.sides]
        self.check(got[0] == got[1], f"{desc}: mount {got[0]!r:.200} != ext4 {got[1]!r:.200}")

    def check_sizes(self):
        for i in range(2):
            m, r = self.mount.size(i), self.ref.size(i)
            self.check(m == r, f"file {i}: size {m} on the mount, {r} on ext4")

    def check_contents(self, when):
        for i in range(2):
            m, r = self.mount.content(i), self.ref.content(i)
            if m != r:
                at = next((k for k in range(min(len(m), len(r))) if m[k] != r[k]),
                          min(len(m), len(r)))
                self.fail(f"{when}: file {i} differs at byte {at} (lengths {len(m)}, {len(r)})")

    def check_seek(self, i):
        """SEEK_DATA/SEEK_HOLE on the mount never hide data: every byte outside its data
        ranges reads as zero; ENXIO past EOF as on ext4.  ext4's own ranges are no
        yardstick: it may call preallocated (unwritten) extents data, zeros all the same."""
        size = self.ref.size(i)
        content = self.ref.content(i)
        self.log.append(f"SEEK_DATA/SEEK_HOLE walk of file {i}")
        try:
            mine = data_ranges(self.mount.fds[i, "ro"], size)
        except (AssertionError, OSError) as e:
            self.fail(f"file {i}: {e}")
        for start, end in uncovered([(0, size)], mine):
            self.check(not any(content[start:end]),
                       f"file {i}: non-zero bytes in the reported hole [{start}, {end}), "
                       f"data ranges {mine[:6]}")
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            self.both(f"lseek({i}, {size}, {whence})",
                      lambda s: os.lseek(s.fds[i, "ro"], size, whence))

    def drop_caches(self):
        self.log.append("drop_caches")
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    def reopen(self, remount):
        self.log.append("remount" if remount else "close and reopen")
        for s in self.sides:
            s.close_all()
        if remount:
            self.vol.remount()
        for s in self.sides:
            s.open_all()

    # The operations: each draws its parameters once and runs on both sides.
    def op_huge_offset(self):
        """pwrite, ftruncate or fallocate past the largest file: EFBIG on both. With the
        writeback cache a write only fails when written back (README.md): not done."""
        i, off = self.rng.randrange(2), self.rng.choice(HUGE_OFFSETS)
        calls = {"ftruncate": lambda s: os.ftruncate(s.fds[i, "rw"], off),
                 "fallocate": lambda s: fallocate(s.fds[i, "rw"], 0, off, 1)}
        if not self.writeback:
            calls["pwrite"] = lambda s: os.pwrite(s.fds[i, "rw"], b"x", off)
        name = self.rng.choice(sorted(calls))
        self.exempt_mtime(name == "fallocate" and self.writeback)
        self.both(f"{name}({i}, huge {off:#x})", calls[name])

    def op_pwrite(self):
        i, kind = self.rng.randrange(2), self.rng.choice(["rw", "rw", "ap", "ro"])
        off, data = self.offset(self.ref.size(i)), self.rng.randbytes(self.length())
        self.both(f"pwrite({i}/{kind}, {len(data)} @ {off})",
                  lambda s: os.pwrite(s.fds[i, kind], data, off))

    def op_append(self):
        i, data = self.rng.randrange(2), self.rng.randbytes(self.length())
        self.both(f"write({i}/ap, {len(data)})", lambda s: os.write(s.fds[i, "ap"], data))

    def op_pread(self):
        i, kind = self.rng.randrange(2), self.rng.choice(["rw", "ro", "ro", "ap"])
        off, n = self.offset(self.ref.size(i)), self.length()
        self.both(f"pread({i}/{kind}, {n} @ {off})", lambda s: os.pread(s.fds[i, kind], n, off))

    def op_truncate(self):
        i, kind = self.rng.randrange(2), self.rng.choice(["rw", "rw", "rw", "ro"])
        size = self.offset(self.ref.size(i))
        self.both(f"ftruncate({i}/{kind}, {size})", lambda s: os.ftruncate(s.fds[i, kind], size))

    def op_fallocate(self):
        i, mode = self.rng.randrange(2), self.rng.choice(FALLOC_MODES)
        off, n = self.offset(self.ref.size(i)), self.length()
        if mode in (FALLOC_FL_COLLAPSE_RANGE, FALLOC_FL_INSERT_RANGE) and self.rng.random() < 0.7:
            off, n = off // BLOCK * BLOCK, max(1, n // BLOCK) * BLOCK  # what ext4 accepts
        desc = f"fallocate({i}, mode {mode:#x}, {off}, {n})"
        mine = outcome(lambda: fallocate(self.mount.fds[i, "rw"], mode, off, n))
        if mode in UNSUPPORTED_MODES and mine == ("err", errno.errorcode[errno.EOPNOTSUPP]):
            self.log.append(desc + ": EOPNOTSUPP on the mount, not run on ext4")
            return
        self.log.append(desc)
        self.exempt_mtime(mine[0] == "err" and self.writeback)
        theirs = outcome(lambda: fallocate(self.ref.fds[i, "rw"], mode, off, n))
        self.check(mine == theirs, f"{desc}: mount {mine} != ext4 {theirs}")

    def op_mmap_write(self):
        i = self.rng.randrange(2)
        size = self.ref.size(i)
        if size == 0:
            return
        off = self.rng.randrange(0, size)
        data = self.rng.randbytes(min(self.length() or 1, size - off))
        sync = self.rng.random() < 0.5

        def write(s):
            with mmap.mmap(s.fds[i, "rw"], size) as m:
                m[off:off + len(data)] = data
                if sync:
                    m.flush()
        self.both(f"mmap write({i}, {len(data)} @ {off}, msync={sync})", write)

    def op_mmap_read(self):
        i = self.rng.randrange(2)
        size = self.ref.size(i)
        if size == 0:
            return
        off = self.rng.randrange(0, size)
        n = min(self.length(), size - off)

        def read(s):
            with mmap.mmap(s.fds[i, "ro"], size, prot=mmap.PROT_READ) as m:
                return m[off:off + n]
        self.both(f"mmap read({i}, {n} @ {off})", read)

    def op_copy_file_range(self):
        src, dst = self.rng.randrange(2), self.rng.randrange(2)
        off_in = self.offset(self.ref.size(src))
        off_out = self.offset(self.ref.size(dst))
        n = self.length()
        self.both(f"copy_file_range({src} @ {off_in} -> {dst} @ {off_out}, {n})",
                  lambda s: os.copy_file_range(s.fds[src, "rw"], s.fds[dst, "rw"], n,
                                               off_in, off_out))

    def op_sendfile(self):
        src, dst = self.rng.randrange(2), self.rng.randrange(2)
        off_in = self.offset(self.ref.size(src))
        off_out = self.offset(self.ref.size(dst))
        n = self.length()

        def send(s):
            os.lseek(s.fds[dst, "rw"], off_out, os.SEEK_SET)
            return os.sendfile(s.fds[dst, "rw"], s.fds[src, "ro"], off_in, n)
        self.both(f"sendfile({src} @ {off_in} -> {dst} @ {off_out}, {n})", send)

    def op_truncate_path(self):
        i = self.rng.randrange(2)
        size = self.offset(self.ref.size(i))
        self.exempt_mtime(size == self.ref.size(i) and self.writeback)
        self.both(f"truncate(path {i}, {size})", lambda s: os.truncate(s.paths[i], size))

    def op_open_trunc(self):
        i = self.rng.randrange(2)

        def trunc(s):
            os.close(os.open(s.paths[i], os.O_WRONLY | os.O_TRUNC))
        self.both(f"open({i}, O_TRUNC)", trunc)

    def op_fadvise_dontneed(self):
        i, kind = self.rng.randrange(2), self.rng.choice(["rw", "ro"])
        self.both(f"posix_fadvise({i}/{kind}, DONTNEED)",
                  lambda s: os.posix_fadvise(s.fds[i, kind], 0, 0, os.POSIX_FADV_DONTNEED))

    def op_sync(self):
        i, kind = self.rng.randrange(2), self.rng.choice(["rw", "ro", "ap"])
        call = self.rng.choice([os.fsync, os.fdatasync])
        self.both(f"{call.__name__}({i}/{kind})", lambda s: call(s.fds[i, kind]))

    def op_seek(self):
        self.check_seek(self.rng.randrange(2))

    def op_reopen(self):
        self.reopen(remount=False)

    def op_checkpoint(self):
        r = self.rng.random()
        remounted = False
        if r < 0.4 and os.geteuid() == 0:
            self.drop_caches()
        elif r < 0.7:
            self.reopen(remount=True)
            remounted = True
        self.check_contents("checkpoint")
        self.check_mtimes()
        # With the writeback cache the kernel answers stat from attributes it
        # cached before its pages reached the daemon (for attr_timeout): only
        # fresh ones, after a remount, tell what the daemon reports.
        if remounted or not self.writeback:
            self.check_blocks()

    def exempt_mtime(self, exempt):
        """README.md: with the writeback cache the kernel keeps the mtime, leaves it on
        truncate(2) to the same size and moves it on a failed fallocate."""
        self.mtime_exempt = exempt
        self.mtime_exempt_since_checkpoint |= exempt

    def mtimes_now(self):
        return [[os.stat(p).st_mtime_ns for p in s.paths] for s in self.sides]

    def watch_mtime(self, op):
        """One operation moves the mount's mtime exactly when it moves ext4's."""
        before = self.mtimes_now()
        self.check(clock_past(before[0] + before[1]), f"an mtime ahead of the clock: {before}")
        self.mtime_exempt = False
        op()
        after = self.mtimes_now()
        for i in range(2 if not self.mtime_exempt else 0):
            moved = [after[k][i] != before[k][i] for k in range(2)]
            self.check(moved[0] == moved[1], f"file {i}: the last operation moved the mtime "
                       f"on the mount: {moved[0]}, on ext4: {moved[1]}")

    def check_mtimes(self):
        """Between two checkpoints the mount's mtime moves exactly when ext4's does."""
        now = [[os.stat(p).st_mtime_ns for p in s.paths] for s in self.sides]
        if self.mtimes and not self.mtime_exempt_since_checkpoint:
            for i in range(2):
                moved = [now[k][i] != self.mtimes[k][i] for k in range(2)]
                self.check(moved[0] == moved[1], f"file {i}: mtime moved on the mount: {moved[0]}, "
                           f"on ext4: {moved[1]} (since the last checkpoint)")
        self.mtimes = now
        self.mtime_exempt_since_checkpoint = False
        self.check(clock_past(now[0] + now[1]), f"an mtime ahead of the clock: {now}")

    def check_blocks(self):
        """Meaningful st_blocks only: a file holding data does not claim zero blocks
        (tar --sparse and cp take such a file for all holes)."""
        for i in range(2):
            os.fsync(self.mount.fds[i, "rw"])
            if any(self.ref.content(i)):
                blocks = os.stat(self.mount.paths[i]).st_blocks
                self.check(blocks > 0, f"file {i}: data but st_blocks 0 on the mount")

    OPS = [("op_pwrite", 22), ("op_append", 5), ("op_pread", 16), ("op_truncate", 8),
           ("op_fallocate", 10), ("op_mmap_write", 5), ("op_mmap_read", 4),
           ("op_copy_file_range", 5), ("op_sendfile", 3), ("op_sync", 4), ("op_seek", 6),
           ("op_huge_offset", 1), ("op_truncate_path", 2), ("op_open_trunc", 1), ("op_fadvise_dontneed", 2),
           ("op_reopen", 2), ("op_checkpoint", 2)]

    def run(self, count):
        names = [name for name, _ in self.OPS]
        weights = [w for _, w in self.OPS]
        for s in self.sides:
            s.open_all()
        try:
            for self.step in range(count):
                op = self.rng.choices(names, weights)[0]
                if self.rng.random() < MTIME_SAMPLE and op not in ("op_reopen", "op_checkpoint"):
                    self.watch_mtime(getattr(self, op))
                else:
                    getattr(self, op)()
                self.check_sizes()
            self.check_contents("end")
            for i in range(2):
                self.check_seek(i)
            self.reopen(remount=True)
            self.check_contents("after the final remount")
        finally:
            for s in self.sides:
                s.close_all()


def explore_seed():
    env = os.environ.get("ENVFS_EXPLORE_SEED")
    return int(env) if env else int.from_bytes(os.urandom(4), "little")


@pytest.fixture
def ref_dir(tmp_path):
    """A directory on a local ext4 (pytest's tmp_path), the reference file system."""
    d = tmp_path / "reference"
    d.mkdir()
    kind = fs_type(d)
    if kind not in ("ext2/ext3", "ext4"):
        pytest.skip(f"the reference directory is on {kind}, not ext4")
    return d


@pytest.fixture(params=[("header", True, 4096), ("xattr", True, 4096), ("header", False, 4096),
                        ("xattr", False, 4096), ("header", True, 65536), ("xattr", False, 16384)],
                ids=["header-wb", "xattr-wb", "header-direct", "xattr-direct", "header-64k-wb",
                     "xattr-16k-direct"])
def explore_vol(request, tmp_path):
    """Both key placements, with the writeback cache on and off, and two larger block
    sizes, whose blocks span several pages."""
    from mounts import Volume
    placement, writeback, block_size = request.param
    v = Volume(tmp_path, placement=placement, block_size=block_size)
    settings = tmp_path / "daemon.ini"
    settings.write_text(f"[daemon]\nwriteback_cache = {'true' if writeback else 'false'}\n")
    v.mount(f"config={settings}")
    yield v
    v.unmount()


def test_explore_content(explore_vol, ref_dir):
    """The random differential run on each volume variant."""
    seed = explore_seed()
    ops = int(os.environ.get("ENVFS_EXPLORE_OPS", DEFAULT_OPS))
    Explorer(explore_vol, ref_dir, seed).run(ops)


# Reduced cases found by the explorer, each on its own.

def punch(fd, off, length, mode=FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE):
    fallocate(fd, mode, off, length)


def assert_after_remount(vol, path, expected):
    vol.remount()
    with open(path, "rb") as f:
        assert f.read() == expected
    assert os.stat(path).st_size == len(expected)


def test_punch_hole_reads_zeros_and_keeps_size(cvol):
    """PUNCH_HOLE|KEEP_SIZE zeroes the range, partial blocks included, frees whole
    blocks and keeps the size, also across a remount."""
    data = os.urandom(5 * BLOCK + 100)
    path = cvol.mnt / "p"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
        punch(fd, BLOCK - 10, 3 * BLOCK + 20)           # two partial blocks, two whole
        punch(fd, 5 * BLOCK + 50, 10 * BLOCK)           # the tail of the short last block
        os.fsync(fd)
        expected = bytearray(data)
        expected[BLOCK - 10:4 * BLOCK + 10] = bytes(3 * BLOCK + 20)
        expected[5 * BLOCK + 50:] = bytes(50)
        assert os.fstat(fd).st_size == len(data)
        assert os.pread(fd, len(data) + 1, 0) == expected
    finally:
        os.close(fd)
    assert_after_remount(cvol, path, expected)


def test_punch_hole_frees_backing_blocks(tmp_path):
    """Whole punched blocks leave the backing file: the hole is a real one."""
    from mounts import Volume
    v = Volume(tmp_path)
    v.mount()
    try:
        path = v.mnt / "big"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            os.write(fd, os.urandom(256 * BLOCK))
            os.fsync(fd)
            before = os.stat(v.backing_path("big")).st_blocks
            punch(fd, 0, 256 * BLOCK)
            os.fsync(fd)
            after = os.stat(v.backing_path("big")).st_blocks
            assert after * 4 < before, (before, after)
            assert os.pread(fd, 256 * BLOCK, 0) == bytes(256 * BLOCK)
        finally:
            os.close(fd)
    finally:
        v.unmount()


@pytest.mark.parametrize("keep_size", [False, True])
def test_zero_range_reads_zeros(cvol, keep_size):
    """ZERO_RANGE zeroes the range; without KEEP_SIZE it also extends the file."""
    data = os.urandom(3 * BLOCK + 7)
    path = cvol.mnt / "z"
    mode = FALLOC_FL_ZERO_RANGE | (FALLOC_FL_KEEP_SIZE if keep_size else 0)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        fallocate(fd, mode, 100, BLOCK)                 # within the file
        fallocate(fd, mode, 2 * BLOCK + 1, 3 * BLOCK)   # across the end of file
        expected = bytearray(data)
        expected[100:100 + BLOCK] = bytes(BLOCK)
        expected[2 * BLOCK + 1:] = bytes(len(data) - 2 * BLOCK - 1)
        if not keep_size:
            expected += bytes(5 * BLOCK + 1 - len(expected))
        assert os.fstat(fd).st_size == len(expected)
        assert os.pread(fd, len(expected) + 1, 0) == expected
    finally:
        os.close(fd)
    assert_after_remount(cvol, path, expected)


def test_seek_hole_never_answers_data(tmp_path):
    """SEEK_HOLE answers an offset in a hole (or the end of file), never one in data.

    Sealed blocks are longer than pages, so a backing hole can be one page inside a
    plaintext hole block; rounding its start up to the next block landed on data."""
    from mounts import Volume
    v = Volume(tmp_path)
    settings = tmp_path / "daemon.ini"
    settings.write_text("[daemon]\nwriteback_cache = false\n")  # lseek reaches the daemon
    v.mount(f"config={settings}")
    try:
        fd = os.open(v.mnt / "f", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            blocks = 600
            os.ftruncate(fd, blocks * BLOCK)
            for k in range(0, blocks, 2):               # every odd block a hole
                os.pwrite(fd, b"\1" * BLOCK, k * BLOCK)
            for k in range(0, blocks, 2):
                hole = os.lseek(fd, k * BLOCK, os.SEEK_HOLE)
                assert hole % BLOCK == 0 and (hole // BLOCK) % 2 == 1 or hole == blocks * BLOCK, \
                    f"SEEK_HOLE from block {k} answered block {hole / BLOCK}, which is data"
        finally:
            os.close(fd)
    finally:
        v.unmount()


def mtime_moves(path, change):
    """Whether @change() moves the mtime of @path, as seen through a fresh stat."""
    before = os.stat(path).st_mtime_ns
    assert clock_past([before]), f"mtime {before} ahead of the clock"
    change()
    return os.stat(path).st_mtime_ns != before


@pytest.mark.parametrize("how", ["ftruncate", "truncate", "O_TRUNC"])
def test_truncate_to_the_same_size_updates_mtime(cvol, how):
    """Linux file systems stamp the mtime on every truncate, O_TRUNC of an empty file
    included (POSIX requires it for O_TRUNC); the kernel leaves that to the daemon."""
    if how == "truncate" and cvol.status()["daemon"]["writeback_cache"]:
        pytest.skip("README.md: with the writeback cache the kernel keeps the mtime, and "
                    "truncate(2) to the same size leaves it")
    path = cvol.mnt / "t"
    size = 0 if how == "O_TRUNC" else 3
    write = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(write, bytes(size))
        os.fsync(write)
        change = {"ftruncate": lambda: os.ftruncate(write, size),
                  "truncate": lambda: os.truncate(path, size),
                  "O_TRUNC": lambda: os.close(os.open(path, os.O_WRONLY | os.O_TRUNC))}[how]
        assert mtime_moves(path, change)
    finally:
        os.close(write)


@pytest.mark.parametrize("mode", [FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_FL_ZERO_RANGE,
                                  FALLOC_FL_KEEP_SIZE],
                         ids=["punch", "zero", "keep-size"])
def test_fallocate_over_a_hole_updates_mtime(cvol, mode):
    """fallocate stamps the mtime as on ext4, even where no stored byte changes."""
    path = cvol.mnt / "h"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, 8 * BLOCK)
        os.fsync(fd)
        assert mtime_moves(path, lambda: fallocate(fd, mode, BLOCK + 10, 100))
    finally:
        os.close(fd)


@pytest.fixture
def small_vol(tmp_path):
    """A volume on a 4 MiB tmpfs, to fill; writeback cache off, so that each write's
    error reaches its caller."""
    from mounts import Volume
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], check=True)
    try:
        v = Volume(disk)
        settings = tmp_path / "daemon.ini"
        settings.write_text("[daemon]\nwriteback_cache = false\n")
        v.mount(f"config={settings}")
        try:
            yield v
        finally:
            v.unmount()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (64 * 1024, BLOCK, 1):
            try:
                while True:
                    os.write(fd, b"\xff" * chunk)
            except OSError as e:
                assert e.errno == errno.ENOSPC
    finally:
        os.close(fd)


def test_full_disk_never_tears_a_block_in_a_hole(small_vol):
    """A write into a hole of a file that also has space reserved past its end fails
    with ENOSPC on a full disk and leaves the hole reading zeros (THREAT-MODEL.md:
    no torn block). The blocks past the end made the file look fully allocated."""
    fd = os.open(small_vol.mnt / "f", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.pwrite(fd, b"a" * BLOCK, 0)
        os.ftruncate(fd, 64 * BLOCK)                    # blocks 1..63: a hole
        os.pwrite(fd, b"z" * BLOCK, 63 * BLOCK)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 64 * BLOCK, 200 * BLOCK)
        fill(small_vol.mnt / "filler")
        for k in range(1, 63):
            try:
                os.pwrite(fd, b"w" * BLOCK, k * BLOCK)
            except OSError as e:
                assert e.errno == errno.ENOSPC
        for k in range(1, 63):
            assert os.pread(fd, BLOCK, k * BLOCK) in (bytes(BLOCK), b"w" * BLOCK), f"block {k}"
    finally:
        os.close(fd)


# Past what any backing file can hold (ext4 stops at 16 TiB): 2^62 within off_t, the
# others with backing offsets that would not fit in one.
HUGE_OFFSETS = [1 << 62, (1 << 63) - 2 * BLOCK, (1 << 63) - 2]


@pytest.mark.parametrize("call", ["pwrite", "ftruncate", "fallocate"])
def test_offsets_past_the_largest_file_fail_with_efbig(tmp_path, ref_dir, call):
    """As on ext4: EFBIG, not EINVAL from a backing offset that overflowed off_t, and
    the size and mtime unchanged (growing padded the last block, then the backing file
    system refused the size), also in a later open, whose first change would raise the
    file's version (format 3): a refused call raises nothing."""
    from mounts import Volume
    v = Volume(tmp_path)
    settings = tmp_path / "daemon.ini"
    settings.write_text("[daemon]\nwriteback_cache = false\n")  # a write's error is the caller's
    v.mount(f"config={settings}")
    try:
        for directory in (v.mnt, ref_dir):
            fd = os.open(directory / "f", os.O_RDWR | os.O_CREAT, 0o600)
            os.write(fd, b"abc")   # a short last block, which growing pads first
            os.fsync(fd)           # durable: the next open's first change raises the version
            os.close(fd)
            fd = os.open(directory / "f", os.O_RDWR)
            try:
                mtime = os.fstat(fd).st_mtime_ns
                assert clock_past([mtime]), f"mtime {mtime} ahead of the clock"
                for off in HUGE_OFFSETS:
                    run = {"pwrite": lambda: os.pwrite(fd, b"x", off),
                           "ftruncate": lambda: os.ftruncate(fd, off),
                           "fallocate": lambda: fallocate(fd, 0, off, 1)}[call]
                    with pytest.raises(OSError) as e:
                        run()
                    assert e.value.errno == errno.EFBIG, f"{directory}: {call} at {off:#x}: {e.value}"
                assert os.fstat(fd).st_size == 3 and os.pread(fd, 10, 0) == b"abc"
                assert os.stat(directory / "f").st_mtime_ns == mtime, "a failed call moved the mtime"
            finally:
                os.close(fd)
    finally:
        v.unmount()
