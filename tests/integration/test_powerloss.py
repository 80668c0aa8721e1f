"""Power loss (issue 17, part 2): envelopefs on a backing that loses all it had not
made durable, cut at many points of each workload.

The backing is tests/powerloss/powerloss, a FUSE file system that keeps the tree
in memory and writes to its disk directory only what an fsync made durable (its
header states the model: a file's content and xattrs at its fsync, names through
an ordered journal committed by a directory's fsync).  Its process dying is the
power cut.  The volume lives on it; its keyring and the KMS live elsewhere, as
on a separate, durable disk.

For each workload, a dry run counts the backing's mutating requests (K); then
for each chosen point k in 1..K the workload runs again from the same disk image
with the power cut just before the k-th request (and once more after the
workload ended, nothing cut in between).  After each cut the backing starts
again from its disk, the volume is mounted, and:
  - every promise holds: a file whose fsync (and its directory's) returned has
    that content; an atomic replace shows the old or the new content, never
    neither; a rename in flight shows exactly one of the two names;
  - every file of the tree reads whole, without EIO, and every entry listed
    can be looked up (no half-made entry);
  - the interrupted command (rotate, rotate --rekey, rotate --to-kms, import)
    run again completes, and after it every file is current and reads back.

ENVFS_CRASH_POINTS sets how many points per workload (default 5, 3 in the
sanitizer run, plus the cut after the end); each run prints how many it covered
and how many of them interrupted the workload.
"""
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mounts import BUILD, CTL, DAEMON, is_mounted, unmount

LAYER = BUILD / "tests" / "powerloss" / "powerloss"
BLOCK = 4096
# The sanitizer build (its run sets ASAN_OPTIONS: tools/setup.sh) cuts at fewer points.
POINTS = int(os.environ.get("ENVFS_CRASH_POINTS", "3" if "ASAN_OPTIONS" in os.environ else "5"))
KEY_XATTR = "trusted.envelopefs.key"


def pids_with(arg):
    """Processes whose command line has @arg as one of its words."""
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().decode(errors="replace").split("\0")
            except OSError:
                continue
            if arg in argv:
                out.append(int(pid))
    return out


def gone(pid):
    """@pid has exited (a zombie has: the daemons detach, and their reaper may be slow)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def wait_gone(pids):
    for pid in pids:
        for _ in range(1000):
            if gone(pid):
                break
            time.sleep(0.01)
        assert gone(pid), f"process {pid} did not exit"


def kill_and_wait(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_gone(pids)


def ctl(*args, env=None, check=False):
    cp = subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True, env=env,
                        timeout=300)
    if check:
        assert cp.returncode == 0, f"envelopefsctl {args}: {cp.stderr}"
    return cp


def fsync_path(path):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if os.path.isdir(path) else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_fsync(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


class Stack:
    """The power-loss backing on lower/, the volume's backing dir lower/vol, the
    envelopefs mount on mnt/, the keyring beside them on the real disk."""

    def __init__(self, root, disk, placement, names, mount_opts):
        self.root, self.disk = Path(root), Path(disk)
        self.lower, self.mnt = self.root / "lower", self.root / "mnt"
        self.backing = self.lower / "vol"
        self.keyring = self.root / "keyring"
        self.count_file = self.root / "count"
        self.placement, self.names, self.mount_opts = placement, names, mount_opts
        # This rig's own host state: a cut's copy of a volume is the same volume (its UUID) at
        # another path, in another state than the copy another rig pinned.
        self.env = dict(os.environ, XDG_STATE_HOME=str(self.root / "state"),
                        ENVELOPEFS_STATE_DIR=str(self.root / "state"))
        for d in (self.lower, self.mnt, self.disk):
            d.mkdir(parents=True, exist_ok=True)

    def start(self, crash_after=0, fault_file=None):
        opts = f"disk={self.disk},count_file={self.count_file}"
        if crash_after:
            opts += f",crash_after={crash_after}"
        if fault_file:
            opts += f",fault_file={fault_file}"
        subprocess.run([str(LAYER), "-o", opts, str(self.lower)], check=True, timeout=30)
        assert is_mounted(self.lower)

    def init(self):
        ctl("init", "--keyring", self.keyring, "--header",
            "file" if self.placement == "header" else "xattr", "--names", self.names,
            self.backing, env=self.env, check=True)

    def mount(self):
        """The daemon in the foreground, its log appended to daemon.log."""
        args = [str(DAEMON), "-f"]
        for opt in self.mount_opts:
            args += ["-o", opt]
        with open(self.root / "daemon.log", "ab") as log:
            daemon = subprocess.Popen(args + [str(self.backing), str(self.mnt)], stderr=log,
                                      env=self.env)
        for _ in range(6000):  # a sanitizer build on a loaded machine mounts slowly
            if is_mounted(self.mnt):
                return
            if daemon.poll() is not None:
                raise OSError(f"the daemon exited {daemon.returncode}: {self.log()}")
            time.sleep(0.01)
        raise AssertionError(f"not mounted: {self.log()}")

    def log(self):
        path = self.root / "daemon.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def count(self):
        return int(self.count_file.read_text())

    def unmount_volume(self):
        daemon = pids_with(str(self.mnt))
        unmount(self.mnt)
        wait_gone(daemon)  # until then it holds backing files open

    def open_dirs(self):
        """Directory handles open on the power-loss layer (its count_file.dirs)."""
        path = self.count_file.with_name(self.count_file.name + ".dirs")
        return int(path.read_text()) if path.exists() else 0

    def stop(self):
        """A clean shutdown: unmount both; the backing commits everything.  The
        daemon's directory handles are released (RELEASEDIR comes in the background
        after its exit) before the layer goes, or the layer's library keeps them."""
        layer = pids_with(str(self.lower))
        self.unmount_volume()
        for _ in range(1000):
            if self.open_dirs() == 0:
                break
            time.sleep(0.01)
        assert self.open_dirs() == 0, "the layer still has directories open after the daemon left"
        unmount(self.lower)
        wait_gone(layer)

    def power_cut(self):
        """Everything dies at once: the backing (if the cut point was not reached)
        and the daemon; then both mounts go."""
        kill_and_wait(pids_with(str(self.lower)) + pids_with(str(self.mnt)))
        unmount(self.mnt)
        unmount(self.lower)
        assert not is_mounted(self.mnt) and not is_mounted(self.lower)


class Workload:
    """A workload: setup (made durable before any cut), run (cut anywhere), and
    recover (after the cut and a fresh mount)."""
    placements = ("header", "xattr")
    names = "plain"

    def __init__(self):
        self.promises = {}  # path relative to the mount -> contents it may have (None: absent)

    def setup(self, st):
        pass

    def run(self, st):
        raise NotImplementedError

    def recover(self, st):
        pass

    def check(self, seen):
        """What the workload's promises alone cannot say."""


def read_tree(m):
    """Every entry below @m, looked up and (regular files) read whole: {rel: bytes or kind}."""
    seen = {}
    for root, dirs, files in os.walk(m):
        for name in dirs + files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, m)
            st = os.lstat(p)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as f:
                    seen[rel] = f.read()
                assert len(seen[rel]) == st.st_size, rel
            elif os.path.islink(p):
                seen[rel] = ("symlink", os.readlink(p))
            else:
                seen[rel] = "dir" if os.path.isdir(p) else "other"
    return seen


def check_promises(m, promises, seen):
    for rel, options in promises.items():
        got = seen.get(rel)
        assert got in options, (f"{rel}: {summary(got)} not among "
                                f"{[summary(o) for o in options]}")


def summary(data):
    if isinstance(data, bytes):
        return f"{len(data)} bytes {data[:12]!r}"
    return repr(data)


# ---- the workloads ----

class WriteFsync(Workload):
    """Files written and fsynced (with their directory), one overwritten in the
    middle and fsynced again, one grown by fdatasync, one truncated."""

    def run(self, st):
        m = st.mnt
        os.mkdir(m / "d")
        sizes = [1, BLOCK - 1, BLOCK, 3 * BLOCK + 5, 70000]
        for i, size in enumerate(sizes):
            name = f"d/f{i}"
            self.promises[name] = [None, b""]
            data = os.urandom(size)
            self.promises[name].append(data)
            write_fsync(m / name, data)
            fsync_path(m / "d")
            self.promises[name] = [data]
        old = self.promises["d/f3"][0]
        new = bytearray(old)
        new[BLOCK - 10:BLOCK + 20] = b"Z" * 30
        self.promises["d/f3"] = [old, bytes(new)]
        with open(m / "d/f3", "r+b") as f:
            f.seek(BLOCK - 10)
            f.write(b"Z" * 30)
            f.flush()
            os.fsync(f.fileno())
        self.promises["d/f3"] = [bytes(new)]
        old = self.promises["d/f1"][0]
        grown = old + os.urandom(2 * BLOCK)
        self.promises["d/f1"] = [old, grown]
        fd = os.open(m / "d/f1", os.O_WRONLY)
        os.pwrite(fd, grown[len(old):], len(old))
        os.fdatasync(fd)
        os.close(fd)
        self.promises["d/f1"] = [grown]
        old = self.promises["d/f4"][0]
        self.promises["d/f4"] = [old, old[:5000]]
        os.truncate(m / "d/f4", 5000)
        fsync_path(m / "d/f4")
        self.promises["d/f4"] = [old[:5000]]


class AtomicReplace(Workload):
    """The classic replace: temporary file, fsync, rename, fsync the directory."""

    def setup(self, st):
        first = os.urandom(5000)
        (st.mnt / "config").write_bytes(first)
        self.promises["config"] = [first]

    def run(self, st):
        m = st.mnt
        current = self.promises["config"][0]
        for i in range(4):
            new = os.urandom(3000 + 2000 * i)
            write_fsync(m / "config.tmp", new)
            self.promises["config"] = [current, new]
            os.rename(m / "config.tmp", m / "config")
            fsync_path(m)
            self.promises["config"] = [new]
            current = new


class LongNames(Workload):
    """mkdir, files with names long enough to need the long-name form, a rename
    from one long name to another, each made durable by fsync of the directory."""
    placements = ("header", "xattr")
    names = "encrypted"

    def run(self, st):
        m = st.mnt
        d = m / ("dir-" + "x" * 200)
        self.promises[os.path.relpath(d, m)] = [None, "dir"]
        os.mkdir(d)
        fsync_path(m)
        self.promises[os.path.relpath(d, m)] = ["dir"]
        names = [f"{i}-" + "n" * (150 + 20 * i) for i in range(3)]
        for name in names:
            data = os.urandom(1000 + len(name))
            rel = os.path.relpath(d / name, m)
            self.promises[rel] = [None, b"", data]
            write_fsync(d / name, data)
            fsync_path(d)
            self.promises[rel] = [data]
        old, new = os.path.relpath(d / names[0], m), os.path.relpath(d / ("r-" + "q" * 240), m)
        data = self.promises[old][0]
        self.renamed = (old, new, data)
        os.rename(m / old, m / new)
        fsync_path(d)
        self.renamed = None
        self.promises[old], self.promises[new] = [None], [data]
        sub = d / ("sub-" + "s" * 230)
        os.mkdir(sub)
        fsync_path(d)
        self.promises[os.path.relpath(sub, m)] = ["dir"]

    def check(self, seen):
        if getattr(self, "renamed", None):
            old, new, data = self.renamed
            assert [seen.get(old), seen.get(new)].count(data) == 1, (old in seen, new in seen)


def populate(m, count=12):
    contents = {}
    os.mkdir(m / "sub")
    for i in range(count):
        rel = f"sub/f{i}" if i % 2 else f"g{i}"
        data = os.urandom([1, 100, BLOCK, 3 * BLOCK + 7, 20000][i % 5])
        (m / rel).write_bytes(data)
        contents[rel] = [data]
    os.link(m / "sub/f1", m / "hardlink")
    contents["hardlink"] = contents["sub/f1"]
    return contents


def assert_current(st):
    """No record left to re-wrap."""
    cp = ctl("rotate", "--check", "--json", st.mnt, env=st.env)
    assert cp.returncode == 0, cp.stdout + cp.stderr


class Rotate(Workload):
    """rotate after the keyring's rotation (made before the image is taken: each
    mount then starts with it): every record re-wrapped in place."""
    command = ("rotate",)
    rotate_keyring = True

    def setup(self, st):
        self.promises.update(populate(st.mnt))
        if self.rotate_keyring:
            ctl("keyring", "rotate", st.keyring, check=True)

    def before_run(self, st):
        pass

    def prepare(self, st):
        if not getattr(self, "prepared", False):
            self.before_run(st)
            self.prepared = True

    def run(self, st):
        self.prepare(st)
        cp = ctl(*self.command, st.mnt, env=st.env)
        assert cp.returncode == 0, cp.stderr

    def recover(self, st):
        self.prepare(st)
        cp = ctl(*self.command, st.mnt, env=st.env)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        assert_current(st)


class Rekey(Rotate):
    """rotate --rekey: a fresh key per file, content re-encrypted through a journal.
    Done when every file's id (its DEK's) differs from the one it had before."""
    command = ("rotate", "--rekey")
    rotate_keyring = False

    def before_run(self, st):
        self.ids = file_ids(st.mnt)

    def recover(self, st):
        self.prepare(st)
        cp = ctl(*self.command, st.mnt, env=st.env)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        now = file_ids(st.mnt)
        assert now.keys() == self.ids.keys()
        kept = [rel for rel in now if now[rel] == self.ids[rel]]
        assert not kept, f"not re-keyed: {kept}"


def file_ids(m):
    """The id of every regular file's key record, by path relative to @m."""
    ids = {}
    for root, _, files in os.walk(m):
        for name in files:
            p = os.path.join(root, name)
            ids[os.path.relpath(p, m)] = os.getxattr(p, KEY_XATTR).split()[2]
    return ids


class ToKms(Rotate):
    """rotate --to-kms: every record moves to another KMS (a second local keyring)."""
    rotate_keyring = False

    def before_run(self, st):
        other = st.root / "other.keyring"
        if not other.exists():
            ctl("keyring", "create", other, check=True)
        listing = ctl("keyring", "list", other, check=True).stdout
        keyring_id = listing.split("keyring ID:")[1].split()[0]
        config = st.root / "to-kms.ini"
        config.write_text(f"[kms]\nprovider = local\nkeyring = {other}\nkeyring_id = {keyring_id}\n")
        self.command = ("rotate", "--to-kms", str(config))

    def recover(self, st):
        self.prepare(st)
        cp = ctl(*self.command, st.mnt, env=st.env)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        refs = set()
        for root, _, files in os.walk(st.mnt):
            for name in files:
                refs.add(os.getxattr(os.path.join(root, name), KEY_XATTR).decode().split()[1])
        assert len(refs) == 1, refs
        conf = (st.backing / "envelopefs.conf").read_text()
        assert "kms_previous" not in conf, conf


class Import(Workload):
    """envelopefsctl import of a plaintext tree into the mounted volume."""

    def source(self, st):
        src = st.root / "src"
        if not src.exists():
            os.makedirs(src / "a" / "b")
            for i in range(8):
                (src / ("a" if i % 2 else "a/b") / f"f{i}").write_bytes(
                    os.urandom([0, 10, BLOCK + 1, 30000][i % 4]))
        return src

    def run(self, st):
        cp = ctl("import", self.source(st), st.mnt, env=st.env)
        assert cp.returncode == 0, cp.stderr

    def recover(self, st):
        src = self.source(st)
        cp = ctl("import", src, st.mnt, env=st.env)
        assert cp.returncode == 0, cp.stdout + cp.stderr
        for root, _, files in os.walk(src):
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), src)
                assert (st.mnt / rel).read_bytes() == (src / rel).read_bytes(), rel


WORKLOADS = {"write_fsync": WriteFsync, "atomic_replace": AtomicReplace, "long_names": LongNames,
             "rotate": Rotate, "rekey": Rekey, "to_kms": ToKms, "import": Import}


def cases():
    for name, cls in WORKLOADS.items():
        for placement in cls.placements:
            yield pytest.param(name, placement, ["noshared"] if name == "write_fsync" and
                               placement == "header" else [],
                               id=f"{name}-{placement}" + ("-noshared" if name == "write_fsync" and
                                                           placement == "header" else ""))


def choose_points(total, count):
    """@count points spread over 1..@total, both ends included."""
    if total <= count:
        return list(range(1, total + 1))
    return sorted({1 + round(i * (total - 1) / (count - 1)) for i in range(count)})


def fresh_stack(tmp_path, name, image, keyring, cls, placement, mount_opts):
    """A stack whose backing disk is a copy of @image and whose keyring a copy of @keyring."""
    st = Stack(tmp_path / name, tmp_path / f"{name}-disk", placement, cls.names, mount_opts)
    shutil.rmtree(st.disk)
    shutil.copytree(image, st.disk)
    shutil.copy(keyring, st.keyring)
    return st


def set_up_and_dry_run(tmp_path, cls, placement, mount_opts, after_run=lambda dry: None):
    """Workload @cls set up on a fresh disk (tmp_path/image), then its dry run on a copy of it:
    mount, the whole workload, @after_run(dry), unmount, no cut (the backing's mutations are
    counted).  Returns (image, base stack, the set-up workload, dry stack)."""
    image = tmp_path / "image"
    base = Stack(tmp_path / "base", image, placement, cls.names, mount_opts)
    base.start()
    try:
        base.init()
        base.mount()
        setup = cls()
        setup.setup(base)
    finally:
        base.stop()
    dry = fresh_stack(tmp_path, "dry", image, base.keyring, cls, placement, mount_opts)
    dry.start()
    try:
        dry.mount()
        w = cls()
        w.promises = dict(setup.promises)
        w.run(dry)
        after_run(dry)
    finally:
        dry.stop()
    return image, base, setup, dry


def run_to_power_cut(tmp_path, image, base, setup, cls, placement, mount_opts, k):
    """Workload @cls from @setup's promises on a fresh copy of @image, the power cut after
    backing mutation @k (0: after the workload).  Returns (the stack, the workload, whether
    the cut interrupted it)."""
    st = fresh_stack(tmp_path, f"cut{k}", image, base.keyring, cls, placement, mount_opts)
    w = cls()
    w.promises = dict(setup.promises)
    st.start(crash_after=k)
    interrupted = False
    try:
        st.mount()
        w.run(st)
    except (OSError, AssertionError):
        interrupted = True
    finally:
        st.power_cut()
    return st, w, interrupted


@pytest.mark.parametrize("workload,placement,mount_opts", cases())
def test_power_cut(tmp_path, workload, placement, mount_opts):
    cls = WORKLOADS[workload]
    image, base, setup, dry = set_up_and_dry_run(tmp_path, cls, placement, mount_opts)
    total = dry.count()
    points = choose_points(total, POINTS) + [0]  # 0: the cut after the workload ended
    interrupted = 0
    for k in points:
        st, w, cut = run_to_power_cut(tmp_path, image, base, setup, cls, placement, mount_opts, k)
        interrupted += cut
        # Power back: the backing starts from its disk.
        st.start()
        try:
            st.mount()
            seen = read_tree(st.mnt)
            check_promises(st.mnt, w.promises, seen)
            w.check(seen)
            w.recover(st)
            check_promises(st.mnt, w.promises, read_tree(st.mnt))
        except (AssertionError, OSError) as e:
            raise AssertionError(f"cut at mutation {k} of {total}: {e}\n"
                                 f"daemon log:\n{st.log()}") from None
        finally:
            st.stop()
        shutil.rmtree(st.disk)
    print(f"{workload}-{placement}: {len(points)} cuts over {total} mutations, "
          f"{interrupted} interrupted the workload")
    assert interrupted >= len(points) // 2, "the cuts interrupted too little"
