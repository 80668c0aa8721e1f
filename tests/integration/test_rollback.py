"""Rollback (issue 15.3): a file or a whole volume put back by the storage to an older version is
refused on a host that saw the newer one, and a crash never looks like one (docs/THREAT-MODEL.md,
"Rollback").  Every test runs with its own host state directory ($ENVELOPEFS_STATE_DIR)."""
import json
import re
import os
import shutil
import subprocess
import threading
import time

import pytest

from glusterfs import Host, init_volume
from mounts import CTL, Volume, get, put
from test_powerloss import (BLOCK, POINTS, Workload, check_promises, choose_points,
                            fsync_path, read_tree, run_to_power_cut, set_up_and_dry_run)
from test_powerloss import write_fsync as pl_write_fsync

XATTR = "user.envelopefs.key"


@pytest.fixture
def state(tmp_path, monkeypatch):
    path = tmp_path / "state"
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(path))
    return path


def make(tmp_path, name, placement="header", names="plain"):
    root = tmp_path / name
    root.mkdir()
    return Volume(root, placement=placement, names=names)


def daemons_of(v):
    """The pids of daemons serving @v (their command line names its backing)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"envelopefs") and str(v.backing).encode() in args:
            pids.append(pid)
    return pids


def stop(v):
    """Unmount and wait for the daemon to finish: it raises the epoch after the kernel lets go."""
    v.unmount()
    for _ in range(200):
        if not daemons_of(v):
            return
        time.sleep(0.05)
    raise AssertionError("the daemon did not exit")


def record_bytes(v, name):
    """The current key record of @name's backing file, as stored."""
    path = v.backing_path(name) if hasattr(v, "backing_path") else v.backing / name
    if v.placement == "xattr":
        return os.getxattr(path, XATTR)
    raw = path.read_bytes()
    header = int(next(line.split("=")[1] for line in (v.backing / "envelopefs.conf")
                      .read_text().splitlines() if line.startswith("header_size")))
    slot = header // 2
    current = max((int.from_bytes(raw[i + 4:i + 12], "big"), i) for i in (0, slot)
                  if raw[i:i + 4] == b"EFSL")[1]
    return raw[current + 14:current + 14 + int.from_bytes(raw[current + 12:current + 14], "big")]


def record_version(v, name):
    """The version item (tag 2, docs/FORMAT.md) of @name's record, or None."""
    rec = record_bytes(v, name)
    n = rec[26]
    w = int.from_bytes(rec[27 + n:29 + n], "big")
    off, end = 30 + n + w, 30 + n + w + rec[29 + n + w]
    while off < end:
        tag, size = rec[off], rec[off + 1]
        if tag == 2:
            return int.from_bytes(rec[off + 2:off + 2 + size], "big")
        off += 2 + size
    return None


class OldCopy:
    """A copy of @name's backing file (and, with xattr placement, its record) in @where, for the
    storage to put back later: the rollback every test here plays."""

    def __init__(self, v, name, where):
        self.v, self.name, self.where = v, name, where
        shutil.copy2(v.backing_path(name), where)
        self.record = os.getxattr(v.backing_path(name), XATTR) if v.placement == "xattr" else None

    def put_back(self):
        shutil.copyfile(self.where, self.v.backing_path(self.name))
        if self.record is not None:
            os.setxattr(self.v.backing_path(self.name), XATTR, self.record)


def open_errno(path, mode="rb"):
    try:
        with open(path, mode) as f:
            f.read(1)
    except OSError as e:
        return e.errno
    return 0


def write_fsync(path, data, mode="ab"):
    with open(path, mode) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsck_all(backing, *args, env=None):
    """envelopefsctl fsck --json: its exit status and its findings."""
    cp = subprocess.run([str(CTL), "fsck", "--json", *args, str(backing)], capture_output=True,
                        text=True, timeout=300, env=env)
    assert cp.stdout, cp.stderr
    return cp.returncode, json.loads(cp.stdout)["findings"]


def rolled_back(findings):
    """The plaintext paths fsck found put back to an older version."""
    return sorted(f["path"] for f in findings if f["kind"] == "rolled-back")


def decrypt(v, name, *args):
    return subprocess.run([str(CTL), "decrypt", *args, "--path", str(v.backing), name],
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_version_counts_durable_epochs(tmp_path, state, placement):
    """A new record is version 1; a change raises it only over a record known durable (after an
    fsync), at most once per open for writing, never per block or per fsync."""
    v = make(tmp_path, "v", placement)
    v.mount("rollback_sync_interval=0")
    try:
        put(v.mnt / "f", b"first")
        assert record_version(v, "f") == 1
        # (With the writeback cache the kernel sends the writes at the fsync, before it.)
        with open(v.mnt / "f", "r+b") as f:
            f.write(b"x" * 100000)  # over a record not known durable: no bump
            f.flush()
            os.fsync(f.fileno())
            assert record_version(v, "f") == 1
            for _ in range(30):  # still due, now durable: one bump for all these blocks
                f.write(os.urandom(4096))
                f.flush()
            os.fsync(f.fileno())
            assert record_version(v, "f") == 2
            f.write(b"y")  # raised once for this open already
            f.flush()
            os.fsync(f.fileno())
            assert record_version(v, "f") == 2
        with open(v.mnt / "f", "r+b") as f:  # the next open for writing raises again
            f.write(b"z")
            f.flush()
            os.fsync(f.fileno())
            assert record_version(v, "f") == 3
            os.fsync(f.fileno())  # nothing written: nothing raised
            assert record_version(v, "f") == 3
        with open(v.mnt / "f", "rb") as f:  # a read-only open raises nothing
            f.read()
        assert record_version(v, "f") == 3
    finally:
        stop(v)


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_file_put_back_refused(tmp_path, state, placement):
    """A whole file put back after this host saw a newer, fsynced version: EIO on open; after
    -o accept_rollback it reads; a host that never saw the newer one cannot tell."""
    v = make(tmp_path, "v", placement)
    v.mount()
    try:
        write_fsync(v.mnt / "f", b"old content", "wb")
        saved = OldCopy(v, "f", tmp_path / "saved")
        write_fsync(v.mnt / "f", b"new", "r+b")
        assert record_version(v, "f") == 2
    finally:
        stop(v)
    saved.put_back()
    # Offline: fsck names it, decrypt refuses it as the daemon's open would (EIO: exit 3).
    code, found = fsck_all(v.backing)
    assert code == 3 and rolled_back(found) == ["/f"], found
    assert all(f["errno"] == "EIO" for f in found if f["kind"] == "rolled-back"), found
    cp = decrypt(v, "f")
    assert cp.returncode == 3 and b"put an older copy back" in cp.stderr and not cp.stdout, cp
    cp = decrypt(v, "f", "--accept-rollback")
    assert cp.returncode == 0 and cp.stdout == b"old content", cp
    # The host's knowledge is where the state root says: another one knows nothing.
    code, found = fsck_all(v.backing, "--state-dir", str(tmp_path / "elsewhere"))
    assert rolled_back(found) == [], found
    v.mount()
    try:
        assert open_errno(v.mnt / "f") == 5
    finally:
        stop(v)
    v.mount("accept_rollback")
    try:
        assert get(v.mnt / "f") == b"old content"
    finally:
        stop(v)
    v.mount()
    try:
        assert get(v.mnt / "f") == b"old content"  # accepted for good
    finally:
        stop(v)
    assert fsck_all(v.backing) == (0, [])


def snapshot(v, where):
    """What a storage host keeps: a copy of the whole backing, xattrs included."""
    subprocess.run(["cp", "-a", str(v.backing), str(where)], check=True)


def restore(v, where):
    shutil.rmtree(v.backing)
    subprocess.run(["cp", "-a", str(where), str(v.backing)], check=True)


def test_volume_snapshot_refused_at_mount(tmp_path, state):
    """A whole volume put back from an older copy is refused at mount (exit 3, saying so and how
    to accept it); -o accept_rollback mounts it once and for good; a clean remount of an
    unchanged volume is never refused."""
    v = make(tmp_path, "v", names="encrypted")
    v.mount()
    put(v.mnt / "f", b"old")
    stop(v)
    for _ in range(3):
        v.mount()  # clean remounts: never refused
        stop(v)
    snapshot(v, tmp_path / "copy")
    v.mount()
    with open(v.mnt / "f", "r+b") as f:  # made durable first, so this open raises its version
        os.fsync(f.fileno())
        f.write(b"new")
        f.flush()
        os.fsync(f.fileno())
    stop(v)
    restore(v, tmp_path / "copy")
    code, found = fsck_all(v.backing)  # unmounted: the epoch, and the file the copy put back
    assert code == 3 and rolled_back(found) == ["/f"], found
    assert [f["kind"] for f in found if f["kind"] == "volume-epoch"] == ["volume-epoch"], found
    proc = v.mount(check=False)
    if proc.returncode == 0:
        stop(v)
    assert proc.returncode == 3, proc.stderr
    assert "restored from an older snapshot" in proc.stderr
    assert "-o accept_rollback" in proc.stderr
    (v.backing / "envelopefs.epoch").unlink()  # nor is its epoch file simply taken away
    proc = v.mount(check=False)
    if proc.returncode == 0:
        stop(v)
    assert proc.returncode == 3 and "envelopefs.epoch is missing" in proc.stderr, proc.stderr
    v.mount("accept_rollback")
    try:
        assert get(v.mnt / "f") == b"old"
    finally:
        stop(v)
    v.mount()
    stop(v)


def test_epoch_of_another_volume_refused(tmp_path, state):
    """The epoch file is bound to its volume key: another volume's, however high, is not
    authentic."""
    a = make(tmp_path, "a", names="encrypted")
    b = make(tmp_path, "b", names="encrypted")
    for _ in range(3):
        b.mount()
        stop(b)
    a.mount()
    stop(a)
    shutil.copy2(b.backing / "envelopefs.epoch", a.backing / "envelopefs.epoch")
    proc = a.mount(check=False)
    if proc.returncode == 0:
        stop(a)
    assert proc.returncode == 3 and "not authentic" in proc.stderr, proc.stderr


def test_volume_made_before_gets_an_epoch(tmp_path, state):
    """A volume without an epoch file, on a host that never saw one, mounts and gets one."""
    v = make(tmp_path, "v", names="encrypted")
    assert not (v.backing / "envelopefs.epoch").exists()
    v.mount()
    try:
        assert "envelopefs.epoch" not in os.listdir(v.mnt)
    finally:
        stop(v)
    assert (v.backing / "envelopefs.epoch").stat().st_size == 45


# --- a power cut never looks like a rollback ------------------------------------------------

class VersionLoop(Workload):
    """Write/fsync/write/fsync loops on one file, open-append-fsync-close on another: the
    first raises once, the second once per open."""

    def setup(self, st):
        for name, size in (("a", 3 * BLOCK), ("b", 100)):
            data = os.urandom(size)
            pl_write_fsync(st.mnt / name, data)
            self.promises[name] = [data]
        fsync_path(st.mnt)

    def run(self, st):
        m = st.mnt
        with open(m / "a", "r+b") as f:
            for i in range(4):
                current = self.promises["a"][0]
                new = bytearray(current)
                new[i * 1000:i * 1000 + 500] = os.urandom(500)
                self.promises["a"] = [current, bytes(new)]
                f.seek(i * 1000)
                f.write(new[i * 1000:i * 1000 + 500])
                f.flush()
                os.fsync(f.fileno())
                self.promises["a"] = [bytes(new)]
        for _ in range(3):
            current = self.promises["b"][0]
            more = os.urandom(300)
            self.promises["b"] = [current, current + more]
            with open(m / "b", "ab") as f:
                f.write(more)
                f.flush()
                os.fsync(f.fileno())
            self.promises["b"] = [current + more]

    def recover(self, st):
        """After the cut: the files keep being written and fsynced, and read back."""
        for name in ("a", "b"):
            data = (st.mnt / name).read_bytes()
            with open(st.mnt / name, "ab") as f:
                for _ in range(3):
                    f.write(b"+")
                    f.flush()
                    os.fsync(f.fileno())
                    data += b"+"
            self.promises[name] = [data]


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_power_cut_is_no_rollback(tmp_path, placement):
    """Cuts at several points of write/fsync loops on the power-loss backing (shared mode, as
    on any FUSE backing), the host state kept across each cut: every file reads without EIO and
    no "rolled back" is ever logged, before and after more writes."""
    mount_opts = []

    def raised(dry):
        # The loops did raise the versions (xattrs: the layer's own): "a" once for its one
        # open, "b" at each of its three opens after the first.
        if placement == "header":
            assert record_version(dry, "a") == 2 and record_version(dry, "b") >= 3
    image, base, setup, dry = set_up_and_dry_run(tmp_path, VersionLoop, placement, mount_opts,
                                                 raised)
    total = dry.count()
    points = choose_points(total, POINTS) + [0]
    for k in points:
        st, w, _ = run_to_power_cut(tmp_path, image, base, setup, VersionLoop, placement,
                                    mount_opts, k)
        st.start()
        try:
            for _ in range(2):  # and once more after a clean remount
                st.mount()
                check_promises(st.mnt, w.promises, read_tree(st.mnt))
                w.recover(st)
                check_promises(st.mnt, w.promises, read_tree(st.mnt))
                st.unmount_volume()
            assert "rolled back" not in st.log()
            # Nor does fsck, with the host's state, on the volume the cut left.
            code, found = fsck_all(st.backing, env=st.env)
            assert code == 0 and found == [], found
        except (AssertionError, OSError) as e:
            raise AssertionError(f"cut at mutation {k} of {total}: {e}\n"
                                 f"daemon log:\n{st.log()}") from None
        finally:
            st.stop()
        shutil.rmtree(st.disk)


# --- shared mode: several hosts, each with its own state ------------------------------------

def local_host(tmp_path, label, store, placement="header", names="encrypted"):
    """A daemon ("host") with its own state directory on the volume in @store, forced shared."""
    h = Host(label, store, tmp_path / f"mnt{label}", tmp_path / "keyring", names, placement)
    h.env = dict(os.environ, ENVELOPEFS_STATE_DIR=str(tmp_path / f"state{label}"))
    h.mount("shared", env=h.env)
    return h


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_raise_after_the_kernel_let_go_of_the_inode(tmp_path, state, placement):
    """Each open for writing raises the version, also when the kernel let go of the inode
    since the last one (here a drop_caches; on a busy host, memory pressure): the record read
    afresh has the version this host learnt durable at its fsync, so it need not wait for a
    sync before raising.  (Before: it waited, and a file whose inode was dropped between
    writes never got a version a rollback could be told by.)"""
    v = make(tmp_path, "v", placement)
    v.mount()
    try:
        put(v.mnt / "f", b"start")
        write_fsync(v.mnt / "f", b"+")
        first = record_version(v, "f")
        for i in range(1, 4):
            with open("/proc/sys/vm/drop_caches", "w") as f:
                f.write("2")  # dentries and inodes: the daemon gets the FORGET
            write_fsync(v.mnt / "f", b"+")
            assert record_version(v, "f") == first + i
    finally:
        stop(v)


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_shared_hosts_never_refuse_each_other(tmp_path, placement):
    """Host B writes and fsyncs in a loop while host A reads: A never refuses (it learns only
    what B made durable, rule R); then an old copy put back: A, which saw newer, refuses."""
    store = tmp_path / "store"
    init_volume(store, tmp_path / "keyring", names="encrypted", placement=placement)
    a = local_host(tmp_path, "A", store, placement)
    b = local_host(tmp_path, "B", store, placement)
    try:
        put(b.mnt / "f", b"start")
        failures, done = [], threading.Event()

        def writer():
            try:
                for i in range(40):
                    with open(b.mnt / "f", "ab") as f:
                        f.write(b"%d," % i)
                        f.flush()
                        os.fsync(f.fileno())
            except OSError as e:
                failures.append(f"B: {e}")
            finally:
                done.set()

        t = threading.Thread(target=writer)
        t.start()
        reads = 0
        while not done.is_set() or reads < 5:
            try:
                assert get(a.mnt / "f").startswith(b"start")
                reads += 1
            except OSError as e:
                failures.append(f"A: {e}")
                break
        t.join()
        assert not failures, failures
        saved_version = record_version(b, "f")
        saved = OldCopy(b, "f", tmp_path / "saved")
        for _ in range(2):  # two more durable versions: A learns one above the copy's
            write_fsync(b.mnt / "f", b"more")
        assert record_version(b, "f") == saved_version + 2
        assert get(a.mnt / "f").endswith(b"moremore")
        saved.put_back()
        assert open_errno(a.mnt / "f") == 5
        # fsck, online, with A's state finds it too; with B's (which wrote it) as well, once
        # each daemon wrote what it learnt to its table (within a second, rollback.h).
        for label in "AB":
            def found_it():
                code, found = fsck_all(store, "--state-dir", str(tmp_path / f"state{label}"))
                return code == 3 and rolled_back(found) == ["/f"]
            assert poll(found_it, within=10), label
    finally:
        b.unmount()
        a.unmount()


# --- fsck ------------------------------------------------------------------------------------

def fsck(v):
    cp = subprocess.run([str(CTL), "fsck", "--json", str(v.backing)], capture_output=True,
                        text=True, timeout=120)
    return cp.returncode, [f for f in json.loads(cp.stdout)["findings"]
                           if f["kind"] == "volume-epoch"] if cp.stdout else cp.stderr


def test_fsck_checks_the_epoch(tmp_path, state):
    """fsck: an authentic, current epoch is no finding; a forged one, or a volume put back
    below what this host saw, is an integrity problem (exit 3), as the mount would say."""
    v = make(tmp_path, "v", names="encrypted")
    v.mount()
    put(v.mnt / "f", b"data")
    stop(v)
    assert fsck(v) == (0, [])
    snapshot(v, tmp_path / "copy")
    v.mount()
    stop(v)
    assert fsck(v) == (0, [])
    restore(v, tmp_path / "copy")
    code, found = fsck(v)
    assert code == 3 and len(found) == 1 and "older copy" in found[0]["detail"], found
    raw = bytearray((v.backing / "envelopefs.epoch").read_bytes())
    raw[12] ^= 1
    (v.backing / "envelopefs.epoch").write_bytes(bytes(raw))
    code, found = fsck(v)
    assert code == 3 and len(found) == 1 and "not authentic" in found[0]["detail"], found


def learnt(state, v, name):
    """The version this host learnt for @name's file ID (its table, docs/FORMAT.md "File
    versions"), or 0."""
    file_id = record_bytes(v, name)[6:22].hex()
    found = list(state.glob(f"*/versions/{file_id[:2]}/{file_id[2:]}"))
    return int(found[0].read_text()) if found else 0


def poll(predicate, within=30.0):
    """Whether @predicate comes true within @within seconds (a syncfs of a busy disk is slow)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_periodic_syncfs_versions_files_never_fsynced(tmp_path, state):
    """Files written and closed without an fsync: the periodic syncfs (rollback_sync_interval)
    makes their records durable, so an open for writing then raises the version, and the host
    learns it; an old copy put back is then refused.  With 0, nothing is raised."""
    v = make(tmp_path, "v")
    v.mount("rollback_sync_interval=1")
    try:
        put(v.mnt / "f", b"old")
        saved = OldCopy(v, "f", tmp_path / "saved")

        def append():
            with open(v.mnt / "f", "ab") as f:
                f.write(b"+")
            return record_version(v, "f") == 2
        assert poll(append)  # once a syncfs made the first record durable
        assert poll(lambda: learnt(state, v, "f") == 2)  # once another made version 2 durable
        saved.put_back()
        assert open_errno(v.mnt / "f") == 5
    finally:
        stop(v)
    w = make(tmp_path, "w")
    w.mount("rollback_sync_interval=0")
    try:
        put(w.mnt / "f", b"old")
        time.sleep(2)
        with open(w.mnt / "f", "ab") as f:
            f.write(b" new")
        assert record_version(w, "f") == 1
    finally:
        stop(w)


def test_read_only_backing_checked_not_raised(tmp_path, state):
    """A volume on a read-only backing mounts (its epoch checked, not raised) and reads."""
    v = make(tmp_path, "v", names="encrypted")
    v.mount()
    put(v.mnt / "f", b"data")
    stop(v)
    epoch = (v.backing / "envelopefs.epoch").read_bytes()
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(v.backing), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        v.backing, rw = ro, v.backing
        v.mount("ro")
        try:
            assert get(v.mnt / "f") == b"data"
        finally:
            stop(v)
        v.backing = rw
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert (v.backing / "envelopefs.epoch").read_bytes() == epoch


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_fsck_finds_no_rollback_after_many_writes(tmp_path, state, placement):
    """Many writes, fsyncs, renames and remounts (the versions raised and learnt many times):
    fsck reports nothing, while the daemon writes (online) and after (offline)."""
    v = make(tmp_path, "v", placement, names="encrypted")
    v.mount("rollback_sync_interval=1")
    errors, done = [], threading.Event()

    def writer():
        try:
            i = 0
            while not done.is_set() or i < 20:
                name = f"f{i % 5}"
                with open(v.mnt / name, "ab") as f:
                    f.write(os.urandom(3000))
                    f.flush()
                    if i % 2:
                        os.fsync(f.fileno())
                if i % 7 == 6:
                    os.rename(v.mnt / name, v.mnt / f"r{i}")
                    os.rename(v.mnt / f"r{i}", v.mnt / name)
                i += 1
        except OSError as e:
            errors.append(e)
    try:
        t = threading.Thread(target=writer)
        t.start()
        try:
            for _ in range(3):
                code, found = fsck_all(v.backing)
                assert rolled_back(found) == [], found
        finally:
            done.set()
            t.join()
        assert not errors, errors
        assert poll(lambda: learnt(state, v, "f1") >= 2)  # versions were raised and learnt
    finally:
        stop(v)
    for _ in range(2):
        v.mount()
        try:
            for i in range(5):  # the second open finds the record durable: one raise
                write_fsync(v.mnt / f"f{i}", b"+")
                write_fsync(v.mnt / f"f{i}", b"+")
        finally:
            stop(v)
    assert max(learnt(state, v, f"f{i}") for i in range(5)) >= 3
    assert fsck_all(v.backing) == (0, [])


# --- the host's table kept tidy ---------------------------------------------------------------

def file_id_of(v, name):
    return record_bytes(v, name)[6:22].hex()


def entry_exists(state, file_id):
    return any(state.glob(f"*/versions/{file_id[:2]}/{file_id[2:]}"))


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_unlink_drops_the_entry(tmp_path, state, placement):
    """Unlinking a file's last name (or renaming another file over it) drops its entry from this
    host's table; a file with another name left keeps it, and so does every other file."""
    v = make(tmp_path, "v", placement, names="encrypted")
    v.mount()
    try:
        for name in ("gone", "replaced", "linked", "kept"):
            write_fsync(v.mnt / name, b"data", "wb")
        os.link(v.mnt / "linked", v.mnt / "other")
        ids = {name: file_id_of(v, name) for name in ("gone", "replaced", "linked", "kept")}
        assert poll(lambda: all(entry_exists(state, i) for i in ids.values()))
        os.unlink(v.mnt / "gone")
        os.unlink(v.mnt / "linked")  # "other" still names it
        os.rename(v.mnt / "kept", v.mnt / "replaced")
        assert poll(lambda: not entry_exists(state, ids["gone"]))
        time.sleep(1.5)  # a flush of what was learnt would have written it back by now
        assert not entry_exists(state, ids["gone"]) and not entry_exists(state, ids["replaced"])
        assert entry_exists(state, ids["linked"]) and entry_exists(state, ids["kept"])
        # Many at once: the kernel lets go of inodes meanwhile (the daemon's then know no record),
        # and their cached keys vouch for the file IDs.
        for i in range(300):
            write_fsync(v.mnt / f"many{i}", b"x", "wb")
        table = next(state.glob("*/versions"))

        def entries():  # os.walk skips a directory the daemon removes meanwhile
            return sum(len(files) for _, _, files in os.walk(table))
        assert poll(lambda: entries() >= 302)
        for i in range(300):
            os.unlink(v.mnt / f"many{i}")
        assert poll(lambda: entries() == 2)  # "linked" and "kept"
    finally:
        stop(v)
    assert not entry_exists(state, ids["gone"]) and not entry_exists(state, ids["replaced"])
    assert fsck_all(v.backing) == (0, [])


def test_fsck_repair_drops_stale_entries(tmp_path, state):
    """Entries of files no longer in the volume (deleted behind the daemon's back) are a leftover
    for fsck and removed by --repair; entries of files that exist never are, and nothing is
    removed after a check that found a problem (a file it could not read may exist)."""
    v = make(tmp_path, "v", names="encrypted")
    v.mount()
    try:
        os.mkdir(v.mnt / "d")
        for name in ("a", "b", "d/c", "d/e"):
            write_fsync(v.mnt / name, b"data" * 2000, "wb")
        ids = {name: file_id_of(v, name) for name in ("a", "b", "d/c", "d/e")}
        assert poll(lambda: all(entry_exists(state, i) for i in ids.values()))
        backing = {name: v.backing_path(name) for name in ids}
    finally:
        stop(v)
    backing["b"].unlink()
    backing["d/c"].unlink()
    code, found = fsck_all(v.backing)
    assert code == 0 and [(f["kind"], f["removable"], f["removed"]) for f in found] == \
        [("stale-versions", True, False)] and found[0]["detail"].startswith("2 entries"), found
    assert all(entry_exists(state, i) for i in ids.values())  # a check alone removes nothing

    raw = bytearray(backing["a"].read_bytes())  # a problem: nothing is provably stale
    raw[-10] ^= 1
    backing["a"].write_bytes(bytes(raw))
    code, found = fsck_all(v.backing, "--repair")
    assert code == 3 and "stale-versions" not in [f["kind"] for f in found], found
    assert entry_exists(state, ids["b"]) and entry_exists(state, ids["d/c"])
    raw[-10] ^= 1
    backing["a"].write_bytes(bytes(raw))

    code, found = fsck_all(v.backing, "--repair")
    assert code == 0 and [(f["kind"], f["removed"]) for f in found] == \
        [("stale-versions", True)], found
    assert not entry_exists(state, ids["b"]) and not entry_exists(state, ids["d/c"])
    assert entry_exists(state, ids["a"]) and entry_exists(state, ids["d/e"])
    assert fsck_all(v.backing) == (0, [])
    v.mount()
    try:
        assert get(v.mnt / "a") == b"data" * 2000 and get(v.mnt / "d" / "e") == b"data" * 2000
    finally:
        stop(v)


# --- upgrading to format 3 ---------------------------------------------------------------------

def older_volume(tmp_path, name, placement, format_version, header_size=None):
    """A volume as an older `init` made it: its format version, and (header placement) its
    slots as that version sized them (512 bytes with the local keyring for 1 and 2), sealed
    again and pinned with `envelopefsctl pin`, before any file is written."""
    v = make(tmp_path, name, placement, names="encrypted")
    conf = v.backing / "envelopefs.conf"
    text = conf.read_text().replace("format_version = 3", f"format_version = {format_version}")
    if format_version == 1:
        text = re.sub(r"^mac = .*\n", "", text, flags=re.M)
    if header_size:
        text = re.sub(r"^header_size = \d+$", f"header_size = {header_size}", text, flags=re.M)
    conf.write_text(text)
    subprocess.run([str(CTL), "pin", str(v.backing)], check=True, capture_output=True)
    return v


def upgrade(v):
    return subprocess.run([str(CTL), "fsck", "--upgrade", str(v.backing)], capture_output=True,
                          text=True, timeout=300)


def conf_version(v):
    return int(re.search(r"^format_version = (\d+)$", (v.backing / "envelopefs.conf").read_text(),
                         re.M).group(1))


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_upgrade_format2_to_3(tmp_path, state, placement):
    """A format-2 volume whose slots have room (xattr placement, or headers sized for format 3)
    becomes format 3: everything reads, new files get versions and their put-back copies are
    refused (by the mount and by fsck), old files get a version at their first raise."""
    v = older_volume(tmp_path, "v", placement, 2)
    old = {"d/a": os.urandom(3 * BLOCK + 1), "b": b"an old file"}
    v.mount()
    try:
        os.mkdir(v.mnt / "d")
        for name, data in old.items():
            write_fsync(v.mnt / name, data, "wb")
    finally:
        stop(v)
    assert record_version(v, "b") is None  # format 2: no version item
    assert not (v.backing / "envelopefs.epoch").exists()
    cp = upgrade(v)
    assert cp.returncode == 0 and "upgraded" in cp.stdout, cp
    assert conf_version(v) == 3 and (v.backing / "envelopefs.epoch").stat().st_size == 45
    v.mount()
    try:
        for name, data in old.items():
            assert get(v.mnt / name) == data, name
        write_fsync(v.mnt / "new", b"first", "wb")
        assert record_version(v, "new") == 1
        saved = OldCopy(v, "new", tmp_path / "saved")
        write_fsync(v.mnt / "new", b"FIRST", "r+b")
        assert record_version(v, "new") == 2
        write_fsync(v.mnt / "b", b"+")  # made durable by this daemon first,
        write_fsync(v.mnt / "b", b"+")  # then raised from none to 1
        assert record_version(v, "b") == 1
    finally:
        stop(v)
    saved.put_back()
    code, found = fsck_all(v.backing)
    assert code == 3 and rolled_back(found) == ["/new"], found
    v.mount()
    try:
        assert open_errno(v.mnt / "new") == 5
        assert get(v.mnt / "b") == b"an old file++" and get(v.mnt / "d" / "a") == old["d/a"]
    finally:
        stop(v)


def test_upgrade_without_room_stays_format2(tmp_path, state):
    """Header slots sized for format 2 have no room for format 3's items, and a slot's size is
    the whole volume's: such a volume is not made format 3 (it says why), a format-1 one is
    raised to 2, and both keep mounting and reading."""
    for version in (1, 2):
        v = older_volume(tmp_path, f"v{version}", "header", version, header_size=512)
        v.mount()
        try:
            write_fsync(v.mnt / "f", b"data" * 3000, "wb")
        finally:
            stop(v)
        if version == 1:
            cp = upgrade(v)
            assert cp.returncode == 0 and conf_version(v) == 2, cp
        cp = upgrade(v)
        assert cp.returncode == 1 and "stays format version 2" in cp.stderr, cp
        assert "header slots are 256 bytes" in cp.stderr and conf_version(v) == 2, cp
        assert not (v.backing / "envelopefs.epoch").exists()
        v.mount()
        try:
            assert get(v.mnt / "f") == b"data" * 3000
            put(v.mnt / "g", b"new")
        finally:
            stop(v)
        assert record_version(v, "g") is None
        assert fsck_all(v.backing) == (0, [])


def test_plain_names_snapshot_found_per_file(tmp_path, state):
    """A plain-names volume has no epoch: put back from an older copy it mounts, but each file
    the copy holds older than this host saw is refused at open and found by fsck."""
    v = make(tmp_path, "v", names="plain")
    v.mount()
    try:
        for name in ("changed", "same"):
            write_fsync(v.mnt / name, b"old", "wb")
    finally:
        stop(v)
    snapshot(v, tmp_path / "copy")
    v.mount()
    try:
        with open(v.mnt / "changed", "r+b") as f:  # made durable first, then raised
            os.fsync(f.fileno())
            f.write(b"new")
            f.flush()
            os.fsync(f.fileno())
        write_fsync(v.mnt / "later", b"made after the copy", "wb")
    finally:
        stop(v)
    restore(v, tmp_path / "copy")
    assert not (v.backing / "envelopefs.epoch").exists()
    code, found = fsck_all(v.backing)
    assert code == 3 and rolled_back(found) == ["/changed"], found
    v.mount()
    try:
        assert open_errno(v.mnt / "changed") == 5
        assert get(v.mnt / "same") == b"old" and not (v.mnt / "later").exists()
    finally:
        stop(v)
