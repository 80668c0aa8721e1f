# SPDX-License-Identifier: MIT
"""KMS faults on real mounts of the vault provider (the Transit test server, tests/kmsd/vault_transit.py):
throttling is not an outage, an operation keeps one deadline across its calls; and secrets given in the
environment do not stay there.  The aws provider's counterparts live in test_kms_aws.py, beside its moto
peer."""
import concurrent.futures
import ctypes
import errno
import json
import os
import re
import subprocess
import time

import pytest

from kmsfault import start_daemon, timed_workload
from mounts import CTL, STATUS_XATTR, get, put, unmount
from test_vault import VaultVolume, server  # noqa: F401 (server is a fixture)
from vaultd import VaultServer

LIBC = ctypes.CDLL(None, use_errno=True)

DEADLINE = 1.5  # deadline_ms of the volumes here, in seconds


def test_throttling_is_not_an_outage(tmp_path, server):
    """Vault's rate-limit quota (HTTP 429) under a workload of creates and cold opens: every
    operation ends within the deadline, succeeding or failing with EIO; the breaker stays closed,
    the log never calls Vault unreachable, and the status counts the throttled answers."""
    vol = VaultVolume(tmp_path / "v", server, deadline_ms=int(DEADLINE * 1000))
    vol.mount()
    cold = {f"c{i}": os.urandom(3000 + i) for i in range(8)}
    for name, data in cold.items():
        put(vol.mnt / name, data)
    vol.unmount()
    log = tmp_path / "daemon.log"
    # Prefetch off: cold opens, each its own unwrap (the first lookup would read all eight ahead).
    conf = tmp_path / "daemon.ini"
    conf.write_text("[daemon]\nprefetch = false\n")
    daemon = start_daemon(vol.backing, vol.mnt, log, f"config={conf}")
    names = sorted(cold)
    created = {f"new{i}": os.urandom(2000) for i in range(12)}

    def cold_open(name):
        def op():
            assert get(vol.mnt / name) == cold[name]
        return op

    def create(name):
        def op():
            put(vol.mnt / name, created[name])
            assert get(vol.mnt / name) == created[name]
        return op

    try:
        faults = server.stats().get("faults", 0)
        # Half of all requests throttled: retried with backoff, most operations get through.
        server.fault(429, seconds=120, share=0.5)
        results = timed_workload([cold_open(n) for n in names[:4]] + [create(n) for n in created])
        # Every request throttled: cold opens fail with EIO by the deadline, never hang.
        server.fault(429, seconds=120)
        failed = timed_workload([cold_open(n) for n in names[4:]])
        server.fault(0)
        assert server.stats()["faults"] - faults > 10
        # Each KMS call ends by DEADLINE; a failed read can ask twice (the open, then the
        # kernel's retry of the read), so a file operation ends by twice that.
        assert all(t < 2 * DEADLINE + 1.0 for _, t in results + failed), results + failed
        assert not any(ok for ok, _ in failed)
        assert sum(ok for ok, _ in results) >= len(results) // 2, results
        svc = vol.status()["kms"]["service"]
        assert svc["breaker"] == "closed" and svc["breaker_opens"] == 0, svc
        assert svc["throttled"] > 0
        human = subprocess.run([str(CTL), "status", str(vol.mnt)], capture_output=True, text=True)
        assert human.returncode == 0 and re.search(r"throttled [1-9]\d*,", human.stdout), human.stdout
        # Throttling over: everything reads back, no remount (after the 1 s in which a file
        # whose read found the KMS unavailable fails at once, fs/filekey.c).
        time.sleep(1.2)
        for name in names:
            assert get(vol.mnt / name) == cold[name]
        for name, data in created.items():
            if (vol.mnt / name).stat().st_size:
                assert get(vol.mnt / name) == data
    finally:
        server.fault(0)
        vol.unmount()
        daemon.wait(timeout=20)
    assert "unreachable" not in log.read_text(), log.read_text()


def test_token_reload_keeps_one_deadline(tmp_path):
    """A call refused with 403 is sent again once with a renewed token file: both sends share
    the operation's deadline.  With 600 ms per request and a 1 s deadline, the second send is cut
    off at the deadline (the unwrap fails, and the daemon says so) instead of ending 1.2 s after
    the start."""
    srv = VaultServer(tmp_path / "vault", latency_ms=600)
    log = tmp_path / "daemon.log"
    try:
        srv.create_key("vol", derived=True)
        vol = VaultVolume(tmp_path / "v", srv, deadline_ms=1000)
        vol.mount()
        put(vol.mnt / "cold", b"unwrapped after the token changed")
        vol.unmount()
        # No pool of keys made ahead: its refills would renew the token before the test does.
        cfg = tmp_path / "daemon.ini"
        cfg.write_text("[daemon]\ndek_pool = 0\n")
        daemon = start_daemon(vol.backing, vol.mnt, log, f"config={cfg}")
        try:
            srv.set_token("s.renewed")
            fresh = srv.token_file.with_suffix(".new")
            fresh.write_text("s.renewed\n")
            fresh.chmod(0o600)
            fresh.rename(srv.token_file)
            t0 = time.monotonic()
            try:
                get(vol.mnt / "cold")
            except OSError as e:
                assert e.errno == errno.EIO
            took = time.monotonic() - t0
            # The first unwrap (403, token reloaded, sent again) is cut off at 1 s; the kernel
            # may ask again, which then has the renewed token (0.6 s).
            assert took < 1.0 + 0.6 + 0.5, took
            assert "cannot unwrap the data key: KMS unavailable" in log.read_text(), log.read_text()
            # A read that found the KMS unavailable makes the file's reads fail at once for
            # UNAVAILABLE_REUSE_MS (1 s, fs/filekey.c) instead of asking again; after it, the
            # renewed token unwraps.
            time.sleep(1.2)
            assert get(vol.mnt / "cold") == b"unwrapped after the token changed"
        finally:
            vol.unmount()
            daemon.wait(timeout=20)
    finally:
        srv.stop()


def test_version_read_keeps_one_deadline(tmp_path):
    """Callers asking for the key's version while another read is in flight wait for it, then
    read again themselves: waiting and reading share one deadline.  Two status reads at once
    (each asks for the version) with 1 s per request and a 1.2 s deadline: the second one's
    wait plus its own read would take 2 s; it ends at the deadline instead."""
    srv = VaultServer(tmp_path / "vault", latency_ms=1000)
    try:
        srv.create_key("vol", derived=True)
        vol = VaultVolume(tmp_path / "v", srv, deadline_ms=1200)
        cfg = tmp_path / "daemon.ini"
        cfg.write_text("[daemon]\ndek_pool = 0\n")  # no refills: only the two reads ask
        vol.mount(f"config={cfg}")
        try:
            def timed_status():
                # One getxattr syscall, timed alone (Python's os.getxattr may ask twice, for the
                # size first; a tool's process would add its own start and exit to the time).
                buf = ctypes.create_string_buffer(1 << 20)
                t0 = time.monotonic()
                n = LIBC.getxattr(bytes(vol.mnt), STATUS_XATTR.encode(), buf, len(buf))
                took = time.monotonic() - t0
                assert n > 0, os.strerror(ctypes.get_errno())
                return json.loads(buf.raw[:n])["kms"]["current_version"], took
            with concurrent.futures.ThreadPoolExecutor(2) as pool:
                first = pool.submit(timed_status)
                time.sleep(0.1)
                second = pool.submit(timed_status)
                answers = [first.result(), second.result()]
            print("concurrent version reads (version, s):", answers)
            # The one that came first read the version; the other waited for it and had too
            # little time left for its own read (it would have taken 2 s, answering 1).
            assert sorted(version for version, _ in answers) == [0, 1], answers
            assert all(took < 1.2 + 0.8 for _, took in answers), answers
        finally:
            vol.unmount()
    finally:
        srv.stop()


def test_vault_token_taken_out_of_the_environment(tmp_path, server):
    """A daemon given $VAULT_TOKEN (no token file) keeps it in locked memory only: its
    /proc/PID/environ no longer shows it, and it serves files through remounts."""
    backing, mnt = tmp_path / "backing", tmp_path / "mnt"
    backing.mkdir()
    mnt.mkdir()
    env = {**os.environ, "VAULT_TOKEN": server.token}
    cp = subprocess.run([str(CTL), "init", "--kms", "vault", "--kms-setting", f"address={server.url}",
                         "--kms-setting", "key=vol", str(backing)], env=env, capture_output=True,
                        text=True)
    assert cp.returncode == 0, cp.stderr
    assert server.token not in (backing / "envelopefs.conf").read_text()
    log = tmp_path / "daemon.log"
    for round_ in range(2):
        daemon = start_daemon(backing, mnt, log, env=env)
        try:
            environ = open(f"/proc/{daemon.pid}/environ", "rb").read()
            assert server.token.encode() not in environ
            assert b"VAULT_TOKEN=" in environ  # the name stays in the block, the value is gone
            if round_ == 0:
                put(mnt / "f", b"token from the environment")
            assert get(mnt / "f") == b"token from the environment"
        finally:
            unmount(mnt)
            daemon.wait(timeout=20)


def test_passphrase_read_twice_in_one_process(tmp_path):
    """`envelopefsctl init --keyring` reads $ENVELOPEFS_PASSPHRASE to create the keyring and again
    when it opens the KMS: the second read finds the copy taken out of the environment.  The
    daemon's environment no longer shows it either."""
    backing, mnt, keyring = tmp_path / "backing", tmp_path / "mnt", tmp_path / "keyring"
    backing.mkdir()
    mnt.mkdir()
    passphrase = "correct horse envsecret 51c9"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVELOPEFS_PASSPHRASE")}
    env["ENVELOPEFS_PASSPHRASE"] = passphrase
    cp = subprocess.run([str(CTL), "init", "--keyring", str(keyring), str(backing)], env=env,
                        capture_output=True, text=True)
    assert cp.returncode == 0, cp.stderr
    log = tmp_path / "daemon.log"
    daemon = start_daemon(backing, mnt, log, env=env)
    try:
        assert passphrase.encode() not in open(f"/proc/{daemon.pid}/environ", "rb").read()
        put(mnt / "f", b"behind a passphrase")
        assert get(mnt / "f") == b"behind a passphrase"
    finally:
        unmount(mnt)
        daemon.wait(timeout=20)
