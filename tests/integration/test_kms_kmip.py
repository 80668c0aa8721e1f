"""The kmip provider end to end, against PyKMIP's server (pykmip-server, a real KMIP implementation).

The server runs with its own PKI (tests/kmsd/kmip_server.py: an openssl-made CA, server and client
certificates) and keys are made with PyKMIP's own client, as an operator would; `envelopefsctl init
--kms kmip`, the daemon and `envelopefsctl rotate` then talk KMIP 1.4 over mutual TLS to it. Each test
uses master keys of its own name, so they share one server per module (a second one where a test stops
its server).
"""
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from mounts import CTL, DAEMON, Volume, get, is_mounted, put, unmount
from test_migrate import Writer, assert_finished, check_contents, populate, write_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kmsd"))
from kmip_server import KmipPeer, make_pki  # noqa: E402

EXIT_KEYS = 4
EXIT_USAGE = 2


@pytest.fixture(scope="module")
def kmip(tmp_path_factory):
    peer = KmipPeer(tmp_path_factory.mktemp("kmip"))
    yield peer
    peer.stop()


def ctl(*args, check=False):
    return subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=300)


def fresh_name():
    return "envfs-" + uuid.uuid4().hex[:8]


class KmipVolume(Volume):
    """A volume on the KMIP server: init through envelopefsctl, mounts through the real daemon."""

    def __init__(self, root, peer, key_name, placement="header", names="plain", **settings):
        # Not Volume.__init__: that one makes a local keyring volume.
        self.root, self.peer, self.key_name = Path(root), peer, key_name
        self.placement, self.names = placement, names
        self.backing, self.mnt = self.root / "backing", self.root / "mnt"
        self.mnt.mkdir(parents=True)
        args = ["init", "--kms", "kmip", "--names", names, "--header",
                "file" if placement == "header" else "xattr"]
        for k, v in {**peer.settings(key_name), **settings}.items():
            args += ["--kms-setting", f"{k}={v}"]
        self.init = ctl(*args, self.backing)

    def versions(self):
        """Master-key version of every regular file's key record, by path relative to the mount."""
        out = {}
        for root, _, files in os.walk(self.mnt):
            for name in files:
                p = os.path.join(root, name)
                try:
                    out[os.path.relpath(p, self.mnt)] = int(
                        os.getxattr(p, "trusted.envelopefs.key").split()[0])
                except OSError:
                    pass  # an empty file has no record
        return out


def write_files(m, n=20, sub="d"):
    contents = {}
    os.makedirs(m / sub, exist_ok=True)
    for i in range(n):
        data = os.urandom([1, 100, 4096, 3 * 4096 + 5, 70000][i % 5])
        put(m / sub / f"f{i}", data)
        contents[f"{sub}/f{i}"] = data
    return contents


def kms_status(v):
    return json.loads(os.getxattr(v.mnt, "trusted.envelopefs.status"))["kms"]


@pytest.mark.parametrize("placement,names", [("header", "plain"), ("xattr", "encrypted")])
def test_write_remount_read(tmp_path, kmip, placement, names):
    name = fresh_name()
    kmip.create_key(f"{name}.1")
    v = KmipVolume(tmp_path, kmip, name, placement=placement, names=names)
    assert v.init.returncode == 0, v.init.stderr
    assert "kms:          kmip, master key version 1" in v.init.stdout
    assert f"key ref:      kmip:{name}" in v.init.stdout
    v.mount()
    try:
        contents = write_files(v.mnt)
        put(v.mnt / "empty", b"")
        st = kms_status(v)
        assert st["provider"] == "kmip" and st["failures"] == 0 and st["current_version"] == 1
        # Every generate is a server Encrypt (the daemon's key pool keeps refilling meanwhile, so
        # the two counters, read one after the other, are compared only loosely).
        assert st["generate"] >= len(contents)
        assert st["service"]["calls"] >= len(contents) and st["service"]["failures"] == 0
        v.unmount()
        v.mount()
        for rel, data in contents.items():
            assert get(v.mnt / rel) == data
        assert get(v.mnt / "empty") == b""
        assert kms_status(v)["unwrap"] >= len(contents)
        assert set(v.versions().values()) == {1}
    finally:
        v.unmount()


def test_vector_opens_on_the_server(kmip):
    """docs/FORMAT.md's kmip_wrap vector, opened by the server's own Decrypt (PyKMIP's client)."""
    vec = {}
    text = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text()
    block = text.split("type = kmip_wrap\n", 1)[1].split("```", 1)[0]
    for line in block.strip().splitlines():
        k, _, val = line.partition(" = ")
        vec[k] = val
    blob = bytes.fromhex(vec["blob"])
    uid = kmip.register_key(f"{fresh_name()}.{vec['version']}", bytes.fromhex(vec["kek"]))
    assert int.from_bytes(blob[:4], "big") == int(vec["version"])
    ok, dek = kmip.decrypt_gcm(uid, blob[16:48], blob[4:16], bytes.fromhex(vec["aad"]), blob[48:])
    assert ok, dek
    assert dek == bytes.fromhex(vec["dek"])
    # Another file's context: the server refuses the tag.
    aad = bytearray.fromhex(vec["aad"])
    aad[-1] ^= 1
    ok, _ = kmip.decrypt_gcm(uid, blob[16:48], blob[4:16], bytes(aad), blob[48:])
    assert not ok


def test_rotation_to_a_new_key_name(tmp_path, kmip):
    name = fresh_name()
    first = kmip.create_key(f"{name}.1")
    v = KmipVolume(tmp_path, kmip, name)
    assert v.init.returncode == 0, v.init.stderr
    v.mount()
    try:
        contents = write_files(v.mnt, 30)
        assert set(v.versions().values()) == {1}
        kmip.create_key(f"{name}.2")
        cp = ctl("rotate", "--check", v.mnt)
        assert cp.returncode == 1 and "target version:   2" in cp.stdout, cp.stdout + cp.stderr
        cp = ctl("rotate", "--json", v.mnt)
        assert cp.returncode == 0, cp.stderr
        summary = json.loads(cp.stdout)
        assert summary["target_version"] == 2 and summary["rewrapped"] == len(contents)
        assert summary["failed"] == 0
        assert set(v.versions().values()) == {2}
        assert ctl("rotate", "--check", v.mnt).returncode == 0
        # New files go under the new key at once, without a remount.
        put(v.mnt / "new", b"after rotation")
        assert v.versions()["new"] == 2
        # Nothing needs version 1 any more: destroy it on the server and read everything back.
        v.unmount()
        kmip.destroy(first)
        v.mount()
        for rel, data in contents.items():
            assert get(v.mnt / rel) == data
        assert get(v.mnt / "new") == b"after rotation"
    finally:
        v.unmount()


def test_pre_active_key_is_no_version_and_rekey(tmp_path, kmip):
    name = fresh_name()
    kmip.create_key(f"{name}.1")
    v = KmipVolume(tmp_path, kmip, name)
    assert v.init.returncode == 0, v.init.stderr
    v.mount()
    try:
        contents = write_files(v.mnt, 8)
        # PyKMIP creates keys Pre-Active: such a key cannot encrypt yet, so it is no version.
        from kmip.core import enums
        with kmip.client() as c:
            pending = c.create(enums.CryptographicAlgorithm.AES, 256, name=f"{name}.2",
                               cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                         enums.CryptographicUsageMask.DECRYPT])
        cp = ctl("rotate", "--check", v.mnt)
        assert cp.returncode == 0 and "target version:   1" in cp.stdout, cp.stdout + cp.stderr
        with kmip.client() as c:
            c.activate(pending)
        # Asked for the current version, the daemon looks for L.(N+1) every time.
        cp = ctl("rotate", "--check", v.mnt)
        assert cp.returncode == 1 and "target version:   2" in cp.stdout, cp.stdout + cp.stderr
        # --rekey: fresh DEKs wrapped by the server under the new version, content re-encrypted.
        cp = ctl("rotate", "--rekey", "--json", v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert set(v.versions().values()) == {2}
        v.unmount()
        v.mount()
        for rel, data in contents.items():
            assert get(v.mnt / rel) == data
    finally:
        v.unmount()


def test_file_of_another_volume_does_not_open(tmp_path, kmip):
    """Two volumes on one key: a backing file copied across fails the AAD on the server."""
    name = fresh_name()
    kmip.create_key(f"{name}.1")
    a = KmipVolume(tmp_path / "a", kmip, name)
    b = KmipVolume(tmp_path / "b", kmip, name)
    a.mount()
    b.mount()
    try:
        put(a.mnt / "secret", b"volume a only")
        put(b.mnt / "mine", b"volume b")
        a.unmount()
        b.unmount()
        # Under its own name: on a format-3 volume a record bound to another name would
        # fail before the KMS is asked.
        (b.backing / "secret").write_bytes((a.backing / "secret").read_bytes())
        b.mount()
        with pytest.raises(OSError) as e:
            get(b.mnt / "secret")
        assert e.value.errno == 5  # EIO: the wrapped DEK is bound to volume a
        assert kms_status(b)["failures"] >= 1
    finally:
        b.unmount()


def test_refusals_name_the_fault(tmp_path, kmip):
    name = fresh_name()
    # No key of that name yet.
    v = KmipVolume(tmp_path / "none", kmip, name)
    assert v.init.returncode == EXIT_KEYS
    assert f"no AES-256 key named '{name}.N'" in v.init.stderr
    assert not (v.backing / "envelopefs.conf").exists()
    # A key of the name that is AES-128.
    kmip.create_key(f"{name}.1", length=128)
    v = KmipVolume(tmp_path / "short", kmip, name)
    assert v.init.returncode != 0 and "not an AES-256 key" in v.init.stderr
    # The client key readable by others.
    loose = tmp_path / "loose.key"
    loose.write_bytes(Path(kmip.pki["client_key"]).read_bytes())
    loose.chmod(0o644)
    v = KmipVolume(tmp_path / "loose", kmip, name, key_file=loose)
    assert v.init.returncode != 0 and f"chmod 600 {loose}" in v.init.stderr
    # Settings that are not the provider's.
    v = KmipVolume(tmp_path / "unknown", kmip, name, server="x")
    assert v.init.returncode == EXIT_USAGE and "kms:server" in v.init.stderr


def test_mutual_tls_is_enforced(tmp_path, kmip):
    name = fresh_name()
    kmip.create_key(f"{name}.1")
    other = make_pki(tmp_path / "other")
    # A client certificate from a CA the server does not trust.
    v = KmipVolume(tmp_path / "client", kmip, name, cert_file=other["client_cert"],
                   key_file=other["client_key"])
    assert v.init.returncode == EXIT_KEYS, v.init.stderr
    assert "denied" in v.init.stderr or "alert" in v.init.stderr, v.init.stderr
    # A server certificate from a CA we do not trust.
    v = KmipVolume(tmp_path / "server", kmip, name, ca_file=other["ca"])
    assert v.init.returncode == EXIT_KEYS
    assert "server certificate not accepted" in v.init.stderr, v.init.stderr
    # The server's certificate names 127.0.0.1 and localhost, not another name for this host.
    v = KmipVolume(tmp_path / "name", kmip, name, host="127.0.0.2")
    assert v.init.returncode == EXIT_KEYS
    assert "server certificate not accepted" in v.init.stderr or "connect" in v.init.stderr


class SilentServer:
    """Accepts connections and never answers; with @tls, completes the mutual-TLS handshake first
    (as a server that hangs on a request would)."""

    def __init__(self, pki, tls):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(str(pki["server_cert"]), str(pki["server_key"]))
            self.ctx.load_verify_locations(str(pki["ca"]))
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.held = []
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
                if self.ctx:
                    conn = self.ctx.wrap_socket(conn, server_side=True)
                self.held.append(conn)
            except OSError:
                if self.sock.fileno() < 0:
                    return

    def close(self):
        self.sock.close()
        for c in self.held:
            c.close()


@pytest.mark.parametrize("tls", [False, True])
def test_silent_server_times_out(tmp_path, kmip, tls):
    server = SilentServer(kmip.pki, tls)
    try:
        start = time.monotonic()
        v = KmipVolume(tmp_path, kmip, fresh_name(), port=server.port, connect_timeout_ms=2000,
                       timeout_ms=3000)
        elapsed = time.monotonic() - start
    finally:
        server.close()
    assert v.init.returncode == EXIT_KEYS
    what = "read" if tls else "TLS handshake"
    assert f"KMIP server 127.0.0.1:{server.port}: no answer in time ({what})" in v.init.stderr, \
        v.init.stderr
    assert elapsed < 8


def test_server_down(tmp_path):
    """Cached files keep reading; uncached ones and mounts fail with a clear error in time; the
    server back, everything works again without a remount."""
    peer = KmipPeer(tmp_path / "kmip")
    try:
        name = fresh_name()
        peer.create_key(f"{name}.1")
        v = KmipVolume(tmp_path / "v", peer, name, timeout_ms="1500")
        assert v.init.returncode == 0, v.init.stderr
        v.mount()
        try:
            contents = write_files(v.mnt, 6)
            v.unmount()
            v.mount("prefetch=false")  # the other files stay cold: their opens need the server
            cached = "d/f0"
            assert get(v.mnt / cached) == contents[cached]
            peer.stop()
            assert get(v.mnt / cached) == contents[cached]
            start = time.monotonic()
            with pytest.raises(OSError) as e:
                for rel in contents:
                    if rel != cached:
                        get(v.mnt / rel)
            assert e.value.errno == 5
            assert time.monotonic() - start < 10
            other = tmp_path / "other-mnt"
            other.mkdir()
            proc = subprocess.run([str(DAEMON), str(v.backing), str(other)], capture_output=True, text=True,
                                  timeout=60)
            assert proc.returncode == EXIT_KEYS
            assert f"KMIP server 127.0.0.1:{peer.port}" in proc.stderr, proc.stderr
            assert "cannot connect" in proc.stderr
            assert not is_mounted(other)
            peer.start()
            # A file whose unwrap found the server down answers EIO for a second more
            # (filekey.c: UNAVAILABLE_REUSE_MS), then reads again with no remount.
            deadline = time.monotonic() + 10
            for rel, data in contents.items():
                while True:
                    try:
                        assert get(v.mnt / rel) == data
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
        finally:
            v.unmount()
    finally:
        peer.stop()


def test_migrate_local_to_kmip(tmp_path, kmip):
    """rotate --to-kms onto the KMIP server while an application writes; the keyring then goes."""
    name = fresh_name()
    kmip.create_key(f"{name}.1")
    (tmp_path / "v").mkdir()
    v = Volume(tmp_path / "v", names="encrypted")
    v.mount()
    try:
        contents = populate(v.mnt, 12)
        config = write_config(tmp_path / "to-kmip.ini", {"provider": "kmip",
                                                        **kmip.settings(name)})
        with Writer(v.mnt) as w:
            time.sleep(0.2)
            cp = ctl("rotate", "--to-kms", config, v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert w.errors == []
        contents.update(w.written)
        assert_finished(v, f"kmip:{name}", "kmip")
        v.unmount()
        v.keyring.rename(tmp_path / "keyring.away")
        v.mount()
        check_contents(v.mnt, contents)
    finally:
        unmount(v.mnt)
