# SPDX-License-Identifier: MIT
"""The vault provider end to end: real mounts whose DEKs are wrapped by the Transit test server
(tests/kmsd/vault_transit.py, itself checked against hvac by test_vault_server.py)."""
import base64
import errno
import hashlib
import hmac
import os
import shutil
import subprocess
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mounts import CTL, DAEMON, Volume, get, get_when_back, is_mounted, put, unmount
from vaultd import VaultServer


class VaultVolume(Volume):
    """A volume initialised with --kms vault against @server's key @key."""

    def __init__(self, root, server, key="vol", placement="header", names="plain", **settings):
        self.root = root
        self.names = names
        self.backing = root / "backing"
        self.mnt = root / "mnt"
        self.placement = placement
        self.block_size = 4096
        self.backing.mkdir(parents=True)
        self.mnt.mkdir()
        self.options = ()
        settings = {"address": server.url, "key": key, "token_file": server.token_file, **settings}
        # Plain names by default: the tests count KMS calls per file and read backing files by name.
        args = [str(CTL), "init", "--kms", "vault", "--names", names, "--header",
                "file" if placement == "header" else "xattr"]
        for name, value in settings.items():
            args += ["--kms-setting", f"{name}={value}"]
        self.init = subprocess.run(args + [str(self.backing)], capture_output=True, text=True)
        assert self.init.returncode == 0, self.init.stderr

    def versions(self):
        """{key version: file count} from `envelopefsctl rotate --check` on the mount."""
        cp = subprocess.run([str(CTL), "rotate", "--check", str(self.mnt)], capture_output=True,
                            text=True)
        counts = {}
        for line in cp.stdout.splitlines():
            line = line.strip()
            if line.startswith("version "):
                v, n = line[len("version "):].split(":")
                counts[int(v)] = int(n)
        return counts


@pytest.fixture
def server(tmp_path):
    srv = VaultServer(tmp_path / "vault")
    srv.create_key("vol", derived=True)
    yield srv
    srv.stop()


def init_fails(tmp_path, server, **settings):
    backing = tmp_path / "refused"
    backing.mkdir(exist_ok=True)
    args = [str(CTL), "init", "--kms", "vault"]
    for name, value in {"address": server.url, "key": "vol", "token_file": server.token_file,
                        **settings}.items():
        args += ["--kms-setting", f"{name}={value}"]
    cp = subprocess.run(args + [str(backing)], capture_output=True, text=True)
    assert cp.returncode != 0
    assert os.listdir(backing) == []  # nothing written
    return cp.stderr


def write_unmounted(vol, name, data):
    """Mount @vol, write one file, unmount: its key record is then only on disk."""
    vol.mount()
    try:
        put(vol.mnt / name, data)
    finally:
        vol.unmount()


def write_remount_read(vol, name, data):
    put(vol.mnt / name, data)
    vol.remount()
    assert get(vol.mnt / name) == data


def fill(root, n, prefix="f"):
    expected = {}
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        data = os.urandom(100 + 37 * i)
        put(root / f"{prefix}{i}", data)
        expected[f"{prefix}{i}"] = data
    return expected


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_mount_write_remount_read(tmp_path, server, placement):
    vol = VaultVolume(tmp_path / "v", server, placement=placement)
    assert "vault:transit/vol" in vol.init.stdout
    vol.mount()
    try:
        files = fill(vol.mnt / "d", 5)
        put(vol.mnt / "top", b"x" * 100000)
        vol.remount()
        for name, data in files.items():
            assert get(vol.mnt / "d" / name) == data
        assert get(vol.mnt / "top") == b"x" * 100000
        st = vol.status()["kms"]
        assert st["provider"] == "vault" and st["key_ref"] == "vault:transit/vol"
        assert st["current_version"] == 1 and st["unwrap"] >= 6
        assert vol.versions() == {1: 6}
    finally:
        vol.unmount()
    # The key records hold Transit ciphertext bound to the context: the stored blob is "vault:v1:...".
    if placement == "header":
        assert b"vault:v1:" in (vol.backing / "top").read_bytes()[:512]
    stats = server.stats()
    # Six files took six keys; the daemon's pool made more ahead (refills at each mount), its own DEKs
    # wrapped by Transit encrypt in batches.
    assert stats["encrypt_items"] + stats.get("datakey", 0) >= 6 and stats["decrypt_items"] >= 6
    assert stats["encrypt_items"] > stats["encrypt"]


def test_rotate_uses_transit_rewrap(tmp_path, server):
    vol = VaultVolume(tmp_path / "v", server)
    vol.mount()
    try:
        files = fill(vol.mnt, 20)
        assert server.rotate("vol") == 2
        cp = subprocess.run([str(CTL), "rotate", "--jobs", "4", str(vol.mnt)], capture_output=True,
                            text=True)
        assert cp.returncode == 0, cp.stderr
        stats = server.stats()
        # Every record went through Transit's rewrap (parallel ones may share a batch_input request).
        assert stats["rewrap_items"] == 20 and 1 <= stats["rewrap"] <= 20
        assert vol.versions() == {2: 20}
        # Version 1 is gone for decryption: files still open after a remount, so the blobs really moved.
        server.configure("vol", min_decryption_version=2)
        vol.remount()
        for name, data in files.items():
            assert get(vol.mnt / name) == data
    finally:
        vol.unmount()


def test_min_decryption_version_refuses_old_blobs(tmp_path, server):
    vol = VaultVolume(tmp_path / "v", server)
    vol.mount()
    try:
        put(vol.mnt / "old", b"old data")
        server.rotate("vol")
        server.configure("vol", min_decryption_version=2)
        vol.remount()  # the DEK cache is gone: the old blob must be unwrapped again
        with pytest.raises(OSError) as e:
            get(vol.mnt / "old")
        assert e.value.errno == errno.EIO
        assert vol.status()["errors"]["key"] >= 1
        put(vol.mnt / "new", b"new data")  # new files use version 2
        assert vol.versions().get(2) == 1
        cp = subprocess.run([str(CTL), "rotate", str(vol.mnt)], capture_output=True, text=True)
        assert cp.returncode != 0 and "failed:           1" in cp.stdout
    finally:
        vol.unmount()


def test_refusals_at_init(tmp_path, server):
    bad_token = tmp_path / "bad-token"
    bad_token.write_text("s.not-the-token\n")
    bad_token.chmod(0o600)
    assert "denied" in init_fails(tmp_path, server, token_file=bad_token)
    assert "no Transit key transit/nokey" in init_fails(tmp_path, server, key="nokey")
    assert "in the clear" in init_fails(tmp_path, server, address="http://192.0.2.1:8200")
    server.create_key("underived", derived=False)
    assert "not a derived key" in init_fails(tmp_path, server, key="underived")
    loose = tmp_path / "loose-token"
    loose.write_text(server.token)
    loose.chmod(0o644)
    assert "chmod 600" in init_fails(tmp_path, server, token_file=loose)
    assert "not known to the vault provider" in init_fails(tmp_path, server, kms_typo="1")
    cp = subprocess.run([str(CTL), "init", "--kms", "vault", "--kms-setting", "token=abc",
                         str(tmp_path / "refused")], capture_output=True, text=True)
    assert cp.returncode != 0 and "secret" in cp.stderr


def test_revoked_token_then_renewed_file(tmp_path, server):
    vol = VaultVolume(tmp_path / "v", server)
    # Without a pool of keys made ahead, a revoked token stops new files at once.
    cfg = tmp_path / "daemon.ini"
    cfg.write_text("[daemon]\ndek_pool = 0\n")
    vol.mount(f"config={cfg}")
    try:
        put(vol.mnt / "a", b"before")
        server.set_token("s.renewed")  # the old token is revoked
        with pytest.raises(OSError) as e:
            put(vol.mnt / "b", b"refused")
        assert e.value.errno == errno.EIO
        assert os.path.getsize(vol.backing / "b") == 0  # no data, no key record
        # A token sink (Vault Agent) rewrites the file: the daemon picks it up on the next 403.
        time.sleep(1.1)
        server.token_file.write_text("s.renewed\n")
        put(vol.mnt / "c", b"after")
        vol.remount()
        assert get(vol.mnt / "c") == b"after" and get(vol.mnt / "a") == b"before"
    finally:
        vol.unmount()


def test_encrypted_names_with_the_volume_key_in_vault(tmp_path, server):
    """The volume key is wrapped by Transit like a DEK: names work through it across a remount,
    and a Transit rotation re-wraps it with the files."""
    vol = VaultVolume(tmp_path / "v", server, names="encrypted")
    vol.mount()
    try:
        os.mkdir(vol.mnt / "a dir")
        put(vol.mnt / "a dir" / "secret name", b"payload")
        vol.remount()
        assert os.listdir(vol.mnt) == ["a dir"]
        assert get(vol.mnt / "a dir" / "secret name") == b"payload"
        assert not any("secret" in n or "a dir" in n for n in os.listdir(vol.backing))
        server.rotate("vol")
        run = subprocess.run([str(CTL), "rotate", "--json", str(vol.mnt)], capture_output=True,
                             text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        assert '"rewrapped":2' in run.stdout  # the file and the volume key
        vol.remount()
        assert get(vol.mnt / "a dir" / "secret name") == b"payload"
    finally:
        vol.unmount()


def test_blob_from_another_volume_does_not_unwrap(tmp_path, server):
    a = VaultVolume(tmp_path / "a", server)
    b = VaultVolume(tmp_path / "b", server)
    write_unmounted(a, "secret", b"volume a only")
    shutil.copyfile(a.backing / "secret", b.backing / "secret")
    b.mount()
    try:
        with pytest.raises(OSError) as e:
            get(b.mnt / "secret")
        assert e.value.errno == errno.EIO
        # Vault refused the unwrap (the context names volume a): a key error, not a record MAC failure.
        assert b.status()["errors"]["key"] >= 1
        assert b.status()["errors"]["integrity"] == 0
    finally:
        b.unmount()


def test_tag_failure_as_http_500_is_a_bad_blob_not_an_outage(tmp_path):
    """Vault answers a failed GCM tag with HTTP 500: the provider must neither retry it nor count
    it against the circuit breaker; a rotation fails that file alone."""
    srv = VaultServer(tmp_path / "vault", gcm_failure_status=500)
    try:
        srv.create_key("vol", derived=True)
        a = VaultVolume(tmp_path / "a", srv)
        b = VaultVolume(tmp_path / "b", srv)
        write_unmounted(a, "secret", b"volume a only")
        shutil.copyfile(a.backing / "secret", b.backing / "foreign")
        for i in range(6):
            write_unmounted(b, f"own{i}", b"b %d" % i)
        b.mount()
        try:
            # The first lookup reads the directory's DEKs ahead (prefetch): let that batch, in which
            # the foreign blob fails quietly, end before counting.
            os.listdir(b.mnt)
            deadline = time.monotonic() + 10
            while sum(b.status()["prefetch"][k] for k in ("unwrapped", "failed")) < 7:
                assert time.monotonic() < deadline, b.status()["prefetch"]
                time.sleep(0.05)
            before = srv.stats().get("decrypt_items", 0)
            for _ in range(4):  # more than the breaker's threshold of failed calls
                with pytest.raises(OSError) as e:
                    get(b.mnt / "foreign")
                assert e.value.errno == errno.EIO
            # No retries: at most the kernel's two tries of each read (open, then read-ahead),
            # where retrying would have made four attempts of each.
            assert srv.stats().get("decrypt_items", 0) - before <= 8
            svc = b.status()["kms"]["service"]
            assert svc["breaker"] == "closed" and svc["breaker_opens"] == 0
            assert get(b.mnt / "own0") == b"b 0"  # Vault is not taken for down
            # A rotation fails the foreign file alone (its DEK does not unwrap).
            srv.rotate("vol")
            run = subprocess.run([str(CTL), "rotate", "--jobs", "8", "--json", str(b.mnt)],
                                 capture_output=True, text=True, timeout=120)
            assert run.returncode == 1
            assert "foreign" in run.stderr
            assert '"rewrapped":6' in run.stdout and '"failed":1' in run.stdout
        finally:
            b.unmount()
    finally:
        srv.stop()


def mount_foreground(vol, log_path, *options):
    """Run the daemon with -f (logging to stderr, here @log_path) and -o @options until the mount is
    live."""
    opts = [arg for o in options for arg in ("-o", o)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(DAEMON), "-f", *opts, str(vol.backing), str(vol.mnt)], stderr=log)
    deadline = time.monotonic() + 20
    while not is_mounted(vol.mnt):
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.05)
    return proc


def test_server_down_cached_files_work_uncached_fail_then_recover(tmp_path, server):
    vol = VaultVolume(tmp_path / "v", server, deadline_ms=1500)
    write_unmounted(vol, "hot", b"cached")
    for name in ("cold", "cold2", "cold3"):
        write_unmounted(vol, name, b"not cached")
    log = tmp_path / "daemon.log"
    # Prefetch off: looking "hot" up would read its directory's DEKs ahead, the cold ones too.
    conf = tmp_path / "daemon.ini"
    conf.write_text("[daemon]\nprefetch = false\n")
    daemon = mount_foreground(vol, log, f"config={conf}")
    try:
        assert get(vol.mnt / "hot") == b"cached"  # its DEK is now cached
        server.stop()
        assert get(vol.mnt / "hot") == b"cached"
        put(vol.mnt / "hot", b"still writable")
        assert get(vol.mnt / "hot") == b"still writable"
        # Three files fail (a read retried at once takes its file's fresh failure), then the breaker
        # is open and a fourth try fails fast: no hang.
        for name in ("cold", "cold2", "cold3", "cold"):
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                get(vol.mnt / name)
            assert e.value.errno == errno.EIO
            assert time.monotonic() - t0 < 5
        # A new file takes a key the daemon's pool made while Vault was up.
        put(vol.mnt / "new", b"written while down")
        assert get(vol.mnt / "new") == b"written while down"
        server.start()
        assert get_when_back(vol.mnt / "cold") == b"not cached"
        put(vol.mnt / "new", b"recovered")
        assert get(vol.mnt / "new") == b"recovered"
        assert vol.status()["kms"]["service"]["breaker"] == "closed"
    finally:
        vol.unmount()
        daemon.wait(timeout=20)
    # The log says once that Vault went away and once that it came back, however many calls failed.
    text = log.read_text()
    assert text.count("unreachable") == 1 and text.count("reachable again") == 1, text


def test_tls_with_ca_file(tmp_path):
    srv = VaultServer(tmp_path / "vault", tls=True)
    try:
        srv.create_key("vol")
        assert "TLS" in init_fails(tmp_path, srv)  # the system store does not know this certificate
        vol = VaultVolume(tmp_path / "v", srv, ca_file=srv.cert)
        vol.mount()
        try:
            write_remount_read(vol, "f", b"over TLS")
        finally:
            vol.unmount()
    finally:
        srv.stop()


def test_namespace(tmp_path, server):
    server.create_key("nskey", namespace="team-a")
    assert "no Transit key" in init_fails(tmp_path, server, key="nskey")
    vol = VaultVolume(tmp_path / "v", server, key="nskey", namespace="team-a")
    assert "vault:team-a/transit/nskey" in vol.init.stdout
    vol.mount()
    try:
        write_remount_read(vol, "f", b"in a namespace")
    finally:
        vol.unmount()


def hkdf(ikm, salt, info):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def test_record_opens_independently_with_the_transit_key(tmp_path, server):
    """The stored blob is Transit ciphertext under HKDF(key, info = volume UUID || file ID), as FORMAT.md says:
    decrypted here with python cryptography and the server's key material, its DEK verifies the record MAC."""
    vol = VaultVolume(tmp_path / "v", server)
    write_unmounted(vol, "f", b"independent")
    conf = (vol.backing / "envelopefs.conf").read_text()
    uuid = bytes.fromhex(conf.split("uuid = ")[1].split()[0].replace("-", ""))
    raw = (vol.backing / "f").read_bytes()
    assert raw[:4] == b"EFSL"
    rec = raw[14:14 + int.from_bytes(raw[12:14], "big")]
    assert rec[:4] == b"EFKR"
    file_id, version, n = rec[6:22], int.from_bytes(rec[22:26], "big"), rec[26]
    assert rec[27:27 + n] == b"vault:transit/vol"
    w = int.from_bytes(rec[27 + n:29 + n], "big")
    blob = rec[29 + n:29 + n + w].decode()
    assert blob.startswith(f"vault:v{version}:")
    key = base64.b64decode(server.key_material("vol")["versions"][str(version)])
    body = base64.b64decode(blob.split(":")[2])
    dek = AESGCM(hkdf(key, None, uuid + file_id)).decrypt(body[:12], body[12:], None)
    mac_key = hkdf(dek, uuid, b"envelopefs v1 key-record mac")
    # A version-2 record has an extension before its MAC; on a format-3 volume it holds the
    # file's version (tag 2, 8 bytes: 1) and its one entry binding (tag 3, 16 bytes).
    e = rec[29 + n + w]
    ext = rec[30 + n + w:30 + n + w + e]
    assert rec[4] == 2 and e == 28 and ext[:10] == bytes([2, 8]) + (1).to_bytes(8, "big")
    assert ext[10:12] == bytes([3, 16])
    assert hmac.new(mac_key, rec[:30 + n + w + e], hashlib.sha256).digest() == rec[30 + n + w + e:]
