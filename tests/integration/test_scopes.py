# SPDX-License-Identifier: MIT
"""Key scopes (issue 19; docs/FORMAT.md, "Key scopes"; docs/THREAT-MODEL.md, "Key scopes"), on real
mounts with real local keyrings: two tenants' directory trees, each under its own keyring, beside
the volume's own.  Files written in a scope survive a remount and are unwrapped by that scope's KMS
only (counted per provider, and shown by each file's key reference); renames and hard links across
a boundary fail with EXDEV (and `mv` copies); a scope whose keyring is gone is locked out with
EACCES while the rest works, and works again when the keyring comes back, without a remount;
`scope lock` drops the scope's cached keys at once; the scope's names are not the volume key's."""
import errno
import json
import os
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mounts import CTL, Volume, get, put
from vaultd import VaultServer

MARK = "SCOPEMARK"
KEY_XATTR = "trusted.envelopefs.key"


def ctl(*args, check=True):
    cp = subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert cp.returncode == 0, f"envelopefsctl {args}: {cp.returncode}\n{cp.stderr}"
    return cp


def make_keyring(path):
    ctl("keyring", "create", path)
    out = ctl("keyring", "list", path).stdout
    return next(line.split()[-1] for line in out.splitlines() if line.startswith("keyring ID"))


class Tenant:
    """A scope on directory @name of @vol, under a local keyring of its own beside the volume's."""

    def __init__(self, vol, name):
        self.vol = vol
        self.dir = vol.mnt / name
        self.keyring = vol.root / f"{name}.keyring"
        self.keyring_id = make_keyring(self.keyring)
        self.key_ref = f"local:{self.keyring_id}"
        self.dir.mkdir()

    def create(self, check=True):
        return ctl("scope", "create", "--kms", "local", "--kms-setting", f"keyring={self.keyring}",
                   "--kms-setting", f"keyring_id={self.keyring_id}", self.dir, check=check)

    def stats(self):
        return next(s for s in self.vol.status()["scopes"].values()
                    if s["key_ref"] == self.key_ref)

    def revoke(self):
        os.rename(self.keyring, f"{self.keyring}.revoked")

    def restore(self):
        os.rename(f"{self.keyring}.revoked", self.keyring)


def two_tenants(tmp_path, placement):
    vol = Volume(tmp_path, placement=placement, names="encrypted")
    vol.mount()
    a, b = Tenant(vol, "tenant-a"), Tenant(vol, "tenant-b")
    a.create()
    b.create()
    return vol, a, b


@pytest.fixture
def tenants(tmp_path):
    vol, a, b = two_tenants(tmp_path, "header")
    yield vol, a, b
    vol.unmount()


@pytest.fixture
def xattr_tenants(tmp_path):
    """Key records in xattrs: room for any KMS's records (a header slot is sized for the volume's)."""
    vol, a, b = two_tenants(tmp_path, "xattr")
    yield vol, a, b
    vol.unmount()


def key_ref_of(path):
    """The master-key reference of a file's key record (fs/status.h, KEY_XATTR)."""
    return os.getxattr(path, KEY_XATTR).decode().split()[1]


def files_of(vol, a, b):
    return {
        vol.mnt / "plain.txt": b"volume's own",
        a.dir / "a1.txt": b"tenant a, one" * 1000,
        a.dir / "deep" / "a2.txt": b"tenant a, two",
        b.dir / "b1.txt": b"tenant b" * 3000,
    }


def write_tree(vol, a, b):
    files = files_of(vol, a, b)
    (a.dir / "deep").mkdir()
    for path, data in files.items():
        put(path, data)
    os.symlink("../a1.txt", a.dir / "deep" / "link")
    os.setxattr(a.dir / "a1.txt", "user.note", b"a's note")
    return files


def test_write_remount_read_each_scope_on_its_own_kms(tenants):
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    assert key_ref_of(vol.mnt / "plain.txt") != a.key_ref
    assert key_ref_of(a.dir / "a1.txt") == a.key_ref
    assert key_ref_of(a.dir / "deep" / "a2.txt") == a.key_ref
    assert key_ref_of(b.dir / "b1.txt") == b.key_ref
    # Every new key came from its own scope's KMS (the scope key is one more).
    assert a.stats()["generate"] == 1 + 2 and b.stats()["generate"] == 1 + 1

    vol.remount()
    for path, data in files.items():
        assert get(path) == data
    assert os.readlink(a.dir / "deep" / "link") == "../a1.txt"
    assert get(a.dir / "deep" / "link") == files[a.dir / "a1.txt"]
    assert os.getxattr(a.dir / "a1.txt", "user.note") == b"a's note"
    assert sorted(os.listdir(a.dir)) == ["a1.txt", "deep"]
    # The audit: each unwrap went to its own scope's KMS, once per key (and the volume's KMS
    # unwrapped its volume key and its own file only).
    status = vol.status()
    assert a.stats()["unwrap"] == 1 + 2, status["scopes"]
    assert b.stats()["unwrap"] == 1 + 1, status["scopes"]
    assert status["kms"]["unwrap"] == 1 + 1, status["kms"]
    assert all(s["failures"] == 0 and s["unlocked"] for s in status["scopes"].values())

    human = ctl("status", vol.mnt).stdout
    assert f"local, master key {a.key_ref}, unlocked" in human, human
    assert "generate 0, unwrap 3, failures 0, refused 0, locked 0 times" in human, human
    listed = ctl("scope", "list", vol.mnt).stdout
    assert f"{a.key_ref}" in listed and str(a.dir) in listed and str(b.dir) in listed

    # The same per-scope counters as Prometheus metrics, read by Prometheus' own parser.
    samples = {}
    for family in text_string_to_metric_families(ctl("status", "--format", "prometheus",
                                                     vol.mnt).stdout):
        for sample in family.samples:
            if "scope" in sample.labels:
                key = (sample.name, sample.labels["scope"], sample.labels.get("operation"))
                samples[key] = sample.value
    for scope_id, s in status["scopes"].items():
        assert samples[("envelopefs_scope_kms_operations_total", scope_id, "unwrap")] == \
            s["unwrap"], samples
        assert samples[("envelopefs_scope_kms_operations_total", scope_id, "generate")] == \
            s["generate"], samples
        assert samples[("envelopefs_scope_kms_failures_total", scope_id, None)] == 0
        assert samples[("envelopefs_scope_unlocked", scope_id, None)] == 1
    assert len({k[1] for k in samples}) == 2, samples


def test_exdev_across_every_boundary(tenants):
    vol, a, b = tenants
    put(vol.mnt / "v.txt", b"v")
    put(a.dir / "a.txt", b"a")
    put(b.dir / "b.txt", b"b")
    (a.dir / "sub").mkdir()
    (vol.mnt / "vdir").mkdir()
    for src, dst in [(vol.mnt / "v.txt", a.dir / "v.txt"), (a.dir / "a.txt", vol.mnt / "a.txt"),
                     (a.dir / "a.txt", b.dir / "a.txt"), (b.dir / "b.txt", a.dir / "sub" / "b"),
                     (vol.mnt / "vdir", a.dir / "vdir"), (a.dir / "sub", vol.mnt / "sub")]:
        with pytest.raises(OSError) as e:
            os.rename(src, dst)
        assert e.value.errno == errno.EXDEV, (src, dst)
        if src.is_file():
            with pytest.raises(OSError) as e:
                os.link(src, dst)
            assert e.value.errno == errno.EXDEV, (src, dst)
    # Inside a scope, and a scope's root inside the volume, everything moves as before.
    os.rename(a.dir / "a.txt", a.dir / "sub" / "a.txt")
    os.link(a.dir / "sub" / "a.txt", a.dir / "a-link")
    os.rename(a.dir, vol.mnt / "vdir" / "tenant-a")
    moved = vol.mnt / "vdir" / "tenant-a"
    assert get(moved / "a-link") == b"a"
    # mv copies across the boundary, and the copy is keyed by its new scope.
    subprocess.run(["mv", str(b.dir / "b.txt"), str(moved / "b.txt")], check=True)
    assert get(moved / "b.txt") == b"b" and not (b.dir / "b.txt").exists()
    assert key_ref_of(moved / "b.txt") == a.key_ref
    vol.remount()
    assert get(moved / "b.txt") == b"b" and get(moved / "sub" / "a.txt") == b"a"


def test_revoked_scope_fails_alone_and_comes_back_without_remount(tenants):
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    vol.remount()  # nothing cached: every key comes from its KMS again
    a.revoke()
    for path in [a.dir / "a1.txt", a.dir / "deep" / "a2.txt"]:
        with pytest.raises(PermissionError):
            get(path)
    with pytest.raises(PermissionError):
        os.listdir(a.dir)
    with pytest.raises(PermissionError):
        put(a.dir / "new.txt", b"x")
    # The rest of the volume does not notice.
    assert get(vol.mnt / "plain.txt") == files[vol.mnt / "plain.txt"]
    assert get(b.dir / "b1.txt") == files[b.dir / "b1.txt"]
    put(b.dir / "b2.txt", b"still writing")
    assert a.stats()["refusals"] >= 1 and not a.stats()["unlocked"]

    a.restore()
    assert get(a.dir / "a1.txt") == files[a.dir / "a1.txt"]
    assert sorted(os.listdir(a.dir)) == ["a1.txt", "deep"]
    put(a.dir / "new.txt", b"x")
    assert a.stats()["unlocked"]


def test_scope_lock_drops_cached_keys_at_once(tenants):
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    assert get(a.dir / "a1.txt") == files[a.dir / "a1.txt"]
    assert get(b.dir / "b1.txt") == files[b.dir / "b1.txt"]
    before = vol.status()
    b_unwraps = b.stats()["unwrap"]
    # The keyring goes; while the scope's keys are cached, its files still read (the window).
    a.revoke()
    assert get(a.dir / "a1.txt") == files[a.dir / "a1.txt"]
    ctl("scope", "lock", a.dir)
    after = vol.status()
    assert after["cache"]["entries"] == before["cache"]["entries"] - 2  # a1, a2: gone
    assert a.stats()["locks"] == 1 and not a.stats()["unlocked"]
    with pytest.raises(PermissionError):
        get(a.dir / "a1.txt")
    with pytest.raises(PermissionError):
        os.listdir(a.dir / "deep")
    assert get(b.dir / "b1.txt") == files[b.dir / "b1.txt"]
    assert b.stats()["unwrap"] == b_unwraps and b.stats()["unlocked"]  # b's keys stayed
    a.restore()
    unwraps = a.stats()["unwrap"]
    assert get(a.dir / "a1.txt") == files[a.dir / "a1.txt"]
    assert a.stats()["unwrap"] == unwraps + 2  # the scope key, then a1's key, from the KMS again
    # Locking a directory that is not a scope's root is refused.
    assert ctl("scope", "lock", a.dir / "deep", check=False).returncode == 1
    assert ctl("scope", "lock", vol.mnt, check=False).returncode == 1


def test_scope_names_are_not_the_volume_keys(tenants):
    vol, a, b = tenants
    (a.dir / f"{MARK}dir").mkdir()
    put(a.dir / f"{MARK}file", b"x")
    put(vol.mnt / f"{MARK}outside", b"y")
    os.symlink(f"{MARK}target", a.dir / f"{MARK}link")
    os.setxattr(a.dir / f"{MARK}file", f"user.{MARK}", MARK.encode())
    vol.unmount()
    try:
        for root, dirs, names in os.walk(vol.backing):
            for n in dirs + names:
                assert MARK not in n
                p = os.path.join(root, n)
                if os.path.islink(p):
                    assert MARK not in os.readlink(p)
                for x in os.listxattr(p, follow_symlinks=False):
                    assert MARK not in x
        # Offline, with the volume's key only (the tenant's keyring away): the volume's own
        # names decrypt, the scope's do not; with the tenant's keyring, they do.
        outside = ctl("ls", "--backing", vol.backing, "/")
        assert f"{MARK}outside" in outside.stdout
        a.revoke()
        inside = ctl("ls", "--backing", vol.backing, "/tenant-a", check=False)
        assert inside.returncode == 4 and MARK not in inside.stdout + inside.stderr
        a.restore()
        inside = ctl("ls", "--backing", vol.backing, "/tenant-a")
        assert f"d {MARK}dir" in inside.stdout and f"f {MARK}file" in inside.stdout
        registry = os.listdir(vol.backing / "envelopefs.scopes")
        assert len(registry) == 2 and all(len(n) == 22 for n in registry)
    finally:
        vol.mount()


def test_scope_create_refusals(tenants, tmp_path):
    vol, a, b = tenants
    (a.dir / "inner").mkdir()
    nested = Tenant.__new__(Tenant)
    nested.vol, nested.dir = vol, a.dir / "inner"
    nested.keyring = tmp_path / "nested.keyring"
    nested.keyring_id = make_keyring(nested.keyring)
    cp = nested.create(check=False)
    assert cp.returncode == 1 and "nested" in cp.stderr
    # Not empty: refused with a clear message.
    full = vol.mnt / "full"
    full.mkdir()
    put(full / "f", b"f")
    c = Tenant.__new__(Tenant)
    c.vol, c.dir, c.keyring, c.keyring_id = vol, full, nested.keyring, nested.keyring_id
    cp = c.create(check=False)
    assert cp.returncode == 1 and "not empty" in cp.stderr
    # The volume's own master key, or another scope's, is refused: a scope needs its own.
    (vol.mnt / "same").mkdir()
    same = Tenant.__new__(Tenant)
    same.vol, same.dir, same.keyring, same.keyring_id = vol, vol.mnt / "same", a.keyring, \
        a.keyring_id
    assert same.create(check=False).returncode == 1
    # A root twice.
    assert a.create(check=False).returncode == 1
    assert len(vol.status()["scopes"]) == 2


def test_removing_a_scope_root_drops_its_definition(tenants):
    vol, a, b = tenants
    put(a.dir / "f", b"f")
    os.unlink(a.dir / "f")
    a.dir.rmdir()
    assert len(os.listdir(vol.backing / "envelopefs.scopes")) == 1
    assert [s["key_ref"] for s in vol.status()["scopes"].values()] == [b.key_ref]
    # Its key may make a new scope at once.
    a.dir.mkdir()
    a.create()
    put(a.dir / "again", b"again")
    vol.remount()
    assert get(a.dir / "again") == b"again"
    a.dir.joinpath("again").unlink()
    a.dir.rmdir()
    vol.remount()
    assert [s["key_ref"] for s in vol.status()["scopes"].values()] == [b.key_ref]


def test_plain_names_volume_has_no_scopes(tmp_path):
    vol = Volume(tmp_path, placement="header", names="plain")
    vol.mount()
    try:
        t = Tenant(vol, "t")
        assert t.create(check=False).returncode == 1
        assert vol.status()["scopes"] == {}
    finally:
        vol.unmount()


def test_volume_rotation_leaves_scopes_to_their_own_kms(tenants):
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    ctl("keyring", "rotate", vol.keyring)
    before = os.getxattr(a.dir / "a1.txt", KEY_XATTR)
    cp = ctl("rotate", vol.mnt)
    assert "a key scope, left to its own KMS" in cp.stderr
    assert os.getxattr(vol.mnt / "plain.txt", KEY_XATTR).split()[0] == b"2"
    assert os.getxattr(a.dir / "a1.txt", KEY_XATTR) == before
    assert ctl("rotate", "--check", vol.mnt).returncode == 0
    vol.remount()
    for path, data in files.items():
        assert get(path) == data


def test_only_a_volume_with_scopes_changes_its_configuration(tmp_path):
    """`scopes = true` comes with the first scope, sealed: a volume without scopes keeps its
    configuration byte for byte, and one with them mounts again (its MAC and pin hold)."""
    vol = Volume(tmp_path, placement="xattr", names="encrypted")
    conf = vol.backing / "envelopefs.conf"
    before = conf.read_bytes()
    vol.mount()
    try:
        (vol.mnt / "d").mkdir()
        put(vol.mnt / "d" / "f", b"f")
        vol.remount()
        assert conf.read_bytes() == before
        t = Tenant(vol, "t")
        t.create()
        after = conf.read_text()
        assert "scopes = true\n" in after and after != before.decode()
        put(t.dir / "f", b"scoped")
        vol.remount()
        assert get(t.dir / "f") == b"scoped" and get(vol.mnt / "d" / "f") == b"f"
        # Without the line, the registry is not trusted (a storage host cannot drop it: the MAC
        # covers it, so the mount stops before that).
        vol.unmount()
        conf.write_text(after.replace("scopes = true\n", ""))
        proc = vol.mount(check=False)
        assert proc.returncode == 3 and "scopes was removed" in proc.stderr, proc.stderr
        other_host = dict(os.environ, ENVELOPEFS_STATE_DIR=str(tmp_path / "other-host"))
        proc = vol.mount(check=False, env=other_host)
        assert proc.returncode == 3 and "mac does not match" in proc.stderr, proc.stderr
    finally:
        vol.unmount()


def vault_scope(vol, server, name):
    vdir = vol.mnt / name
    vdir.mkdir()
    return ctl("scope", "create", "--kms", "vault", "--kms-setting", f"address={server.url}",
               "--kms-setting", f"key={name}", "--kms-setting",
               f"token_file={server.token_file}", vdir, check=False)


def test_scope_whose_records_outgrow_the_header_slots_is_refused(tenants, tmp_path):
    """A header slot is sized at init for the volume's own KMS's records; a scope on a KMS whose
    records need more room is refused at once, rather than failing its first re-wrap later."""
    vol, a, b = tenants
    server = VaultServer(tmp_path / "vault")
    try:
        server.create_key("tenant-v", derived=True)
        cp = vault_scope(vol, server, "tenant-v")
        assert cp.returncode == 1, cp.stdout + cp.stderr
        assert "header slots" in cp.stderr, cp.stderr
        assert len(vol.status()["scopes"]) == 2
    finally:
        server.stop()


def test_vault_scope_beside_local_ones(xattr_tenants, tmp_path):
    """A scope on the Vault Transit test server: its unwraps reach that server and nothing else
    does; a token the server no longer accepts locks that scope out alone, until it is back."""
    vol, a, b = xattr_tenants
    server = VaultServer(tmp_path / "vault")
    try:
        server.create_key("tenant-v", derived=True)
        vdir = vol.mnt / "tenant-v"
        assert vault_scope(vol, server, "tenant-v").returncode == 0
        files = write_tree(vol, a, b)
        for i in range(3):
            put(vdir / f"v{i}", b"vault tenant %d" % i * 500)
        vol.remount()
        before = server.stats().get("decrypt_items", 0)
        for path, data in files.items():
            assert get(path) == data
        assert server.stats().get("decrypt_items", 0) == before  # no other scope asks Vault
        for i in range(3):
            assert get(vdir / f"v{i}") == b"vault tenant %d" % i * 500
        # The scope key, then each file's key: from the scope's own KMS.
        assert server.stats().get("decrypt_items", 0) == before + 1 + 3
        vstats = next(s for s in vol.status()["scopes"].values() if s["provider"] == "vault")
        assert vstats["unwrap"] == 1 + 3 and key_ref_of(vdir / "v0") == vstats["key_ref"]

        server.set_token("s.revoked")
        ctl("scope", "lock", vdir)
        with pytest.raises(PermissionError):
            get(vdir / "v1")
        assert get(a.dir / "a1.txt") == files[a.dir / "a1.txt"]
        server.set_token(server.token)
        assert get(vdir / "v1") == b"vault tenant 1" * 500
    finally:
        server.stop()


def test_fsck_leaves_scopes_to_their_own_kms(tenants):
    """fsck checks the volume's own tree and leaves a scope's (sealed under keys it does not hold)
    alone: no false damage, and --repair keeps a scope's link-store files it cannot attribute."""
    vol, a, b = tenants
    files = write_tree(vol, a, b)
    long_target = "t" * 3500  # stored in the link store
    os.symlink(long_target, a.dir / "long")
    vol.unmount()
    try:
        cp = ctl("fsck", "--repair", vol.backing)
        assert "0 problems" in cp.stdout, cp.stdout + cp.stderr
        assert "/tenant-a: a key scope, not checked" in cp.stderr
        assert "/tenant-b: a key scope, not checked" in cp.stderr
    finally:
        vol.mount()
    assert os.readlink(a.dir / "long") == long_target
    for path, data in files.items():
        assert get(path) == data
