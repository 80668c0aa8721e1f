# SPDX-License-Identifier: MIT
"""KMS faults on real mounts of the vault provider (the Transit test server, tests/kmsd/vault_transit.py):
throttling is not an outage.  The aws provider's
counterparts live in test_kms_aws.py, beside its moto peer."""
import concurrent.futures
import errno
import os
import re
import subprocess
import time

import pytest

from mounts import CTL, get, put
from test_vault import VaultVolume, mount_foreground
from vaultd import VaultServer

DEADLINE = 1.5  # deadline_ms of the volumes here, in seconds


@pytest.fixture
def server(tmp_path):
    srv = VaultServer(tmp_path / "vault")
    srv.create_key("vol", derived=True)
    yield srv
    srv.stop()


def timed_workload(ops):
    """Run @ops (callables) on four threads; each must succeed or fail with EIO.  Returns
    [(ok, seconds)] in order."""
    def run(op):
        t0 = time.monotonic()
        try:
            op()
            return True, time.monotonic() - t0
        except OSError as e:
            assert e.errno == errno.EIO, e
            return False, time.monotonic() - t0
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(run, ops))


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
    daemon = mount_foreground(vol, log)
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
        # Throttling over: everything reads back, no remount.
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
