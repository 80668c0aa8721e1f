# SPDX-License-Identifier: MIT
"""Differential namespace explorer: the same random namespace operations on a mount and on a local
directory (the reference), comparing every result and errno, and at checkpoints the whole trees.

Each run is seeded.  A failure names its seed; `ENVFS_EXPLORE_SEED=N` replays exactly that run
(with `-k` to pick the volume).  `ENVFS_EXPLORE_SOAK=SECONDS` keeps drawing new seeds for that long
(not run in CI).  Deliberate differences of encrypted names (docs/FORMAT.md, "Names, symlink
targets and xattrs") are not drawn; each such place says so.  Every step compares results and
errnos and, for the directories it touches, whether their mtime changed; at random checkpoints the whole trees are compared (names, types,
modes, nlink, sizes, symlink targets, user xattrs, hard-link groups), then the volume is
remounted or the kernel's dentries and inodes dropped, and telldir/seekdir positions checked.

The reduced tests for bugs the explorer found sit at the end of this file.
"""
import ctypes
import errno
import os
import random
import stat
import subprocess
import time

import pytest

from mounts import Volume

libc = ctypes.CDLL(None, use_errno=True)
libc.opendir.restype = ctypes.c_void_p
libc.opendir.argtypes = [ctypes.c_char_p]
libc.readdir.restype = ctypes.c_void_p
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
libc.closedir.argtypes = [ctypes.c_void_p]
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
DIRENT_NAME_OFFSET = 19  # struct dirent on x86_64/aarch64 glibc: ino 8, off 8, reclen 2, type 1
# FORMAT.md: user xattr suffixes are at most 171 bytes with encrypted names.  (Symlink targets
# are 4095 bytes, renamed, hard-linked and exchanged as on ext4: "Symlink targets, version 2".)
ENC_XATTR_SUFFIX_MAX = 171
MODES = [0o755, 0o700, 0o644, 0o600, 0o000, 0o777, 0o1777, 0o2755, 0o4755, 0o6711, 0o444]
LOCAL_FS = {"ext2/ext3", "xfs", "btrfs", "tmpfs"}

# O_NONBLOCK: opening a fifo without a reader fails (ENXIO) rather than waits for one.
CREATE_FLAGS = os.O_CREAT | os.O_WRONLY | os.O_NONBLOCK
DEFAULT_SEEDS = {"encrypted": [1, 2, 3], "plain": [4, 5]}
DEFAULT_STEPS = 400


def show(path):
    """@path for a log line: long components shortened to their start and length."""
    if isinstance(path, tuple):
        return tuple(show(p) if isinstance(p, bytes) else p for p in path)
    parts = [c if len(c) <= 24 else c[:12] + b"...(%d)" % len(c) for c in path.split(b"/")]
    return repr(b"/".join(parts))


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, old, AT_FDCWD, new, flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")


def outcome(fn):
    """What an operation did: ('ok', value) or ('err', errno name)."""
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def user_xattrs(fd):
    """The user xattrs of the file open as @fd."""
    out = {}
    for name in os.listxattr(fd):
        if name.startswith("user."):
            out[name] = os.getxattr(fd, name)
    return out


def snapshot(root):
    """Everything the namespace shows below @root, keyed by relative byte path, plus the
    partition of non-directories into hard-link groups.  Walked by directory fds: renames
    can make paths longer than PATH_MAX."""
    entries, by_ino = {}, {}
    stack = [(b"", os.open(root, os.O_RDONLY | os.O_DIRECTORY))]
    while stack:
        rel, dfd = stack.pop()
        try:
            names = os.listdir(dfd)
            assert len(names) == len(set(names)), f"duplicate names in {show(rel)}"
            for n in names:
                r = os.path.join(rel, n) if rel else n
                st = os.lstat(n, dir_fd=dfd)
                info = {"type": stat.S_IFMT(st.st_mode), "mode": stat.S_IMODE(st.st_mode),
                        "nlink": st.st_nlink}
                if stat.S_ISDIR(st.st_mode):
                    sub = os.open(n, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
                    info["xattrs"] = user_xattrs(sub)
                    stack.append((r, sub))
                else:
                    info["size"] = st.st_size
                    by_ino.setdefault(st.st_ino, []).append(r)
                if stat.S_ISLNK(st.st_mode):
                    info["target"] = os.readlink(n, dir_fd=dfd)
                if stat.S_ISREG(st.st_mode):
                    fd = os.open(n, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
                    try:
                        info["xattrs"] = user_xattrs(fd)
                    finally:
                        os.close(fd)
                entries[r] = info
        finally:
            os.close(dfd)
    links = sorted(sorted(group) for group in by_ino.values())
    return entries, links


class Explorer:
    def __init__(self, vol, ref, seed, steps):
        self.vol, self.ref, self.seed, self.steps = vol, ref, seed, steps
        self.rng = random.Random(seed)
        self.encrypted = vol.names == "encrypted"
        self.mnt = os.fsencode(str(vol.mnt))
        self.ref = os.fsencode(str(ref))
        self.log = []
        self.dirs, self.others = [b""], []  # relative paths known to exist (reference view)

    # --- names and paths -------------------------------------------------------------
    def new_name(self):
        r = self.rng.random()
        if r < 0.45:
            return self.rng.choice([b"a", b"b", b"c", b"d", b"e", b"f"])
        if r < 0.6:
            return self.rng.choice([b"\n", b"\xff", b"caf\xc3\xa9", b" sp ace", b"\x01\x7f",
                                    b"-", b"x.y", b"..x", b"\xf0\x9f\x98\x80", b"envelopefs.conf",
                                    b"envelopefs.dirid", b"envelopefs.long.x"])
        if r < 0.7:
            return self.rng.choice([b".", b"..", b"n" * 256])
        length = self.rng.choice([1, 2, 20, 174, 175, 176, 200, 254, 255])
        alphabet = bytes(b for b in range(1, 256) if b != ord("/"))
        name = bytes(self.rng.choice(alphabet) for _ in range(length))
        return name if name not in (b".", b"..") else b"dot"

    def some_dir(self):
        return self.rng.choice(self.dirs)

    def existing(self):
        pool = self.dirs[1:] + self.others
        return self.rng.choice(pool) if pool and self.rng.random() < 0.75 else self.new_path()

    def new_path(self):
        d = self.some_dir()
        n = self.new_name()
        if not d and n == b"..":
            n = b"dotdot"  # the roots' parents are different places
        if not d and n == b"envelopefs.conf" and not self.encrypted:
            n = b"conf"  # FORMAT.md: with plain names the root's envelopefs.conf is reserved
        return os.path.join(d, n) if d else n

    def refresh(self):
        """Re-read the reference tree's paths (names move under renames)."""
        self.dirs, self.others = [b""], []
        for root, dirs, files in os.walk(self.ref):
            rel = os.path.relpath(root, self.ref)
            rel = b"" if rel == b"." else rel
            # os.walk lists a link to a directory with the directories: a path through it
            # is not a new place, and must never lead out of the tree.
            links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
            dirs[:] = [d for d in dirs if d not in links]
            self.dirs += [os.path.join(rel, d) if rel else d for d in dirs]
            self.others += [os.path.join(rel, f) if rel else f for f in files + links]
        # Sorted: a seed replays the same choices whatever order the directories list in.
        self.dirs.sort()
        self.others.sort()

    # --- running one operation on both sides -----------------------------------------
    def fail(self, what):
        tail = "\n".join(self.log[-25:])
        raise AssertionError(f"seed {self.seed} (ENVFS_EXPLORE_SEED={self.seed}, "
                             f"names={self.vol.names}): {what}\nlast operations:\n{tail}")

    def both(self, desc, fn, parents=(), moved=None):
        """Run fn(root) on the mount and on the reference; compare results and whether the
        mtime changed of each parent directory and of the entry @moved (its path before and
        after) -- each reset to a fixed time first, so no clock tick can hide a change."""
        self.log.append(desc)
        watched = list(parents) + ([moved[0]] if moved else [])
        for p in watched:
            for root in (self.mnt, self.ref):
                outcome(lambda: os.utime(os.path.join(root, p) if p else root, ns=(10**9, 10**9),
                                         follow_symlinks=False))
        got = outcome(lambda: fn(self.mnt))
        want = outcome(lambda: fn(self.ref))
        if got != want:
            self.fail(f"{desc}: mount {got}, reference {want}")
        if moved and got[0] == "ok":
            watched[-1] = moved[1]
        for p in watched:
            changed = []
            for root in (self.mnt, self.ref):
                r = outcome(lambda: os.lstat(os.path.join(root, p) if p else root).st_mtime_ns)
                changed.append(r[0] == "ok" and r[1] != 10**9)
            if changed[0] != changed[1]:
                self.fail(f"{desc}: {show(p)} mtime changed: mount {changed[0]}, "
                          f"reference {changed[1]}")
        return got

    def documented(self, desc, errname, fn, undo):
        """A documented difference: where @fn succeeds on the reference (and is undone there),
        the mount fails with @errname; where it fails, the mount fails the same way.  (Used by
        test_shared's explorer, whose backing may lack RENAME_EXCHANGE.)"""
        self.log.append(f"{desc} (documented {errname})")
        want = outcome(lambda: fn(self.ref))
        if want[0] == "ok":
            undo(self.ref)
            want = ("err", errname)
        got = outcome(lambda: fn(self.mnt))
        if got != want:
            self.fail(f"{desc}: mount {got}, want {want}")

    @staticmethod
    def parent(rel):
        return os.path.dirname(rel)

    def lstat_of(self, rel):
        r = outcome(lambda: os.lstat(os.path.join(self.ref, rel)))
        return r[1] if r[0] == "ok" else None

    # --- operations -------------------------------------------------------------------
    def op_create(self):
        p, mode = self.new_path(), self.rng.choice(MODES)
        size = self.rng.choice([0, 0, 1, 100])
        # Without O_EXCL an existing file is opened, and a dangling link creates its target.
        excl = os.O_EXCL if self.rng.random() < 0.8 else 0
        if not excl and self.rng.random() < 0.5:
            p = self.existing()

        def create(root):
            fd = os.open(os.path.join(root, p), CREATE_FLAGS | excl, mode)
            os.write(fd, b"z" * size)
            os.close(fd)
        self.both(f"create {show(p)} {mode:o} size {size} excl={bool(excl)}", create,
                  [self.parent(p)])

    def op_mkdir(self):
        p, mode = self.new_path(), self.rng.choice(MODES + [0o755] * 4)
        self.both(f"mkdir {show(p)} {mode:o}", lambda r: os.mkdir(os.path.join(r, p), mode),
                  [self.parent(p)])

    def op_mkdir_deep(self):
        base = self.new_path()
        depth = self.rng.randint(2, 40)
        names = [self.rng.choice([b"d", b"deep", b"L" * 200]) for _ in range(depth)]

        def mk(root):
            path = os.path.join(root, base)
            for n in [b""] + names:
                path = os.path.join(path, n) if n else path
                os.mkdir(path)
        self.both(f"mkdir chain {show(base)} depth {depth}", mk)

    def op_mknod(self):
        p = self.new_path()
        kind = self.rng.choice([stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFREG])
        mode = kind | self.rng.choice(MODES)
        self.both(f"mknod {show(p)} {mode:o}", lambda r: os.mknod(os.path.join(r, p), mode),
                  [self.parent(p)])

    def op_rmdir(self):
        p = self.existing()
        self.both(f"rmdir {show(p)}", lambda r: os.rmdir(os.path.join(r, p)), [self.parent(p)])

    def op_unlink(self):
        p = self.existing()
        self.both(f"unlink {show(p)}", lambda r: os.unlink(os.path.join(r, p)), [self.parent(p)])

    def op_rename(self):
        a = self.existing()
        b = self.rng.choice([self.existing(), self.new_path(), os.path.join(a, b"sub")])
        flags = self.rng.choice([0, 0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE])
        parents = sorted({self.parent(a), self.parent(b)})
        self.both(f"renameat2 {show(a)} -> {show(b)} flags {flags}",
                  lambda r: renameat2(os.path.join(r, a), os.path.join(r, b), flags), parents,
                  moved=(a, b) if flags != RENAME_EXCHANGE else None)

    def op_link(self):
        a, b = self.existing(), self.new_path()
        self.both(f"link {show(a)} -> {show(b)}",
                  lambda r: os.link(os.path.join(r, a), os.path.join(r, b), follow_symlinks=False),
                  [self.parent(b)])

    def target(self):
        """A symlink target that, followed, stays inside the tree (relative, no "..", no
        leading "/"): operations through links must never reach the real filesystem."""
        r = self.rng.random()
        if r < 0.3:
            return self.rng.choice([b"a", b"a/b", b"./c", b"\n\xff\x01", b"caf\xc3\xa9", b"."])
        # 3038 and 3039: the longest target stored in its link with encrypted names, and
        # the shortest in the link store (FORMAT.md, "Symlink targets, version 2").
        length = self.rng.choice([1, 100, 255, 1000, 3038, 3039, 4095])
        alphabet = bytes(b for b in range(1, 256) if b != ord("/"))
        return bytes(self.rng.choice(alphabet) for _ in range(length))

    def op_symlink(self):
        p, t = self.new_path(), self.target()
        self.both(f"symlink {show(p)} -> {t[:40]!r} ({len(t)} bytes)",
                  lambda r: os.symlink(t, os.path.join(r, p)), [self.parent(p)])

    def op_readlink(self):
        p = self.existing()
        self.both(f"readlink {show(p)}", lambda r: os.readlink(os.path.join(r, p)))

    def op_lstat(self):
        p = self.existing()

        def look(r):
            st = os.lstat(os.path.join(r, p))
            size = None if stat.S_ISDIR(st.st_mode) else st.st_size
            return (st.st_mode, st.st_nlink, size)
        self.both(f"lstat {show(p)}", look)

    def op_chmod(self):
        p, mode = self.existing(), self.rng.choice(MODES)
        self.both(f"chmod {show(p)} {mode:o}", lambda r: os.chmod(os.path.join(r, p), mode))

    def op_utime(self):
        p = self.existing()
        follow = self.rng.random() < 0.3
        times = (self.rng.randint(0, 2**33) * 10**9 + self.rng.randint(0, 10**9 - 1),
                 self.rng.randint(0, 2**33) * 10**9 + self.rng.randint(0, 10**9 - 1))

        def touch(r):
            path = os.path.join(r, p)
            os.utime(path, ns=times, follow_symlinks=follow)
            st = os.stat(path, follow_symlinks=follow)
            return (st.st_atime_ns, st.st_mtime_ns)
        self.both(f"utimensat {show(p)} {times} follow={follow}", touch)

    def op_utime_omit(self):
        """utimensat with UTIME_OMIT on one of the two times: the other is set, that one kept."""
        p = self.existing()
        first = (10**9 * 5, 10**9 * 6)
        which = self.rng.choice([0, 1])
        times = (ctypes.c_long * 4)(*[10**9 * 7, 0, 10**9 * 8, 0])
        times[1 + 2 * which] = UTIME_OMIT

        def touch(r):
            path = os.path.join(r, p)
            os.utime(path, ns=first, follow_symlinks=False)
            if libc.utimensat(AT_FDCWD, path, times, AT_SYMLINK_NOFOLLOW) != 0:
                e = ctypes.get_errno()
                raise OSError(e, os.strerror(e))
            st = os.lstat(path)
            return (st.st_atime_ns, st.st_mtime_ns)
        self.both(f"utimensat {show(p)} omitting {'am'[which]}time", touch)

    def xattr_name(self):
        limit = ENC_XATTR_SUFFIX_MAX if self.encrypted else 250  # XATTR_NAME_MAX 255 - "user."
        suffix = self.rng.choice([b"a", b"b", b"long" * 20, b"\xff\n", b"x" * limit])
        return b"user." + suffix

    def op_setxattr(self):
        p, n = self.existing(), self.xattr_name()
        v = self.rng.choice([b"", b"v", b"\x00\xff" * 300])
        flags = self.rng.choice([0, 0, os.XATTR_CREATE, os.XATTR_REPLACE])
        self.both(f"setxattr {show(p)} {show(n)} flags {flags}",
                  lambda r: os.setxattr(os.path.join(r, p), n, v, flags, follow_symlinks=False))

    def op_getxattr(self):
        p, n = self.existing(), self.xattr_name()
        self.both(f"getxattr {show(p)} {show(n)}",
                  lambda r: os.getxattr(os.path.join(r, p), n, follow_symlinks=False))

    def op_listxattr(self):
        p = self.existing()
        self.both(f"listxattr {show(p)}", lambda r: sorted(
            x for x in os.listxattr(os.path.join(r, p), follow_symlinks=False)
            if x.startswith("user.")))

    def op_removexattr(self):
        p, n = self.existing(), self.xattr_name()
        self.both(f"removexattr {show(p)} {show(n)}",
                  lambda r: os.removexattr(os.path.join(r, p), n, follow_symlinks=False))

    def op_readdir_churn(self):
        """List a directory while entries are created and removed: every entry that is
        neither is returned exactly once (POSIX readdir), on the mount as on the reference."""
        d = self.some_dir()
        for i in range(self.rng.choice([3, 40])):
            p = os.path.join(d, b"churn%03d" % i + b"L" * 150) if d else b"churn%03d" % i
            for root in (self.mnt, self.ref):
                outcome(lambda: os.close(os.open(os.path.join(root, p), CREATE_FLAGS)))
        self.log.append(f"readdir churn in {show(d)}")
        listing = sorted(os.listdir(os.path.join(self.ref, d) if d else self.ref))
        removed = set(self.rng.sample(listing, min(len(listing), 3)))
        added = {}
        for root in (self.mnt, self.ref):
            path = os.path.join(root, d) if d else root
            before = set(os.listdir(path))
            seen = []
            with os.scandir(path) as it:
                for k, e in enumerate(it):
                    seen.append(e.name)
                    if k == 1:
                        for n in removed:
                            r = outcome(lambda: os.unlink(os.path.join(path, n)))
                            if r[1] == "EISDIR":
                                outcome(lambda: os.rename(os.path.join(path, n),
                                                          os.path.join(path, n + b"-moved")))
                        # "added" may be there already, as anything (a socket: ENXIO).
                        added[root] = outcome(
                            lambda: os.close(os.open(os.path.join(path, b"added"), CREATE_FLAGS)))
            kept = before - removed
            dups = {n for n in seen if seen.count(n) > 1}
            if dups or not kept <= set(seen):
                self.fail(f"readdir of {show(d)} on {root!r} under churn: duplicates {dups}, "
                          f"missing {kept - set(seen)}")
        if added.get(self.mnt) != added.get(self.ref):
            self.fail(f"creating {show(d)}/added under churn: mount {added.get(self.mnt)}, "
                      f"reference {added.get(self.ref)}")

    def seek_check(self):
        """telldir/seekdir: a position taken before an entry gives that entry back."""
        d = self.some_dir()
        path = os.path.join(self.mnt, d) if d else self.mnt
        dp = libc.opendir(path)
        if not dp:
            if ctypes.get_errno() != errno.ENAMETOOLONG:  # renames can nest past PATH_MAX
                self.fail(f"opendir {show(d)}: {os.strerror(ctypes.get_errno())}")
            return
        try:
            positions = []
            while True:
                pos = libc.telldir(dp)
                ent = libc.readdir(dp)
                if not ent:
                    break
                positions.append((pos, ctypes.string_at(ent + DIRENT_NAME_OFFSET)))
            for pos, name in self.rng.sample(positions, min(len(positions), 5)):
                libc.seekdir(dp, pos)
                ent = libc.readdir(dp)
                got = ctypes.string_at(ent + DIRENT_NAME_OFFSET) if ent else None
                if got != name:
                    self.fail(f"seekdir in {show(d)}: {got!r} at the position of {name!r}")
        finally:
            libc.closedir(dp)

    # --- checkpoints ------------------------------------------------------------------
    def checkpoint(self):
        self.log.append("checkpoint")
        got, want = snapshot(self.mnt), snapshot(self.ref)
        if got[0] != want[0]:
            keys = set(got[0]) | set(want[0])
            diff = [(show(k), got[0].get(k), want[0].get(k)) for k in sorted(keys)
                    if got[0].get(k) != want[0].get(k)]
            self.fail(f"trees differ (path, mount, reference): {diff[:5]}")
        if got[1] != want[1]:
            self.fail(f"hard-link groups differ: mount {got[1]}, reference {want[1]}")

    def run(self):
        ops = [(self.op_create, 10), (self.op_mkdir, 8), (self.op_mknod, 2),
               (self.op_mkdir_deep, 1), (self.op_rmdir, 5), (self.op_unlink, 5),
               (self.op_rename, 14), (self.op_link, 5), (self.op_symlink, 5),
               (self.op_readlink, 3), (self.op_lstat, 4), (self.op_chmod, 3), (self.op_utime, 3),
               (self.op_utime_omit, 2), (self.op_setxattr, 4), (self.op_getxattr, 2),
               (self.op_listxattr, 2), (self.op_removexattr, 2), (self.op_readdir_churn, 1)]
        fns, weights = zip(*ops)
        for step in range(self.steps):
            self.rng.choices(fns, weights)[0]()
            self.refresh()
            if self.rng.random() < 0.08:
                self.checkpoint()
                r = self.rng.random()
                if r < 0.15:
                    self.log.append("remount")
                    self.vol.remount()
                elif r < 0.6:
                    self.log.append("drop_caches")
                    drop_caches()
                self.seek_check()
        self.checkpoint()


def local_fs_type(path):
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], check=True, capture_output=True,
                          text=True).stdout.strip()


def seeds_for(names):
    if os.environ.get("ENVFS_EXPLORE_SEED"):
        return [int(os.environ["ENVFS_EXPLORE_SEED"])]
    return DEFAULT_SEEDS[names]


@pytest.mark.parametrize("names", ["encrypted", "plain"])
def test_namespace_matches_a_local_filesystem(tmp_path, names):
    assert local_fs_type(tmp_path) in LOCAL_FS, "the reference must be a local filesystem"
    soak = float(os.environ.get("ENVFS_EXPLORE_SOAK", "0"))
    deadline = time.monotonic() + soak
    seeds = seeds_for(names)
    run = 0
    while True:
        for seed in seeds:
            work = tmp_path / f"run{run}"
            run += 1
            work.mkdir()
            ref = work / "ref"  # as long as "mnt": PATH_MAX is reached at the same depth
            ref.mkdir()
            v = Volume(work, names=names)
            v.mount()
            try:
                Explorer(v, ref, seed, DEFAULT_STEPS).run()
            finally:
                v.unmount()
        if time.monotonic() >= deadline:
            break
        seeds = [random.randrange(2**32)]


# --- Reduced tests for what the explorer found --------------------------------------------

@pytest.fixture(params=["encrypted", "plain"])
def nvol(request, tmp_path):
    v = Volume(tmp_path, names=request.param)
    v.mount()
    yield v
    v.unmount()


@pytest.fixture
def envol(tmp_path):
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    yield v
    v.unmount()


def test_create_keeps_setuid_and_setgid_bits(nvol):
    m = nvol.mnt
    os.close(os.open(m / "f", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o6711))
    os.mknod(m / "n", 0o6711 | stat.S_IFREG)
    drop_caches()
    assert stat.S_IMODE(os.lstat(m / "f").st_mode) == 0o6711
    assert stat.S_IMODE(os.lstat(m / "n").st_mode) == 0o6711


def test_rename_directory_over_an_empty_directory(nvol):
    m = nvol.mnt
    os.makedirs(m / "src" / "child")
    os.mkdir(m / "empty")
    os.rename(m / "src", m / "empty")
    assert os.listdir(m) == ["empty"] and os.listdir(m / "empty") == ["child"]
    os.mkdir(m / "full")
    os.mkdir(m / "full" / "x")
    with pytest.raises(OSError) as e:
        os.rename(m / "empty", m / "full")
    assert e.value.errno == errno.ENOTEMPTY
    nvol.remount()
    assert sorted(os.listdir(m)) == ["empty", "full"] and os.listdir(m / "empty") == ["child"]


def test_exchange_with_a_symlink_as_the_second_name(envol):
    """FORMAT.md "Symlink targets, version 2": an encrypted symlink is exchanged, whichever side
    it is on."""
    m = envol.mnt
    open(m / "f", "w").close()
    os.symlink("target", m / "s")
    renameat2(os.fsencode(m / "f"), os.fsencode(m / "s"), RENAME_EXCHANGE)
    drop_caches()
    assert os.readlink(m / "f") == "target" and stat.S_ISREG(os.lstat(m / "s").st_mode)


def test_renamed_symlink_stats_as_a_live_link(nvol):
    m = nvol.mnt
    os.symlink("target", m / "s")
    os.lstat(m / "s")
    os.rename(m / "s", m / "t")
    st = os.lstat(m / "t")
    assert st.st_nlink == 1 and st.st_size == len("target")
    assert os.readlink(m / "t") == "target"


def test_root_link_count_leaves_out_the_daemons_own_directories(nvol):
    """The backing root holds envelopefs.probe (and envelopefs.rekey after a re-key):
    the mount's root, where they do not show, counts only its own subdirectories."""
    m = nvol.mnt
    assert (nvol.backing / "envelopefs.probe").is_dir()
    drop_caches()
    assert os.lstat(m).st_nlink == 2
    os.mkdir(m / "d")
    drop_caches()
    assert os.lstat(m).st_nlink == 3
    os.rmdir(m / "d")
    (nvol.backing / "envelopefs.rekey").mkdir(exist_ok=True)
    drop_caches()
    assert os.lstat(m).st_nlink == 2
