"""A storage host that lies (issue 15): each attack edits the backing directly while the volume is
unmounted, and the next mount or read must refuse it.  Every test runs with its own host state
directory ($ENVELOPEFS_STATE_DIR), as a host of its own would."""
import os
import re
import shutil
import subprocess

import pytest

from mounts import CTL, DAEMON, Volume, get, put

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
    ("key_records", r"^key_records = header\nheader_size = \d+$", "key_records = xattr",
     "[volume] key_records"),
    ("format_version", r"^format_version = 3$", "format_version = 1", "[volume] format_version"),
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
        (v.backing / CONF).write_text(text.replace("format_version = 3", "format_version = 1"))
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
    if v.placement != "header":
        return 0
    return int(re.search(r"^header_size = (\d+)$", (v.backing / CONF).read_text(), re.M)[1])


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
    conf.write_text(conf.read_text().replace("format_version = 3", "format_version = 1"))
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


# --- 15.2: files bound to their entries --------------------------------------------------------

def swap(a, b):
    """What the storage host does: exchange two backing files."""
    tmp = a.with_name(a.name + ".swap")
    os.rename(a, tmp)
    os.rename(b, a)
    os.rename(tmp, b)


def open_fails(path):
    with pytest.raises(OSError) as e:
        with open(path, "rb") as f:
            f.read()
    return e.value.errno


@pytest.mark.parametrize("names", ["encrypted", "plain"])
def test_swapped_files_refused(tmp_path, state, names):
    """Issue 15.2 as filed: two backing files swapped in one directory."""
    v = make(tmp_path, "v", names=names)
    a, b = os.urandom(9000), os.urandom(5000)
    mounted_once(v, {"a": a, "b": b})
    pa, pb = v.backing_path("a"), v.backing_path("b")
    swap(pa, pb)
    v.mount()
    try:
        assert open_fails(v.mnt / "a") == 5 and open_fails(v.mnt / "b") == 5
    finally:
        v.unmount()
    cp = ctl("decrypt", "--path", v.backing, "a", check=False)
    assert cp.returncode == 3 and "binds it to other names" in cp.stderr, cp.stderr
    swap(pa, pb)  # put back: both read again
    v.mount()
    try:
        assert get(v.mnt / "a") == a and get(v.mnt / "b") == b
    finally:
        v.unmount()


@pytest.mark.parametrize("names", ["encrypted", "plain"])
def test_moved_into_another_directory_refused(tmp_path, state, names):
    """A file's content moved over another file in another directory.  With plain names the
    binding covers the name only (no directory IDs), so there it moves under another name."""
    v = make(tmp_path, "v", names=names)
    v.mount()
    try:
        (v.mnt / "d1").mkdir()
        (v.mnt / "d2").mkdir()
        put(v.mnt / "d1" / "f", b"secret of d1")
        put(v.mnt / "d2" / "f", b"file of d2")
        put(v.mnt / "d2" / "g", b"another of d2")
    finally:
        v.unmount()
    target = "d2/f" if names == "encrypted" else "d2/g"
    os.replace(v.backing_path("d1/f"), v.backing_path(target))
    v.mount()
    try:
        assert open_fails(v.mnt / target) == 5
        assert get(v.mnt / "d2" / ("g" if target == "d2/f" else "f")) != b""
    finally:
        v.unmount()


def test_older_copy_of_another_file_refused(tmp_path, state):
    """An old copy of one file put in place of another."""
    v = make(tmp_path, "v")
    mounted_once(v, {"a": b"old a", "b": b"b"})
    saved = tmp_path / "saved"
    shutil.copy2(v.backing_path("a"), saved)
    mounted_once(v, {"a": b"new a"})
    shutil.copy2(saved, v.backing_path("b"))
    v.mount()
    try:
        assert open_fails(v.mnt / "b") == 5
        assert get(v.mnt / "a") == b"new a"
    finally:
        v.unmount()


def renameat2(old, new, flags):
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    AT_FDCWD = -100
    if libc.renameat2(AT_FDCWD, str(old).encode(), AT_FDCWD, str(new).encode(), flags) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")


@pytest.mark.parametrize("names", ["encrypted", "plain"])
@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_renames_and_links_keep_working(tmp_path, state, names, placement):
    """Every way a file legitimately changes names keeps it readable, across a remount."""
    v = make(tmp_path, "v", names=names, placement=placement)
    data = {n: os.urandom(3000 + i) for i, n in enumerate("abcdefgh")}
    v.mount()
    try:
        m = v.mnt
        (m / "sub").mkdir()
        for n, d in data.items():
            put(m / n, d)
        os.rename(m / "a", m / "a2")                      # within the directory
        os.rename(m / "b", m / "sub" / "b2")                # into another one
        os.rename(m / "c", m / "d2")                      # over nothing, then over a file:
        os.rename(m / "d2", m / "e")                      # e's content is gone
        data["e"] = data["c"]
        renameat2(m / "f", m / "g", 2)                    # RENAME_EXCHANGE
        data["f"], data["g"] = data["g"], data["f"]
        os.link(m / "h", m / "sub" / "h-link")              # hard links, past what a record lists
        for i in range(5):
            os.link(m / "h", m / f"h{i}")
        os.unlink(m / "h")
        os.rename(m / "h0", m / "sub" / "h-moved")
        (m / "dir").mkdir()
        put(m / "dir" / "x", b"x")
        os.rename(m / "dir", m / "sub" / "dir-moved")       # a directory: nothing to rebind
        open(m / "empty", "wb").close()                   # no record yet when renamed
        os.rename(m / "empty", m / "later")
        put(m / "later", b"written after the rename")
    finally:
        v.unmount()
    want = {"a2": data["a"], "sub/b2": data["b"], "e": data["e"], "f": data["f"], "g": data["g"],
            "sub/h-link": data["h"], "sub/h-moved": data["h"], "h4": data["h"],
            "sub/dir-moved/x": b"x", "later": b"written after the rename"}
    v.mount()
    try:
        for path, content in want.items():
            assert get(v.mnt / path) == content, path
    finally:
        v.unmount()


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_links_made_before_the_first_record_all_read(tmp_path, state, placement):
    """Hard links of an empty file (no record yet), then its first record made through one
    name, by a write or by a user xattr: every name still opens after a remount (the record
    cannot list names this daemon never saw; found by the namespace explorer, seed 2263718702)."""
    v = make(tmp_path, "v", placement=placement)
    v.mount()
    try:
        m = v.mnt
        (m / "d").mkdir()
        open(m / "d" / "w", "wb").close()
        os.link(m / "d" / "w", m / "w-link")
        put(m / "d" / "w", b"written through the first name")
        open(m / "d" / "x", "wb").close()
        os.link(m / "d" / "x", m / "x-link")
        os.setxattr(m / "d" / "x", "user.k", b"v")
    finally:
        v.unmount()
    v.mount()
    try:
        m = v.mnt
        for name in ("d/w", "w-link"):
            assert get(m / name) == b"written through the first name", name
        for name in ("d/x", "x-link"):
            assert get(m / name) == b"", name
            assert os.getxattr(m / name, "user.k") == b"v", name
    finally:
        v.unmount()


def test_rename_lost_in_a_crash_still_reads(tmp_path, state):
    """The record lists the new entry before the backing rename: a rename that never reached
    the disk (undone here by hand) leaves a file that still opens under its old name."""
    v = make(tmp_path, "v")
    mounted_once(v, {"f": b"content"})
    old, empty_old = v.backing_path("f"), None
    v.mount()
    try:
        os.rename(v.mnt / "f", v.mnt / "g")
        # An empty file renamed, then written: its first record lists both names.
        open(v.mnt / "e", "wb").close()
        empty_old = v.backing_path("e")
        os.rename(v.mnt / "e", v.mnt / "e2")
        put(v.mnt / "e2", b"written after")
    finally:
        v.unmount()
    os.rename(v.backing_path("g"), old)
    os.rename(v.backing_path("e2"), empty_old)
    v.mount()
    try:
        assert get(v.mnt / "f") == b"content"
        assert get(v.mnt / "e") == b"written after"
    finally:
        v.unmount()


def test_format2_volume_written_as_before(tmp_path, state):
    """A format-2 volume gets no format-3 items: its records keep an empty extension, a rename
    leaves the record alone, and files are bound to nothing (a swap still reads, as before)."""
    v = make(tmp_path, "v", names="plain")
    conf = v.backing / CONF
    conf.write_text(conf.read_text().replace("format_version = 3", "format_version = 2"))
    shutil.rmtree(state)
    mounted_once(v, {"a": b"a" * 100, "b": b"b" * 100})
    before = v.backing_path("a").read_bytes()[:data_offset(v)]
    v.mount()
    try:
        os.rename(v.mnt / "a", v.mnt / "c")
    finally:
        v.unmount()
    raw = v.backing_path("c").read_bytes()
    assert raw[:data_offset(v)] == before  # the rename wrote nothing
    rec = raw[14:]
    n = rec[26]
    w = int.from_bytes(rec[27 + n:29 + n], "big")
    assert rec[4] == 2 and rec[29 + n + w] == 0  # version 2, no extension items
    swap(v.backing_path("c"), v.backing_path("b"))
    v.mount()
    try:
        assert get(v.mnt / "c") == b"b" * 100
    finally:
        v.unmount()



def test_read_only_file_renamed_without_dac_override(tmp_path, state):
    """A daemon that may not write a file it owns (no CAP_DAC_OVERRIDE, like a user's daemon)
    still renames and links it when it is read-only, as git does with its 0444 objects: the
    record update borrows write permission for its open."""
    v = make(tmp_path, "v")
    cp = subprocess.run(["setpriv", "--bounding-set=-dac_override,-dac_read_search", str(DAEMON),
                         str(v.backing), str(v.mnt)], capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    try:
        put(v.mnt / "obj.tmp", b"object")
        os.chmod(v.mnt / "obj.tmp", 0o444)
        os.rename(v.mnt / "obj.tmp", v.mnt / "obj")
        os.link(v.mnt / "obj", v.mnt / "obj2")
        assert os.stat(v.mnt / "obj").st_mode & 0o777 == 0o444
    finally:
        v.unmount()
    v.mount()
    try:
        assert get(v.mnt / "obj") == b"object" and get(v.mnt / "obj2") == b"object"
        assert os.stat(v.mnt / "obj").st_mode & 0o777 == 0o444
    finally:
        v.unmount()
