# SPDX-License-Identifier: MIT
"""`envelopefsctl scope shred` on the remote providers that only schedule or refuse (issue 19): a scope
on an Azure Key Vault key, one on a Google Cloud KMS key and one on a KMIP key (PyKMIP's server), each
with two versions, in one volume beside the volume's own files.  Shredding one scope disables and
deletes its key, every version (Azure: purged; Cloud KMS: DESTROY_SCHEDULED; KMIP: revoked, then
destroyed): its files refuse (EACCES), on the mount, across a remount and through `envelopefsctl
decrypt` offline, while the other scopes and the volume's own files go on.  Two refusals: a vault with
purge protection (the key is left disabled and deleted; shred fails, says why and when the key goes,
and succeeds once Key Vault has purged it), and a KMIP key whose operation policy forbids Destroy."""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from azured import AzurePeer
from gcpd import GcpPeer
from mounts import CTL, DAEMON, Volume, get, is_mounted, put, unmount
from test_scopes_shred import backing_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmsd"))
from kmip_server import KEEP_POLICY, KmipPeer  # noqa: E402


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    root = tmp_path_factory.mktemp("peers")
    azure = gcp = kmip = None
    try:
        azure = AzurePeer(root / "azure")
        gcp = GcpPeer(root / "gcp")
        kmip = KmipPeer(root / "kmip")
        yield azure, gcp, kmip
    finally:
        for peer in (kmip, gcp, azure):
            if peer:
                peer.stop()


def daemon_env(azure, gcp):
    """The daemon's environment: the secrets the scopes' settings leave out (never in argv)."""
    env = azure.env()
    env["GOOGLE_APPLICATION_CREDENTIALS"] = str(gcp.sa_file)
    return env


class LoggedVolume(Volume):
    """A volume whose daemon runs in the foreground, logging to a file the tests read."""

    def __init__(self, root, env):
        super().__init__(root, placement="xattr", names="encrypted")
        self.env, self.log, self.proc = env, self.root / "daemon.log", None

    def mount(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen([str(DAEMON), "-f", str(self.backing), str(self.mnt)],
                                         stdout=log, stderr=log, env=self.env)
        deadline = time.monotonic() + 30
        while not is_mounted(self.mnt):
            assert self.proc.poll() is None and time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def unmount(self):
        unmount(self.mnt)
        self.proc.wait(timeout=30)

    def remount(self):
        self.unmount()
        self.mount()

    def scope(self, directory, provider, settings):
        directory.mkdir()
        args = [str(CTL), "scope", "create", "--kms", provider]
        for k, v in settings.items():
            args += ["--kms-setting", f"{k}={v}"]
        cp = subprocess.run(args + [str(directory)], capture_output=True, text=True, timeout=120)
        assert cp.returncode == 0, cp.stderr
        return directory

    def shred(self, directory):
        return subprocess.run([str(CTL), "scope", "shred", "--yes", str(directory)], capture_output=True,
                              text=True, timeout=120)

    def decrypt(self, backing):
        """envelopefsctl decrypt of a backing file, offline (the volume unmounted)."""
        return subprocess.run([str(CTL), "decrypt", str(self.backing), backing], capture_output=True,
                              env=self.env, timeout=120)


@pytest.fixture
def volume(peers, tmp_path):
    azure, gcp, _ = peers
    (tmp_path / "vol").mkdir()
    vol = LoggedVolume(tmp_path / "vol", daemon_env(azure, gcp))
    vol.mount()
    try:
        yield vol
    finally:
        if is_mounted(vol.mnt):
            vol.unmount()


def fill(directory, tag):
    files = {directory / "sub" / f"f{i}": b"%s file %d " % (tag, i) * 400 for i in range(3)}
    (directory / "sub").mkdir()
    for p, data in files.items():
        put(p, data)
    return files


def refused(path):
    with pytest.raises(PermissionError):
        get(path)


def test_shred_azure_gcp_and_kmip_scopes(peers, volume):
    azure, gcp, kmip = peers
    vol = volume
    azure_key = azure.create_key()
    gcp_key = gcp.create_key()
    kmip_name = "shred-" + os.urandom(4).hex()
    kmip_uids = [kmip.create_key(f"{kmip_name}.1")]
    scopes = {
        "azure": vol.scope(vol.mnt / "tenant-azure", "azure", azure.settings(azure_key)),
        "gcp": vol.scope(vol.mnt / "tenant-gcp", "gcp", gcp.settings(gcp_key)),
        "kmip": vol.scope(vol.mnt / "tenant-kmip", "kmip", kmip.settings(kmip_name)),
    }
    files = {vol.mnt / "own.txt": b"the volume's own" * 300}
    put(vol.mnt / "own.txt", files[vol.mnt / "own.txt"])
    for provider, d in scopes.items():
        files.update(fill(d, provider.encode()))
    # A second version of each key: shred must reach every version, not the current one only.
    assert azure.rotate(azure_key) == 2
    assert gcp.rotate(gcp_key) == 2
    kmip_uids.append(kmip.create_key(f"{kmip_name}.2"))
    backing = {p: backing_file(vol, p) for p in files}

    def check_all(shredded):
        for p, data in files.items():
            if any(p.is_relative_to(scopes[s]) for s in shredded):
                refused(p)
            else:
                assert get(p) == data, p

    check_all([])
    done = vol.shred(scopes["azure"])
    assert done.returncode == 0 and "shredded" in done.stdout, done.stderr
    assert azure_key not in azure.control("keys") and azure_key not in azure.control("deleted")
    check_all(["azure"])

    # A service account without the role: refused, and the log says which permissions it needs.
    gcp.control("config", role_assigned=False)
    try:
        cp = vol.shred(scopes["gcp"])
    finally:
        gcp.control("config", role_assigned=True)
    assert cp.returncode == 1 and "refuses" in cp.stderr, cp.stderr
    assert "cloudkms.cryptoKeyVersions.list and .destroy" in vol.log.read_text()
    assert set(gcp.control("keys")[gcp_key]["versions"].values()) == {"ENABLED"}
    done = vol.shred(scopes["gcp"])
    assert done.returncode == 0 and "shredded" in done.stdout, done.stderr
    states = gcp.control("keys")[gcp_key]["versions"]
    assert set(states.values()) == {"DESTROY_SCHEDULED"} and len(states) == 2, states
    versions = gcp.admin("GET", f"{gcp_key}/cryptoKeyVersions")["cryptoKeyVersions"]
    assert all(v.get("destroyTime") for v in versions), versions
    check_all(["azure", "gcp"])

    done = vol.shred(scopes["kmip"])
    assert done.returncode == 0 and "shredded" in done.stdout, done.stderr
    assert not any(kmip.exists(uid) for uid in kmip_uids)
    check_all(["azure", "gcp", "kmip"])

    vol.remount()
    check_all(["azure", "gcp", "kmip"])
    vol.unmount()
    try:
        for p, data in files.items():
            cp = vol.decrypt(backing[p])
            if p.parent.parent in scopes.values():
                assert cp.returncode == 4 and cp.stdout == b"", (p, cp.stderr)
                assert b"KMS of its key scope" in cp.stderr, cp.stderr
            else:
                assert cp.returncode == 0 and cp.stdout == data, (p, cp.stderr)
    finally:
        vol.mount()
    put(vol.mnt / "after.txt", b"the volume goes on")
    assert get(vol.mnt / "after.txt") == b"the volume goes on"


def test_azure_purge_protection_leaves_the_key_deleted_until_purged(peers, volume):
    azure, _, _ = peers
    vol = volume
    key = azure.create_key()
    d = vol.scope(vol.mnt / "tenant", "azure", azure.settings(key))
    files = fill(d, b"protected")
    azure.rotate(key)
    azure.control("config", purge_protection=True, retention_days=7)
    try:
        cp = vol.shred(d)
        # The vault will not purge before its retention ends: as AWS's waiting period, the key is
        # disabled and deleted now, shred succeeds, and the daemon's log says until when the
        # vault's administrators can recover it.
        assert cp.returncode == 0 and "shredded" in cp.stdout, cp.stderr
        log = vol.log.read_text()
        assert "has purge protection" in log, log
        deleted = azure.control("deleted")[key]
        assert len(deleted["versions"]) == 2 and not any(v["enabled"] for v in deleted["versions"])
        assert deleted["scheduledPurgeDate"] > time.time() + 6 * 86400
        scheduled = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(deleted["scheduledPurgeDate"]))
        assert scheduled in log, log
        for p in files:
            refused(p)
        # At the end of the retention Key Vault purges it: gone for good, still refused.
        assert azure.control("purge_due")["purged"] == [key]
        vol.remount()
        for p in files:
            refused(p)
    finally:
        azure.control("config", purge_protection=False, retention_days=90)


def test_kmip_key_the_server_will_not_destroy(peers, volume):
    _, _, kmip = peers
    vol = volume
    name = "keep-" + os.urandom(4).hex()
    uid = kmip.create_key(f"{name}.1", policy=KEEP_POLICY)
    d = vol.scope(vol.mnt / "tenant", "kmip", kmip.settings(name))
    put(d / "f", b"kept")
    cp = vol.shred(d)
    assert cp.returncode == 1 and "refuses" in cp.stderr, cp.stderr
    log = vol.log.read_text()
    assert f"refuses to destroy key '{name}.1' ({uid})" in log, log
    assert "operation policy" in log, log
    # Revoked (it encrypts nothing more) but still there: the server kept it.
    from kmip.core import enums
    assert kmip.exists(uid) and kmip.state(uid) == enums.State.DEACTIVATED
