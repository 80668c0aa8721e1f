"""Rollback (issue 15.3): a file or a whole volume put back by the storage to an older version is
refused on a host that saw the newer one, and a crash never looks like one (docs/THREAT-MODEL.md,
"Rollback").  Every test runs with its own host state directory ($ENVELOPEFS_STATE_DIR)."""
import os
import shutil
import subprocess

import pytest

from mounts import Volume, get, put

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


def record_bytes(v, name):
    """The current key record of @name's backing file, as stored."""
    path = v.backing_path(name)
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
    fsync), once per open for writing or fsync, never per block."""
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
            for _ in range(30):  # due after the fsync: one bump for all these blocks
                f.write(os.urandom(4096))
                f.flush()
            os.fsync(f.fileno())
            assert record_version(v, "f") == 2
            f.write(b"y")
            f.flush()
            os.fsync(f.fileno())
            assert record_version(v, "f") == 3
            os.fsync(f.fileno())  # nothing written: nothing raised
            assert record_version(v, "f") == 3
        with open(v.mnt / "f", "rb") as f:  # a read-only open raises nothing
            f.read()
        assert record_version(v, "f") == 3
    finally:
        v.unmount()


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
        v.unmount()
    shutil.copy2(saved, v.backing_path("f"))
    if placement == "xattr":
        os.setxattr(v.backing_path("f"), XATTR, saved_rec)
    v.mount()
    try:
        assert open_errno(v.mnt / "f") == 5
    finally:
        v.unmount()
    v.mount("accept_rollback")
    try:
        assert get(v.mnt / "f") == b"old content"
    finally:
        v.unmount()
    v.mount()
    try:
        assert get(v.mnt / "f") == b"old content"  # accepted for good
    finally:
        v.unmount()
