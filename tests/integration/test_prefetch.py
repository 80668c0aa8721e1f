# SPDX-License-Identifier: MIT
"""Prefetch (fs/prefetch.c) against the Transit test server: reading a directory (READDIR or READDIRPLUS) or
looking up a file in it unwraps the directory's DEKs ahead in batches, as a window bounded by the cache,
checked as a cold open checks them; every file still costs one unwrap in all (an open waits for the batch
its DEK is in), a bad record or block still fails its read, and a KMS outage during a listing fails opens
within the deadline and heals without a remount."""
import ctypes
import errno
import os
import signal
import struct
import subprocess
import threading
import time

import pytest

from mounts import get, get_when_back, put
from test_vault import VaultVolume, server  # noqa: F401 (server is a fixture)

N = 40


def make_files(vol, n=N, sub="d"):
    """@n files of distinct content in @sub, then an unmount: their DEKs are then cached nowhere."""
    vol.mount()
    try:
        os.mkdir(vol.mnt / sub)
        expected = {f"f{i}": os.urandom(500 + 97 * i) for i in range(n)}
        for name, data in expected.items():
            put(vol.mnt / sub / name, data)
    finally:
        vol.unmount()
    return expected


def mount_with(vol, tmp_path, **settings):
    conf = tmp_path / "daemon.ini"
    conf.write_text("[daemon]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    vol.mount(f"config={conf}")


def wait_prefetch(vol, done, timeout=15):
    """Wait until the workers have dealt with @done files (unwrapped + failed); the status."""
    deadline = time.monotonic() + timeout
    while True:
        st = vol.status()
        pf = st["prefetch"]
        if pf["unwrapped"] + pf["failed"] >= done:
            return st
        assert time.monotonic() < deadline, str(pf)
        time.sleep(0.05)


def decrypts(server):
    return server.stats().get("decrypt_items", 0)


def test_listing_prefetches_each_dek_once(tmp_path, server):
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_files(vol)
    before = decrypts(server)
    requests_before = server.stats().get("decrypt", 0)
    vol.mount()
    try:
        assert vol.status()["prefetch"]["enabled"] is True  # auto: on for a remote KMS
        assert sorted(os.listdir(vol.mnt / "d")) == sorted(expected)
        st = wait_prefetch(vol, N)
        assert st["prefetch"]["unwrapped"] == N and st["prefetch"]["failed"] == 0
        # Batches: far fewer Transit requests than files.
        assert server.stats()["decrypt"] - requests_before <= 4
        assert decrypts(server) - before == N
        for name, data in expected.items():
            assert get(vol.mnt / "d" / name) == data
        st = vol.status()
        # Prefetch and opens together: one unwrap per file, all of them prefetched.
        assert st["kms"]["unwrap"] == N
        assert decrypts(server) - before == N
        assert st["errors"]["integrity"] == 0 and st["errors"]["key"] == 0
        # A second listing finds every DEK cached and asks the KMS for nothing.
        os.listdir(vol.mnt / "d")
        vol.remount()
    finally:
        vol.unmount()
    # Off by setting: a listing unwraps nothing ahead; each open then unwraps its own.
    mount_with(vol, tmp_path, prefetch="false")
    try:
        before = decrypts(server)
        assert vol.status()["prefetch"]["enabled"] is False
        os.listdir(vol.mnt / "d")
        time.sleep(0.3)
        assert decrypts(server) == before
        assert get(vol.mnt / "d" / "f3") == expected["f3"]
        assert decrypts(server) == before + 1
    finally:
        vol.unmount()


def flip(path, offset):
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


KEY_XATTR = "user.envelopefs.key"  # the record, with xattr placement (docs/FORMAT.md)


def test_tampered_records_and_blocks_still_fail(tmp_path, server):
    vol = VaultVolume(tmp_path / "v", server, placement="xattr")
    expected = make_files(vol, 12)
    d = vol.backing / "d"
    rec = bytearray(os.getxattr(d / "f1", KEY_XATTR))
    rec[-3] ^= 0x01  # the record MAC: the DEK unwraps, the record fails to authenticate
    os.setxattr(d / "f1", KEY_XATTR, bytes(rec))
    rec = bytearray(os.getxattr(d / "f2", KEY_XATTR))
    at = rec.index(b"vault:v1:") + 20  # inside the wrapped DEK: another base64 digit there
    rec[at] = ord("B") if rec[at] == ord("A") else ord("A")
    os.setxattr(d / "f2", KEY_XATTR, bytes(rec))  # Vault fails this item of the batch alone
    flip(d / "f3", (d / "f3").stat().st_size - 5)  # a content block: the record is fine, the read is not
    vol.mount()
    try:
        os.listdir(vol.mnt / "d")
        st = wait_prefetch(vol, 12)
        assert st["prefetch"]["unwrapped"] == 10 and st["prefetch"]["failed"] == 2
        assert st["errors"]["integrity"] == 0  # prefetch reports nothing: the open does
        for bad in ("f1", "f2", "f3"):
            with pytest.raises(OSError) as e:
                get(vol.mnt / "d" / bad)
            assert e.value.errno == errno.EIO, bad
        for name, data in expected.items():
            if name not in ("f1", "f2", "f3"):
                assert get(vol.mnt / "d" / name) == data
        st = vol.status()
        assert st["errors"]["integrity"] >= 2  # f1's record, f3's block
        assert st["errors"]["key"] >= 1        # f2's blob
    finally:
        vol.unmount()


def test_kms_hung_during_listing_then_back(tmp_path, server):
    """Vault stops answering (SIGSTOP: connections hang, the worst case) while a directory is listed:
    each open fails with EIO within the deadline, even one that waited for the prefetch of its file,
    and everything reads again once Vault answers, without a remount."""
    vol = VaultVolume(tmp_path / "v", server, deadline_ms=2000)
    expected = make_files(vol, 20)
    vol.mount()
    try:
        server.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            names = sorted(os.listdir(vol.mnt / "d"))
            assert time.monotonic() - t0 < 1.5  # a listing never waits for the KMS
            for name in names[:3]:
                t0 = time.monotonic()
                with pytest.raises(OSError) as e:
                    get(vol.mnt / "d" / name)
                assert e.value.errno == errno.EIO
                # Within the deadline, with slack for a loaded machine and a sanitized daemon
                # (asking the KMS twice, as a read retried by the kernel did, takes 4 s).
                assert time.monotonic() - t0 < 2.0 + 1.5, name
            assert vol.status()["prefetch"]["failed"] >= 1
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert get_when_back(vol.mnt / "d" / names[0]) == expected[names[0]]
        # Listed again: the rest is prefetched now, and every file reads back.
        os.listdir(vol.mnt / "d")
        for name, data in expected.items():
            assert get(vol.mnt / "d" / name) == data
        assert vol.status()["errors"]["integrity"] == 0
    finally:
        vol.unmount()


def requests(server):
    return server.stats().get("decrypt", 0)


LIBC = ctypes.CDLL(None, use_errno=True)


def getdents(fd, size=1 << 16):
    """[(name, d_off)] of one getdents64 call (a buffer of @size bytes) on the directory @fd, from its
    current position."""
    buf = ctypes.create_string_buffer(size)
    n = LIBC.getdents64(fd, buf, len(buf))
    assert n >= 0, os.strerror(ctypes.get_errno())
    out, pos = [], 0
    while pos < n:
        _ino, off, reclen, _type = struct.unpack_from("<QqHB", buf, pos)
        out.append((buf.raw[pos + 19:pos + reclen].split(b"\0", 1)[0].decode(), off))
        pos += reclen
    return out


def test_readdir_alone_reads_the_directory_ahead(tmp_path, server):
    """A plain READDIR, without READDIRPLUS or any lookup, unwraps the whole directory ahead.  The kernel
    asks READDIRPLUS for a listing from offset 0, so the listing here starts in the middle (lseek to an
    entry's offset): the kernel then sends READDIR, and the files before that offset, which this listing
    never shows, are prefetched too (the daemon reads the directory through its own stream)."""
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_files(vol)
    entries = [e for e in getdents_all(vol.backing / "d") if e[0] not in (".", "..")]
    middle = entries[len(entries) // 2 - 1][1]  # the offset after it: a listing from there on
    before, requests_before = decrypts(server), requests(server)
    vol.mount()
    try:
        fd = os.open(vol.mnt / "d", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.lseek(fd, middle, os.SEEK_SET)
            shown = [name for name, _ in getdents(fd)]
        finally:
            os.close(fd)
        assert 0 < len(shown) < N  # a partial listing: the rest of the directory only
        st = wait_prefetch(vol, N)
        assert st["prefetch"]["unwrapped"] == N and st["prefetch"]["failed"] == 0
        assert requests(server) - requests_before <= 4 and decrypts(server) - before == N
        for name, data in expected.items():
            assert get(vol.mnt / "d" / name) == data
        assert vol.status()["kms"]["unwrap"] == N
    finally:
        vol.unmount()


def getdents_all(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        out = []
        while True:
            got = getdents(fd)
            if not got:
                return out
            out += got
    finally:
        os.close(fd)


def make_tree(vol, sizes=(400, 20)):
    """Directories t/d0, t/d1, ... of @sizes files.  A listing of the first is longer than the kernel's
    first READDIRPLUS answer (about 200 entries): the rest comes as plain READDIR, then `find` and `cp`
    look the files up one by one."""
    vol.mount()
    try:
        expected = {}
        for d, n in enumerate(sizes):
            os.makedirs(vol.mnt / "t" / f"d{d}")
            for i in range(n):
                expected[f"t/d{d}/f{i}"] = os.urandom(100 + 7 * i)
                put(vol.mnt / f"t/d{d}/f{i}", expected[f"t/d{d}/f{i}"])
    finally:
        vol.unmount()
    return expected


def test_find_cat_and_cp_read_ahead(tmp_path, server):
    """The ways people read whole trees: `find -type f | xargs cat` and `cp -r`, each after a remount
    (cold cache): every DEK unwrapped once, in far fewer Transit requests than files."""
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_tree(vol)
    n = len(expected)
    for tool in ("find", "cp"):
        before, requests_before = decrypts(server), requests(server)
        vol.mount()
        try:
            if tool == "find":
                out = subprocess.run(f"find {vol.mnt}/t -type f -print0 | xargs -0 cat | wc -c",
                                     shell=True, check=True, capture_output=True, text=True)
                assert int(out.stdout) == sum(len(v) for v in expected.values()), out.stderr
            else:
                copy = tmp_path / "copy"
                subprocess.run(["cp", "-r", vol.mnt / "t", copy], check=True)
                for rel, data in expected.items():
                    assert (copy / rel[2:]).read_bytes() == data
            st = vol.status()
        finally:
            vol.unmount()
        assert st["kms"]["unwrap"] == n and decrypts(server) - before == n, tool
        assert requests(server) - requests_before <= n // 5, (tool, st["prefetch"])
        assert st["errors"]["key"] == 0 and st["errors"]["integrity"] == 0


def test_subdirectories_found_ahead_in_one_request_each(tmp_path, server):
    """Listing the top of a tree reads its subdirectories ahead; nobody reads them yet, so each one's
    files go in one Transit request (a batch of up to 64), not in the 8, 16, 32... that a directory a
    reader asked for starts with so that its first file comes back soon."""
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_tree(vol, (30, 30, 30))
    before, requests_before = decrypts(server), requests(server)
    vol.mount()
    try:
        assert sorted(os.listdir(vol.mnt / "t")) == ["d0", "d1", "d2"]
        st = wait_prefetch(vol, len(expected))
        assert st["prefetch"]["unwrapped"] == len(expected) and st["prefetch"]["failed"] == 0
        assert st["prefetch"]["batches"] == 3, st["prefetch"]
        assert requests(server) - requests_before == 3 and decrypts(server) - before == len(expected)
        for rel, data in expected.items():
            assert get(vol.mnt / rel) == data
        assert vol.status()["kms"]["unwrap"] == len(expected)
    finally:
        vol.unmount()


BIG = 10050  # past PREFETCH_INODE_ORDER_MIN (10,000) entries


def own_unwraps(vol):
    """The unwraps opens made themselves so far.  A batch counts in the KMS's counter before it counts
    in prefetch's: the workers are let finish first (no batch for 0.3 s)."""
    st = vol.status()
    while True:
        time.sleep(0.3)
        prev, st = st, vol.status()
        if st["prefetch"]["batches"] == prev["prefetch"]["batches"]:
            return st["kms"]["unwrap"] - st["prefetch"]["unwrapped"] - st["prefetch"]["failed"]


def test_big_directory_read_ahead_in_inode_order(tmp_path, server):
    """Past 10,000 entries, find (gnulib fts) and cp -r open a directory's files by inode number: the
    window (64 files here: cache_entries = 256) holds the lowest inode numbers first, so reading the
    files in that order finds them unwrapped (in directory order, nearly none of them would be).  A
    reader going in directory order (tar) is followed after its first few opens.  The
    directory is listed before the remount: the read ahead starts at the first lookup, and nothing
    slow comes between it and the reads (an unopened DEK leaves the window after 10 s)."""
    vol = VaultVolume(tmp_path / "v", server)
    vol.mount()
    try:
        os.mkdir(vol.mnt / "big")
        subprocess.run(["sh", "-c", f"cd {vol.mnt}/big && for i in $(seq {BIG}); do echo $i > $i; done"],
                       check=True)
        with os.scandir(vol.mnt / "big") as it:
            in_dir_order = [(e.inode(), e.name) for e in it]
    finally:
        vol.unmount()
    by_inode = sorted(in_dir_order)
    assert len(by_inode) == BIG
    mount_with(vol, tmp_path, cache_entries=256)
    try:
        os.stat(vol.mnt / "big" / by_inode[0][1])  # a lookup: the directory is read ahead
        wait_prefetch(vol, 64, timeout=30)
        time.sleep(0.3)
        st = vol.status()
        assert st["prefetch"]["queued"] == 64, st["prefetch"]
        own_before = own_unwraps(vol)
        for _ino, name in by_inode[:64]:
            assert get(vol.mnt / "big" / name) == f"{name}\n".encode()
        # Every one of the first 64 was unwrapped ahead (or in a batch its open waited for).
        assert own_unwraps(vol) == own_before, vol.status()["prefetch"]
    finally:
        vol.unmount()
    # tar reads in directory order: after its first opens the read ahead follows it, from where it is.
    mount_with(vol, tmp_path, cache_entries=256)
    try:
        os.stat(vol.mnt / "big" / in_dir_order[0][1])
        wait_prefetch(vol, 64, timeout=30)  # the first window, in inode order
        for _ino, name in in_dir_order[:8]:
            assert get(vol.mnt / "big" / name) == f"{name}\n".encode()
        # The first window left; the next one filled from where the reader is (64 more unwrapped, in
        # all, some of them opened among the first 8): it holds the files after the 8th, 48 of them
        # at least.
        wait_prefetch(vol, 64 + 64, timeout=30)
        own_before = own_unwraps(vol)
        for _ino, name in in_dir_order[8:56]:
            assert get(vol.mnt / "big" / name) == f"{name}\n".encode()
        assert own_unwraps(vol) == own_before, vol.status()["prefetch"]
    finally:
        vol.unmount()


def test_lookup_then_read_without_listing(tmp_path, server):
    """Files opened by name, one after the other, as cp -r, rsync and tar look each file up just before
    reading it, with no listing at all: the first lookup reads the directory ahead.  The reader waits
    for the workers after its first file: whether it could outrun them is a matter of CPU (on a loaded
    machine it did, and sent its own requests), not of what the first lookup starts."""
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_files(vol)
    before, requests_before = decrypts(server), requests(server)
    vol.mount()
    try:
        names = sorted(expected)
        assert get(vol.mnt / "d" / names[0]) == expected[names[0]]
        wait_prefetch(vol, N // 2)
        for name in names[1:]:
            assert get(vol.mnt / "d" / name) == expected[name]
        st = vol.status()
        assert st["prefetch"]["unwrapped"] >= N // 2, st["prefetch"]
        assert st["kms"]["unwrap"] == N and decrypts(server) - before == N
        # One file at a time would be N requests.
        assert requests(server) - requests_before <= N // 4
    finally:
        vol.unmount()


def test_window_is_bounded(tmp_path, server):
    """The window is a quarter of the DEK cache: listing a directory of 100 files with cache_entries = 80
    unwraps 20 ahead and no more, not even once they leave the window unused (PREFETCH_READY_TTL_MS,
    10 s: the directory is idle by then); reading the files in listing order moves the window along,
    and every file is still unwrapped once."""
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_files(vol, 100)
    mount_with(vol, tmp_path, cache_entries=80)
    try:
        names = os.listdir(vol.mnt / "d")
        st = wait_prefetch(vol, 20)
        time.sleep(0.5)
        assert vol.status()["prefetch"]["queued"] == 20
        time.sleep(11)
        assert vol.status()["prefetch"]["queued"] == 20
        before = decrypts(server)
        for name in names:
            assert get(vol.mnt / "d" / name) == expected[name]
        st = vol.status()
        assert decrypts(server) - before == 100 - 20  # the first 20 were cached: once each in all
        assert st["prefetch"]["unwrapped"] >= 60, st["prefetch"]  # most of the rest ahead
        assert st["prefetch"]["failed"] == 0
    finally:
        vol.unmount()


def test_open_waits_for_the_batch_in_flight(tmp_path, server):
    """With the KMS slow (3 s a request), files whose DEKs are in a batch on its way are read at
    once, in parallel: each open waits for its batch and none asks the KMS itself.  (The status is
    not read meanwhile: it asks the KMS for its key version, and would wait the 3 s too.)"""
    vol = VaultVolume(tmp_path / "v", server)
    expected = make_files(vol, 20)
    vol.mount()
    try:
        before = decrypts(server)
        server.set_latency(3000)
        names = os.listdir(vol.mnt / "d")
        # The workers take every file into a batch (a few ms; up to a second on a loaded machine
        # with a sanitized daemon), then wait for Transit; the readers start well before it answers.
        time.sleep(1.0)
        got = {}

        def read(name):
            got[name] = get(vol.mnt / "d" / name)

        t0 = time.monotonic()
        threads = [threading.Thread(target=read, args=(name,)) for name in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        waited_s = time.monotonic() - t0
        assert got == expected
        server.set_latency(0)
        st = vol.status()
        assert decrypts(server) - before == 20  # calls == files, not more
        assert st["kms"]["unwrap"] == 20 and st["prefetch"]["waited"] >= 1, st["prefetch"]
        assert st["prefetch"]["unwrapped"] == 20 and st["prefetch"]["batches"] <= 3
        assert waited_s < 3.0 + 1.0  # the batch's round trip, not one per file
    finally:
        server.set_latency(0)
        vol.unmount()
