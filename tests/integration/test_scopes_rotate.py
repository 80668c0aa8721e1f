# SPDX-License-Identifier: MIT
"""Key scopes, second increment (issue 19): rotating one scope under its own KMS
(`envelopefsctl rotate --scope DIR`), on real mounts with real local keyrings.  The scope key's
record moves with its files (its definition replaced in the registry, authenticated under the
volume key, and read back after a remount); the rest of the volume and the other scope stay as
they were; --check counts and fails while anything is behind; --rekey gives the scope's files new
data keys and keeps their user xattrs, which are sealed under the scope key."""
import fcntl
import os

import pytest

from mounts import get, put
from test_scopes import KEY_XATTR, ctl, make_keyring, tenants, write_tree  # noqa: F401 (a fixture)


def record(path):
    """(version, key reference, file ID) of the key record that @path describes."""
    version, ref, file_id = os.getxattr(path, KEY_XATTR).decode().split()
    return int(version), ref, file_id


def definition(vol):
    return {n: (vol.backing / "envelopefs.scopes" / n).read_bytes()
            for n in os.listdir(vol.backing / "envelopefs.scopes")}


def test_rotate_one_scope_under_its_own_kms(tenants):  # noqa: F811
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    scoped = [a.dir / "a1.txt", a.dir / "deep" / "a2.txt"]
    others = [vol.mnt / "plain.txt", b.dir / "b1.txt"]
    before_others = {p: record(p) for p in others}
    # The scope's root describes its scope key, under the scope's own master key.
    assert record(a.dir)[:2] == (1, a.key_ref)
    defs_before = definition(vol)

    ctl("keyring", "rotate", a.keyring)
    check = ctl("rotate", "--scope", "--check", a.dir, check=False)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "to re-wrap:       3" in check.stdout and "version 1: 3" in check.stdout, check.stdout
    # A volume-wide rotation leaves the scope alone and says how to rotate it.
    volume_wide = ctl("rotate", vol.mnt)
    assert f"rotate --scope {a.dir}" in volume_wide.stderr, volume_wide.stderr

    done = ctl("rotate", "--scope", a.dir)
    assert "re-wrapped:       3" in done.stdout, done.stdout  # two files and the scope key
    for p in scoped + [a.dir]:
        assert record(p)[:2] == (2, a.key_ref), p
    assert {p: record(p) for p in others} == before_others
    # Only tenant a's definition changed, and it still authenticates: it mounts and reads.
    defs_after = definition(vol)
    changed = [n for n in defs_after if defs_after[n] != defs_before[n]]
    assert len(changed) == 1 and set(defs_after) == set(defs_before)
    assert ctl("rotate", "--scope", "--check", a.dir).returncode == 0
    again = ctl("rotate", "--scope", a.dir)
    assert "already current:  3" in again.stdout, again.stdout
    # The keys the re-wrap cached are the scope's still: a revocation and a lock drop them.
    a.revoke()
    ctl("scope", "lock", a.dir)
    with pytest.raises(PermissionError):
        get(a.dir / "a1.txt")
    a.restore()

    # Version 1 of the tenant's keyring is needed no more: retire it (the scope's root as the
    # volume to check), remount, and everything under the scope still reads.
    ctl("keyring", "retire", "--volume", a.dir, a.keyring, "1")
    vol.remount()
    for path, data in files.items():
        assert get(path) == data
    assert os.getxattr(a.dir / "a1.txt", "user.note") == b"a's note"
    assert a.stats()["unwrap"] == 1 + 2  # the scope key, a1 and a2: from tenant a's KMS only


def test_retire_refused_while_a_scope_uses_the_version(tenants):  # noqa: F811
    vol, a, b = tenants
    write_tree(vol, a, b)
    ctl("keyring", "rotate", a.keyring)
    refused = ctl("keyring", "retire", "--volume", a.dir, a.keyring, "1", check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "3 files still use version 1" in refused.stderr  # a1, a2 and the scope key
    assert f"rotate --scope {a.dir}" in refused.stderr, refused.stderr
    # The mountpoint is the volume's own files only: not a volume of the tenant's keyring.
    mnt = ctl("keyring", "retire", "--volume", vol.mnt, a.keyring, "1", check=False)
    assert mnt.returncode == 4 and "give the scope's root" in mnt.stderr, mnt.stderr


def test_rekey_one_scope_keeps_its_sealed_xattrs(tenants):  # noqa: F811
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    ids = {p: record(p)[2] for p in [a.dir / "a1.txt", a.dir / "deep" / "a2.txt",
                                     b.dir / "b1.txt", vol.mnt / "plain.txt"]}
    scope_key = record(a.dir)
    state = vol.root / "rekey.ids"
    cp = ctl("rotate", "--scope", "--rekey", "--state", state, a.dir)
    assert "re-keyed:         2" in cp.stdout, cp.stdout  # the scope key is re-wrapped, not re-keyed
    assert not state.exists()  # a complete run forgets its state
    for p, old in ids.items():
        assert (record(p)[2] != old) == (a.dir in p.parents), p
    assert record(a.dir) == scope_key
    assert os.getxattr(a.dir / "a1.txt", "user.note") == b"a's note"
    vol.remount()
    for path, data in files.items():
        assert get(path) == data
    assert os.getxattr(a.dir / "a1.txt", "user.note") == b"a's note"


def test_rotate_scope_refusals(tenants):  # noqa: F811
    vol, a, b = tenants
    (a.dir / "deep").mkdir()
    assert ctl("rotate", "--scope", a.dir / "deep", check=False).returncode == 2
    assert ctl("rotate", "--scope", vol.mnt, check=False).returncode == 2
    assert ctl("rotate", "--scope", "--offline", vol.backing, check=False).returncode == 2
    # A scope whose KMS refuses cannot be rotated, and says why.
    vol.remount()
    a.revoke()
    cp = ctl("rotate", "--scope", a.dir, check=False)
    assert cp.returncode == 4 and "KMS refused" in cp.stderr, cp.stderr


SCOPE_MOVE = (1 << 30) | (4097 << 16) | (0xEF << 8) | 20  # _IOW(0xef, 20, scope_create_arg)


def start_move(directory, settings):
    """What `rotate --scope --to-kms` does first, alone: as if the tool died right after it."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return fcntl.ioctl(fd, SCOPE_MOVE, bytearray(settings.encode().ljust(4097, b"\0")))
    finally:
        os.close(fd)


def test_move_a_scope_to_another_kms_interrupted_and_resumed(tenants):  # noqa: F811
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    new_keyring = vol.root / "tenant-a-new.keyring"
    new_id = make_keyring(new_keyring)
    new_ref = f"local:{new_id}"
    config = vol.root / "tenant-a-new.conf"
    config.write_text(f"[kms]\nprovider = local\nkeyring = {new_keyring}\nkeyring_id = {new_id}\n")
    scoped = [a.dir / "a1.txt", a.dir / "deep" / "a2.txt"]
    b_before = record(b.dir / "b1.txt")
    defs_before = definition(vol)

    # The move starts and the tool "dies": the scope key is the new KMS's, the files the old one's.
    start_move(a.dir, f"keyring={new_keyring}\nkeyring_id={new_id}\nprovider=local\n")
    assert record(a.dir)[1] == new_ref
    assert all(record(p)[1] == a.key_ref for p in scoped)
    moving = [d for n, d in definition(vol).items() if d != defs_before[n]]
    assert len(moving) == 1 and moving[0][5] == 1  # the moving flag (FORMAT.md)
    # A remount reads the moving definition: both KMSes open, new files get the new one's keys.
    vol.remount()
    for path, data in files.items():
        assert get(path) == data
    put(a.dir / "during.txt", b"made mid-move")
    assert record(a.dir / "during.txt")[1] == new_ref

    done = ctl("rotate", "--scope", "--to-kms", config, a.dir)
    assert "resuming" in done.stderr, done.stderr
    assert "re-wrapped:       2" in done.stdout, done.stdout  # a1 and a2; the rest were there
    for p in scoped:
        assert record(p)[1] == new_ref, p
    assert record(b.dir / "b1.txt") == b_before
    assert all(d[5] == 0 for d in definition(vol).values())  # settled
    # The old keyring is needed no more.
    a.revoke()
    vol.remount()
    for path, data in files.items():
        assert get(path) == data
    assert os.getxattr(a.dir / "a1.txt", "user.note") == b"a's note"
    assert get(a.dir / "during.txt") == b"made mid-move"
    assert next(s for s in vol.status()["scopes"].values()
                if s["key_ref"] == new_ref)["unwrap"] == 1 + 3
    # The volume's own key, or the other tenant's, is refused as a target.
    other = vol.root / "to-b.conf"
    other.write_text(f"[kms]\nprovider = local\nkeyring = {b.keyring}\nkeyring_id = {b.keyring_id}\n")
    refused = ctl("rotate", "--scope", "--to-kms", other, a.dir, check=False)
    assert refused.returncode == 1, refused.stderr
