# SPDX-License-Identifier: MIT
"""envelopefsctl end to end: init, info, keyring, encrypt, decrypt (no FUSE mount needed)."""

import hashlib
import os
import shutil
import stat
import struct
import subprocess

import pytest

OVERHEAD = 28  # nonce 12 + tag 16 per block
SLOT_SIZE = 320  # header placement, local provider: header_size 640 = 2 slots (format 3)


def keyring_keys(path):
    """Master keys of a plaintext keyring file (docs/FORMAT.md, "Local keyring")."""
    data = path.read_bytes()
    assert data[:8] == b"EFSKEYRG"
    flags, = struct.unpack(">H", data[10:12])
    assert flags == 0, "a passphrase keyring: its keys cannot be read here"
    count, = struct.unpack(">I", data[32:36])
    return [data[76 + 36 * i + 4:76 + 36 * i + 36] for i in range(count)]


def assert_no_key(keys, *outputs):
    for out in outputs:
        if isinstance(out, str):
            out = out.encode()
        for key in keys:
            assert key not in out
            assert key.hex().encode() not in out.lower()


def payload(n):
    """Deterministic, non-repeating bytes (so a misplaced block is visible)."""
    out = bytearray()
    i = 0
    while len(out) < n:
        out += hashlib.sha256(i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:n])


def backing_size(vol, n):
    full, rest = divmod(n, vol.block_size)
    head = 2 * SLOT_SIZE if vol.placement == "header" and n else 0
    return head + full * (vol.block_size + OVERHEAD) + (rest + OVERHEAD if rest else 0)


def encrypt(run_ctl, vol, name, data, **kw):
    return run_ctl("encrypt", vol.backing, vol.path(name), input=data, env=vol.env, **kw)


def decrypt(run_ctl, vol, name, **kw):
    return run_ctl("decrypt", vol.backing, vol.path(name), env=vol.env, **kw)


# --- command line ---------------------------------------------------------------------------

@pytest.mark.parametrize("cmd", [["init"], ["info"], ["keyring"], ["encrypt"], ["decrypt"], []])
def test_help_documents_exit_codes(run_ctl, cmd):
    cp = run_ctl(*cmd, "--help")
    out = cp.stdout.decode()
    assert "Usage" in out
    for code in ("0  success", "2  usage error", "3  integrity failure", "4  key failure"):
        assert code in out


def test_usage_errors(run_ctl, tmp_path):
    assert run_ctl(check=False).returncode == 2
    assert run_ctl("frobnicate", check=False).returncode == 2
    assert run_ctl("init", "--bogus", tmp_path / "b", check=False).returncode == 2
    assert run_ctl("init", "--block-size", "5000", tmp_path / "b", check=False).returncode == 2
    assert run_ctl("init", "--kms", "nonesuch", tmp_path / "b", check=False).returncode == 2
    assert run_ctl("decrypt", tmp_path, check=False).returncode == 2
    assert run_ctl("keyring", "explode", tmp_path / "k", check=False).returncode == 2


@pytest.mark.parametrize("args, message", [
    (["--kms", "local", "--kms-setting", "a=b"], b"not --kms-setting"),
    (["--kms", "nonesuch", "--keyring", "k"], b"--kms local"),
    (["--kms", "nonesuch", "--kms-setting", "novalue"], b"KEY=VALUE"),
    (["--kms", "nonesuch", "--kms-setting", "=x"], b"KEY=VALUE"),
    (["--kms", "nonesuch", "--kms-setting", "a:b=x"], b"KEY=VALUE"),
    (["--kms", "nonesuch", "--kms-setting", "a=1", "--kms-setting", "a=2"], b"given twice"),
    (["--kms", "nonesuch", "--kms-setting", "provider=local"], b"given twice"),
    (["--kms", "nonesuch", "--kms-setting", "Token=s3cret"], b"Token_file"),
    (["--kms", "nonesuch", "--kms-setting", "pin=1234"], b"pin_file"),
    (["--kms", "nonesuch", "--kms-setting", "a=b"], b"names no known provider"),
])
def test_init_kms_settings_refused(run_ctl, tmp_path, args, message):
    """Provider settings are KEY=VALUE references; a secret itself is refused before it reaches a file."""
    backing = tmp_path / "b"
    cp = run_ctl("init", *args, backing, check=False)
    assert cp.returncode == 2, cp.stderr
    assert message in cp.stderr
    assert b"s3cret" not in cp.stderr and b"1234" not in cp.stderr
    assert not (backing / "envelopefs.conf").exists()


# --- init -----------------------------------------------------------------------------------

def test_init_refuses_non_empty(run_ctl, tmp_path):
    backing = tmp_path / "b"
    backing.mkdir()
    (backing / "stray").write_text("x")
    cp = run_ctl("init", "--keyring", tmp_path / "k.keyring", backing, check=False)
    assert cp.returncode == 1
    assert b"not empty" in cp.stderr and str(backing).encode() in cp.stderr
    assert not (backing / "envelopefs.conf").exists()


def test_init_refuses_existing_volume(run_ctl, volume):
    vol = volume()
    before = (vol.backing / "envelopefs.conf").read_bytes()
    cp = run_ctl("init", "--keyring", vol.keyring, vol.backing, check=False)
    assert cp.returncode == 1
    assert b"already an envelopefs volume" in cp.stderr
    assert (vol.backing / "envelopefs.conf").read_bytes() == before


def test_init_refuses_keyring_inside_backing(run_ctl, tmp_path):
    backing = tmp_path / "b"
    (tmp_path / "elsewhere").mkdir()
    for inside in (backing / "k.keyring", tmp_path / "elsewhere" / ".." / "b" / "x.keyring"):
        cp = run_ctl("init", "--keyring", inside, backing, check=False)
        assert cp.returncode == 2, cp.stderr
        assert b"inside the backing directory" in cp.stderr
        assert os.listdir(backing) == []
    # A symlink pointing into the backing directory is judged by its target.
    (tmp_path / "link").symlink_to(backing)
    cp = run_ctl("init", "--keyring", tmp_path / "link" / "k.keyring", backing, check=False)
    assert cp.returncode == 2 and b"inside the backing directory" in cp.stderr
    assert os.listdir(backing) == []


def test_init_default_keyring_location(run_ctl, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    cp = run_ctl("init", tmp_path / "photos", env=env)
    keyring = home / ".config" / "envelopefs" / "photos.keyring"
    assert keyring.exists()
    assert stat.S_IMODE(keyring.stat().st_mode) == 0o600
    out = cp.stdout.decode()
    assert str(keyring) in out and "created" in out
    # A second volume of the same name reuses (and says so) the existing keyring.
    cp = run_ctl("init", tmp_path / "other" / "photos", env=env, check=False)
    assert cp.returncode == 1  # parent directory missing: mkdir fails
    (tmp_path / "other").mkdir()
    cp = run_ctl("init", tmp_path / "other" / "photos", env=env)
    assert "existing" in cp.stdout.decode()


def test_init_creates_keyring_0600_and_config(volume):
    vol = volume()
    assert stat.S_IMODE(vol.keyring.stat().st_mode) == 0o600
    conf = (vol.backing / "envelopefs.conf").read_text()
    assert "key_records = header" in conf and "header_size = 640" in conf
    assert f"keyring = {vol.keyring}" in conf
    assert "keyring_id = " in conf


# --- info -----------------------------------------------------------------------------------

@pytest.mark.parametrize("placement,block_size", [("header", 4096), ("xattr", 65536)])
def test_info_shows_params_and_no_key(run_ctl, volume, placement, block_size):
    vol = volume(placement=placement, block_size=block_size)
    out = run_ctl("info", vol.backing).stdout.decode()
    assert f"block size:      {block_size}" in out
    assert (f"header ({2 * SLOT_SIZE} bytes" if placement == "header" else "xattr user.envelopefs.key") in out
    assert str(vol.keyring) in out
    uuid = [line.split()[-1] for line in out.splitlines() if line.startswith("uuid:")][0]
    assert len(uuid) == 36
    cp = run_ctl("info", "--kms", vol.backing)
    assert "key reference:   local:" in cp.stdout.decode()
    assert "current version: 1" in cp.stdout.decode()
    assert_no_key(keyring_keys(vol.keyring), out, cp.stdout, cp.stderr, vol.init_output)


def test_info_not_a_volume(run_ctl, tmp_path):
    cp = run_ctl("info", tmp_path, check=False)
    assert cp.returncode == 1
    assert b"not an envelopefs volume" in cp.stderr


def backing_lines(out):
    return [line for line in out.splitlines() if line.startswith("backing")]


@pytest.mark.parametrize("names", ["plain", "encrypted"])
def test_info_shows_backing(run_ctl, volume, names):
    """info probes the backing file system: its name, whether it is shared, and the
    fallback for each feature it lacks, the same lines init printed; the probe's
    scratch directory is gone again."""
    vol = volume(names=names)
    before = sorted(os.listdir(vol.backing))
    out = run_ctl("info", vol.backing).stdout.decode()
    lines = backing_lines(out)
    assert lines[0].startswith("backing fs:      ") and lines[0].split()[-1] != "unknown"
    assert lines[1] in ("backing shared:  no", "backing shared:  yes")
    fallbacks = lines[2:]
    assert fallbacks, out
    if fallbacks != ["backing: no fallbacks needed"]:
        assert all("missing; " in line or "untrusted; " in line for line in fallbacks), fallbacks
        assert backing_lines(vol.init_output) == fallbacks
    else:
        assert backing_lines(vol.init_output) == []
    if lines[0].split()[-1] in ("ext4", "xfs", "btrfs", "tmpfs"):
        assert lines == [lines[0], "backing shared:  no", "backing: no fallbacks needed"]
    assert sorted(os.listdir(vol.backing)) == before
    # The lines before them are as they were.
    assert out.splitlines()[0] == f"config:          {vol.backing}/envelopefs.conf"


@pytest.fixture
def scratch_mount(tmp_path):
    """mount(fstype, *options) -> a fresh directory with @fstype mounted on it (root only)."""
    made = []

    def mount(fstype, *options, source="envfs-test"):
        where = tmp_path / f"mnt{len(made)}"
        where.mkdir()
        cp = subprocess.run(["mount", "-t", fstype, *options, source, str(where)],
                            capture_output=True)
        if cp.returncode != 0:
            pytest.skip(f"cannot mount {fstype}: {cp.stderr.decode().strip()}")
        made.append(where)
        return where

    yield mount
    for where in reversed(made):
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_info_read_only_backing(run_ctl, volume, scratch_mount):
    """A backing info cannot write to is described anyway, saying it was not probed."""
    vol = volume()
    ro = scratch_mount("none", "-o", "bind,ro", source=str(vol.backing))
    cp = run_ctl("info", ro)
    lines = backing_lines(cp.stdout.decode())
    assert lines[0].startswith("backing fs:      ")
    assert lines[2:] == ["backing: not probed: Read-only file system"]


def test_init_xattr_records_refused_without_user_xattrs(run_ctl, tmp_path, scratch_mount):
    """ramfs stores no user xattrs: --header xattr is refused, naming what to choose,
    before anything is written; --header file works there and init names the
    fallbacks in use."""
    backing = scratch_mount("ramfs")
    cp = run_ctl("init", "--keyring", tmp_path / "k.keyring", "--header", "xattr", backing,
                 check=False)
    assert cp.returncode == 1, cp.stderr
    assert b"stores no user xattrs" in cp.stderr and b"choose --header file" in cp.stderr
    assert os.listdir(backing) == []
    cp = run_ctl("init", "--keyring", tmp_path / "k.keyring", "--header", "file", backing)
    lines = backing_lines(cp.stdout.decode())
    assert any(line.startswith("backing: user xattrs: missing; ") for line in lines), lines
    out = run_ctl("info", backing).stdout.decode()
    assert backing_lines(out)[:2] == ["backing fs:      ramfs", "backing shared:  no"]
    assert backing_lines(out)[2:] == lines
    assert sorted(os.listdir(backing)) == ["envelopefs.conf", "envelopefs.dirid", "envelopefs.key",
                                       "envelopefs.probe"]


# --- encrypt / decrypt ----------------------------------------------------------------------

@pytest.mark.parametrize("placement", ["header", "xattr"])
@pytest.mark.parametrize("block_size", [4096, 65536])
def test_round_trip(run_ctl, volume, placement, block_size):
    vol = volume(placement=placement, block_size=block_size)
    sizes = sorted({0, 1, 4095, 4096, 4097, block_size - 1, block_size, block_size + 1,
                    3 * block_size + 1})
    for n in sizes:
        data = payload(n)
        name = f"f{n}"
        encrypt(run_ctl, vol, name, data)
        assert vol.path(name).stat().st_size == backing_size(vol, n), n
        assert decrypt(run_ctl, vol, name).stdout == data, n
        if n >= 16:
            # Ciphertext only: no run of plaintext survives in the backing file.
            assert data[:32] not in vol.path(name).read_bytes()


def test_encrypt_refuses_existing_file(run_ctl, volume):
    vol = volume()
    vol.path("f").write_bytes(b"keep me")
    cp = encrypt(run_ctl, vol, "f", b"new", check=False)
    assert cp.returncode == 1
    assert b"never overwrites" in cp.stderr
    assert vol.path("f").read_bytes() == b"keep me"


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_tampered_block(run_ctl, volume, placement):
    vol = volume(placement=placement)
    bs = vol.block_size
    data = payload(3 * bs + 1)
    encrypt(run_ctl, vol, "f", data)
    path = vol.path("f")
    clean = path.read_bytes()
    head = 2 * SLOT_SIZE if placement == "header" else 0
    for bad_block in (0, 1, 3):
        raw = bytearray(clean)
        raw[head + bad_block * (bs + OVERHEAD) + 20] ^= 0x01
        path.write_bytes(raw)
        cp = decrypt(run_ctl, vol, "f", check=False)
        assert cp.returncode == 3, cp.stderr
        err = cp.stderr.decode()
        assert f"block {bad_block} " in err and str(path) in err
        # Exactly the blocks before the bad one, and no byte of it.
        assert cp.stdout == data[:bad_block * bs]
    path.write_bytes(clean)
    assert decrypt(run_ctl, vol, "f").stdout == data


def test_swapped_blocks(run_ctl, volume):
    vol = volume()
    bs = vol.block_size
    data = payload(2 * bs)
    encrypt(run_ctl, vol, "f", data)
    raw = vol.path("f").read_bytes()
    b0 = raw[512:512 + bs + OVERHEAD]
    b1 = raw[512 + bs + OVERHEAD:]
    vol.path("f").write_bytes(raw[:512] + b1 + b0)
    cp = decrypt(run_ctl, vol, "f", check=False)
    assert cp.returncode == 3 and b"block 0 " in cp.stderr
    assert cp.stdout == b""


def test_truncated_file(run_ctl, volume):
    vol = volume()
    encrypt(run_ctl, vol, "f", payload(5000))
    size = vol.path("f").stat().st_size
    for cut in (size - 1000, 512 + 4096 + OVERHEAD + 10, 300):
        os.truncate(vol.path("f"), cut)
        cp = decrypt(run_ctl, vol, "f", check=False)
        assert cp.returncode == 3, (cut, cp.stderr)


def test_record_copied_to_another_file(run_ctl, volume):
    for placement in ("header", "xattr"):
        vol = volume(placement=placement)
        encrypt(run_ctl, vol, "a", payload(6000))
        encrypt(run_ctl, vol, "b", payload(7000)[::-1])
        a, b = vol.path("a"), vol.path("b")
        if placement == "header":
            b.write_bytes(a.read_bytes()[:512] + b.read_bytes()[512:])
        else:
            os.setxattr(b, "user.envelopefs.key", os.getxattr(a, "user.envelopefs.key"))
        cp = decrypt(run_ctl, vol, "b", check=False)
        assert cp.returncode == 3, cp.stderr
        assert b"block 0 " in cp.stderr
        assert cp.stdout == b""


def test_file_copied_to_another_volume(run_ctl, volume):
    one, two = volume(), volume()
    encrypt(run_ctl, one, "f", payload(100))
    shutil.copy(one.path("f"), two.path("f"))
    # Different keyring: refused as a key failure before any unwrap.
    cp = decrypt(run_ctl, two, "f", check=False)
    assert cp.returncode == 4 and b"names master key" in cp.stderr
    # Even with the right keyring the record is bound to the first volume's UUID.
    cp = run_ctl("decrypt", "--keyring", one.keyring, two.backing, two.path("f"), check=False)
    assert cp.returncode == 4  # keyring ID does not match two's config
    assert b"is not the keyring of this volume" in cp.stderr


def test_key_ref_mismatch(run_ctl, volume):
    vol = volume()
    encrypt(run_ctl, vol, "f", payload(10))
    raw = bytearray(vol.path("f").read_bytes())
    ref_at = 14 + 27  # slot header 14, record offset 27
    n = raw[14 + 26]
    assert raw[ref_at:ref_at + 6] == b"local:"
    raw[ref_at + 6:ref_at + n] = b"0" * (n - 6)
    raw[SLOT_SIZE - 16:SLOT_SIZE] = hashlib.sha256(raw[:SLOT_SIZE - 16]).digest()[:16]
    vol.path("f").write_bytes(raw)
    cp = decrypt(run_ctl, vol, "f", check=False)
    assert cp.returncode == 4
    assert b"local:00000000000000000000000000000000" in cp.stderr


def test_wrong_keyring(run_ctl, volume, tmp_path):
    vol = volume()
    encrypt(run_ctl, vol, "f", payload(100))
    other = tmp_path / "other.keyring"
    run_ctl("keyring", "create", other)
    cp = run_ctl("decrypt", "--keyring", other, vol.backing, vol.path("f"), check=False)
    assert cp.returncode == 4
    assert b"is not the keyring of this volume" in cp.stderr and str(other).encode() in cp.stderr
    # The same via the configuration file.
    conf = vol.backing / "envelopefs.conf"
    conf.write_text(conf.read_text().replace(str(vol.keyring), str(other)))
    cp = decrypt(run_ctl, vol, "f", check=False)
    assert cp.returncode == 4 and b"is not the keyring of this volume" in cp.stderr
    # Missing keyring.
    conf.write_text(conf.read_text().replace(str(other), str(tmp_path / "gone.keyring")))
    cp = decrypt(run_ctl, vol, "f", check=False)
    assert cp.returncode == 4 and b"does not exist" in cp.stderr


def test_keyring_mode_refused(run_ctl, volume):
    vol = volume()
    encrypt(run_ctl, vol, "f", payload(10))
    for mode in (0o640, 0o604):
        os.chmod(vol.keyring, mode)
        cp = decrypt(run_ctl, vol, "f", check=False)
        assert cp.returncode == 4
        assert f"chmod 600 {vol.keyring}".encode() in cp.stderr
    os.chmod(vol.keyring, 0o600)
    assert decrypt(run_ctl, vol, "f").stdout == payload(10)


def test_corrupt_keyring_refused(run_ctl, volume):
    vol = volume()
    encrypt(run_ctl, vol, "f", payload(10))
    raw = bytearray(vol.keyring.read_bytes())
    raw[100] ^= 1
    vol.keyring.write_bytes(raw)
    cp = decrypt(run_ctl, vol, "f", check=False)
    assert cp.returncode == 4 and b"restore it from backup" in cp.stderr
    assert cp.stdout == b""


def record_version(path):
    raw = path.read_bytes()
    # Slot 0 holds the first record: slot header 14, key version at record offset 22.
    return struct.unpack(">I", raw[14 + 22:14 + 26])[0]


def test_rotate_then_decrypt(run_ctl, volume):
    vol = volume()
    old = payload(9000)
    encrypt(run_ctl, vol, "old", old)
    cp = run_ctl("keyring", "rotate", vol.keyring)
    assert "version 2 is now current" in cp.stdout.decode()
    new = payload(5000)
    encrypt(run_ctl, vol, "new", new)
    assert record_version(vol.path("old")) == 1
    assert record_version(vol.path("new")) == 2
    assert decrypt(run_ctl, vol, "old").stdout == old
    assert decrypt(run_ctl, vol, "new").stdout == new
    out = run_ctl("keyring", "list", vol.keyring).stdout.decode()
    assert "current version:  2" in out and "versions:         1 2" in out
    keys = keyring_keys(vol.keyring)
    assert len(keys) == 2 and keys[0] != keys[1]
    assert_no_key(keys, out, cp.stdout)


def test_passphrase_from_env_and_file(run_ctl, volume, tmp_path):
    secret = "tr0ub4dor & 3"
    vol = volume(passphrase=secret)
    assert vol.keyring.read_bytes()[11] & 1  # passphrase flag
    data = payload(5000)
    encrypt(run_ctl, vol, "f", data)
    assert decrypt(run_ctl, vol, "f").stdout == data

    cp = run_ctl("decrypt", vol.backing, vol.path("f"), check=False)
    assert cp.returncode == 4 and b"ENVELOPEFS_PASSPHRASE" in cp.stderr and cp.stdout == b""
    cp = run_ctl("decrypt", vol.backing, vol.path("f"),
                 env={"ENVELOPEFS_PASSPHRASE": "wrong"}, check=False)
    assert cp.returncode == 4 and b"wrong passphrase" in cp.stderr and cp.stdout == b""

    pfile = tmp_path / "pass.txt"
    pfile.write_text(secret + "\n")  # one trailing newline is ignored
    # A passphrase file that group or others may read is refused, as a PIN file is.
    cp = run_ctl("decrypt", "--passphrase-file", pfile, vol.backing, vol.path("f"), check=False)
    assert cp.returncode == 4 and b"chmod 600" in cp.stderr and cp.stdout == b"", cp.stderr
    pfile.chmod(0o600)
    assert run_ctl("decrypt", "--passphrase-file", pfile, vol.backing,
                   vol.path("f")).stdout == data
    # A pipe is the reading process's alone: taken whatever its mode.
    assert run_ctl("decrypt", "--passphrase-file", "/dev/stdin", vol.backing, vol.path("f"),
                   input=(secret + "\n").encode()).stdout == data
    assert run_ctl("decrypt", vol.backing, vol.path("f"),
                   env={"ENVELOPEFS_PASSPHRASE_FILE": str(pfile)}).stdout == data
    # The file named on the command line wins over the variable.
    cp = run_ctl("decrypt", "--passphrase-file", pfile, vol.backing, vol.path("f"),
                 env={"ENVELOPEFS_PASSPHRASE": "wrong"})
    assert cp.stdout == data

    cp = run_ctl("keyring", "rotate", vol.keyring, env=vol.env)
    out = run_ctl("keyring", "list", "--passphrase-file", pfile, vol.keyring).stdout.decode()
    assert "passphrase:       yes" in out and "versions:         1 2" in out
    assert decrypt(run_ctl, vol, "f").stdout == data
    for text in (out, cp.stdout, cp.stderr, vol.init_output):
        assert secret not in (text if isinstance(text, str) else text.decode())


def test_passphrase_file_recorded_by_init(run_ctl, tmp_path):
    pfile = tmp_path / "pass.txt"
    pfile.write_text("from a file\n")
    pfile.chmod(0o600)
    backing = tmp_path / "b"
    run_ctl("init", "--keyring", tmp_path / "k.keyring", "--passphrase-file", pfile, backing)
    assert f"passphrase_file = {pfile}" in (backing / "envelopefs.conf").read_text()
    # No environment needed: the volume names its passphrase file.
    run_ctl("encrypt", backing, backing / "f", input=b"hello")
    assert run_ctl("decrypt", backing, backing / "f").stdout == b"hello"


def test_no_key_material_printed(run_ctl, volume, tmp_path):
    vol = volume()
    outputs = [vol.init_output]

    def run(*args, **kw):
        cp = run_ctl(*args, check=False, **kw)
        outputs.extend([cp.stdout if args[0] != "decrypt" else b"", cp.stderr])
        return cp

    run("info", "--kms", vol.backing)
    run("keyring", "list", vol.keyring)
    run("keyring", "rotate", vol.keyring)
    run("encrypt", vol.backing, vol.path("f"), input=payload(10000))
    run("decrypt", vol.backing, vol.path("f"))
    raw = bytearray(vol.path("f").read_bytes())
    raw[600] ^= 1
    vol.path("f").write_bytes(raw)
    run("decrypt", vol.backing, vol.path("f"))
    run("keyring", "list", tmp_path / "nope.keyring")
    keys = keyring_keys(vol.keyring)
    assert len(keys) == 2
    assert_no_key(keys, *outputs)
