"""Rollback (issue 15.3): a file or a whole volume put back by the storage to an older version is
refused on a host that saw the newer one, and a crash never looks like one (docs/THREAT-MODEL.md,
"Rollback").  Every test runs with its own host state directory ($ENVELOPEFS_STATE_DIR)."""
import json
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
        saved = tmp_path / "saved"
        shutil.copy2(v.backing_path("f"), saved)
        if placement == "xattr":
            saved_rec = os.getxattr(v.backing_path("f"), XATTR)
        with open(v.mnt / "f", "r+b") as f:
            f.write(b"new")
            f.flush()
            os.fsync(f.fileno())
        assert record_version(v, "f") == 2
    finally:
        stop(v)
    shutil.copy2(saved, v.backing_path("f"))
    if placement == "xattr":
        os.setxattr(v.backing_path("f"), XATTR, saved_rec)
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
    put(v.mnt / "f", b"new")
    stop(v)
    restore(v, tmp_path / "copy")
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
        saved = tmp_path / "saved"
        shutil.copy2(b.backing_path("f"), saved)
        if placement == "xattr":
            saved_rec = os.getxattr(b.backing_path("f"), XATTR)
        for _ in range(2):  # two more durable versions: A learns one above the copy's
            write_fsync(b.mnt / "f", b"more")
        assert get(a.mnt / "f").endswith(b"moremore")
        shutil.copyfile(saved, b.backing_path("f"))
        if placement == "xattr":
            os.setxattr(b.backing_path("f"), XATTR, saved_rec)
        assert open_errno(a.mnt / "f") == 5
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
        saved = tmp_path / "saved"
        shutil.copy2(v.backing_path("f"), saved)

        def append():
            with open(v.mnt / "f", "ab") as f:
                f.write(b"+")
            return record_version(v, "f") == 2
        assert poll(append)  # once a syncfs made the first record durable
        assert poll(lambda: learnt(state, v, "f") == 2)  # once another made version 2 durable
        shutil.copyfile(saved, v.backing_path("f"))
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
