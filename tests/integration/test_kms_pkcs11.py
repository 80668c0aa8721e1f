"""The pkcs11 provider end to end: volumes whose master keys live on a real SoftHSM2 token.

Each test gets its own token directory (SOFTHSM2_CONF), initialises a token with softhsm2-util and
makes keys with pkcs11-tool, exactly as an operator would; `envelopefsctl init --kms pkcs11`, the
daemon and `envelopefsctl rotate` then find the token through the same environment.
"""
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from mounts import CTL, DAEMON, Volume, get, is_mounted, put, unmount

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
TOKEN = "envfs-it"
SO_PIN = "87654321"
# Distinctive, so that a leak anywhere is found by a plain substring search.
PIN = "pin-7e3a91c4"
KEY = "envfs-kek"
BLOCK = 4096
EXIT_KEYS = 4

pytestmark = pytest.mark.skipif(not os.path.exists(MODULE), reason="softhsm2 is not installed")


class Token:
    """A SoftHSM2 token in a private directory, and the environment that finds it."""

    def __init__(self, root):
        self.dir = root / "tokens"
        self.dir.mkdir(mode=0o700)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(f"directories.tokendir = {self.dir}\nobjectstore.backend = file\n")
        self.env = {**os.environ, "SOFTHSM2_CONF": str(self.conf)}
        self.env.pop("ENVELOPEFS_PKCS11_PIN", None)
        subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", TOKEN,
                        "--so-pin", SO_PIN, "--pin", PIN], env=self.env, check=True,
                       capture_output=True)

    def tool(self, *args):
        return subprocess.run(["pkcs11-tool", "--module", MODULE, "--token-label", TOKEN,
                               "--login", "--pin", PIN, *args], env=self.env, check=True,
                              capture_output=True, text=True)

    def keygen(self, label):
        self.tool("--keygen", "--key-type", "AES:32", "--label", label)

    def delete(self, label):
        self.tool("--delete-object", "--type", "secrkey", "--label", label)


class P11Volume(Volume):
    """A volume on the token: init through envelopefsctl, mounts through the real daemon."""

    def __init__(self, root, token, pin_file=True, placement="header"):
        # Not Volume.__init__: that one makes a local keyring volume.
        self.root = root
        self.token = token
        self.placement = placement
        self.backing = root / "backing"
        self.mnt = root / "mnt"
        self.mnt.mkdir()
        self.pin_file = root / "user.pin"
        self.pin_file.write_text(PIN + "\n")
        self.pin_file.chmod(0o600)
        settings = [f"module={MODULE}", f"token_label={TOKEN}", f"key_label={KEY}"]
        if pin_file:
            settings.append(f"pin_file={self.pin_file}")
        # Plain names: the tests read backing files by their plaintext paths.
        args = ["init", "--kms", "pkcs11", "--names", "plain", "--header",
                "file" if placement == "header" else "xattr"]
        for s in settings:
            args += ["--kms-setting", s]
        self.init = self.ctl(*args, self.backing, env=None if pin_file else {
            "ENVELOPEFS_PKCS11_PIN": PIN})
        assert self.init.returncode == 0, self.init.stderr

    def ctl(self, *args, env=None):
        return subprocess.run([str(CTL), *map(str, args)], env={**self.token.env, **(env or {})},
                              capture_output=True, text=True, timeout=300)

    def mount(self, *options, check=True, env=None):
        """Volume.mount, in the token's environment (plus @env)."""
        return super().mount(*options, check=check, env={**self.token.env, **(env or {})})

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


@pytest.fixture
def token(tmp_path):
    t = Token(tmp_path)
    t.keygen(f"{KEY}.1")
    return t


@pytest.fixture
def p11vol(tmp_path, token):
    (tmp_path / "v").mkdir()
    v = P11Volume(tmp_path / "v", token)
    yield v
    v.unmount()


def write_files(m, n=20):
    contents = {}
    os.makedirs(m / "d", exist_ok=True)
    for i in range(n):
        data = os.urandom([1, 100, BLOCK, 3 * BLOCK + 5, 70000][i % 5])
        put(m / "d" / f"f{i}", data)
        contents[f"d/f{i}"] = data
    return contents


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_create_write_remount_read(tmp_path, token, placement):
    v = P11Volume(tmp_path, token, placement=placement)
    assert "kms:          pkcs11, master key version 1" in v.init.stdout
    assert f"pkcs11:token={TOKEN};object={KEY}" in v.init.stdout
    v.mount()
    try:
        contents = write_files(v.mnt)
        put(v.mnt / "empty", b"")
        status = json.loads(os.getxattr(v.mnt, "trusted.envelopefs.status"))
        assert status["kms"]["provider"] == "pkcs11"
        # Every new file took one key, from the pool the daemon keeps for a non-local KMS or
        # made on the spot; the pool's own refills are the rest of the generate calls.
        assert status["pool"]["capacity"] == 64
        assert status["pool"]["hits"] + status["pool"]["misses"] == len(contents)
        assert status["kms"]["generate"] >= len(contents)
        assert status["kms"]["failures"] == 0
        v.unmount()
        v.mount()
        for rel, data in contents.items():
            assert get(v.mnt / rel) == data
        assert get(v.mnt / "empty") == b""
        status = json.loads(os.getxattr(v.mnt, "trusted.envelopefs.status"))
        assert status["kms"]["unwrap"] == len(contents)  # one unwrap per cold open
        assert set(v.versions().values()) == {1}
    finally:
        v.unmount()


def test_pin_from_environment(tmp_path, token):
    v = P11Volume(tmp_path, token, pin_file=False)
    assert "pin_file" not in (v.backing / "envelopefs.conf").read_text()
    proc = v.mount(check=False)
    assert proc.returncode == EXIT_KEYS
    assert "no PIN" in proc.stderr and "ENVELOPEFS_PKCS11_PIN" in proc.stderr
    v.mount(env={"ENVELOPEFS_PKCS11_PIN": PIN})
    try:
        # Taken out of the daemon's environment once read (kms/envsecret.h).
        pid = v.status()["daemon"]["pid"]
        assert PIN.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        put(v.mnt / "f", b"via the environment")
        v.unmount()
        v.mount(env={"ENVELOPEFS_PKCS11_PIN": PIN})
        assert get(v.mnt / "f") == b"via the environment"
    finally:
        v.unmount()


def test_rotation_to_a_new_key_label(p11vol):
    v = p11vol
    v.mount()
    contents = write_files(v.mnt, 30)
    assert set(v.versions().values()) == {1}
    v.token.keygen(f"{KEY}.2")
    cp = v.ctl("rotate", "--check", v.mnt)
    assert cp.returncode == 1 and "target version:   2" in cp.stdout
    cp = v.ctl("rotate", "--json", v.mnt)
    assert cp.returncode == 0, cp.stderr
    summary = json.loads(cp.stdout)
    assert summary["target_version"] == 2 and summary["rewrapped"] == len(contents)
    assert summary["failed"] == 0
    assert set(v.versions().values()) == {2}
    assert v.ctl("rotate", "--check", v.mnt).returncode == 0
    # New files go under the new key at once, without a remount.
    put(v.mnt / "new", b"after rotation")
    assert v.versions()["new"] == 2
    # Nothing needs version 1 any more: remove it from the token and read everything back.
    v.unmount()
    v.token.delete(f"{KEY}.1")
    v.mount()
    for rel, data in contents.items():
        assert get(v.mnt / rel) == data
    assert get(v.mnt / "new") == b"after rotation"


def test_offline_rotation(p11vol):
    v = p11vol
    v.mount()
    contents = write_files(v.mnt, 6)
    v.unmount()
    v.token.keygen(f"{KEY}.7")
    cp = v.ctl("rotate", "--offline", v.backing)
    assert cp.returncode == 0, cp.stderr
    assert v.ctl("rotate", "--offline", "--check", v.backing).returncode == 0
    v.mount()
    assert set(v.versions().values()) == {7}
    for rel, data in contents.items():
        assert get(v.mnt / rel) == data


def test_key_of_another_volume_does_not_open(tmp_path, token):
    """Two volumes on one token and one key: a backing file copied across fails its context."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = P11Volume(tmp_path / "a", token), P11Volume(tmp_path / "b", token)
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
        status = json.loads(os.getxattr(b.mnt, "trusted.envelopefs.status"))
        assert status["kms"]["failures"] >= 1
    finally:
        b.unmount()


def test_wrong_pin_and_missing_key(p11vol):
    v = p11vol
    v.pin_file.write_text("not-the-pin\n")
    proc = v.mount(check=False)
    assert proc.returncode == EXIT_KEYS
    assert "refused the PIN" in proc.stderr and str(v.pin_file) in proc.stderr
    assert "not-the-pin" not in proc.stderr
    assert not is_mounted(v.mnt)
    v.pin_file.write_text(PIN)
    v.token.delete(f"{KEY}.1")
    proc = v.mount(check=False)
    assert proc.returncode == EXIT_KEYS
    assert f"no AES key labelled '{KEY}.N'" in proc.stderr
    assert not is_mounted(v.mnt)


def test_init_refuses_a_pin_setting_and_a_wrong_pin(tmp_path, token):
    base = ["init", "--kms", "pkcs11", "--kms-setting", f"module={MODULE}",
            "--kms-setting", f"token_label={TOKEN}", "--kms-setting", f"key_label={KEY}"]
    env = {**token.env}
    run = lambda *a, **kw: subprocess.run([str(CTL), *map(str, a)], capture_output=True,
                                          text=True, **kw)
    cp = run(*base, "--kms-setting", f"pin={PIN}", tmp_path / "b1", env=env)
    assert cp.returncode == 2 and "pin_file" in cp.stderr and PIN not in cp.stderr
    assert not (tmp_path / "b1" / "envelopefs.conf").exists()
    cp = run(*base, tmp_path / "b2", env={**env, "ENVELOPEFS_PKCS11_PIN": "wrong"})
    assert cp.returncode == 4 and "refused the PIN" in cp.stderr
    assert not (tmp_path / "b2" / "envelopefs.conf").exists()
    cp = run(*base, "--kms-setting", "token_label=nonesuch", tmp_path / "b3",
             env={**env, "ENVELOPEFS_PKCS11_PIN": PIN})
    assert cp.returncode == 2 and "given twice" in cp.stderr


def test_pin_never_appears_in_argv_logs_or_config(tmp_path, token):
    v = P11Volume(tmp_path, token)
    assert PIN not in v.init.stdout + v.init.stderr
    config = (v.backing / "envelopefs.conf").read_text()
    assert f"pin_file = {v.pin_file}" in config and PIN not in config
    settings = tmp_path / "daemon.ini"
    settings.write_text("[daemon]\nlog_level = debug\n")
    # In the foreground at debug level, everything the daemon logs goes to its stderr.
    daemon = subprocess.Popen([str(DAEMON), "-f", "-o", f"config={settings}", str(v.backing),
                               str(v.mnt)], env=token.env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if is_mounted(v.mnt):
                break
            time.sleep(0.05)
        assert is_mounted(v.mnt)
        with open(f"/proc/{daemon.pid}/cmdline", "rb") as f:
            assert PIN.encode() not in f.read()
        with open(f"/proc/{daemon.pid}/environ", "rb") as f:
            assert PIN.encode() not in f.read()
        contents = write_files(v.mnt, 5)
        v.token.keygen(f"{KEY}.2")
        rotate = v.ctl("rotate", v.mnt)
        assert rotate.returncode == 0 and PIN not in rotate.stdout + rotate.stderr
        status = v.ctl("status", v.mnt)
        info = v.ctl("info", "--kms", v.backing)
        for out in (status, info):
            assert out.returncode == 0 and PIN not in out.stdout + out.stderr
        assert PIN not in os.getxattr(v.mnt, "trusted.envelopefs.status").decode()
        for rel, data in contents.items():
            assert get(v.mnt / rel) == data
    finally:
        unmount(v.mnt)
        out, err = daemon.communicate(timeout=30)
    assert "mounted" in err  # the log was captured
    assert PIN not in out + err
    # The backing files hold no trace of it either.
    for root, _, files in os.walk(v.backing):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                assert PIN.encode() not in f.read()
