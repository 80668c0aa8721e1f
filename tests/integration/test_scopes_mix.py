# SPDX-License-Identifier: MIT
"""Key scopes with real providers at once (issue 19, point 6): a Vault Transit key (the test server,
tests/kmsd/vault_transit.py) for one tenant, an AWS KMS key (moto, tests/kmsd/aws_moto.py) for
another, a local keyring for a third and the volume's own keyring for the rest.  Write, remount,
rotate each scope under its own KMS, revoke the AWS tenant (its key disabled: that scope EACCES,
the others work; enabled: it works again without a remount), shred the Vault tenant (nothing under
it decrypts, `decrypt` included) -- all while a thread keeps writing into the local tenant's scope.
Each KMS is audited: every unwrap for a file of a scope goes to that scope's KMS and no other."""
import os
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import pytest

from mounts import CTL, Volume, get, put
from test_scopes import KEY_XATTR, Tenant, ctl
from test_scopes_shred import backing_file
from vaultd import VaultServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmsd"))
from aws_moto import AwsPeer  # noqa: E402


def version_of(path):
    return int(os.getxattr(path, KEY_XATTR).split()[0])


def scope_stats(vol, key_ref):
    return next(s for s in vol.status()["scopes"].values() if s["key_ref"] == key_ref)


class Writer(threading.Thread):
    """Writes file after file into @directory until stopped; every write must succeed."""

    def __init__(self, directory):
        super().__init__(daemon=True)
        self.directory, self.stop, self.error = directory, threading.Event(), None
        self.lock, self.written = threading.Lock(), {}

    def run(self):
        i = 0
        try:
            # A file every 20 ms: steady traffic, not a flood the walks would have to chase.
            while not self.stop.wait(0.02):
                data = b"written meanwhile %d " % i * 200
                put(self.directory / f"w{i}", data)
                with self.lock:
                    self.written[self.directory / f"w{i}"] = data
                i += 1
        except OSError as e:
            self.error = e

    def files(self):
        """The files written and closed so far."""
        with self.lock:
            return dict(self.written)

    def finish(self):
        self.stop.set()
        self.join(timeout=60)
        assert self.error is None, self.error
        assert len(self.files()) > 0


@pytest.fixture
def mix(tmp_path):
    aws = AwsPeer()
    vault = VaultServer(tmp_path / "vault")
    vol = None
    env = dict(os.environ, AWS_ACCESS_KEY_ID=aws.access_key, AWS_SECRET_ACCESS_KEY=aws.secret,
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"))
    env.pop("AWS_SESSION_TOKEN", None)
    env.pop("AWS_PROFILE", None)
    try:
        (tmp_path / "vol").mkdir()
        vol = Volume(tmp_path / "vol", placement="xattr", names="encrypted")
        vol.mount(env=env)
        yield vol, aws, vault, env
    finally:
        if vol:
            vol.unmount()
        vault.stop()
        aws.stop()


def test_vault_aws_and_local_scopes_at_once(mix):
    vol, aws, vault, env = mix
    local = Tenant(vol, "tenant-local")
    local.create()
    vault.create_key("tenant-vault", derived=True)
    vdir = vol.mnt / "tenant-vault"
    vdir.mkdir()
    ctl("scope", "create", "--kms", "vault", "--kms-setting", f"address={vault.url}",
        "--kms-setting", "key=tenant-vault", "--kms-setting", f"token_file={vault.token_file}",
        vdir)
    arn = aws.create_key()
    wdir = vol.mnt / "tenant-aws"
    wdir.mkdir()
    ctl("scope", "create", "--kms", "aws", "--kms-setting", f"key_id={arn}",
        "--kms-setting", f"endpoint={aws.endpoint}", "--kms-setting", "region=us-east-1", wdir)
    refs = {s["provider"]: s["key_ref"] for s in vol.status()["scopes"].values()}
    assert set(refs) == {"local", "vault", "aws"}, refs

    files = {vol.mnt / "own.txt": b"the volume's own" * 100}
    for d, tag in [(local.dir, b"local"), (vdir, b"vault"), (wdir, b"aws")]:
        (d / "sub").mkdir()
        for i in range(3):
            files[d / "sub" / f"f{i}"] = b"%s tenant file %d " % (tag, i) * 300
    for p, data in files.items():
        put(p, data)

    vol.unmount()
    vol.mount(env=env)
    vault_before = vault.stats().get("decrypt_items", 0)
    for p, data in files.items():
        assert get(p) == data
    # The audit: each scope's unwraps (its scope key, then its three files) went to its own KMS;
    # the Vault server saw exactly its tenant's, and the volume's KMS only its own two.
    status = vol.status()
    for provider in ("local", "vault", "aws"):
        s = scope_stats(vol, refs[provider])
        assert s["unwrap"] == 1 + 3 and s["failures"] == 0, (provider, s)
    assert vault.stats().get("decrypt_items", 0) == vault_before + 1 + 3
    assert status["kms"]["unwrap"] == 1 + 1, status["kms"]
    for d, provider in [(local.dir, "local"), (vdir, "vault"), (wdir, "aws")]:
        assert os.getxattr(d / "sub" / "f0", KEY_XATTR).split()[1].decode() == refs[provider]

    writer = Writer(local.dir)
    writer.start()
    try:
        # Rotate each scope under its own KMS.
        ctl("keyring", "rotate", local.keyring)
        vault.rotate("tenant-vault")
        aws.rotate(arn)
        # The local provider re-reads its keyring, and the AWS one ListKeyRotations, at most
        # once a second (CI once saw the AWS scope still at version 1 without this wait).
        time.sleep(1.1)
        for d in (local.dir, vdir, wdir):
            assert ctl("rotate", "--scope", "--check", d, check=False).returncode == 1, d
            ctl("rotate", "--scope", d)
            assert ctl("rotate", "--scope", "--check", d, check=False).returncode == 0, d
            assert version_of(d) == version_of(d / "sub" / "f0") > 1, d
        assert version_of(vol.mnt / "own.txt") == 1  # the volume's KMS was not rotated

        # Revoke the AWS tenant: its key disabled, its cached keys dropped.
        aws.disable(arn)
        ctl("scope", "lock", wdir)
        with pytest.raises(PermissionError):
            get(wdir / "sub" / "f1")
        with pytest.raises(PermissionError):
            os.listdir(wdir)
        assert get(vdir / "sub" / "f1") == files[vdir / "sub" / "f1"]
        assert get(vol.mnt / "own.txt") == files[vol.mnt / "own.txt"]
        # Enabled again: it works again, without a remount.
        aws.kms.enable_key(KeyId=arn.split("/")[-1])
        assert get(wdir / "sub" / "f1") == files[wdir / "sub" / "f1"]

        # Move the local tenant to a Vault key of its own while the thread writes into it; its
        # keyring is needed no more afterwards.
        vault.create_key("tenant-moved", derived=True)
        config = vol.root / "to-vault.conf"
        config.write_text(f"[kms]\nprovider = vault\naddress = {vault.url}\nkey = tenant-moved\n"
                          f"token_file = {vault.token_file}\n")
        ctl("rotate", "--scope", "--to-kms", config, local.dir)
        moved_ref = os.getxattr(local.dir, KEY_XATTR).split()[1].decode()
        assert moved_ref.startswith("vault:") and moved_ref != refs["vault"]
        for p in list(writer.files()) + [local.dir / "sub" / "f0"]:
            assert os.getxattr(p, KEY_XATTR).split()[1].decode() == moved_ref, p
        local.revoke()
        ctl("scope", "lock", local.dir)
        assert get(local.dir / "sub" / "f1") == files[local.dir / "sub" / "f1"]

        # Shred the Vault tenant: refused while Vault keeps the key undeletable, then done.
        refused = ctl("scope", "shred", "--yes", vdir, check=False)
        assert refused.returncode == 1 and "refuses" in refused.stderr, refused.stderr
        assert get(vdir / "sub" / "f2") == files[vdir / "sub" / "f2"]
        vault.configure("tenant-vault", deletion_allowed=True)
        vfile = backing_file(vol, vdir / "sub" / "f2")
        wfile = backing_file(vol, wdir / "sub" / "f2")
        ctl("scope", "shred", "--yes", vdir)
        with pytest.raises(urllib.error.HTTPError) as gone_key:
            vault.api("GET", "keys/tenant-vault")
        assert gone_key.value.code == 404  # deleted in Vault, every version
        with pytest.raises(PermissionError):
            get(vdir / "sub" / "f2")
        for p in (local.dir / "sub" / "f2", wdir / "sub" / "f2", vol.mnt / "own.txt"):
            assert get(p) == files[p]
    finally:
        writer.finish()
    for p, data in writer.files().items():
        assert get(p) == data
    print(f"[scopes-mix] {len(writer.files())} files written into a scope during the run")

    vol.unmount()
    try:
        # Offline: the AWS tenant's file decrypts through its KMS, the shredded tenant's never.
        ok = subprocess.run([str(CTL), "decrypt", str(vol.backing), wfile], capture_output=True,
                            env=env, timeout=60)
        assert ok.returncode == 0 and ok.stdout == files[wdir / "sub" / "f2"], ok.stderr
        gone = subprocess.run([str(CTL), "decrypt", str(vol.backing), vfile],
                              capture_output=True, env=env, timeout=60)
        assert gone.returncode == 4 and gone.stdout == b"", gone.stderr
    finally:
        vol.mount(env=env)
    assert get(local.dir / "sub" / "f0") == files[local.dir / "sub" / "f0"]
    with pytest.raises(PermissionError):
        get(vdir / "sub" / "f0")
