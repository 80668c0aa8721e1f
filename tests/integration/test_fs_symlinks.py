# SPDX-License-Identifier: MIT
"""Symlinks with encrypted names as on ext4 (docs/FORMAT.md, "Symlink targets, version 2"), on real
mounts: a rename keeps the inode, hard links and RENAME_EXCHANGE work, targets of up to 4095 bytes
are stored (in the link, or in the link store past 3038 bytes), the store follows the last link,
tampering reads EIO, and volumes of format version 1 keep their links and their behaviour."""
import ctypes
import errno
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mounts import CTL, Volume, is_mounted

STORE = "envelopefs.links"
INLINE_MAX = 3038  # FORMAT.md: the longest target stored in its link
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100

libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old, new, flags):
    if libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def target_of(length, seed=0):
    """A relative target of @length bytes with every byte value but NUL."""
    alphabet = bytes(b for b in range(1, 256))
    return bytes(alphabet[(i * 31 + seed) % len(alphabet)] for i in range(length))


def store_files(v):
    d = v.backing / STORE
    return sorted(os.listdir(d)) if d.exists() else []


def stored_target(v, rel):
    """The backing symlink's own target for the plaintext path @rel."""
    return os.readlink(v.backing_path(rel))


def set_format_version(v, version, sealed=None):
    """Rewrite the volume's configuration (the volume unmounted) and accept the edit on this host
    (`envelopefsctl pin`): version 1 makes a volume as the previous release made it (no MAC);
    version 2 puts back @sealed, the configuration `init` wrote (its MAC under the volume key),
    as an in-place upgrade would leave it.  Returns the configuration replaced."""
    conf = v.backing / "envelopefs.conf"
    old = conf.read_text()
    if version == 1:
        lines = [f"format_version = {version}" if line.startswith("format_version") else line
                 for line in old.splitlines() if not line.startswith("mac =")]
        conf.write_text("\n".join(lines) + "\n")
    else:
        conf.write_text(sealed)
    pin = subprocess.run([str(CTL), "pin", str(v.backing)], capture_output=True, text=True,
                         timeout=120)
    assert pin.returncode == 0, pin.stderr
    return old


@pytest.fixture
def ev(tmp_path):
    v = Volume(tmp_path, placement="header", names="encrypted")
    v.mount()
    yield v
    v.unmount()


def test_rename_keeps_the_inode(ev):
    m = ev.mnt
    os.makedirs(m / "a")
    os.makedirs(m / "b")
    os.mkdir(m / "sticky", 0o1777)
    os.chmod(m / "sticky", 0o1777)
    os.symlink("../some/where", m / "a" / "l")
    os.symlink(target_of(3500), m / "a" / "long")
    for name in ("l", "long"):
        st = os.lstat(m / "a" / name)
        want = os.readlink(m / "a" / name)
        path = m / "a" / name
        for dest in (m / "a" / f"{name}2", m / "b" / name, m / "sticky" / name,
                     m / "sticky" / f"{name}3", m / "a" / name):
            if dest.name.endswith("3"):
                renameat2(path, dest, RENAME_NOREPLACE)
            else:
                os.rename(path, dest)
            got = os.lstat(dest)
            assert (got.st_ino, got.st_size, got.st_mtime_ns) == (st.st_ino, st.st_size,
                                                                  st.st_mtime_ns), dest
            assert os.readlink(dest) == want
            path = dest
    # The backing entry moved: the same backing inode under the new name.
    assert os.lstat(ev.backing_path("a/l")).st_nlink == 1
    ev.remount()
    assert os.readlink(m / "a" / "l") == "../some/where"
    assert os.readlink(m / "a" / "long") == os.fsdecode(target_of(3500))


def test_rename_in_a_sticky_directory_by_its_owner(tmp_path):
    """As the POSIX suites do: a user renames a link of its own in a sticky directory."""
    root = Path(tempfile.mkdtemp(prefix="envelopefs-symlinks-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    v = Volume(root, names="encrypted")
    try:
        v.mount("allow_other")
        os.chmod(v.mnt, 0o755)
        os.mkdir(v.mnt / "t", 0o1777)
        os.chmod(v.mnt / "t", 0o1777)
        script = ("import os, sys; d = sys.argv[1]; os.symlink('x' * 3100, d + '/s'); "
                  "i = os.lstat(d + '/s').st_ino; os.rename(d + '/s', d + '/u'); "
                  "st = os.lstat(d + '/u'); "
                  "print(st.st_ino == i, st.st_uid, len(os.readlink(d + '/u')))")
        out = subprocess.run(["setpriv", "--reuid=2101", "--regid=2101", "--clear-groups",
                              sys.executable, "-c", script, str(v.mnt / "t")],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["True", "2101", "3100"]
    finally:
        v.unmount()
        shutil.rmtree(root)


def test_hard_links_to_a_symlink(ev):
    m = ev.mnt
    os.mkdir(m / "d")
    for name, target in (("short", b"t/a/r/g/e/t"), ("long", target_of(4000, 7))):
        os.symlink(target, os.fsencode(m / name))
        os.link(m / name, m / "d" / f"{name}-hard", follow_symlinks=False)
        a, b = os.lstat(m / name), os.lstat(m / "d" / f"{name}-hard")
        assert a.st_ino == b.st_ino and a.st_nlink == b.st_nlink == 2
        assert os.readlink(os.fsencode(m / "d" / f"{name}-hard")) == target
        os.unlink(m / name)
        assert os.lstat(m / "d" / f"{name}-hard").st_nlink == 1
        assert os.readlink(os.fsencode(m / "d" / f"{name}-hard")) == target
    ev.remount()
    assert os.readlink(os.fsencode(m / "d" / "long-hard")) == target_of(4000, 7)


def test_exchange_with_symlinks(ev):
    m = ev.mnt
    os.mkdir(m / "dir")
    open(m / "file", "w").close()
    os.symlink("one", m / "s1")
    os.symlink(target_of(3900), os.fsencode(m / "s2"))
    ino = {n: os.lstat(m / n).st_ino for n in ("dir", "file", "s1", "s2")}
    renameat2(m / "s1", m / "s2", RENAME_EXCHANGE)
    assert os.readlink(m / "s2") == "one" and os.readlink(os.fsencode(m / "s1")) == target_of(3900)
    renameat2(m / "s1", m / "file", RENAME_EXCHANGE)
    renameat2(m / "s2", m / "dir", RENAME_EXCHANGE)
    assert os.readlink(os.fsencode(m / "file")) == target_of(3900)
    assert os.readlink(m / "dir") == "one"
    assert stat.S_ISREG(os.lstat(m / "s1").st_mode) and stat.S_ISDIR(os.lstat(m / "s2").st_mode)
    after = {"dir": "s2", "file": "s1", "s1": "dir", "s2": "file"}  # where each went
    assert {n: os.lstat(m / after[n]).st_ino for n in ino} == ino
    ev.remount()
    assert os.readlink(m / "dir") == "one"


def test_target_lengths_around_the_link_store(ev):
    m = ev.mnt
    lengths = [1, 255, INLINE_MAX - 1, INLINE_MAX, INLINE_MAX + 1, INLINE_MAX + 2, 4094, 4095]
    for n in lengths:
        os.symlink(target_of(n, n), os.fsencode(m / f"l{n}"))
        assert os.lstat(m / f"l{n}").st_size == n
    with pytest.raises(OSError) as e:
        os.symlink(target_of(4096), os.fsencode(m / "too-long"))
    assert e.value.errno == errno.ENAMETOOLONG
    external = [n for n in lengths if n > INLINE_MAX]
    assert len(store_files(ev)) == len(external)
    for n in lengths:
        text = stored_target(ev, f"l{n}")
        assert len(text) <= 4095 and ("..%d" % n in text) == (n in external), (n, text)
    ev.remount()  # nothing cached: readlink decrypts from the backing
    for n in lengths:
        assert os.lstat(m / f"l{n}").st_size == n
        assert os.readlink(os.fsencode(m / f"l{n}")) == target_of(n, n), n


def test_the_link_store_follows_the_last_link(ev):
    m = ev.mnt
    os.mkdir(m / "d")
    os.symlink(target_of(3333), os.fsencode(m / "a"))
    (only,) = store_files(ev)
    os.link(m / "a", m / "d" / "b", follow_symlinks=False)
    os.link(m / "a", m / "c", follow_symlinks=False)
    os.rename(m / "a", m / "d" / "a2")
    os.unlink(m / "d" / "b")
    assert store_files(ev) == [only]
    # A rename over one of its names, then the last unlink.
    os.symlink("short", m / "s")
    os.rename(m / "s", m / "c")
    assert store_files(ev) == [only] and os.readlink(m / "c") == "short"
    assert os.readlink(os.fsencode(m / "d" / "a2")) == target_of(3333)
    os.unlink(m / "d" / "a2")
    assert store_files(ev) == []
    # A rename over the last name removes it too, and an exchange never does.
    os.symlink(target_of(3400), os.fsencode(m / "x"))
    os.symlink(target_of(3500), os.fsencode(m / "y"))
    renameat2(m / "x", m / "y", RENAME_EXCHANGE)
    assert len(store_files(ev)) == 2
    open(m / "f", "w").close()
    os.rename(m / "f", m / "y")
    assert len(store_files(ev)) == 1
    assert os.readlink(os.fsencode(m / "x")) == target_of(3500)


def test_tampered_targets_and_store_files_read_eio(ev):
    m = ev.mnt
    os.symlink("inline-target", m / "inline")
    os.symlink(target_of(3600), os.fsencode(m / "external"))
    os.symlink("untouched", m / "fine")
    for n in ("flipped", "cut", "gone", "misstated"):
        os.symlink(target_of(3700, len(n)), os.fsencode(m / n))
    ev.unmount()

    def relink(name, text):
        p = ev.backing_path(name)
        os.unlink(p)
        os.symlink(text, p)

    def store_file(name):
        return ev.backing / STORE / stored_target(ev, name).split(".")[0]

    inline = stored_target(ev, "inline")
    relink("inline", inline[:-1] + ("A" if inline[-1] != "A" else "B"))
    with open(store_file("flipped"), "r+b") as f:
        f.seek(100)
        byte = f.read(1)
        f.seek(100)
        f.write(bytes([byte[0] ^ 1]))
    os.truncate(store_file("cut"), 3700)
    os.unlink(store_file("gone"))
    relink("misstated", stored_target(ev, "misstated").replace("..3700", "..3699"))
    ev.mount()
    errors = ev.status()["errors"]["integrity"]
    for name in ("inline", "flipped", "cut", "gone", "misstated"):
        with pytest.raises(OSError) as e:
            os.readlink(m / name)
        assert e.value.errno == errno.EIO, name
    assert os.readlink(m / "fine") == "untouched"
    assert os.readlink(os.fsencode(m / "external")) == target_of(3600)
    assert ev.status()["errors"]["integrity"] >= errors + 5
    # What FORMAT.md says a storage host can still do: copy a whole link onto another.
    ev.unmount()
    relink("fine", stored_target(ev, "external"))
    ev.mount()
    assert os.readlink(os.fsencode(m / "fine")) == target_of(3600)


def test_orphan_store_files_are_hidden_and_harmless(ev, run_ctl):
    m = ev.mnt
    os.symlink(target_of(4000), os.fsencode(m / "l"))
    ev.unmount()
    (ev.backing / STORE / "AAAAAAAAAAAAAAAAAAAAAA").write_bytes(b"debris of a crash")
    run_ctl("rotate", "--offline", ev.backing)  # the store is not files of the volume
    ev.mount()
    assert os.listdir(m) == ["l"]
    assert os.readlink(os.fsencode(m / "l")) == target_of(4000)


def test_version_1_volume_keeps_its_links_and_behaviour(tmp_path):
    v = Volume(tmp_path, placement="header", names="encrypted")
    sealed = set_format_version(v, 1)
    try:
        v.mount()
        m = v.mnt
        os.symlink("old/target", m / "v1")
        os.symlink("other", m / "v1b")
        os.symlink(target_of(3055), os.fsencode(m / "v1long"))
        with pytest.raises(OSError) as e:  # FORMAT.md version 1: at most 3055 bytes
            os.symlink(target_of(3056), os.fsencode(m / "too-long"))
        assert e.value.errno == errno.ENAMETOOLONG
        assert "." not in stored_target(v, "v1") and not (v.backing / STORE).exists()
        with pytest.raises(OSError) as e:
            os.link(m / "v1", m / "hard", follow_symlinks=False)
        assert e.value.errno == errno.EPERM
        with pytest.raises(OSError) as e:
            renameat2(m / "v1", m / "v1b", RENAME_EXCHANGE)
        assert e.value.errno == errno.EINVAL
        ino = os.lstat(m / "v1b").st_ino
        os.rename(m / "v1b", m / "renamed")  # re-sealed for its new name: a new link
        assert os.readlink(m / "renamed") == "other" and "." not in stored_target(v, "renamed")
        assert os.lstat(m / "renamed").st_ino != ino
        v.unmount()

        # Upgraded in place: the version-1 links still read, new links are version 2, and a
        # version-1 link becomes version 2 when renamed (its last new inode).
        set_format_version(v, 2, sealed)
        v.mount()
        assert os.readlink(m / "v1") == "old/target"
        assert os.readlink(os.fsencode(m / "v1long")) == target_of(3055)
        assert os.lstat(m / "v1long").st_size == 3055
        with pytest.raises(OSError) as e:
            os.link(m / "v1", m / "hard", follow_symlinks=False)
        assert e.value.errno == errno.EPERM
        os.rename(m / "v1", m / "v2")
        os.rename(m / "v1long", m / "v2long")  # 3055 bytes: external as version 2
        assert "." in stored_target(v, "v2") and "..3055" in stored_target(v, "v2long")
        ino = os.lstat(m / "v2").st_ino
        os.link(m / "v2", m / "hard", follow_symlinks=False)
        os.rename(m / "v2", m / "v2-again")
        assert os.lstat(m / "v2-again").st_ino == ino == os.lstat(m / "hard").st_ino
        os.symlink(target_of(4095), os.fsencode(m / "new"))
        v.remount()
        assert os.readlink(m / "hard") == "old/target"
        assert os.readlink(os.fsencode(m / "v2long")) == target_of(3055)
        assert os.readlink(os.fsencode(m / "new")) == target_of(4095)
        assert os.readlink(m / "renamed") == "other"
        v.unmount()
    finally:
        if is_mounted(v.mnt):
            v.unmount()
    out = subprocess.run([str(CTL), "info", str(v.backing)], capture_output=True, text=True)
    assert "format version:  3" in out.stdout
