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


def test_state_dir_option(tmp_path, state):
    """-o state_dir=DIR wins over the environment: the pin goes there, and is checked there."""
    v = make(tmp_path, "v")
    shutil.rmtree(state)  # init's pin, in the environment's directory
    own = tmp_path / "own-state"
    v.mount(f"state_dir={own}")
    v.unmount()
    uuid = re.search(r"^uuid = (\S+)$", (v.backing / CONF).read_text(), re.M).group(1)
    assert (own / uuid / "config").read_text().startswith("envelopefs configuration v2\n")
    assert not state.exists()
    edit_conf(v, r"^block_size = 4096$", "block_size = 8192")
    proc = v.mount(f"state_dir={own}", check=False)
    assert proc.returncode == 3 and "[volume] block_size" in proc.stderr, proc.stderr


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


# --- 15.1: zeroed blocks ---------------------------------------------------------------------

BLOCK = 4096
SEALED = BLOCK + 28


def data_offset(v):
    return 512 if v.placement == "header" else 0


def zero_block(v, name, index):
    """What the storage host does: overwrite one stored block with zeros, in place."""
    path = v.backing_path(name)
    with open(path, "r+b") as f:
        f.seek(data_offset(v) + index * SEALED)
        f.write(bytes(SEALED))


def read_fails(path):
    with pytest.raises(OSError) as e:
        get(path)
    return e.value.errno


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_zeroed_block_reads_eio(tmp_path, state, placement):
    """Issue 15.1 as filed: 4124 zero bytes over block 3 of a 40 KiB file."""
    v = make(tmp_path, "v", names="plain", placement=placement)
    data = os.urandom(40 * 1024)
    mounted_once(v, {"f": data})
    zero_block(v, "f", 3)
    v.mount()
    try:
        assert read_fails(v.mnt / "f") == 5  # EIO
        with open(v.mnt / "f", "rb") as f:  # the blocks around it still read
            assert f.read(3 * BLOCK) == data[:3 * BLOCK]
    finally:
        v.unmount()
    cp = subprocess.run([str(CTL), "decrypt", str(v.backing), str(v.backing_path("f"))],
                        capture_output=True, timeout=60)
    assert cp.returncode == 3 and b"was zeroed" in cp.stderr, cp.stderr
    assert cp.stdout == data[:3 * BLOCK]


def test_holes_stay_holes(tmp_path, state):
    """Sparse files stay sparse and their holes read as zeros: truncate, writes past the end,
    punched ranges; across a remount (the record carries the ranges)."""
    v = make(tmp_path, "v", names="plain")
    v.mount()
    try:
        big = v.mnt / "big"
        with open(big, "wb") as f:
            f.truncate(10 << 30)
        assert os.stat(v.backing_path("big")).st_blocks * 512 < 1 << 20
        gap = v.mnt / "gap"
        with open(gap, "wb") as f:
            f.write(b"a" * 100)
            f.seek(20 * BLOCK)
            f.write(b"b" * 100)
        punched = v.mnt / "punched"
        payload = os.urandom(16 * BLOCK)
        put(punched, payload)
        fd = os.open(punched, os.O_RDWR)
        try:
            os.posix_fallocate  # noqa: B018 (present on Linux)
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2
            assert libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE,
                                  ctypes.c_long(4 * BLOCK), ctypes.c_long(4 * BLOCK)) == 0
        finally:
            os.close(fd)
    finally:
        v.unmount()
    v.mount()
    try:
        with open(v.mnt / "big", "rb") as f:
            f.seek(5 << 30)
            assert f.read(BLOCK) == bytes(BLOCK)
        assert get(v.mnt / "gap") == b"a" * 100 + bytes(20 * BLOCK - 100) + b"b" * 100
        want = payload[:4 * BLOCK] + bytes(4 * BLOCK) + payload[8 * BLOCK:]
        assert get(v.mnt / "punched") == want
    finally:
        v.unmount()
    # Outside the punched range a zeroed block is still refused.
    zero_block(v, "punched", 10)
    v.mount()
    try:
        assert read_fails(v.mnt / "punched") == 5
    finally:
        v.unmount()


def test_format1_zero_blocks_read_as_holes(tmp_path, state):
    """A version-1 volume writes version-1 records: every all-zero block stays a hole, as the
    previous release reads it."""
    v = make(tmp_path, "v", names="plain")
    conf = v.backing / CONF
    conf.write_text(conf.read_text().replace("format_version = 2", "format_version = 1"))
    shutil.rmtree(state)
    data = os.urandom(8 * BLOCK)
    mounted_once(v, {"f": data})
    raw = v.backing_path("f").read_bytes()
    assert raw[14 + 4] == 1  # the record in slot 0 is version 1
    zero_block(v, "f", 2)
    v.mount()
    try:
        assert get(v.mnt / "f") == data[:2 * BLOCK] + bytes(BLOCK) + data[3 * BLOCK:]
    finally:
        v.unmount()
