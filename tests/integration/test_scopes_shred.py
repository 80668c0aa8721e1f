# SPDX-License-Identifier: MIT
"""Key scopes, second increment (issue 19): `envelopefsctl scope shred` and the offline tools
inside scopes, on real mounts with real local keyrings.  `decrypt` of a scope's backing file works
offline through the scope's own KMS (found in the registry, which the volume key authenticates);
shred overwrites and removes the tenant's keyring, after which nothing under the scope decrypts, on
the mount (EACCES, across a remount) or offline, while the rest of the volume goes on.  A copy of
the keyring made before (a backup) is beyond shred's reach: it brings the scope back."""
import errno
import os
import shutil
import subprocess

import pytest

from mounts import CTL, Volume, get, put
from test_scopes import ctl, tenants, write_tree  # noqa: F401 (a fixture)


def backing_file(vol, path):
    """The backing file of @path (the daemon passes backing inode numbers through)."""
    ino = os.stat(path).st_ino
    for root, _, names in os.walk(vol.backing):
        for n in names:
            if os.lstat(os.path.join(root, n)).st_ino == ino:
                return os.path.join(root, n)
    raise AssertionError(f"no backing file for {path}")


def decrypt(vol, *args):
    """envelopefsctl decrypt [--path] BACKING FILE."""
    opts, file = args[:-1], args[-1]
    return subprocess.run([str(CTL), "decrypt", *opts, str(vol.backing), file],
                          capture_output=True, timeout=60)


def test_shred_a_scope_offline_tools_included(tenants, tmp_path):  # noqa: F811
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    a1, b1, plain = a.dir / "a1.txt", b.dir / "b1.txt", vol.mnt / "plain.txt"
    backing = {p: backing_file(vol, p) for p in (a1, b1, plain)}
    backup = tmp_path / "tenant-a.keyring.backup"
    shutil.copy(a.keyring, backup)
    same_inode = tmp_path / "tenant-a.keyring.link"
    os.link(a.keyring, same_inode)
    original = a.keyring.read_bytes()

    vol.unmount()
    try:
        # Offline, each file decrypts through its own KMS: the scopes' through theirs.
        for p in (a1, b1, plain):
            cp = decrypt(vol, backing[p])
            assert cp.returncode == 0 and cp.stdout == files[p], (p, cp.stderr)
        # By plaintext path too: the names below a scope's root open with its scope key.
        by_path = decrypt(vol, "--path", "tenant-a/deep/a2.txt")
        assert by_path.stdout == files[a.dir / "deep" / "a2.txt"], by_path.stderr
        listed = ctl("ls", "--backing", vol.backing, "/tenant-a").stdout
        assert "f a1.txt" in listed and "d deep" in listed, listed
    finally:
        vol.mount()

    # Not without a confirmation (no terminal here): nothing happens.
    refused = ctl("scope", "shred", a.dir, check=False)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert a.keyring.exists() and get(a1) == files[a1]
    assert ctl("scope", "shred", "--yes", a.dir / "deep", check=False).returncode == 1

    done = ctl("scope", "shred", "--yes", a.dir)
    assert "shredded" in done.stdout
    # The keyring file was overwritten in place (its other name shows noise), then removed.
    assert not a.keyring.exists()
    noise = same_inode.read_bytes()
    assert len(noise) == len(original) and noise != original and original[:8] not in noise
    for op in (lambda: get(a1), lambda: os.listdir(a.dir), lambda: put(a.dir / "new", b"x")):
        with pytest.raises(PermissionError):
            op()
    # The rest of the volume goes on.
    assert get(b1) == files[b1] and get(plain) == files[plain]
    put(b.dir / "after", b"b after the shred")
    assert not a.stats()["unlocked"] and a.stats()["locks"] == 1

    vol.remount()
    with pytest.raises(PermissionError):
        get(a1)
    assert get(b.dir / "after") == b"b after the shred"
    vol.unmount()
    try:
        cp = decrypt(vol, backing[a1])
        assert cp.returncode == 4 and cp.stdout == b"", cp.stderr
        assert b"KMS of its key scope" in cp.stderr, cp.stderr
        cp = decrypt(vol, "--path", "tenant-a/a1.txt")
        assert cp.returncode == 4 and cp.stdout == b"", cp.stderr
        assert ctl("ls", "--backing", vol.backing, "/tenant-a", check=False).returncode == 4
        assert decrypt(vol, backing[b1]).stdout == files[b1]
    finally:
        vol.mount()

    # What shred cannot reach: a copy of the keyring taken before it.
    shutil.copy(backup, a.keyring)
    assert get(a1) == files[a1]


def test_shred_refuses_when_the_kms_refuses_already(tenants):  # noqa: F811
    vol, a, b = tenants
    put(a.dir / "f", b"f")
    vol.remount()
    a.revoke()
    cp = ctl("scope", "shred", "--yes", a.dir, check=False)
    assert cp.returncode == 4 and "refused" in cp.stderr, cp.stderr
    a.restore()
    assert get(a.dir / "f") == b"f"
    with pytest.raises(OSError) as e:
        os.rename(a.dir / "f", b.dir / "f")
    assert e.value.errno == errno.EXDEV


def test_shred_a_pkcs11_scope_destroys_its_token_objects(tmp_path):
    """A scope on a SoftHSM2 token (its key labelled tenant.1, tenant.2 after a rotation): shred
    destroys every version's object on the token; the volume's own files go on."""
    from test_kms_pkcs11 import MODULE, PIN, TOKEN, Token
    if not os.path.exists(MODULE):
        pytest.fail("softhsm2 is not installed (tools/setup.sh installs it)")
    token = Token(tmp_path)
    token.keygen("tenant.1")
    token.keygen("tenant.2")
    token.keygen("other.1")
    pin_file = tmp_path / "user.pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    (tmp_path / "vol").mkdir()
    vol = Volume(tmp_path / "vol", placement="header", names="encrypted")
    vol.mount(env=token.env)
    try:
        tdir = vol.mnt / "tenant"
        tdir.mkdir()
        ctl("scope", "create", "--kms", "pkcs11", "--kms-setting", f"module={MODULE}",
            "--kms-setting", f"token_label={TOKEN}", "--kms-setting", "key_label=tenant",
            "--kms-setting", f"pin_file={pin_file}", tdir)
        put(tdir / "f", b"on the token")
        put(vol.mnt / "own", b"the volume's")
        ctl("scope", "shred", "--yes", tdir)
        objects = token.tool("--list-objects", "--type", "secrkey").stdout
        assert "tenant.1" not in objects and "tenant.2" not in objects, objects
        assert "other.1" in objects, objects  # another key on the token is left alone
        with pytest.raises(PermissionError):
            get(tdir / "f")
        vol.unmount()
        vol.mount(env=token.env)
        with pytest.raises(PermissionError):
            get(tdir / "f")
        assert get(vol.mnt / "own") == b"the volume's"
    finally:
        vol.unmount()
