# SPDX-License-Identifier: MIT
"""Many hosts, one volume: envelopefs on shared storage (a real GlusterFS, and bindfs).

Several hosts that mount one GlusterFS volume and run their own envelopefs daemon on it, with
one keyring, are modelled by two client mounts of one replica-2 volume on this machine ("host
A" and "host B"): each client has its own FUSE client process and kernel caches, and sees the
other's changes only through the volume.  Each daemon mounts the volume's backing directory
through its own client.  See glusterfs.py for the harness; the suite runs as its own meson test
(`meson test -C build shared`, or `pytest tests/integration/test_shared.py` as root).

Fixtures:
  gluster      session: the running glusterd (or one started for the session) and one
               replica-2 volume; a glusterd that cannot start, or a volume that cannot be made,
               fails every test with glusterd's log, never skips.
  gvol         per test: fresh client mounts A and B of that volume and a fresh directory on
               it; gvol.a / gvol.b are that directory through each client; gvol.local(label)
               a local directory (e.g. a mountpoint) removed with the rest.
  two_hosts    factory two_hosts(names="plain", placement="header", options=SHARED)
               -> (A, B): one `envelopefsctl init` through client A, then daemon A on client
               A's path and daemon B on client B's path (B never re-runs init), each on its
               own mountpoint; glusterfs.Host objects (mnt, backing, status(), remount()...).
  one_host     factory one_host(names=..., placement=..., options=SHARED, mnt=None) -> A.
  local_hosts  factory like two_hosts, both daemons on one local ext4 directory (a backing
               that reuses inode numbers at once).

The volume is set up as one that several hosts write (glusterfs.COHERENT: the client-side
caches that serve another client's writes late are off; with GlusterFS's defaults even two plain
clients, without envelopefs, saw another's in-place write only after up to 10 s here).
ENVFS_GLUSTER_DEFAULTS=1 keeps GlusterFS's defaults.

Timing: a GlusterFS client caches attributes and names for 1 s (its FUSE attribute and entry
timeouts), and envelopefs for attr_timeout/entry_timeout (1 s): a change made through one host
shows through the other within about 2 s.  Tests poll for it with a deadline of VISIBLE_WITHIN;
until then the other host may show only the previous (stale) state, anything else fails at once,
and once the new state has shown it must stay (every later open shows it).  Two plain GlusterFS
clients meet these bounds: test_plain_gluster_clients_meet_the_bounds checks that they do here.

The daemons are mounted with `-o shared` (ENVFS_SHARED_MOUNT_OPTS=opt,opt overrides it, e.g.
empty for the daemon's defaults), except where a test is about that option.
"""
import ctypes
import errno
import fcntl
import itertools
import json
import multiprocessing
import os
import random
import shutil
import stat
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from mounts import get, put
from test_fd_bound import sanitized
from glusterfs import (COHERENT, CTL, GlusterError, Glusterd, GlusterVolume, Host, init_volume,
                       unmount, unmount_below)

SHARED = tuple(o for o in os.environ.get("ENVFS_SHARED_MOUNT_OPTS", "shared").split(",") if o)
BLOCK = 4096
GLUSTER_SETTINGS = () if os.environ.get("ENVFS_GLUSTER_DEFAULTS") == "1" else COHERENT
# s: 1 s GlusterFS client cache + 1 s envelopefs attr_timeout + slack (more for a sanitized daemon
# beside the other suite on the 2 cores)
VISIBLE_WITHIN = 6.0 if sanitized() else 4.0
STABLE_READS = 5      # reads that must all show the new state once it has shown
KEYRING_RELOAD = 1.1  # s: the local provider notices a rotated keyring at most once a second
TEMP_PREFIX = "envelopefs.tmp."  # fs/names.h NAMES_TEMP_PREFIX: the daemon's scratch names
VOLUME_FILES = {"envelopefs.conf", "envelopefs.key", "envelopefs.dirid", "envelopefs.probe",
                "envelopefs.epoch"}

AT_FDCWD = -100
RENAME_NOREPLACE = 1
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
KEY_XATTR = "trusted.envelopefs.key"

libc = ctypes.CDLL(None, use_errno=True)
FORK = multiprocessing.get_context("fork")


# --- small helpers ----------------------------------------------------------------------------

def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, os.fsencode(str(old)), AT_FDCWD, os.fsencode(str(new)),
                      flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), str(old))


def opened(path):
    """What one open shows: (size by fstat, content)."""
    with open(path, "rb") as f:
        return os.fstat(f.fileno()).st_size, f.read()


def outcome(fn):
    """('ok', value) or ('err', errno name): what a host answered."""
    try:
        return ("ok", fn())
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, e.errno))


def show(value, limit=120):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"...({len(text)} chars)"


def converge(read, new, old=(), what="", within=VISIBLE_WITHIN, stable=STABLE_READS):
    """Poll read() until it answers ('ok', @new), at most @within seconds.  Meanwhile only an
    outcome in @old (a stale view the caches may serve that long) is allowed; any other answer
    fails at once.  Once new, @stable more reads must all answer it.  Returns the seconds it
    took."""
    return settle(read, ("ok", new), old, what, within, stable)


def settle(read, new, old=(), what="", within=VISIBLE_WITHIN, stable=STABLE_READS):
    """converge() to the outcome @new, which may be an error: ('err', 'ENOENT')."""
    old = list(old)
    start = time.monotonic()
    while True:
        got = outcome(read)
        if got == new:
            break
        elapsed = time.monotonic() - start
        assert got in old, (f"{what}: answered {show(got)} after {elapsed:.2f} s: neither the "
                            f"new state {show(new)} nor the previous one")
        assert elapsed < within, f"{what}: still the previous state after {within} s: {show(got)}"
        time.sleep(0.02)
    took = time.monotonic() - start
    for k in range(stable):
        got = outcome(read)
        assert got == new, (f"{what}: showed the new state after {took:.2f} s, then "
                            f"{show(got)} at read {k + 1}")
    return took


def eventually(read, want, what, within=VISIBLE_WITHIN, allowed=lambda got: got[0] == "ok"):
    """Poll read() until it answers ('ok', @want); meanwhile any answer @allowed accepts."""
    want = ("ok", want)
    start = time.monotonic()
    while True:
        got = outcome(read)
        if got == want:
            return time.monotonic() - start
        assert allowed(got), f"{what}: answered {show(got)}"
        assert time.monotonic() - start < within, f"{what}: after {within} s still {show(got)}"
        time.sleep(0.02)


def ctl(*args, check=False, env=None):
    cp = subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True, timeout=600,
                        env=env)
    if check:
        assert cp.returncode == 0, f"envelopefsctl {' '.join(map(str, args))}: {cp.stderr}"
    return cp


def temp_leftovers(backing):
    """The daemon's scratch entries left in a backing tree."""
    return sorted(str(p) for p in Path(backing).rglob(TEMP_PREFIX + "*"))


def backing_entries(directory):
    """Names in a backing directory, less the volume's own files."""
    return sorted(n for n in os.listdir(directory) if n not in VOLUME_FILES)


def backing_caps(host):
    """The status' "backing_fs" object (fs/backing.h, backing_caps_json), {} if there is none."""
    caps = host.status().get("backing_fs")
    return caps if isinstance(caps, dict) else {}


def visible_to(host, names, where=""):
    """Wait until @host lists every name in @names (made by the other host)."""
    d = host.mnt / where
    eventually(lambda: set(names) <= set(os.listdir(d)), True,
               f"host {host.label} lists {len(names)} new names", allowed=lambda g: True)


# --- fixtures ---------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def gluster():
    """glusterd and one replica-2 volume for the session; a failure to start is a failure."""
    gd = gv = failure = None
    try:
        gd = Glusterd.start()
        gv = GlusterVolume.create(gd, settings=GLUSTER_SETTINGS)
    except GlusterError as e:
        failure = str(e)
        if gd:
            gd.stop()
    if failure:
        pytest.fail(f"GlusterFS could not be started: {failure}", pytrace=False)
    yield gv
    gv.destroy()
    gd.stop()


class Clients:
    """Clients A and B of the session's volume, fresh for one test, and that test's directory
    on the volume (a, b: the same directory through each client)."""

    def __init__(self, volume, a, b):
        self.volume, self.a, self.b = volume, a, b

    def local(self, label):
        return self.volume.path(label)


_tests = itertools.count()


@pytest.fixture
def gvol(gluster):
    n = next(_tests)
    labels = [f"A{n}", f"B{n}"]
    try:
        ca, cb = [gluster.mount_client(label) for label in labels]
        (ca / f"t{n}").mkdir()
        eventually(lambda: (cb / f"t{n}").is_dir(), True, "client B sees client A's mkdir",
                   allowed=lambda g: True)
    except GlusterError as e:
        for label in labels:
            if label in gluster.clients:
                gluster.unmount_client(label)
        pytest.fail(str(e), pytrace=False)
    yield Clients(gluster, ca / f"t{n}", cb / f"t{n}")
    for label in labels:
        if label in gluster.clients:
            gluster.unmount_client(label)


def keyring_path(tmp_path):
    d = tmp_path / "keys"
    d.mkdir(mode=0o700, exist_ok=True)
    return d / "volume.keyring"


def start_hosts(made, roots, mnts, keyring, names, placement, options, block_size=4096):
    """init once through roots[0], then one daemon per root (A, B, ...) on its mountpoint."""
    init_volume(roots[0] / "vol", keyring, names=names, placement=placement,
                block_size=block_size)
    hosts = []
    for label, root, mnt in zip("ABCD", roots, mnts):
        h = Host(label, root / "vol", mnt, keyring, names, placement, block_size)
        made.append(h)
        h.mount(*options)
        hosts.append(h)
    return hosts


@pytest.fixture
def two_hosts(gvol, tmp_path):
    made = []

    def make(names="plain", placement="header", options=SHARED, block_size=4096):
        return tuple(start_hosts(made, (gvol.a, gvol.b), (gvol.local("A"), gvol.local("B")),
                                 keyring_path(tmp_path), names, placement, options, block_size))
    yield make
    for h in reversed(made):
        h.unmount()


@pytest.fixture
def one_host(gvol, tmp_path):
    made = []

    def make(names="plain", placement="header", options=SHARED, mnt=None):
        return start_hosts(made, (gvol.a,), (mnt or gvol.local("A"),), keyring_path(tmp_path),
                           names, placement, options)[0]
    yield make
    for h in reversed(made):
        h.unmount()


@pytest.fixture
def local_hosts(tmp_path):
    made = []

    def make(names="plain", placement="header", options=SHARED, count=2):
        store = tmp_path / "store"
        store.mkdir()
        return tuple(start_hosts(made, (store,) * count,
                                 [tmp_path / f"mnt{x}" for x in "AB"[:count]],
                                 keyring_path(tmp_path), names, placement, options))
    yield make
    for h in reversed(made):
        h.unmount()


@pytest.fixture
def bindfs_dir(tmp_path):
    """A bindfs (FUSE) view of a local directory: another FUSE-backed backing."""
    if not shutil.which("bindfs"):
        pytest.fail("bindfs is not installed (apt-get install bindfs; tools/setup.sh test "
                    "installs it)", pytrace=False)
    store, view = tmp_path / "store", tmp_path / "bindfs"
    store.mkdir()
    view.mkdir()
    subprocess.run(["bindfs", str(store), str(view)], check=True, capture_output=True)
    yield view
    unmount_below(view)
    unmount(view)


@pytest.fixture(params=["plain", "encrypted"])
def names(request):
    return request.param


@pytest.fixture(scope="session")
def include_tar(tmp_path_factory):
    """A tarball of /usr/include/linux (about 800 entries, 6.5 MB), made at test time."""
    d = tmp_path_factory.mktemp("tarball")
    tarball = d / "linux.tar"
    subprocess.run(["tar", "-C", "/usr/include", "-cf", str(tarball), "linux"], check=True)
    return tarball


def untar_and_compare(mnt, tarball, mtimes=True):
    cp = subprocess.run(["tar", "-C", str(mnt), "-xf", str(tarball)], capture_output=True,
                        text=True, timeout=600)
    assert cp.returncode == 0, f"tar -x on the mount: {cp.stderr[:2000]}"
    compare_tree(mnt, tarball, mtimes)


def compare_tree(mnt, tarball, mtimes=True):
    diff = subprocess.run(["diff", "-r", "/usr/include/linux", str(mnt / "linux")],
                          capture_output=True, text=True, timeout=600)
    assert diff.returncode == 0, f"diff -r: {(diff.stdout + diff.stderr)[:2000]}"
    # tar --compare also checks modes, mtimes, sizes and link targets
    cmp = subprocess.run(["tar", "-C", str(mnt), "--compare", "-f", str(tarball)],
                         capture_output=True, text=True, timeout=600)
    differs = [line for line in cmp.stdout.splitlines()
               if mtimes or not line.endswith(": Mod time differs")]
    assert not differs and not cmp.stderr, f"tar --compare: {(cmp.stdout + cmp.stderr)[:2000]}"


# --- 1. one daemon on a GlusterFS backing: the namespace works ------------------------------

def test_directories(one_host, names):
    """mkdir, nested mkdir, rmdir on a backing without renameat2 flags."""
    h = one_host(names=names)
    m = h.mnt
    os.mkdir(m / "d")
    os.makedirs(m / "d" / "e" / "f" / "g")
    put(m / "d" / "e" / "f" / "g" / "file", b"deep")
    with pytest.raises(FileExistsError):
        os.mkdir(m / "d")
    os.mkdir(m / "gone")
    os.rmdir(m / "gone")
    assert not (m / "gone").exists()
    with pytest.raises(OSError) as e:
        os.rmdir(m / "d" / "e")
    assert e.value.errno == errno.ENOTEMPTY
    assert sorted(os.listdir(m)) == ["d"]
    h.remount()
    assert get(m / "d" / "e" / "f" / "g" / "file") == b"deep"
    assert sorted(os.listdir(m)) == ["d"]
    assert temp_leftovers(h.backing) == []


def test_renames(one_host, names):
    """rename of files and directories, over an existing file, over an empty directory, and
    RENAME_NOREPLACE: success to a missing name, EEXIST on an existing one (both kept)."""
    h = one_host(names=names)
    m = h.mnt
    put(m / "a", b"A" * 5000)
    os.rename(m / "a", m / "b")
    assert not (m / "a").exists() and get(m / "b") == b"A" * 5000
    put(m / "c", b"C")
    os.rename(m / "b", m / "c")
    assert not (m / "b").exists() and get(m / "c") == b"A" * 5000
    os.makedirs(m / "d" / "sub")
    put(m / "d" / "sub" / "f", b"F")
    os.rename(m / "d", m / "d2")
    assert get(m / "d2" / "sub" / "f") == b"F" and not (m / "d").exists()
    os.mkdir(m / "empty")
    os.rename(m / "d2", m / "empty")
    assert get(m / "empty" / "sub" / "f") == b"F" and not (m / "d2").exists()
    os.mkdir(m / "full")
    put(m / "full" / "x", b"x")
    with pytest.raises(OSError) as e:
        os.rename(m / "empty", m / "full")
    assert e.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    # a file moved between directories
    os.rename(m / "c", m / "full" / "c")
    assert get(m / "full" / "c") == b"A" * 5000

    renameat2(m / "full" / "c", m / "n1", RENAME_NOREPLACE)
    assert get(m / "n1") == b"A" * 5000 and not (m / "full" / "c").exists()
    put(m / "o", b"O")
    with pytest.raises(OSError) as e:
        renameat2(m / "n1", m / "o", RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    assert get(m / "n1") == b"A" * 5000 and get(m / "o") == b"O"
    renameat2(m / "empty", m / "dn", RENAME_NOREPLACE)
    assert get(m / "dn" / "sub" / "f") == b"F"
    os.mkdir(m / "e2")
    with pytest.raises(OSError) as e:
        renameat2(m / "dn", m / "e2", RENAME_NOREPLACE)
    assert e.value.errno == errno.EEXIST
    assert get(m / "dn" / "sub" / "f") == b"F" and os.listdir(m / "e2") == []

    want = {"dn", "e2", "full", "n1", "o"}
    assert set(os.listdir(m)) == want
    h.remount()
    assert set(os.listdir(m)) == want
    assert get(m / "n1") == b"A" * 5000 and get(m / "dn" / "sub" / "f") == b"F"
    assert temp_leftovers(h.backing) == []


def test_symlinks_and_hard_links(one_host, names):
    h = one_host(names=names)
    m = h.mnt
    put(m / "t", b"target")
    os.symlink("t", m / "ln")
    assert os.readlink(m / "ln") == "t" and get(m / "ln") == b"target"
    os.rename(m / "ln", m / "ln2")
    assert os.readlink(m / "ln2") == "t" and stat.S_ISLNK(os.lstat(m / "ln2").st_mode)
    assert get(m / "ln2") == b"target" and not os.path.lexists(m / "ln")
    os.mkdir(m / "d")
    os.symlink("../t", m / "d" / "up")
    os.rename(m / "d", m / "d2")
    assert get(m / "d2" / "up") == b"target"

    os.link(m / "t", m / "hard")
    assert os.stat(m / "t").st_nlink == 2 and os.stat(m / "hard").st_nlink == 2
    assert os.stat(m / "t").st_ino == os.stat(m / "hard").st_ino
    with open(m / "hard", "r+b") as f:
        f.write(b"TARGET")
    assert get(m / "t") == b"TARGET"
    os.unlink(m / "t")
    assert get(m / "hard") == b"TARGET" and os.stat(m / "hard").st_nlink == 1
    h.remount()
    assert get(m / "hard") == b"TARGET" and os.readlink(m / "ln2") == "t"
    assert os.readlink(m / "d2" / "up") == "../t"
    assert temp_leftovers(h.backing) == []


def test_untar(one_host, names, include_tar):
    """Unpack a real tree (/usr/include/linux) and compare it, before and after a remount."""
    h = one_host(names=names)
    untar_and_compare(h.mnt, include_tar)
    h.remount()
    compare_tree(h.mnt, include_tar)
    assert temp_leftovers(h.backing) == []


# --- 2. close-to-open across hosts ------------------------------------------------------------

def append_on_b_read_by_a(a, b):
    old = os.urandom(5000)
    put(a.mnt / "f", old)
    assert opened(a.mnt / "f") == (5000, old)  # A's caches hold it
    converge(lambda: get(b.mnt / "f"), old, {("err", "ENOENT")}, "B reads A's new file")
    more = os.urandom(3000)
    with open(b.mnt / "f", "ab") as f:
        f.write(more)
    new = old + more
    assert opened(b.mnt / "f") == (8000, new)
    converge(lambda: opened(a.mnt / "f"), (8000, new), {("ok", (5000, old))},
             "A opens the file B appended to")


def overwrite_on_b_read_by_a(a, b):
    old = os.urandom(3 * BLOCK)
    put(a.mnt / "g", old)
    assert get(a.mnt / "g") == old
    converge(lambda: get(b.mnt / "g"), old, {("err", "ENOENT")}, "B reads A's new file")
    # 1: B rewrites everything; 2: B rewrites one middle block only.
    new = os.urandom(3 * BLOCK)
    with open(b.mnt / "g", "r+b") as f:
        f.write(new)
    converge(lambda: opened(a.mnt / "g"), (3 * BLOCK, new), {("ok", (3 * BLOCK, old))},
             "A re-opens the file B overwrote")
    block = os.urandom(BLOCK)
    with open(b.mnt / "g", "r+b") as f:
        f.seek(BLOCK)
        f.write(block)
    newer = new[:BLOCK] + block + new[2 * BLOCK:]
    converge(lambda: opened(a.mnt / "g"), (3 * BLOCK, newer), {("ok", (3 * BLOCK, new))},
             "A re-opens the file whose middle block B rewrote")
    # and the other way round
    put(a.mnt / "g", old)
    converge(lambda: opened(b.mnt / "g"), (3 * BLOCK, old), {("ok", (3 * BLOCK, newer))},
             "B re-opens the file A rewrote")


def test_append_on_b_is_read_by_a_after_open(two_hosts):
    append_on_b_read_by_a(*two_hosts())


def test_overwrite_in_place_on_b_is_read_by_a_after_reopen(two_hosts):
    """Same length, so only the content (and mtime) tell: no page cache across opens."""
    overwrite_on_b_read_by_a(*two_hosts())


class Bare:
    """A GlusterFS client directory standing where a host's mount would."""

    def __init__(self, label, path):
        self.label, self.mnt = label, path


def test_plain_gluster_clients_meet_the_bounds(gvol):
    """The yardstick: two GlusterFS clients without envelopefs pass the close-to-open tests
    within VISIBLE_WITHIN.  If this fails, the storage (or the machine) is too slow or caches
    too much, and the envelopefs tests above tell nothing."""
    a, b = Bare("A", gvol.a), Bare("B", gvol.b)
    append_on_b_read_by_a(a, b)
    overwrite_on_b_read_by_a(a, b)
    os.chmod(a.mnt / "f", 0o644)
    converge(lambda: _mode(b.mnt / "f"), 0o644, [("ok", _mode(b.mnt / "f"))], "B sees the mode")
    os.chmod(b.mnt / "f", 0o600)
    converge(lambda: _mode(a.mnt / "f"), 0o600, [("ok", 0o644)], "A sees B's chmod")


# --- 3. metadata shows within the attribute timeout ------------------------------------------

def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


def ok(value):
    return ("ok", value)


ENOENT = ("err", "ENOENT")
CONTENT = b"p" * 10000
# name: (the change, made through B; [(what A reads, its outcome before, after)]).  Each view
# settles on its own: a listing and a lookup are cached apart, and may change apart.
CHANGES = {
    "chmod": (lambda b: os.chmod(b / "f", 0o600),
              [(lambda a: _mode(a / "f"), ok(0o644), ok(0o600))]),
    "chown": (lambda b: os.chown(b / "f", 1234, 5678),
              [(lambda a: (os.stat(a / "f").st_uid, os.stat(a / "f").st_gid), ok((0, 0)),
                ok((1234, 5678)))]),
    "truncate": (lambda b: os.truncate(b / "f", 100),
                 [(lambda a: os.stat(a / "f").st_size, ok(10000), ok(100)),
                  (lambda a: get(a / "f"), ok(CONTENT), ok(CONTENT[:100]))]),
    "touch": (lambda b: os.utime(b / "f", ns=(10**18, 1234567890123456789)),
              [(lambda a: os.stat(a / "f").st_mtime_ns, None, ok(1234567890123456789))]),
    "rename": (lambda b: os.rename(b / "f", b / "g"),
               [(lambda a: "f" in os.listdir(a), ok(True), ok(False)),
                (lambda a: "g" in os.listdir(a), ok(False), ok(True)),
                (lambda a: os.stat(a / "f").st_size, ok(10000), ENOENT),
                (lambda a: get(a / "g"), ENOENT, ok(CONTENT))]),
    "create": (lambda b: put(b / "new", b"fresh"),
               [(lambda a: get(a / "new"), ENOENT, ok(b"fresh")),
                (lambda a: "new" in os.listdir(a), ok(False), ok(True))]),
    "unlink": (lambda b: os.unlink(b / "f"),
               [(lambda a: "f" in os.listdir(a), ok(True), ok(False)),
                (lambda a: os.stat(a / "f").st_size, ok(10000), ENOENT)]),
    "mkdir": (lambda b: os.mkdir(b / "dir"),
              [(lambda a: os.listdir(a / "dir"), ENOENT, ok([])),
               (lambda a: "dir" in os.listdir(a), ok(False), ok(True))]),
    "rmdir": (lambda b: os.rmdir(b / "sub"),
              [(lambda a: "sub" in os.listdir(a), ok(True), ok(False)),
               (lambda a: os.listdir(a / "sub"), ok([]), ENOENT)]),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_metadata_change_on_b_shows_on_a(two_hosts, change):
    """Each view A has of what B changed shows the change within VISIBLE_WITHIN; until then
    only the view A had before (which A looked at, so that it is cached)."""
    a, b = two_hosts()
    act, views = CHANGES[change]
    put(a.mnt / "f", CONTENT)
    os.chmod(a.mnt / "f", 0o644)
    os.mkdir(a.mnt / "sub")
    visible_to(b, ["f", "sub"])
    befores = []
    for read, before, after in views:
        now = outcome(lambda: read(a.mnt))
        assert before is None or now == before, f"A before B's {change}: {show(now)}"
        befores.append(now)
    act(b.mnt)
    for k, ((read, _, after), before) in enumerate(zip(views, befores)):
        settle(lambda: read(a.mnt), after, [before], f"A's view {k} after B's {change}")


# --- 4. locks exclude across hosts ------------------------------------------------------------

def flock_struct(ltype, start=0, length=100):
    """struct flock (x86_64/aarch64 glibc): type, whence, start, len, pid; l_pid 0 for OFD."""
    return struct.pack("hhqqi4x", ltype, os.SEEK_SET, start, length, 0)


def take(fd, kind, start=0, length=100, wait=False, ltype=fcntl.F_WRLCK):
    if kind == "posix":
        fcntl.fcntl(fd, fcntl.F_SETLKW if wait else fcntl.F_SETLK,
                    flock_struct(ltype, start, length))
    elif kind == "ofd":
        fcntl.fcntl(fd, F_OFD_SETLKW if wait else F_OFD_SETLK, flock_struct(ltype, start, length))
    else:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)


def release(fd, kind, start=0, length=100):
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_UN)
    else:
        fcntl.fcntl(fd, F_OFD_SETLK if kind == "ofd" else fcntl.F_SETLK,
                    flock_struct(fcntl.F_UNLCK, start, length))


class Holder:
    """A child process (its own lock owner) holding a lock on @path until told to let go."""

    def __init__(self, path, kind, wait=False):
        self.conn, child = FORK.Pipe()
        self.proc = FORK.Process(target=self._run, args=(child, str(path), kind, wait))
        self.proc.start()
        child.close()

    @staticmethod
    def _run(conn, path, kind, wait):
        fd = os.open(path, os.O_RDWR)
        try:
            take(fd, kind, wait=wait)
            conn.send(("ok", None))
        except OSError as e:
            conn.send(("err", errno.errorcode.get(e.errno, e.errno)))
            return
        if conn.recv() == "release":
            release(fd, kind)
            conn.send(("ok", "released"))
            conn.recv()
        os.close(fd)

    def result(self, timeout):
        """The outcome of taking the lock, or None if not within @timeout s."""
        return self.conn.recv() if self.conn.poll(timeout) else None

    def release(self):
        self.conn.send("release")
        assert self.conn.poll(30) and self.conn.recv() == ("ok", "released")

    def end(self):
        try:
            self.conn.send("exit")
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


BUSY = {("err", "EAGAIN"), ("err", "EACCES")}


@pytest.mark.parametrize("kind", ["posix", "ofd", "flock"])
def test_lock_on_a_excludes_b(two_hosts, kind):
    a, b = two_hosts()
    put(a.mnt / "lk", b"x" * 1000)
    visible_to(b, ["lk"])
    holder = Holder(a.mnt / "lk", kind)
    try:
        assert holder.result(30) == ("ok", None)
        fd = os.open(b.mnt / "lk", os.O_RDWR)
        try:
            assert outcome(lambda: take(fd, kind)) in BUSY, f"B got the {kind} lock A holds"
            if kind != "flock":
                # a disjoint range is free, and F_GETLK on B names A's lock
                got = outcome(lambda: take(fd, kind, start=200, length=100))
                assert got == ("ok", None), f"B's lock on a disjoint range: {got}"
                release(fd, kind, start=200, length=100)
                cmd = F_OFD_GETLK if kind == "ofd" else fcntl.F_GETLK
                ans = fcntl.fcntl(fd, cmd, flock_struct(fcntl.F_WRLCK))
                assert struct.unpack("hhqqi4x", ans)[0] == fcntl.F_WRLCK, "F_GETLK on B: no lock"
            holder.release()
            got = outcome(lambda: take(fd, kind))
            assert got == ("ok", None), f"B after A released: {got}"
            # now B holds it: a new owner on A is excluded
            other = Holder(a.mnt / "lk", kind)
            try:
                assert other.result(30) in BUSY, f"A got the {kind} lock B holds"
            finally:
                other.end()
        finally:
            os.close(fd)
    finally:
        holder.end()


def test_blocking_lock_on_b_waits_for_a(two_hosts):
    a, b = two_hosts()
    put(a.mnt / "lk", b"x" * 1000)
    visible_to(b, ["lk"])
    holder = Holder(a.mnt / "lk", "posix")
    try:
        assert holder.result(30) == ("ok", None)
        waiter = Holder(b.mnt / "lk", "posix", wait=True)
        try:
            assert waiter.result(1.5) is None, "B's F_SETLKW did not wait for A's lock"
            holder.release()
            assert waiter.result(VISIBLE_WITHIN) == ("ok", None), \
                "B's F_SETLKW not granted after A released"
        finally:
            waiter.end()
    finally:
        holder.end()


# --- 5. exclusive creation and renames racing across hosts ------------------------------------

def _racer(action, rounds, barrier, conn):
    out = []
    for i in range(rounds):
        try:
            barrier.wait()
        except Exception as e:  # a broken barrier: the other side died
            out.append(("exc", repr(e)))
            break
        try:
            out.append(outcome(lambda: action(i)))
        except Exception as e:
            out.append(("exc", repr(e)))
    conn.send(out)


def race(rounds, *actions):
    """Run each action(i) in its own process, all released together by a barrier in every
    round i; the outcomes per round, one per action."""
    barrier = FORK.Barrier(len(actions), timeout=60)
    conns, procs = [], []
    for act in actions:
        r, w = FORK.Pipe(duplex=False)
        p = FORK.Process(target=_racer, args=(act, rounds, barrier, w))
        p.start()
        w.close()
        conns.append(r)
        procs.append(p)
    results = []
    try:
        for r in conns:
            assert r.poll(300), "a racing process did not finish"
            results.append(r.recv())
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert all(len(res) == rounds for res in results), results
    return list(zip(*results))


def exclusive_create(path, tag):
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.write(fd, tag)
    os.close(fd)


def one_winner(results, loser, what):
    for i, res in enumerate(results):
        oks = [k for k, r in enumerate(res) if r[0] == "ok"]
        assert len(oks) == 1 and all(r == ("err", loser) for r in res if r[0] != "ok"), \
            f"{what}, round {i}: {res} (want exactly one success, the other {loser})"
    return [next(k for k, r in enumerate(res) if r[0] == "ok") for res in results]


ROUNDS = 30


def test_exclusive_create_race(two_hosts, names):
    a, b = two_hosts(names=names)
    results = race(ROUNDS, lambda i: exclusive_create(a.mnt / f"x{i}", b"A"),
                   lambda i: exclusive_create(b.mnt / f"x{i}", b"B"))
    winners = one_winner(results, "EEXIST", "O_CREAT|O_EXCL on both hosts")
    want = {f"x{i}": b"AB"[w:w + 1] for i, w in enumerate(winners)}
    for host in (a, b):
        for n, data in want.items():
            eventually(lambda: get(host.mnt / n), data, f"{n} on {host.label}")
    for host in (a, b):
        eventually(lambda: sorted(os.listdir(host.mnt)), sorted(want),
                   f"the names on host {host.label}")
    assert len(backing_entries(a.backing)) == ROUNDS, "stray backing entries"
    assert temp_leftovers(a.backing) == []


def test_mkdir_race(two_hosts, names):
    a, b = two_hosts(names=names)

    def mk(host, tag):
        def act(i):
            os.mkdir(host.mnt / f"d{i}")
            put(host.mnt / f"d{i}" / tag, tag.encode())
        return act
    results = race(ROUNDS, mk(a, "A"), mk(b, "B"))
    # With plain names a directory is one mkdir on the backing, and GlusterFS itself can answer
    # EEXIST to both of two clients making the same name at the same instant, or success to both
    # (two plain GlusterFS clients, 3,000 rounds: one of each; see also gluster/glusterfs#2601).  Encrypted names make a directory under a temporary name and rename
    # it into place (it holds its ID, so the rename never replaces one): exactly one host wins.
    if names == "plain":
        winners = [[k for k, r in enumerate(res) if r[0] == "ok"] for res in results]
        assert all(r == ("err", "EEXIST") for res in results for r in res if r[0] != "ok"), results
    else:
        winners = [[w] for w in one_winner(results, "EEXIST", "mkdir on both hosts")]
    for host in (a, b):
        for i, ws in enumerate(winners):
            tags = sorted("AB"[w] for w in ws)
            eventually(lambda: (sorted(os.listdir(host.mnt / f"d{i}")),
                                [get(host.mnt / f"d{i}" / t) for t in tags]),
                       (tags, [t.encode() for t in tags]), f"d{i} on {host.label}",
                       allowed=lambda g: True)
    for host in (a, b):
        eventually(lambda: sorted(os.listdir(host.mnt)), sorted(f"d{i}" for i in range(ROUNDS)),
                   f"the names on host {host.label}")
    assert len(backing_entries(a.backing)) == ROUNDS, "stray backing entries"
    assert temp_leftovers(a.backing) == []


def test_rename_races(two_hosts, names):
    """Rounds of renames racing on both hosts; no entry is lost or doubled:
    - same source, fresh targets (plain rename, then RENAME_NOREPLACE): exactly one host
      moves it, the other gets ENOENT, the file is at exactly one of the two targets;
    - a chain with RENAME_NOREPLACE: A renames x->y while B renames y->z; B always succeeds,
      A succeeds (y moved first) or gets EEXIST; nothing is overwritten."""
    a, b = two_hosts(names=names)
    contents = {}
    for i in range(ROUNDS):
        for n in (f"s{i}", f"x{i}", f"y{i}"):
            contents[n] = os.urandom(100 + i)
            put(a.mnt / n, contents[n])
    visible_to(b, list(contents))
    for n in contents:
        get(b.mnt / n)  # B's daemon has the DEKs and names cached too

    same = race(ROUNDS, lambda i: renameat2(a.mnt / f"s{i}", a.mnt / f"a{i}", i % 2),
                lambda i: renameat2(b.mnt / f"s{i}", b.mnt / f"b{i}", i % 2))
    winners = one_winner(same, "ENOENT", "rename of one source on both hosts")
    chain = race(ROUNDS, lambda i: renameat2(a.mnt / f"x{i}", a.mnt / f"y{i}", RENAME_NOREPLACE),
                 lambda i: renameat2(b.mnt / f"y{i}", b.mnt / f"z{i}", RENAME_NOREPLACE))
    want = {}
    for i, w in enumerate(winners):
        want[f"{'ab'[w]}{i}"] = contents[f"s{i}"]
    for i, (ra, rb) in enumerate(chain):
        assert rb == ("ok", None), f"chain round {i}: B's y->z: {rb}"
        assert ra in (("ok", None), ("err", "EEXIST")), f"chain round {i}: A's x->y: {ra}"
        want[f"y{i}" if ra[0] == "ok" else f"x{i}"] = contents[f"x{i}"]
        want[f"z{i}"] = contents[f"y{i}"]

    for host in (a, b):
        eventually(lambda: sorted(os.listdir(host.mnt)), sorted(want),
                   f"the names on host {host.label}")
        for n, data in want.items():
            eventually(lambda: get(host.mnt / n), data, f"{n} on host {host.label}")
            assert os.stat(host.mnt / n).st_nlink == 1, f"{n} on {host.label}: doubled link"
    assert len(backing_entries(a.backing)) == len(want), "stray backing entries"
    assert temp_leftovers(a.backing) == []


# --- 6. DEK cache: another host's new file under an old name ----------------------------------

@pytest.fixture(params=["gluster-header", "gluster-xattr", "local-header"])
def host_pair(request):
    """Two daemons: on GlusterFS (both placements), or both on one local directory, whose
    file system reuses a freed inode number for the next new file at once."""
    where, placement = request.param.split("-")
    make = request.getfixturevalue("two_hosts" if where == "gluster" else "local_hosts")
    return make(placement=placement)


def test_replaced_by_rename_on_b_is_read_by_a(host_pair):
    """B writes a new file under a temporary name and renames it over the old one (as editors
    and package managers do), six times or more; A read the old one each time (its DEK is cached)."""
    a, b = host_pair
    data = os.urandom(2 * BLOCK + 1)
    put(a.mnt / "f", data)
    converge(lambda: get(b.mnt / "f"), data, {("err", "ENOENT")}, "B reads A's file")
    inodes = [os.stat(b.backing / "f").st_ino]
    for k in rounds(a, b, inodes):
        assert get(a.mnt / "f") == data
        new = os.urandom(2 * BLOCK + 1)
        put(b.mnt / "f.tmp", new)
        os.rename(b.mnt / "f.tmp", b.mnt / "f")
        inodes.append(os.stat(b.backing / "f").st_ino)
        converge(lambda: opened(a.mnt / "f"), (len(new), new), {("ok", (len(data), data))},
                 f"round {k}: A reads the file B renamed over the one A read")
        data = new


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_renamed_twice_on_b_is_gone_on_a(local_hosts, placement):
    """A holds a name in its kernel's cache (entry_timeout); B renames the file on twice, so
    its record no longer lists that name (format 3, "Entry bindings").  A's open of the old
    name finds it gone (ENOENT), never EIO: the daemon answers ESTALE to a record that does not
    list the cached name, and the kernel looks the name up again.  On a local backing only:
    through GlusterFS, A's client may still list and stat the old name for its own cache's
    lifetime, and A then answers EIO (README, "Several hosts, one volume")."""
    a, b = local_hosts(placement=placement)
    put(a.mnt / "f", b"content")
    converge(lambda: get(b.mnt / "f"), b"content", {("err", "ENOENT")}, "B reads A's file")
    for k in range(5):
        assert get(a.mnt / "f") == b"content"
        os.rename(b.mnt / "f", b.mnt / "g")
        os.rename(b.mnt / "g", b.mnt / "h")
        assert outcome(lambda: get(a.mnt / "f")) == ("err", "ENOENT"), f"round {k}"
        converge(lambda: get(a.mnt / "h"), b"content", {("err", "ENOENT")}, "A reads h")
        os.rename(b.mnt / "h", b.mnt / "f")
        converge(lambda: get(a.mnt / "f"), b"content", {("err", "ENOENT")}, "A reads f again")


def rounds(a, b, inodes):
    """Six rounds, and on the local backing more until a backing inode number came back, so that
    the case is exercised: ext4 gives a freed number to the next new file in its group, but other
    processes creating files on the same file system at the time may take it first."""
    k = 0
    while k < 6 or (a.backing == b.backing and len(set(inodes)) == len(inodes) and k < 60):
        yield k
        k += 1
    if a.backing == b.backing:
        assert len(set(inodes)) < len(inodes), f"no backing inode number reused: {inodes}"


def test_recreated_on_b_is_read_by_a(host_pair):
    """B deletes a file and makes a new one of the same name (and size), six times or more."""
    a, b = host_pair
    data = os.urandom(BLOCK + 10)
    put(a.mnt / "f", data)
    converge(lambda: get(b.mnt / "f"), data, {("err", "ENOENT")}, "B reads A's file")
    inodes = [os.stat(b.backing / "f").st_ino]
    for k in rounds(a, b, inodes):
        assert get(a.mnt / "f") == data
        new = os.urandom(BLOCK + 10)
        os.unlink(b.mnt / "f")
        put(b.mnt / "f", new)
        inodes.append(os.stat(b.backing / "f").st_ino)
        converge(lambda: opened(a.mnt / "f"), (len(new), new),
                 {("ok", (len(data), data)), ("err", "ENOENT")},
                 f"round {k}: A reads the file B made again")
        data = new


def file_id(path):
    return os.getxattr(path, KEY_XATTR).split()[2]


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_rekey_on_b_while_a_reads(two_hosts, placement, tmp_path):
    """B re-keys every file (new DEK, content re-encrypted in place) while A reads them in a
    loop with the old DEKs cached: A never gets an error or wrong data."""
    a, b = two_hosts(placement=placement)
    files = {f"r{i}": os.urandom(256 * 1024 + 1000 * i) for i in range(4)}
    for n, data in files.items():
        put(a.mnt / n, data)
    for n, data in files.items():
        converge(lambda: get(b.mnt / n), data, {("err", "ENOENT")}, f"B reads {n}")
        assert get(a.mnt / n) == data
    before = {n: file_id(a.mnt / n) for n in files}
    errors, stop, reads = [], threading.Event(), [0]

    def reader():
        while not stop.is_set():
            for n, data in files.items():
                got = outcome(lambda: get(a.mnt / n))
                reads[0] += 1
                if got != ("ok", data):
                    errors.append((n, show(got, 60)))
    t = threading.Thread(target=reader)
    t.start()
    try:
        run = ctl("rotate", "--rekey", "--state", tmp_path / "rekey.ids", "--json", b.mnt)
        time.sleep(VISIBLE_WITHIN)
    finally:
        stop.set()
        t.join()
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rekeyed"] == len(files)
    assert not errors, f"{len(errors)} of {reads[0]} reads on A went wrong: {errors[:5]}"
    for n, data in files.items():
        assert get(a.mnt / n) == data
        new_id = file_id(b.mnt / n)
        assert new_id != before[n]
        eventually(lambda: file_id(a.mnt / n), new_id, f"{n}'s file ID on A")


# --- 7. master-key rotation on B while A works ------------------------------------------------

def test_rotate_on_b_while_a_reads_and_writes(two_hosts):
    a, b = two_hosts()
    model = {f"f{i}": os.urandom(3 * BLOCK + 100) for i in range(24)}
    for n, data in model.items():
        put(a.mnt / n, data)
    for n, data in model.items():
        converge(lambda: get(b.mnt / n), data, {("err", "ENOENT")}, f"B reads {n}")
    ctl("keyring", "rotate", a.keyring, check=True)  # one keyring, shared by both hosts
    time.sleep(KEYRING_RELOAD)
    errors, stop, writes = [], threading.Event(), [0]
    rng = random.Random(7)

    def writer():
        while not stop.is_set():
            n = rng.choice(sorted(model))
            off = rng.randrange(0, 5) * BLOCK + rng.choice([0, 0, 100])
            data = rng.randbytes(rng.choice([1, 100, BLOCK]))
            try:
                with open(a.mnt / n, "r+b") as f:
                    f.seek(off)
                    f.write(data)
                old = model[n]
                model[n] = old[:off].ljust(off, b"\0") + data + old[off + len(data):]
                writes[0] += 1
                got = get(a.mnt / n)
                if got != model[n]:
                    errors.append(f"{n}: A reads back other bytes than it wrote")
            except OSError as e:
                errors.append(f"{n}: {e}")
    t = threading.Thread(target=writer)
    t.start()
    try:
        run = ctl("rotate", "--jobs", "4", "--json", b.mnt)
        time.sleep(1.0)
    finally:
        stop.set()
        t.join()
    assert run.returncode == 0, run.stderr
    assert not errors, f"{len(errors)} of {writes[0]} writes on A went wrong: {errors[:5]}"
    for n, data in model.items():
        assert get(a.mnt / n) == data, f"{n} on A"
        eventually(lambda: get(b.mnt / n), data, f"{n} on B (A's last write)")

    def check(host):
        cp = ctl("rotate", "--check", "--json", host.mnt)
        return cp.returncode, json.loads(cp.stdout)["versions"] if cp.stdout else cp.stderr
    want = (0, {"2": len(model)})
    for host in (b, a):
        eventually(lambda: check(host), want, f"rotate --check on host {host.label}")
    # and what is stored says so too, to fresh daemons
    for host in (a, b):
        host.remount()
    for host in (a, b):
        assert check(host) == want, f"rotate --check on host {host.label} after a remount"
        for n, data in model.items():
            assert get(host.mnt / n) == data, f"{n} on {host.label} after a remount"


# --- 8. the explorers, once each, on a GlusterFS backing (one daemon) -------------------------

def explorer_seed(default):
    env = os.environ.get("ENVFS_EXPLORE_SEED")
    return int(env) if env else default


def test_content_explorer_on_gluster(one_host, tmp_path):
    """test_fs_explore's differential run (against ext4), one seed, the backing on GlusterFS.
    ENVFS_EXPLORE_SEED / ENVFS_EXPLORE_OPS as there (default here: seed 1, 300 operations)."""
    import test_fs_explore as explore
    ref = tmp_path / "reference"
    ref.mkdir()
    assert explore.fs_type(ref) in ("ext2/ext3", "ext4"), "the reference must be on ext4"
    h = one_host(placement="header")
    explore.Explorer(h, ref, explorer_seed(1)).run(int(os.environ.get("ENVFS_EXPLORE_OPS", 300)))


def names_explorer(base):
    """test_fs_names_explore's explorer where renameat2(RENAME_EXCHANGE) is refused with
    EINVAL, as it is on a backing without it (fs/backing.h): a documented difference.  The
    operation draws as the original."""

    class Explorer(base):
        exchange = False

        def op_rename(self):
            import test_fs_names_explore as nx
            a = self.existing()
            b = self.rng.choice([self.existing(), self.new_path(), os.path.join(a, b"sub")])
            flags = self.rng.choice([0, 0, 0, nx.RENAME_NOREPLACE, nx.RENAME_EXCHANGE])
            if flags == nx.RENAME_EXCHANGE:
                sa, sb = self.lstat_of(a), self.lstat_of(b)
                same = sa and sb and sa.st_ino == sb.st_ino  # the VFS makes that a no-op
                if not same and not self.exchange:
                    self.documented(f"exchange {nx.show(a)} {nx.show(b)}", "EINVAL",
                                    lambda r: nx.renameat2(os.path.join(r, a),
                                                           os.path.join(r, b), flags),
                                    lambda r: nx.renameat2(os.path.join(r, a),
                                                           os.path.join(r, b), flags))
                    return
            parents = sorted({self.parent(a), self.parent(b)})
            self.both(f"renameat2 {nx.show(a)} -> {nx.show(b)} flags {flags}",
                      lambda r: nx.renameat2(os.path.join(r, a), os.path.join(r, b), flags),
                      parents, moved=(a, b) if flags != nx.RENAME_EXCHANGE else None)

        def checkpoint(self):
            """As the original, whose report of a difference fails on the str paths that
            snapshot() gives (os.listdir of a descriptor answers str)."""
            import test_fs_names_explore as nx
            self.log.append("checkpoint")
            got, want = nx.snapshot(self.mnt), nx.snapshot(self.ref)
            if got[0] != want[0]:
                keys = set(got[0]) | set(want[0])
                diff = [(os.fsencode(k), got[0].get(k), want[0].get(k)) for k in sorted(keys)
                        if got[0].get(k) != want[0].get(k)]
                self.fail(f"trees differ (path, mount, reference): {diff[:5]}")
            if got[1] != want[1]:
                self.fail(f"hard-link groups differ: mount {got[1]}, reference {want[1]}")
    return Explorer


@pytest.mark.parametrize("names,seed", [("encrypted", 1), ("plain", 4)])
def test_names_explorer_on_gluster(one_host, tmp_path, names, seed):
    """test_fs_names_explore's differential run (against the local file system), one seed per
    names setting, the backing on GlusterFS.  ENVFS_EXPLORE_SEED replays another seed."""
    import test_fs_names_explore as nx
    work = tmp_path / "run"
    work.mkdir()
    ref = work / "ref"  # as long as "mnt": PATH_MAX is reached at the same depth
    ref.mkdir()
    assert nx.local_fs_type(ref) in nx.LOCAL_FS, "the reference must be a local file system"
    h = one_host(names=names, mnt=work / "mnt")
    explorer = names_explorer(nx.Explorer)(h, ref, explorer_seed(seed), nx.DEFAULT_STEPS)
    explorer.exchange = backing_caps(h).get("rename_exchange", False)
    explorer.run()


# --- 9. another FUSE backing: bindfs ----------------------------------------------------------

def test_bindfs_backing(bindfs_dir, tmp_path, names, include_tar):
    """mkdir, renames and an untar through envelopefs on bindfs, a FUSE file system without
    renameat2 flags or O_TMPFILE, like GlusterFS."""
    made = []
    h = start_hosts(made, (bindfs_dir,), (tmp_path / "mnt",), keyring_path(tmp_path), names,
                    "header", SHARED)[0]
    try:
        m = h.mnt
        os.makedirs(m / "d" / "e")
        put(m / "d" / "e" / "f", b"F")
        os.rename(m / "d", m / "d2")
        renameat2(m / "d2" / "e" / "f", m / "g", RENAME_NOREPLACE)
        put(m / "h", b"H")
        with pytest.raises(OSError) as e:
            renameat2(m / "g", m / "h", RENAME_NOREPLACE)
        assert e.value.errno == errno.EEXIST
        os.rename(m / "g", m / "h")
        assert get(m / "h") == b"F" and sorted(os.listdir(m)) == ["d2", "h"]
        # bindfs itself loses the mtime a futimens sets before close (a plain bindfs
        # mount fails `tar --compare` the same way): mtimes are not bindfs's to keep.
        untar_and_compare(m, include_tar, mtimes=False)
        h.remount()
        compare_tree(m, include_tar, mtimes=False)
        assert temp_leftovers(h.backing) == []
    finally:
        for x in made:
            x.unmount()


# --- shared mode: on by itself on a network or FUSE backing -----------------------------------

@pytest.mark.parametrize("where,how,shared", [
    ("gluster", "auto", True), ("gluster", "-o shared", True), ("gluster", "-o noshared", False),
    ("gluster", "config false", False), ("gluster", "config auto", True),
    ("local", "auto", False), ("local", "-o shared", True), ("local", "config true", True),
    ("bindfs", "auto", True)])
def test_shared_mode_setting(request, tmp_path, where, how, shared):
    """Status JSON: daemon.shared follows -o shared/noshared and [daemon] shared, and auto
    turns it on on GlusterFS, off on a local disk; backing.shared is the backing's own fact."""
    options = ()
    if how.startswith("-o "):
        options = (how[3:],)
    elif how.startswith("config "):
        ini = tmp_path / "daemon.ini"
        ini.write_text(f"[daemon]\nshared = {how.split()[1]}\n")
        options = (f"config={ini}",)
    if where == "gluster":
        h = request.getfixturevalue("one_host")(options=options)
    elif where == "bindfs":
        view, made = request.getfixturevalue("bindfs_dir"), []
        request.addfinalizer(lambda: [x.unmount() for x in made])
        h = start_hosts(made, (view,), (tmp_path / "mnt",), keyring_path(tmp_path), "plain",
                        "header", options)[0]
    else:
        h = request.getfixturevalue("local_hosts")(options=options, count=1)[0]
    st = h.status()
    assert st["daemon"].get("shared") is shared, f"status daemon: {st['daemon']}"
    assert backing_caps(h).get("shared") is (where != "local"), \
        f"status backing: {st.get('backing')}"


def test_backing_capabilities_in_status(one_host, local_hosts):
    """The probe's findings (fs/backing.h) as measured on this machine's GlusterFS 10 client
    (renameat2 flags and O_TMPFILE missing; user xattrs and POSIX locks there) and on ext4."""
    h = one_host()
    g = backing_caps(h)
    assert g, f"status has no backing_fs object: {h.status().get('backing_fs')!r}"
    assert g["shared"] is True and g["fs"] != "ext4"
    for cap in ("rename_noreplace", "rename_exchange", "tmpfile"):
        assert g[cap] is False, f"{cap} on GlusterFS: {g}"
    for cap in ("user_xattr", "posix_locks"):
        assert g[cap] is True, f"{cap} on GlusterFS: {g}"
    loc = backing_caps(local_hosts(count=1)[0])
    assert loc and loc["shared"] is False
    for cap in ("rename_noreplace", "rename_exchange", "tmpfile", "user_xattr", "holes_trusted",
                "fallocate", "punch_hole", "file_handles", "posix_locks", "ofd_locks", "flock"):
        assert loc[cap] is True, f"{cap} on ext4: {loc}"
