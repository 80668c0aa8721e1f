"""The azure KMS provider end to end: envelopefsctl init --kms azure, real mounts, rotation to a new
key version, migration, throttling, an outage, wrong credentials, each way of signing in.

The peer is tests/kmsd/azure_keyvault.py (Key Vault keys API and the identity endpoints over HTTPS)
behind a TCP proxy that can refuse or hang; keys are made, rotated and disabled with Microsoft's own
client library (azure.keyvault.keys + azure.identity), which also proves the peer (test_sdk_*), as the
Node SDKs do (test_kms_cloud_clients.py).
"""
import json
import os
import time
from pathlib import Path

import pytest

from azured import AzurePeer
from cloudvol import (KmsVolume, ctl, init_args, kms_outage, migrate_local_volume_to,
                      prefetch_in_parallel, rekey_and_remount, token_refresh_and_throttling,
                      write_files)


@pytest.fixture(scope="module")
def azure(tmp_path_factory):
    peer = AzurePeer(tmp_path_factory.mktemp("azure"))
    peer.create_key("vol-key")
    yield peer
    peer.stop()


def AzureVolume(root, peer, key="vol-key", credential="secret", tight=False):
    return KmsVolume(root, "azure", peer.settings(key, credential), peer.env(credential), tight)


@pytest.mark.parametrize("credential", ["secret", "certificate", "federated", "managed"])
def test_write_remount_read(azure, tmp_path, credential):
    v = AzureVolume(tmp_path, azure, credential=credential)
    v.mount()
    try:
        if credential == "secret":
            environ = Path(f"/proc/{v.proc.pid}/environ").read_bytes()
            assert azure.secret.encode() not in environ  # taken out once read (kms/envsecret.h)
        conf = (v.backing / "envelopefs.conf").read_text()
        assert "provider = azure" in conf and azure.secret not in conf
        contents = write_files(v.mnt, 4)
        st = v.status()["kms"]
        assert st["provider"] == "azure" and st["current_version"] == 1 and st["failures"] == 0
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
    assert azure.secret not in log and "Bearer" not in log and "eyJ0eXAi" not in log  # no token either


def test_oct_hsm_key_uses_aes_key_wrap(azure, tmp_path):
    key = azure.create_key(kty="oct-HSM")
    v = AzureVolume(tmp_path, azure, key=key)
    v.mount()
    try:
        (v.mnt / "a").write_bytes(b"managed hsm")
        v.unmount()
        v.mount()
        assert (v.mnt / "a").read_bytes() == b"managed hsm"
    finally:
        v.unmount()


def test_rotation_to_a_new_key_version(azure, tmp_path):
    key = azure.create_key()
    v = AzureVolume(tmp_path, azure, key=key)
    v.mount()
    try:
        contents = write_files(v.mnt, 6)
        assert azure.rotate(key) == 2
        time.sleep(1.1)  # the provider asks Key Vault for the latest version at most once a second
        check = ctl("rotate", "--check", "--json", v.mnt, env=v.env)
        assert check.returncode == 1, check.stderr
        assert json.loads(check.stdout)["target_version"] == 2
        run = ctl("rotate", "--json", v.mnt, env=v.env)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["rewrapped"] == 6
        assert ctl("rotate", "--check", v.mnt, env=v.env).returncode == 0
        assert {v.version_of(n) for n in contents} == {2}
        v.unmount()
        # The old version can go now: everything is wrapped by the new one.
        first = sorted(azure.keys().list_properties_of_key_versions(key), key=lambda p: p.created_on)[0]
        azure.keys().update_key_properties(key, first.version, enabled=False)
        v.mount()
        for name, data in contents.items():
            assert (v.mnt / name).read_bytes() == data
        (v.mnt / "new").write_bytes(b"after rotation")
        assert v.version_of("new") == 2
    finally:
        v.unmount()


def test_blob_of_another_volume_is_refused(azure, tmp_path):
    """wrapKey binds no context: our inner tag does.  A backing file copied into another volume
    under the same key unwraps at Key Vault but fails the tag, and does not open."""
    a = AzureVolume(tmp_path / "a", azure)
    b = AzureVolume(tmp_path / "b", azure)
    a.mount()
    try:
        (a.mnt / "secret").write_bytes(b"volume a's data")
    finally:
        a.unmount()
    stolen = (a.backing / "secret").read_bytes()
    (b.backing / "secret").write_bytes(stolen)
    b.mount()
    try:
        with pytest.raises(OSError) as e:
            (b.mnt / "secret").read_bytes()
        assert e.value.errno == 5
        assert b.log_lines("cannot unwrap the data key"), b.log.read_text()
    finally:
        b.unmount()


def test_wrong_credentials_and_missing_role(azure, tmp_path):
    env = dict(azure.env("secret"), AZURE_CLIENT_SECRET="not-the-secret")
    (tmp_path / "b").mkdir()
    r = ctl(*init_args("azure", azure.settings("vol-key")), tmp_path / "b", env=env)
    assert r.returncode != 0
    assert "refused the credentials" in r.stderr and "invalid_client" in r.stderr, r.stderr
    assert "not-the-secret" not in r.stderr
    r = ctl(*init_args("azure", {**azure.settings("vol-key"), "client_secret": "x"}), tmp_path / "b", env=env)
    assert r.returncode != 0 and "would put a secret" in r.stderr, r.stderr
    # Signed in, but without the "Key Vault Crypto User" role: Key Vault's 403.
    v = AzureVolume(tmp_path / "v", azure)
    azure.control("config", role_assigned=False)
    try:
        d = v.mount_fails()
    finally:
        azure.control("config", role_assigned=True)
    assert "HTTP 403 (Forbidden)" in d.stderr, d.stderr


def test_disabled_key_refused_at_mount(azure, tmp_path):
    key = azure.create_key()
    v = AzureVolume(tmp_path, azure, key=key)
    azure.disable(key)
    d = v.mount_fails()
    assert d.returncode == 4 and "disabled" in d.stderr, d.stderr


def test_token_refresh_and_throttling(azure, tmp_path):
    token_refresh_and_throttling(AzureVolume(tmp_path, azure), azure)


def test_kms_outage(azure, tmp_path):
    kms_outage(AzureVolume(tmp_path, azure, tight=True), azure, ["Azure"])


def test_rekey(tmp_path, azure):
    rekey_and_remount(AzureVolume(tmp_path / "v", azure), tmp_path)


def test_prefetch_in_parallel(azure, tmp_path):
    prefetch_in_parallel(AzureVolume(tmp_path, azure), lambda ms: azure.control("config", latency_ms=ms))


def test_migration_to_azure(azure, tmp_path):
    migrate_local_volume_to(tmp_path, "azure", azure.settings("vol-key"), azure.env())


def test_sdk_wraps_what_the_peer_unwraps(azure):
    """Microsoft's CryptographyClient against the peer: wrap (locally, with the public key the peer
    publishes) and unwrap (remotely), RSA-OAEP-256; and A256KW remotely on an oct-HSM key."""
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
    for kty, alg in (("RSA", KeyWrapAlgorithm.rsa_oaep_256), ("oct-HSM", KeyWrapAlgorithm.aes_256)):
        key = azure.keys().get_key(azure.create_key(kty=kty))
        cc = CryptographyClient(key, azure.credential, connection_verify=str(azure.ca),
                                verify_challenge_resource=False)
        secret = os.urandom(48)
        wrapped = cc.wrap_key(alg, secret)
        assert wrapped.key_id == key.id
        assert cc.unwrap_key(alg, wrapped.encrypted_key).key == secret
