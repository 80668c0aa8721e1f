"""Moving a live volume to another KMS: envelopefsctl rotate --to-kms CONFIG, on real mounts.

Volumes start on the local keyring and move to a SoftHSM2 token (pkcs11) or to moto_server with
signature checking (aws), while applications keep writing; the tool is killed midway and run
again, the daemon is remounted mid-migration, and at the end the old keyring is deleted and the
volume must still mount and read back every byte.  Broken CONFIGs must change nothing.
"""
import configparser
import json
import os
import signal
import subprocess
import threading
import time

import pytest

from mounts import CTL, Volume, get, put
from test_kms_aws import aws, aws_env  # noqa: F401 (the moto peer and its credentials)
from test_kms_pkcs11 import KEY, MODULE, PIN, TOKEN, token  # noqa: F401 (a SoftHSM2 token)

KEY_XATTR = "trusted.envelopefs.key"
P11_REF = f"pkcs11:token={TOKEN};object={KEY}"


def ctl(*args, env=None):
    return subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


def write_config(path, settings):
    path.write_text("[kms]\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
    return path


def vault_config(path, server, key="vol"):
    """A [kms] section for Transit key @key of the test Vault @server."""
    return write_config(path, {"provider": "vault", "address": server.url, "key": key,
                               "token_file": server.token_file})


def volume_config(v):
    cp = configparser.ConfigParser()
    cp.read(v.backing / "envelopefs.conf")
    return cp


def key_refs(v):
    """Key reference of every record, by path relative to the mount ('.' is the volume key)."""
    refs = {}
    for root, dirs, files in os.walk(v.mnt):
        for name in files + ([] if root != str(v.mnt) else ["."]):
            p = os.path.normpath(os.path.join(root, name))
            if os.path.islink(p):
                continue
            try:
                refs[os.path.relpath(p, v.mnt)] = os.getxattr(p, KEY_XATTR).decode().split()[1]
            except OSError:
                pass  # an empty file (or the root of a plain-names volume) has no record
    return refs


def wait_for_flock(pid, within=20):
    """Until process @pid holds an flock (/proc/locks), as a migration does from its start."""
    deadline = time.monotonic() + within
    while not any(f[1] == "FLOCK" and f[4] == str(pid)
                  for f in (line.split() for line in open("/proc/locks"))):
        assert time.monotonic() < deadline, f"process {pid} took no flock"
        time.sleep(0.05)


def populate(m, n=40):
    """Files of several sizes in a small tree, an empty file, a hard link, a symlink, an xattr."""
    contents = {}
    (m / "d" / "e").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rel = ["d", "d/e", "."][i % 3] + f"/file-{i}"
        data = os.urandom([1, 100, 4096, 3 * 4096 + 5, 70000][i % 5])
        put(m / rel, data)
        contents[os.path.normpath(rel)] = data
    put(m / "empty", b"")
    contents["empty"] = b""
    os.link(m / "d/file-0", m / "hardlink")
    contents["hardlink"] = contents["d/file-0"]
    os.symlink("d/file-0", m / "symlink")
    os.setxattr(m / "d/file-0", "user.note", b"kept through the move")
    return contents


def check_contents(m, contents):
    for rel, data in contents.items():
        assert get(m / rel) == data, rel
    assert os.readlink(m / "symlink") == "d/file-0"
    assert os.getxattr(m / "d/file-0", "user.note") == b"kept through the move"


class Writer:
    """An application writing new files and rewriting old ones while the volume moves."""

    def __init__(self, m):
        self.m, self.written, self.errors = m, {}, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run)
        (m / "live").mkdir()

    def run(self):
        i = 0
        while not self.stop.is_set():
            rel = f"live/w{i}"
            data = os.urandom(1000 + i % 9000)
            try:
                put(self.m / rel, data)
                self.written[rel] = data
            except OSError as e:
                self.errors.append(f"{rel}: {e}")
            i += 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def p11_config(tmp_path, token):
    pin = tmp_path / "user.pin"
    pin.write_text(PIN + "\n")
    pin.chmod(0o600)
    return write_config(tmp_path / "to-pkcs11.ini", {
        "provider": "pkcs11", "module": MODULE, "token_label": TOKEN, "key_label": KEY,
        "pin_file": pin})


def assert_finished(v, ref, provider):
    """Every record under @ref, [kms_previous] gone, the daemon on the new KMS alone."""
    refs = key_refs(v)
    assert refs and set(refs.values()) == {ref}, refs
    conf = volume_config(v)
    assert conf["kms"]["provider"] == provider and "kms_previous" not in conf
    status = v.status()["kms"]
    assert status["key_ref"] == ref and "previous_key_ref" not in status


@pytest.mark.parametrize("names", ["encrypted", "plain"])
def test_local_to_pkcs11_live(tmp_path, token, names):
    v = Volume(tmp_path, names=names)
    mode = (v.backing / "envelopefs.conf").stat().st_mode
    v.mount(env=token.env)  # the daemon finds the token through SOFTHSM2_CONF
    try:
        contents = populate(v.mnt)
        old_ref = key_refs(v)["d/file-0"]
        assert old_ref.startswith("local:")
        config = p11_config(tmp_path, token)
        # What a crash while the configuration was being replaced leaves: hidden, then replaced.
        (v.backing / "envelopefs.conf.tmp").write_text("[kms]\nprovider = junk\n")
        assert "envelopefs.conf.tmp" not in os.listdir(v.mnt)
        with Writer(v.mnt) as w:
            time.sleep(0.3)
            cp = ctl("rotate", "--to-kms", config, "--json", v.mnt, env=token.env)
            time.sleep(0.3)
        assert cp.returncode == 0, cp.stderr
        assert w.errors == [] and len(w.written) > 10
        summary = json.loads(cp.stdout)
        assert summary["target_key_ref"] == P11_REF and summary["failed"] == 0
        assert summary["rewrapped"] >= len(contents) - 2  # the empty file and the hard link
        assert_finished(v, P11_REF, "pkcs11")
        assert (v.backing / "envelopefs.conf").stat().st_mode == mode
        assert not (v.backing / "envelopefs.conf.tmp").exists()
        contents.update(w.written)
        put(v.mnt / "after", b"written after the move")
        contents["after"] = b"written after the move"
        assert key_refs(v)["after"] == P11_REF
        # Run again: nothing to do.
        cp = ctl("rotate", "--to-kms", config, v.mnt, env=token.env)
        assert cp.returncode == 0 and "nothing to move" in cp.stderr
        # The old keyring is not needed any more.
        v.keyring.unlink()
        v.unmount()
        v.mount(env=token.env)
        check_contents(v.mnt, contents)
        assert set(key_refs(v).values()) == {P11_REF}
    finally:
        v.unmount()


def test_offline_local_to_pkcs11(tmp_path, token):
    v = Volume(tmp_path, names="encrypted", placement="xattr")
    v.mount()
    contents = populate(v.mnt, 20)
    v.unmount()
    config = p11_config(tmp_path, token)
    cp = ctl("rotate", "--to-kms", config, "--offline", v.backing, env=token.env)
    assert cp.returncode == 0, cp.stderr
    assert "kms_previous" not in volume_config(v)
    v.keyring.unlink()
    v.mount(env=token.env)
    try:
        check_contents(v.mnt, contents)
        assert set(key_refs(v).values()) == {P11_REF}
    finally:
        v.unmount()


def aws_config(tmp_path, aws, key_id=None, name="to-aws.ini", **extra):
    return write_config(tmp_path / name, {
        "provider": "aws", "key_id": key_id or aws.key_arn, "region": "us-east-1",
        "endpoint": aws.endpoint, **extra})


def test_local_to_aws_killed_and_remounted(tmp_path, aws, aws_env):
    """kill -9 of the tool midway, a remount of the daemon mid-migration, then a rerun."""
    v = Volume(tmp_path, names="encrypted", placement="xattr")
    v.mount(env=aws_env)
    try:
        contents = populate(v.mnt, 150)
        config = aws_config(tmp_path, aws)
        tool = subprocess.Popen([str(CTL), "rotate", "--to-kms", str(config), "--max-rate", "25",
                                 "--jobs", "2", str(v.mnt)], env=aws_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: moved_count(v) >= 10, tool)
        tool.send_signal(signal.SIGKILL)
        tool.wait()
        refs = key_refs(v)
        moved = [r for r in refs.values() if r.startswith("aws:")]
        assert 0 < len(moved) < len(refs), "the kill was to land midway"
        conf = volume_config(v)
        assert conf["kms"]["provider"] == "aws" and conf["kms_previous"]["provider"] == "local"
        assert v.status()["kms"]["previous_key_ref"].startswith("local:")
        cp = ctl("status", v.mnt)
        assert "migrating  from master key local:" in cp.stdout, cp.stdout
        # New files go to the new KMS at once.
        put(v.mnt / "mid", b"mid-migration")
        contents["mid"] = b"mid-migration"
        assert key_refs(v)["mid"].startswith("aws:")
        # A daemon started mid-migration opens both providers: everything reads.
        v.unmount()
        v.mount(env=aws_env)
        check_contents(v.mnt, contents)
        cp = ctl("rotate", "--to-kms", config, v.mnt, env=aws_env)
        assert cp.returncode == 0, cp.stderr
        assert "resuming" in cp.stderr
        ref = key_refs(v)["mid"]
        assert_finished(v, ref, "aws")
        # The volume key's file grew online for AWS's larger blobs (its slots were 256 bytes).
        assert (v.backing / "envelopefs.key").stat().st_size > 512
        assert not (v.backing / "envelopefs.key.tmp").exists()
        v.keyring.unlink()
        v.unmount()
        v.mount(env=aws_env)
        check_contents(v.mnt, contents)
    finally:
        v.unmount()


def moved_count(v):
    return sum(r.startswith("aws:") for r in key_refs(v).values())


def wait_for(condition, tool, timeout=60):
    """Until @condition holds, while the migration @tool is still running."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert tool.poll() is None, tool.communicate()
        assert time.monotonic() < deadline, "the migration made no progress"
        time.sleep(0.05)


def config_and_refs(v):
    return (v.backing / "envelopefs.conf").read_bytes(), key_refs(v)


def test_broken_configs_change_nothing(tmp_path, aws, aws_env, token):
    v = Volume(tmp_path, names="encrypted")
    v.mount(env={**aws_env, "SOFTHSM2_CONF": token.env["SOFTHSM2_CONF"]})
    try:
        populate(v.mnt, 10)
        before = config_and_refs(v)
        env = {**aws_env, "SOFTHSM2_CONF": token.env["SOFTHSM2_CONF"]}
        cases = {
            "unknown provider": (write_config(tmp_path / "a.ini", {"provider": "no-such-kms"}),
                                 "names no known provider"),
            "unreachable": (aws_config(tmp_path, aws, name="down.ini",
                                       endpoint="http://127.0.0.1:9/",
                                       deadline_ms="1000", timeout_ms="300"),
                            "KMS unavailable"),
            "secret pin": (write_config(tmp_path / "b.ini", {
                "provider": "pkcs11", "module": MODULE, "token_label": TOKEN, "key_label": KEY,
                "pin": PIN}), "would put a secret"),
            "secret token": (write_config(tmp_path / "c.ini", {
                "provider": "vault", "key": "k", "token": "s.abc"}), "would put a secret"),
            # The volume's 256-byte header slots cannot hold a record naming a full key ARN.
            "slot too small": (aws_config(tmp_path, aws), "header slot"),
            "two sections": (tmp_path / "d.ini", "exactly one section"),
            "own key": (write_config(tmp_path / "e.ini", {
                "provider": "local", "keyring": tmp_path / "keyring-copy",
                "keyring_id": volume_config(v)["kms"]["keyring_id"]}), "own master key"),
        }
        (tmp_path / "d.ini").write_text("[kms]\nprovider = local\n[other]\nx = 1\n")
        (tmp_path / "keyring-copy").write_bytes(v.keyring.read_bytes())
        (tmp_path / "keyring-copy").chmod(0o600)
        for name, (config, message) in cases.items():
            t0 = time.monotonic()
            cp = ctl("rotate", "--to-kms", config, v.mnt, env=env)
            assert cp.returncode != 0, name
            assert message in cp.stderr, (name, cp.stderr)
            assert time.monotonic() - t0 < 20, name
            assert config_and_refs(v) == before, name
        assert "previous_key_ref" not in v.status()["kms"]
        # A migration under way refuses another target.  (Records of version 2 leave no
        # room in a 256-byte slot for the AWS key named by its ID either: the token it is.)
        good = p11_config(tmp_path, token)
        tool = subprocess.Popen([str(CTL), "rotate", "--to-kms", str(good), "--max-rate", "5",
                                 str(v.mnt)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        wait_for(lambda: "kms_previous" in volume_config(v), tool)
        tool.send_signal(signal.SIGKILL)
        tool.wait()
        other = aws_config(tmp_path, aws, key_id=aws.key_arn.split("/")[-1], name="other.ini")
        cp = ctl("rotate", "--to-kms", other, v.mnt, env=env)
        assert cp.returncode == 2 and "finish that first" in cp.stderr
        cp = ctl("rotate", "--to-kms", good, v.mnt, env=env)
        assert cp.returncode == 0, cp.stderr
        assert set(key_refs(v).values()) == {P11_REF}
    finally:
        v.unmount()


def test_local_to_vault_live(tmp_path):
    from vaultd import VaultServer
    server = VaultServer(tmp_path / "vault")
    server.create_key("vol", derived=True)
    (tmp_path / "v").mkdir()
    v = Volume(tmp_path / "v", names="encrypted")
    v.mount()
    try:
        contents = populate(v.mnt, 30)
        config = vault_config(tmp_path / "to-vault.ini", server)
        with Writer(v.mnt) as w:
            time.sleep(0.2)
            cp = ctl("rotate", "--to-kms", config, v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert w.errors == []
        contents.update(w.written)
        assert_finished(v, "vault:transit/vol", "vault")
        # Transit itself holds every DEK now: each record is a vault:v1: ciphertext it opens.
        blob = (v.backing / "envelopefs.key").read_bytes()
        assert b"vault:v1:" in blob
        v.keyring.unlink()
        v.unmount()
        v.mount()
        check_contents(v.mnt, contents)
    finally:
        v.unmount()
        server.stop()


def test_second_migration_waits_for_the_first(tmp_path):
    """Two `rotate --to-kms` runs with different CONFIGs at once: each checks
    that no migration is under way, then writes its own.  While the first
    probes its (slow) KMS, a second must not start another: its records
    would go to a KMS the first then drops from the configuration (the
    first's [kms_previous] is the volume's old key), leaving them unreadable.
    Found by review (ctl_migrate.c); each run holds a lock on BACKING."""
    from vaultd import VaultServer
    server = VaultServer(tmp_path / "vault", latency_ms=800)
    server.create_key("vol", derived=True)
    (tmp_path / "v").mkdir()
    v = Volume(tmp_path / "v")
    v.mount()
    try:
        contents = populate(v.mnt, 9)
        to_vault = vault_config(tmp_path / "to-vault.ini", server)
        other = tmp_path / "other.keyring"
        subprocess.run([str(CTL), "keyring", "create", str(other)], check=True,
                       capture_output=True)
        listing = ctl("keyring", "list", other).stdout
        keyring_id = listing.split("keyring ID:")[1].split()[0]
        to_other = write_config(tmp_path / "to-other.ini", {
            "provider": "local", "keyring": other, "keyring_id": keyring_id})
        first = subprocess.Popen([str(CTL), "rotate", "--to-kms", str(to_vault), str(v.mnt)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for_flock(first.pid)  # then it opens and probes Vault: three calls of 0.8 s
        second = ctl("rotate", "--to-kms", to_other, v.mnt)
        assert second.returncode == 1, second.stderr
        assert "another envelopefsctl rotate --to-kms" in second.stderr
        first.send_signal(signal.SIGKILL)  # anywhere in its run: resumable
        first.wait()
        check_contents(v.mnt, contents)
        server.stop()
        server.latency_ms = 0
        server.start()
        cp = ctl("rotate", "--to-kms", to_vault, v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert_finished(v, "vault:transit/vol", "vault")
        check_contents(v.mnt, contents)
    finally:
        v.unmount()
        server.stop()


def test_vault_key_whose_later_versions_would_not_fit_is_refused(tmp_path):
    """The new KMS's records must fit the volume's header slots at every
    master-key version, not only at the probe's: a Transit blob grows by a
    byte at v10.  With a 62-character key name a record of v1 fills a
    256-byte slot exactly; before the fix the move went ahead, and once the
    key reached v10 new files failed (ENOSPC) and rotations stopped.  Found
    by review (ctl_migrate.c probe()).  That is a format-2 volume's slot; the
    320-byte slots of format 3, with room for the version and the bindings,
    refuse this name at v1 already."""
    from vaultd import VaultServer
    server = VaultServer(tmp_path / "vault")
    name = "k" * 62
    server.create_key(name, derived=True)
    (tmp_path / "v").mkdir()
    v = Volume(tmp_path / "v")
    v.mount()
    try:
        put(v.mnt / "a", b"stays on the local keyring")
        before = (v.backing / "envelopefs.conf").read_bytes()
        config = vault_config(tmp_path / "to-vault.ini", server, name)
        cp = ctl("rotate", "--to-kms", config, v.mnt)
        assert cp.returncode == 2, cp.stderr
        assert "header slot" in cp.stderr and "320 bytes" in cp.stderr
        assert (v.backing / "envelopefs.conf").read_bytes() == before
        assert set(key_refs(v).values()) == {key_refs(v)["a"]}
        assert key_refs(v)["a"].startswith("local:")
        # A short name leaves room for every version: the same move then works.
        server.create_key("vol", derived=True)
        short = vault_config(tmp_path / "to-vault-short.ini", server)
        cp = ctl("rotate", "--to-kms", short, v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert get(v.mnt / "a") == b"stays on the local keyring"
    finally:
        v.unmount()
        server.stop()
