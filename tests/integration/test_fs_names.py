# SPDX-License-Identifier: MIT
"""Encrypted names, symlink targets and xattrs, on real mounts (docs/FORMAT.md, "Names, symlink
targets and xattrs"): nothing in plaintext on the backing store, every name round-trips, long names
keep their side records paired, directories move with their IDs, and tampering is refused."""
import errno
import os
import struct
import subprocess
import time

import pytest

from mounts import CTL, DAEMON, Volume, get, put

MARK = "NAMEMARK"


@pytest.fixture(params=["header", "xattr"])
def evol(request, tmp_path):
    v = Volume(tmp_path, placement=request.param, names="encrypted")
    v.mount()
    yield v
    v.unmount()


@pytest.fixture
def hevol(tmp_path):
    """Header placement with encrypted names, for tests that edit the backing tree."""
    v = Volume(tmp_path, placement="header", names="encrypted")
    v.mount()
    yield v
    v.unmount()


def ctl(*args):
    return subprocess.run([str(CTL), *map(str, args)], capture_output=True, timeout=120)


def backing_entries(v, sub=""):
    """Every backing entry below @sub: {relative path: lstat}."""
    out = {}
    for root, dirs, files in os.walk(v.backing / sub):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, v.backing)] = os.lstat(p)
    return out


def side_records(v):
    return sorted(p for p in backing_entries(v) if p.endswith(".name"))


def long_entries(v):
    return sorted(p for p in backing_entries(v)
                  if os.path.basename(p).startswith("envelopefs.long.") and not p.endswith(".name"))


def test_backing_holds_no_plaintext_name_target_or_xattr(evol):
    m = evol.mnt
    os.makedirs(m / f"{MARK}dir" / f"{MARK}sub")
    put(m / f"{MARK}dir" / f"{MARK}file", MARK.encode() * 10)
    put(m / f"{MARK}empty", b"")
    os.symlink(f"../{MARK}target/{MARK}", m / f"{MARK}link")
    os.symlink(MARK * 300, m / f"{MARK}longlink")  # a long target
    long_name = MARK * 30  # 240 bytes: a long name with a side record
    put(m / f"{MARK}dir" / long_name, b"x")
    os.mkfifo(m / f"{MARK}fifo")
    for target in (m / f"{MARK}dir", m / f"{MARK}dir" / f"{MARK}file", m / f"{MARK}empty"):
        os.setxattr(target, f"user.{MARK}name", f"{MARK}value".encode())
    assert os.getxattr(m / f"{MARK}empty", f"user.{MARK}name") == f"{MARK}value".encode()
    evol.unmount()
    needle = MARK.encode()
    seen = 0
    for root, dirs, files in os.walk(evol.backing):
        for n in dirs + files:
            p = os.path.join(root, n)
            seen += 1
            assert needle not in n.encode(), p
            for attr in os.listxattr(p, follow_symlinks=False):
                assert needle not in attr.encode(), (p, attr)
                assert needle not in os.getxattr(p, attr, follow_symlinks=False), (p, attr)
            if os.path.islink(p):
                assert needle not in os.readlink(p).encode(), p
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    assert needle not in f.read(), p
    assert seen >= 12
    evol.mount()
    assert os.readlink(m / f"{MARK}link") == f"../{MARK}target/{MARK}"
    assert os.readlink(m / f"{MARK}longlink") == MARK * 300
    assert os.lstat(m / f"{MARK}link").st_size == len(f"../{MARK}target/{MARK}")
    assert get(m / f"{MARK}dir" / long_name) == b"x"


def test_every_length_and_byte_round_trips(evol):
    m = evol.mnt
    os.mkdir(m / "d")
    d = os.fsencode(m / "d")
    names = set()
    for n in range(1, 256):
        names.add(bytes((ord("a") + (i * 7 + n) % 26) for i in range(n)))
    allowed = [b for b in range(1, 256) if b != ord("/")]
    for start in range(0, len(allowed), 50):
        names.add(bytes(allowed[start:start + 50]))
    names -= {b".", b".."}
    for name in names:
        with open(os.path.join(d, name), "wb") as f:
            f.write(name[:16])
    listed = set(os.listdir(d))
    assert listed == names
    evol.remount()
    assert set(os.listdir(d)) == names
    for name in names:
        with open(os.path.join(d, name), "rb") as f:
            assert f.read() == name[:16]
    with pytest.raises(OSError) as e:
        open(os.path.join(d, b"n" * 256), "wb")
    assert e.value.errno == errno.ENAMETOOLONG
    for name in names:
        os.unlink(os.path.join(d, name))
    assert os.listdir(d) == []
    # Nothing of the 300 entries is left behind, side records included.
    inside = [p for p in backing_entries(evol) if os.path.dirname(p)]
    assert [os.path.basename(p) for p in inside] == ["envelopefs.dirid"], inside


def test_long_names_create_rename_link_unlink(evol):
    m = evol.mnt
    long1, long2, short = "L" * 200, "M" * 255, "short"
    os.mkdir(m / "a")
    os.mkdir(m / "b")
    put(m / "a" / long1, b"one")
    assert os.listdir(m / "a") == [long1]
    assert len(long_entries(evol)) == 1 and len(side_records(evol)) == 1
    # Long -> short, short -> long, long -> long across directories.
    os.rename(m / "a" / long1, m / "a" / short)
    assert os.listdir(m / "a") == [short]
    assert long_entries(evol) == [] and side_records(evol) == []
    os.rename(m / "a" / short, m / "b" / long2)
    assert os.listdir(m / "a") == [] and os.listdir(m / "b") == [long2]
    os.rename(m / "b" / long2, m / "a" / long1)
    assert os.listdir(m / "b") == [] and get(m / "a" / long1) == b"one"
    assert len(long_entries(evol)) == 1 and len(side_records(evol)) == 1
    # Hard links under long names, then unlink one by one.
    os.link(m / "a" / long1, m / "b" / long2)
    os.link(m / "a" / long1, m / "b" / long1)
    assert os.stat(m / "a" / long1).st_nlink == 3
    assert sorted(os.listdir(m / "b")) == sorted([long1, long2])
    assert len(long_entries(evol)) == 3 and len(side_records(evol)) == 3
    # Replacing a long name by a rename keeps exactly one record for it.
    put(m / "b" / "tmp", b"two")
    os.rename(m / "b" / "tmp", m / "b" / long2)
    assert get(m / "b" / long2) == b"two" and os.stat(m / "a" / long1).st_nlink == 2
    assert len(long_entries(evol)) == 3 and len(side_records(evol)) == 3
    os.unlink(m / "a" / long1)
    os.unlink(m / "b" / long1)
    os.unlink(m / "b" / long2)
    assert long_entries(evol) == [] and side_records(evol) == []
    # Long directory names, symlinks and special files.
    os.mkdir(m / long1)
    os.symlink("target", m / long1 / long2)
    os.mkfifo(m / long1 / long1)
    assert sorted(os.listdir(m / long1)) == sorted([long1, long2])
    assert os.readlink(m / long1 / long2) == "target"
    os.rename(m / long1 / long2, m / long1 / short)
    assert os.readlink(m / long1 / short) == "target"
    with pytest.raises(OSError) as e:
        os.rmdir(m / long1)
    assert e.value.errno == errno.ENOTEMPTY
    os.unlink(m / long1 / short)
    os.unlink(m / long1 / long1)
    os.rmdir(m / long1)
    assert long_entries(evol) == [] and side_records(evol) == []
    evol.remount()
    assert sorted(os.listdir(m)) == ["a", "b"]


def test_moving_a_deep_directory_reencrypts_only_its_name(hevol):
    m = hevol.mnt
    deep = m / "top" / "x" / "y" / "z"
    os.makedirs(deep)
    for i in range(5):
        put(deep / f"f{i}", b"%d" % i)
        os.symlink(f"f{i}", deep / f"l{i}")
    os.mkdir(m / "elsewhere")
    top = hevol.backing_path("top")
    inside = {p: (s.st_ino, s.st_size) for p, s in backing_entries(hevol, top.name).items()}
    os.rename(m / "top", m / "elsewhere" / "moved")
    moved = hevol.backing_path("elsewhere/moved")
    assert moved.name != top.name
    after = {os.path.relpath(p, os.path.relpath(moved, hevol.backing)): (s.st_ino, s.st_size)
             for p, s in backing_entries(hevol, os.path.relpath(moved, hevol.backing)).items()}
    before = {os.path.relpath(p, top.name): v for p, v in inside.items()}
    assert after == before  # every child keeps its backing name and inode
    hevol.remount()
    deep = m / "elsewhere" / "moved" / "x" / "y" / "z"
    for i in range(5):
        assert get(deep / f"f{i}") == b"%d" % i
        assert os.readlink(deep / f"l{i}") == f"f{i}"
    # A symlink's target moves with it (FORMAT.md "Symlink targets, version 2"): a rename keeps
    # its inode, and it hard-links.
    ino = os.lstat(deep / "l0").st_ino
    os.rename(deep / "l0", m / "l0-moved")
    assert os.readlink(m / "l0-moved") == "f0" and os.lstat(m / "l0-moved").st_ino == ino
    os.link(m / "l0-moved", m / "l0-hard", follow_symlinks=False)
    assert os.readlink(m / "l0-hard") == "f0" and os.lstat(m / "l0-hard").st_nlink == 2


def test_tampered_names_are_skipped_and_fail_lookups(hevol):
    m = hevol.mnt
    os.mkdir(m / "d")
    os.mkdir(m / "other")
    put(m / "other" / "fine", b"ok")
    for n in ("a", "b", "L" * 200):
        put(m / "d" / n, n.encode()[:4])
    os.symlink("a", m / "d" / "link")
    os.symlink("b", m / "d" / "link2")
    hevol.unmount()
    bd = hevol.backing_path("d")
    links = {n: hevol.backing_path(f"d/{n}") for n in ("link", "link2")}
    # A short name with a character changed, a long name's side record made another's.
    ba = hevol.backing_path("d/a")
    assert len(ba.name) > 22
    flipped = ba.name[:5] + ("A" if ba.name[5] != "A" else "B") + ba.name[6:]
    os.rename(ba, bd / flipped)
    side = next(bd.glob("envelopefs.long.*.name"))
    target = os.readlink(side)
    os.unlink(side)
    os.symlink(target[:-2] + ("AA" if not target.endswith("AA") else "BB"), side)
    # A symlink target with a character changed.
    stored = os.readlink(links["link2"])
    os.unlink(links["link2"])
    os.symlink(stored[:-3] + ("A" if stored[-3] != "A" else "B") + stored[-2:], links["link2"])
    hevol.mount()
    assert sorted(os.listdir(m / "d")) == ["b", "link", "link2"]
    with pytest.raises(OSError) as e:
        os.stat(m / "d" / ("L" * 200))
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        os.readlink(m / "d" / "link2")
    assert e.value.errno == errno.EIO
    assert os.readlink(m / "d" / "link") == "a"
    assert hevol.status()["errors"]["integrity"] >= 3
    # A missing directory ID breaks that directory only.
    hevol.unmount()
    os.unlink(bd / "envelopefs.dirid")
    hevol.mount()
    with pytest.raises(OSError) as e:
        os.listdir(m / "d")
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        os.stat(m / "d" / "b")
    assert e.value.errno == errno.EIO
    assert get(m / "other" / "fine") == b"ok"
    assert sorted(os.listdir(m)) == ["d", "other"]


def test_xattrs_bound_to_their_file_and_acls_pass(hevol):
    m = hevol.mnt
    put(m / "f", b"1")
    put(m / "g", b"2")
    put(m / "empty", b"")
    os.mkdir(m / "d")
    for p in (m / "f", m / "g", m / "d", m / "empty"):
        os.setxattr(p, "user.tag", b"value of " + p.name.encode())
        os.setxattr(p, "user.none", b"")
    assert os.getxattr(m / "empty", "user.tag") == b"value of empty"
    assert os.stat(m / "empty").st_size == 0
    assert os.getxattr(m / "f", "user.none") == b""
    assert sorted(os.listxattr(m / "d")) == ["user.none", "user.tag"]
    os.removexattr(m / "g", "user.none")
    assert os.listxattr(m / "g") == ["user.tag"]
    with pytest.raises(OSError) as e:
        os.getxattr(m / "g", "user.none")
    assert e.value.errno == errno.ENODATA
    # A POSIX ACL (user::rw-, user:1234:r--, group::r--, mask::r--, other::---) passes through.
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in [
        (0x01, 6, 0xFFFFFFFF), (0x02, 4, 1234), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF),
        (0x20, 0, 0xFFFFFFFF)])
    os.setxattr(m / "f", "system.posix_acl_access", acl)
    assert os.getxattr(m / "f", "system.posix_acl_access") == acl
    hevol.unmount()
    bf, bg = hevol.backing_path("f"), hevol.backing_path("g")
    assert os.getxattr(bf, "system.posix_acl_access") == acl
    # Copy f's sealed user.tag (name and value) onto g: g must not show or decrypt it.
    sealed = [a for a in os.listxattr(bf) if a.startswith("user.") and a != "user.envelopefs.key"]
    assert len(sealed) == 2
    for a in [a for a in os.listxattr(bg) if a.startswith("user.") and a != "user.envelopefs.key"]:
        os.removexattr(bg, a)
    for a in sealed:
        os.setxattr(bg, a, os.getxattr(bf, a))
    hevol.mount()
    assert os.listxattr(m / "g") == []
    assert get(m / "g") == b"2"
    assert os.getxattr(m / "f", "user.tag") == b"value of f"


def test_rotation_rewraps_the_volume_key_and_retire_waits_for_it(tmp_path):
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    put(v.mnt / "f", b"")  # no content, no record: only the volume key uses version 1
    v.unmount()
    ctl("keyring", "rotate", v.keyring)
    assert ctl("rotate", "--check", "--offline", v.backing).returncode == 1
    assert ctl("keyring", "retire", "--volume", v.backing, v.keyring, "1").returncode == 1
    assert ctl("rotate", "--offline", v.backing).returncode == 0
    assert ctl("keyring", "retire", "--volume", v.backing, v.keyring, "1").returncode == 0
    v.mount()
    assert get(v.mnt / "f") == b""
    assert os.getxattr(v.mnt, "trusted.envelopefs.key").split()[0] == b"2"
    v.unmount()


def test_volume_key_missing_or_tampered_refuses_mount(tmp_path):
    v = Volume(tmp_path, names="encrypted")
    key = v.backing / "envelopefs.key"
    good = key.read_bytes()
    assert len(good) == 512 and good[:4] == b"EFSL"
    key.unlink()
    proc = v.mount(check=False)
    assert proc.returncode == 4 and "envelopefs.key" in proc.stderr
    bad = bytearray(good)
    bad[40] ^= 1
    key.write_bytes(bytes(bad))
    proc = v.mount(check=False)
    assert proc.returncode == 4 and "envelopefs.key" in proc.stderr
    key.write_bytes(good)
    v.mount()
    v.unmount()


def test_offline_ls_and_decrypt_by_path(tmp_path):
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    os.makedirs(v.mnt / "docs" / ("D" * 180))
    put(v.mnt / "docs" / ("D" * 180) / "report.txt", b"quarterly")
    os.symlink("report.txt", v.mnt / "docs" / "link")
    v.unmount()
    assert b"names:           encrypted" in ctl("info", v.backing).stdout
    out = ctl("ls", v.backing)
    assert out.returncode == 0 and out.stdout.decode() == "d docs\n"
    out = ctl("ls", v.backing, "docs").stdout.decode().splitlines()
    assert sorted(out) == ["d " + "D" * 180, "l link"]
    out = ctl("decrypt", "--path", v.backing, f"docs/{'D' * 180}/report.txt")
    assert out.returncode == 0 and out.stdout == b"quarterly"
    missing = ctl("decrypt", "--path", v.backing, "docs/nope.txt")
    assert missing.returncode == 1
    # Plain-names volumes list the same way.
    (tmp_path / "p").mkdir()
    p = Volume(tmp_path / "p", names="plain")
    p.mount()
    put(p.mnt / "a.txt", b"a")
    p.unmount()
    assert ctl("ls", p.backing).stdout == b"f a.txt\n"
    assert ctl("decrypt", "--path", p.backing, "a.txt").stdout == b"a"


def test_crash_debris_is_hidden_and_harmless(hevol):
    """What a crash can leave (docs/FORMAT.md): a side record without its entry, a directory
    under a temporary name.  Neither shows, and both names can be used again."""
    m = hevol.mnt
    os.mkdir(m / "d")
    long_name = "C" * 200
    put(m / "d" / long_name, b"x")
    os.mkdir(m / "d" / "sub")
    hevol.unmount()
    bd = hevol.backing_path("d")
    entry = next(p for p in bd.glob("envelopefs.long.*") if not p.name.endswith(".name"))
    os.unlink(entry)  # crashed between the side record and the entry
    sub = hevol.backing_path("d/sub")
    os.rename(sub, bd / "envelopefs.tmp.1.1")  # crashed before the rename into place
    hevol.mount()
    assert os.listdir(m / "d") == []
    with pytest.raises(FileNotFoundError):
        os.stat(m / "d" / long_name)
    put(m / "d" / long_name, b"again")
    os.mkdir(m / "d" / "sub")
    assert sorted(os.listdir(m / "d")) == sorted([long_name, "sub"])
    os.unlink(m / "d" / long_name)
    os.rmdir(m / "d" / "sub")
    os.rmdir(m / "d")  # the debris goes with its directory
    assert os.listdir(m) == []
