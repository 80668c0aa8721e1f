"""A storage host that lies (issue 15): each attack edits the backing directly while the volume is
unmounted, and the next mount or read must refuse it.  Every test runs with its own host state
directory ($ENVELOPEFS_STATE_DIR), as a host of its own would."""
import os
import re
import shutil
import subprocess

import pytest

from mounts import CTL, Volume, get, put

CONF = "envelopefs.conf"


def ctl(*args, env=None, check=True):
    cp = subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True, env=env,
                        timeout=120)
    if check:
        assert cp.returncode == 0, cp.stderr
    return cp


@pytest.fixture
def state(tmp_path, monkeypatch):
    """This host's state directory, used by the daemon and the tools through the environment."""
    path = tmp_path / "state"
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(path))
    return path


def make(tmp_path, name, names="encrypted", placement="header"):
    root = tmp_path / name
    root.mkdir()
    return Volume(root, placement=placement, names=names)


def edit_conf(v, pattern, replacement):
    conf = v.backing / CONF
    text = conf.read_text()
    new, n = re.subn(pattern, replacement, text, flags=re.M)
    assert n == 1, (pattern, text)
    conf.write_text(new)


def mounted_once(v, files=None):
    """Mount, write @files (name -> bytes), unmount: the host has now seen the volume."""
    v.mount()
    for name, data in (files or {}).items():
        put(v.mnt / name, data)
    v.unmount()


# --- 15.4: the configuration ---------------------------------------------------------------

@pytest.mark.parametrize("names", ["encrypted", "plain"])
@pytest.mark.parametrize("setting,pattern,replacement,shown", [
    ("block_size", r"^block_size = 4096$", "block_size = 8192", "[volume] block_size"),
    ("names", r"^names = (encrypted|plain)$", "names = SWAP", "[volume] names"),
    ("key_records", r"^key_records = header\nheader_size = 512$", "key_records = xattr",
     "[volume] key_records"),
    ("format_version", r"^format_version = 2$", "format_version = 1", "[volume] format_version"),
    ("kms", r"^keyring = .*$", "keyring = ELSEWHERE", "[kms] keyring"),
])
def test_changed_config_refused_at_mount(tmp_path, state, names, setting, pattern, replacement,
                                         shown):
    v = make(tmp_path, "v", names=names)
    mounted_once(v, {"f": b"data"})
    other = "plain" if names == "encrypted" else "encrypted"
    replacement = replacement.replace("SWAP", other)
    if setting == "kms":
        # An attacker's keyring: a valid one, at a path of their choosing.
        evil = tmp_path / "evil.keyring"
        ctl("keyring", "create", evil)
        replacement = f"keyring = {evil}"
    if setting == "format_version":
        # A downgrade also drops the MAC a version-1 volume cannot have.
        text = (v.backing / CONF).read_text()
        (v.backing / CONF).write_text(re.sub(r"^mac = .*\n", "", text, flags=re.M))
    if setting == "names":
        # The attacker makes the rest of [volume] consistent: a MAC exactly when it must be there.
        text = (v.backing / CONF).read_text()
        text = (re.sub(r"^mac = .*\n", "", text, flags=re.M) if names == "encrypted"
                else text.replace("names = plain\n", "names = plain\nmac = " + "ab" * 32 + "\n"))
        (v.backing / CONF).write_text(text)
    edit_conf(v, pattern, replacement)
    proc = v.mount(check=False)
    assert proc.returncode == 3, proc.stderr
    assert shown in proc.stderr and "envelopefsctl pin" in proc.stderr, proc.stderr


def test_mac_refuses_a_changed_config_on_a_new_host(tmp_path, state, monkeypatch):
    """A host that never saw the volume has no pin: the MAC under the volume key decides."""
    v = make(tmp_path, "v")
    edit_conf(v, r"^block_size = 4096$", "block_size = 16384")
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(tmp_path / "fresh-host"))
    proc = v.mount(check=False)
    assert proc.returncode == 3, proc.stderr
    assert "mac does not match" in proc.stderr
    # Removing the MAC is no way around it.
    text = (v.backing / CONF).read_text()
    (v.backing / CONF).write_text(re.sub(r"^mac = .*\n", "", text, flags=re.M))
    proc = v.mount(check=False)
    assert proc.returncode == 3 and "mac is missing" in proc.stderr, proc.stderr


def test_volume_replaced_at_its_path_refused(tmp_path, state, monkeypatch):
    """The storage puts a whole other volume (its own KMS, its own UUID) where this one was."""
    v = make(tmp_path, "v")
    mounted_once(v, {"f": b"data"})
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(tmp_path / "attacker-host"))
    evil = make(tmp_path, "evil")
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(state))
    shutil.rmtree(v.backing)
    shutil.copytree(evil.backing, v.backing, symlinks=True)
    proc = v.mount(check=False)
    assert proc.returncode == 3, proc.stderr
    assert "the volume was replaced" in proc.stderr and "envelopefsctl pin" in proc.stderr


def test_deliberate_change_accepted_with_pin(tmp_path, state):
    """Moving the keyring is a legitimate edit: refused until `envelopefsctl pin`, then fine."""
    v = make(tmp_path, "v")
    mounted_once(v, {"f": b"kept"})
    moved = tmp_path / "moved.keyring"
    shutil.copy2(v.keyring, moved)
    edit_conf(v, r"^keyring = .*$", f"keyring = {moved}")
    proc = v.mount(check=False)
    assert proc.returncode == 3 and "[kms] keyring changed from" in proc.stderr, proc.stderr
    out = ctl("pin", v.backing).stdout
    assert "accepting a changed configuration" in out and "sealed" in out
    v.mount()
    try:
        assert get(v.mnt / "f") == b"kept"
    finally:
        v.unmount()
    # A host that never saw it accepts the re-sealed configuration too.
    os.environ["ENVELOPEFS_STATE_DIR"] = str(tmp_path / "another-host")
    v.mount()
    v.unmount()


def test_format1_volume_keeps_mounting(tmp_path, state):
    """A version-1 configuration (no MAC) mounts, and is pinned from then on."""
    for names in ("encrypted", "plain"):
        v = make(tmp_path, f"v1-{names}", names=names)
        text = (v.backing / CONF).read_text()
        text = re.sub(r"^mac = .*\n", "", text, flags=re.M)
        (v.backing / CONF).write_text(text.replace("format_version = 2", "format_version = 1"))
        shutil.rmtree(state)  # what an older release left: no pin (init pinned the edit's original)
        mounted_once(v, {"f": b"old"})
        v.mount()
        try:
            assert get(v.mnt / "f") == b"old"
        finally:
            v.unmount()
        edit_conf(v, r"^block_size = 4096$", "block_size = 8192")
        proc = v.mount(check=False)
        assert proc.returncode == 3 and "[volume] block_size" in proc.stderr, proc.stderr
