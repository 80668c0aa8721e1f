"""The gcp KMS provider end to end: envelopefsctl init --kms gcp, real mounts, rotation to a new primary
version, corrupted answers caught by CRC32C, throttling, an outage, wrong credentials, a missing role.

The peer is tests/kmsd/gcp_kms.py (Cloud KMS REST v1, Google's token endpoint, the metadata server) behind a
TCP proxy that can refuse or hang.  Its token endpoint and metadata server are proven by Google's own auth
library (python3-google-auth); its Cloud KMS calls by the API reference's documented requests and answers
(test_peer_*) and by Google's Node client, @google-cloud/kms in REST mode (test_kms_cloud_clients.py).
"""
import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloudvol import (KmsVolume, ctl, init_args, kms_outage, migrate_local_volume_to,
                      prefetch_in_parallel, rekey_and_remount, token_refresh_and_throttling,
                      write_files)
from gcpd import GcpPeer


@pytest.fixture(scope="module")
def gcp(tmp_path_factory):
    peer = GcpPeer(tmp_path_factory.mktemp("gcp"))
    peer.key = peer.create_key("vol-key")
    yield peer
    peer.stop()


def GcpVolume(root, peer, key=None, credential="service_account", tight=False):
    return KmsVolume(root, "gcp", peer.settings(key or peer.key, credential), peer.env(credential), tight)


@pytest.mark.parametrize("credential", ["service_account", "metadata"])
def test_write_remount_read(gcp, tmp_path, credential):
    v = GcpVolume(tmp_path, gcp, credential=credential)
    v.mount()
    try:
        conf = (v.backing / "envelopefs.conf").read_text()
        assert "provider = gcp" in conf and gcp.key in conf and "private_key" not in conf
        contents = write_files(v.mnt, 4)
        st = v.status()["kms"]
        assert st["provider"] == "gcp" and st["current_version"] == 1 and st["failures"] == 0
        v.unmount()
        v.mount()
        for name, data in contents.items():
            assert (v.mnt / name).read_bytes() == data
        assert v.status()["kms"]["unwrap"] == 4
        for name, data in contents.items():
            assert data[:64] not in (v.backing / name).read_bytes()
    finally:
        v.unmount()
    log = v.log.read_text()
    assert "Bearer" not in log and "ya29." not in log and "PRIVATE KEY" not in log  # no token, no key


def test_rotation_to_a_new_primary_version(gcp, tmp_path):
    key = gcp.create_key()
    v = GcpVolume(tmp_path, gcp, key=key)
    v.mount()
    try:
        contents = write_files(v.mnt, 6)
        assert gcp.rotate(key) == 2
        time.sleep(1.1)  # the provider asks for the primary version at most once a second
        check = ctl("rotate", "--check", "--json", v.mnt, env=v.env)
        assert check.returncode == 1, check.stderr
        assert json.loads(check.stdout)["target_version"] == 2
        run = ctl("rotate", "--json", v.mnt, env=v.env)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["rewrapped"] == 6
        assert ctl("rotate", "--check", v.mnt, env=v.env).returncode == 0
        assert {v.version_of(n) for n in contents} == {2}
        v.unmount()
        gcp.set_state(key, 1, "DISABLED")  # nothing needs version 1 any more
        v.mount()
        for name, data in contents.items():
            assert (v.mnt / name).read_bytes() == data
        (v.mnt / "new").write_bytes(b"after rotation")
        assert v.version_of("new") == 2
    finally:
        v.unmount()


def test_disabled_version_and_another_volumes_blob(gcp, tmp_path):
    """A file whose key version was disabled does not open (FAILED_PRECONDITION: denied); a backing file
    copied from another volume under the same key fails Cloud KMS's AAD check (bad ciphertext)."""
    key = gcp.create_key()
    a = GcpVolume(tmp_path / "a", gcp, key=key)
    b = GcpVolume(tmp_path / "b", gcp, key=key)
    a.mount()
    try:
        (a.mnt / "secret").write_bytes(b"volume a's data")
    finally:
        a.unmount()
    (b.backing / "secret").write_bytes((a.backing / "secret").read_bytes())
    b.mount()
    try:
        with pytest.raises(OSError) as e:
            (b.mnt / "secret").read_bytes()
        assert e.value.errno == 5
        assert b.log_lines("cannot unwrap the data key: bad ciphertext"), b.log.read_text()
    finally:
        b.unmount()
    gcp.rotate(key)
    gcp.set_state(key, 1, "DISABLED")
    a.mount()
    try:
        with pytest.raises(OSError):
            (a.mnt / "secret").read_bytes()
        assert a.log_lines("cannot unwrap the data key: KMS denied"), a.log.read_text()
    finally:
        a.unmount()


def test_corrupted_answers_are_caught_by_crc32c(gcp, tmp_path):
    v = GcpVolume(tmp_path, gcp)
    v.mount()
    try:
        # One corrupted answer each way: caught, retried, fine.  (The daemon's key pool encrypts in
        # the background too, so the encrypt side is counted, not tied to one write.)
        before = gcp.control("counters")["corrupted"]
        gcp.control("corrupt", op="encrypt", count=1)
        (v.mnt / "a").write_bytes(b"one")
        (v.mnt / "b").write_bytes(b"two")
        v.unmount()
        v.mount()
        gcp.control("corrupt", op="decrypt", count=1)
        assert (v.mnt / "a").read_bytes() == b"one"
        # The decrypt's corruption was met by that read; the encrypt's by a pool refill, soon.
        for _ in range(100):
            if gcp.control("counters")["corrupted"] - before == 2:
                break
            time.sleep(0.05)
        assert gcp.control("counters")["corrupted"] - before == 2
        assert v.status()["kms"]["failures"] == 0
        # Every decrypt answer corrupted: the unwrap fails rather than hand out a damaged key.
        gcp.control("corrupt", op="decrypt", count=1000)
        with pytest.raises(OSError):
            (v.mnt / "b").read_bytes()
    finally:
        gcp.control("corrupt", op="decrypt", count=0)
        gcp.control("corrupt", op="encrypt", count=0)
        v.unmount()


def test_wrong_credentials_and_missing_role(gcp, tmp_path):
    other = tmp_path / "other-sa.json"
    info = json.loads(gcp.sa_file.read_text())
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    info["private_key"] = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    other.write_text(json.dumps(info))
    other.chmod(0o600)
    env = dict(gcp.env(), GOOGLE_APPLICATION_CREDENTIALS=str(other))
    (tmp_path / "b").mkdir()
    r = ctl(*init_args("gcp", gcp.settings(gcp.key)), tmp_path / "b", env=env)
    assert r.returncode != 0
    assert "refused the credentials" in r.stderr and "invalid_grant" in r.stderr, r.stderr
    assert "PRIVATE KEY" not in r.stderr
    other.chmod(0o644)
    r = ctl(*init_args("gcp", gcp.settings(gcp.key)), tmp_path / "b", env=env)
    assert r.returncode != 0 and "chmod 600" in r.stderr, r.stderr
    v = GcpVolume(tmp_path / "v", gcp)
    gcp.control("config", role_assigned=False)
    try:
        d = v.mount_fails()
    finally:
        gcp.control("config", role_assigned=True)
    assert "HTTP 403 (PERMISSION_DENIED)" in d.stderr, d.stderr


def test_token_refresh_and_throttling(gcp, tmp_path):
    token_refresh_and_throttling(GcpVolume(tmp_path, gcp), gcp)


def test_kms_outage(gcp, tmp_path):
    kms_outage(GcpVolume(tmp_path, gcp, tight=True), gcp, ["Cloud KMS", "Google"])


def test_rekey(tmp_path, gcp):
    rekey_and_remount(GcpVolume(tmp_path / "v", gcp), tmp_path)


def test_prefetch_in_parallel(gcp, tmp_path):
    prefetch_in_parallel(GcpVolume(tmp_path, gcp), lambda ms: gcp.control("config", latency_ms=ms))


def test_migration_to_gcp(gcp, tmp_path):
    migrate_local_volume_to(tmp_path, "gcp", gcp.settings(gcp.key), gcp.env())


# ---- the peer against the API reference (and @google-cloud/kms: test_kms_cloud_clients.py) ----

def rest(gcp, method, path, body=None, token=None):
    req = urllib.request.Request(f"{gcp.direct}/v1/{path}", method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {token or gcp.credentials().token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def test_peer_matches_the_api_reference(gcp):
    """The encrypt/decrypt exchange of cloud.google.com/kms/docs/encrypt-decrypt ("REST") and
    .../reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt: field names, int64 CRC32Cs as
    strings, verified* flags, the version in `name`, and the documented error statuses."""
    plaintext, aad = b"Hello, Cloud KMS", b"envelopefs"
    status, enc = rest(gcp, "POST", f"{gcp.key}:encrypt", {
        "plaintext": base64.b64encode(plaintext).decode(), "plaintextCrc32c": str(crc32c(plaintext)),
        "additionalAuthenticatedData": base64.b64encode(aad).decode(),
        "additionalAuthenticatedDataCrc32c": str(crc32c(aad))})
    assert status == 200, enc
    assert set(enc) == {"name", "ciphertext", "ciphertextCrc32c", "verifiedPlaintextCrc32c",
                        "verifiedAdditionalAuthenticatedDataCrc32c", "protectionLevel"}
    assert enc["name"].startswith(gcp.key + "/cryptoKeyVersions/")
    assert enc["verifiedPlaintextCrc32c"] is True and enc["verifiedAdditionalAuthenticatedDataCrc32c"] is True
    ct = base64.b64decode(enc["ciphertext"])
    assert enc["ciphertextCrc32c"] == str(crc32c(ct))
    status, dec = rest(gcp, "POST", f"{gcp.key}:decrypt", {
        "ciphertext": enc["ciphertext"], "ciphertextCrc32c": enc["ciphertextCrc32c"],
        "additionalAuthenticatedData": base64.b64encode(aad).decode()})
    assert status == 200 and base64.b64decode(dec["plaintext"]) == plaintext
    assert dec["plaintextCrc32c"] == str(crc32c(plaintext)) and dec["usedPrimary"] is True
    status, err = rest(gcp, "POST", f"{gcp.key}:decrypt", {"ciphertext": enc["ciphertext"]})
    assert status == 400 and err["error"]["status"] == "INVALID_ARGUMENT" and err["error"]["code"] == 400
    status, err = rest(gcp, "POST", f"{gcp.key}:encrypt", {
        "plaintext": base64.b64encode(plaintext).decode(), "plaintextCrc32c": "1"})
    assert status == 400 and "checksum" in err["error"]["message"]
    status, err = rest(gcp, "POST", f"{gcp.key}:encrypt", {"plaintext": ""}, token="ya29.not-a-token")
    assert status == 401 and err["error"]["status"] == "UNAUTHENTICATED"
    status, err = rest(gcp, "GET", gcp.key.rsplit("/", 1)[0] + "/nope")
    assert status == 404 and err["error"]["status"] == "NOT_FOUND"
    status, key = rest(gcp, "GET", gcp.key)
    assert key["purpose"] == "ENCRYPT_DECRYPT" and key["primary"]["state"] == "ENABLED"


def test_peer_tokens_from_google_auth(gcp):
    """google-auth's service-account and Compute Engine credentials get tokens from the peer."""
    creds = gcp.credentials()
    assert creds.valid and creds.token.startswith("ya29.")
    # google-auth reads GCE_METADATA_ROOT when it is imported: a child with it set.
    probe = subprocess.run(["/usr/bin/python3", "-c", """
import google.auth.compute_engine, google.auth.transport.requests
c = google.auth.compute_engine.Credentials()
c.refresh(google.auth.transport.requests.Request())
print(c.service_account_email, c.token)
"""], capture_output=True, text=True, timeout=60, env=dict(os.environ, GCE_METADATA_ROOT=f"127.0.0.1:{gcp.port}"))
    assert probe.returncode == 0, probe.stderr
    email, token = probe.stdout.split()
    assert email.endswith(".iam.gserviceaccount.com")
    assert rest(gcp, "GET", gcp.key, token=token)[0] == 200
    assert Path(gcp.sa_file).stat().st_mode & 0o077 == 0
