# SPDX-License-Identifier: MIT
"""Prefetch on listing (fs/prefetch.c) against the Transit test server: listing a directory unwraps its
files' DEKs ahead in batches, checked as a cold open checks them; every file still costs one unwrap in all,
a bad record or block still fails its read, and a KMS outage during a listing fails opens within the
deadline and heals without a remount."""
import errno
import os
import signal
import time

import pytest

from mounts import get, put
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
    vol = VaultVolume(tmp_path / "v", server, deadline_ms=1500)
    expected = make_files(vol, 20)
    vol.mount()
    try:
        server.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            names = sorted(os.listdir(vol.mnt / "d"))
            assert time.monotonic() - t0 < 1.0  # a listing never waits for the KMS
            for name in names[:3]:
                t0 = time.monotonic()
                with pytest.raises(OSError) as e:
                    get(vol.mnt / "d" / name)
                assert e.value.errno == errno.EIO
                # Within the deadline, with slack for a loaded machine (asking the KMS twice, as a
                # read retried by the kernel did, took 2.7 s).
                assert time.monotonic() - t0 < 1.5 + 0.7, name
            assert vol.status()["prefetch"]["failed"] >= 1
        finally:
            server.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 20  # the breaker probes again after its cool-down
        while True:
            try:
                assert get(vol.mnt / "d" / names[0]) == expected[names[0]]
                break
            except OSError:
                assert time.monotonic() < deadline, "no recovery after the server came back"
                time.sleep(0.5)
        # Listed again: the rest is prefetched now, and every file reads back.
        os.listdir(vol.mnt / "d")
        for name, data in expected.items():
            assert get(vol.mnt / "d" / name) == data
        assert vol.status()["errors"]["integrity"] == 0
    finally:
        vol.unmount()
