# SPDX-License-Identifier: MIT
"""Metadata answers the daemon gives without a backing call (issue 16, part 3): each must say what
ext4 says, and each must really skip the backing call.

- Security and ACL xattrs known absent (fs/xattr_absent.h): after one listxattr of a backing inode,
  getxattr of security.* and system.posix_acl_* is answered without the backing while the inode
  has none, and passed through again once one is set.
- The times of a removed file (fs/attr.c, times_of_nameless): the writeback cache sends its mtime
  as the kernel lets go of a file rm removed; with no name and no open file left, the daemon does
  not write it to the backing."""
import errno
import os
import struct
import subprocess

import pytest

from mounts import Volume, put
from test_durability import traced

# user::rw-, user:1234:r--, group::r--, mask::r--, other::---
ACL = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in [
    (0x01, 6, 0xFFFFFFFF), (0x02, 4, 1234), (0x04, 4, 0xFFFFFFFF), (0x10, 4, 0xFFFFFFFF),
    (0x20, 0, 0xFFFFFFFF)])
ABSENT_NAMES = ("security.selinux", "security.capability", "system.posix_acl_access")


@pytest.fixture(params=["plain", "encrypted"])
def v(request, tmp_path):
    vol = Volume(tmp_path, names=request.param)
    vol.mount()
    yield vol
    vol.unmount()


def outcome(call, *args):
    try:
        return ("ok", call(*args))
    except OSError as e:
        return ("err", errno.errorcode[e.errno])


def xattr_story(top):
    """The same xattr calls on a tree under @top: what each returned."""
    seen = []
    f, d, link = top / "f", top / "d", top / "hardlink"
    put(f, b"x")
    os.mkdir(d)
    os.link(f, link)

    def get_all(tag):
        for p in (f, d, link):
            for name in ABSENT_NAMES + ("system.posix_acl_default",):
                seen.append((tag, p.name, name, outcome(os.getxattr, p, name)))

    get_all("fresh")
    get_all("again")
    os.setxattr(link, "security.envtest", b"label")  # through the other name
    get_all("security set on the link")
    seen.append(("value", outcome(os.getxattr, f, "security.envtest")))
    os.removexattr(f, "security.envtest")
    get_all("security removed")
    os.setxattr(f, "system.posix_acl_access", ACL)
    get_all("acl set")
    os.removexattr(f, "system.posix_acl_access")
    get_all("acl removed")
    os.setxattr(d, "system.posix_acl_default", ACL)
    put(d / "inherits", b"y")
    os.mkdir(d / "sub")
    for p in (d, d / "inherits", d / "sub"):
        for name in ("system.posix_acl_access", "system.posix_acl_default"):
            got = outcome(os.getxattr, p, name)
            # The access ACL a new file inherits depends on the umask and create mode: only
            # whether there is one is compared.
            seen.append(("inherited", p.name, name, got[0]))
    return seen


def test_absent_xattrs_answer_as_ext4(v, tmp_path):
    reference = tmp_path / "ext4"
    reference.mkdir()
    assert xattr_story(v.mnt) == xattr_story(reference)


def backing_xattr_calls(lines, names):
    """strace lines of getxattr of one of @names, and of listxattr."""
    gets = [l for l in lines if "getxattr(" in l and any(f'"{n}"' in l for n in names)]
    lists = [l for l in lines if "listxattr(" in l]
    return gets, lists


def test_absent_xattrs_skip_the_backing(v):
    put(v.mnt / "first", b"1")
    put(v.mnt / "f", b"2")
    os.mkdir(v.mnt / "d")
    # The first answers of each kind come from the backing: the volume learns them.
    for name in ABSENT_NAMES:
        assert outcome(os.getxattr, v.mnt / "first", name) == ("err", "ENODATA")

    def ls_l_like():
        for _ in range(10):
            for p in (v.mnt / "f", v.mnt / "d"):
                for name in ABSENT_NAMES:
                    assert outcome(os.getxattr, p, name) == ("err", "ENODATA")
            assert outcome(os.getxattr, v.mnt / "d", "system.posix_acl_default") == \
                ("err", "ENODATA")

    # What the volume learnt lives on the daemon's inodes: held (O_PATH) so that a cache drop on
    # the machine cannot make the kernel forget them meanwhile, and the daemon learn again.
    holders = [os.open(p, os.O_PATH) for p in (v.mnt / "f", v.mnt / "d")]
    try:
        gets, lists = backing_xattr_calls(traced(v, ls_l_like, ["getxattr", "listxattr"]),
                                          ABSENT_NAMES + ("system.posix_acl_default",))
    finally:
        for fd in holders:
            os.close(fd)
    assert gets == []
    # At most one per inode (f's may have come with its write: the kernel asks a file it
    # writes to for security.capability).
    assert 1 <= len(lists) <= 2, lists

    # Once f has a security name, its getxattrs go to the backing again, and tell it.
    os.setxattr(v.mnt / "f", "security.envtest", b"label")

    def ask_f():
        for _ in range(5):
            assert os.getxattr(v.mnt / "f", "security.envtest") == b"label"
            assert outcome(os.getxattr, v.mnt / "f", "security.selinux") == ("err", "ENODATA")

    gets, _ = backing_xattr_calls(traced(v, ask_f, ["getxattr", "listxattr"]),
                                  ("security.envtest", "security.selinux"))
    assert len(gets) == 10, gets


def test_removed_files_times_are_not_written(v):
    for i in range(20):
        put(v.mnt / f"f{i}", b"data")

    def remove_all():
        for i in range(20):
            os.unlink(v.mnt / f"f{i}")

    lines = traced(v, remove_all, ["utimensat", "unlinkat"])
    assert len([l for l in lines if "unlinkat(" in l]) >= 20, lines
    assert [l for l in lines if "utimensat(" in l] == []


def test_mtime_alone_still_reaches_named_and_open_files(v):
    put(v.mnt / "named", b"1")
    put(v.mnt / "linked", b"2")
    os.link(v.mnt / "linked", v.mnt / "other")
    for name in ("named", "linked"):  # closed; mtime alone, as touch -m sends it
        subprocess.run(["touch", "-m", "-d", "@1000", str(v.mnt / name)], check=True)
    os.unlink(v.mnt / "other")
    put(v.mnt / "open", b"3")
    fd = os.open(v.mnt / "open", os.O_RDWR)
    try:
        os.unlink(v.mnt / "open")
        subprocess.run(["touch", "-m", "-d", "@2000", f"/proc/{os.getpid()}/fd/{fd}"], check=True)
        assert os.fstat(fd).st_mtime == 2000
        os.write(fd, b"more")
        os.fsync(fd)
        assert os.fstat(fd).st_mtime > 2000
    finally:
        os.close(fd)
    v.remount()  # the times the backing has, not the kernel's cached ones
    assert os.stat(v.mnt / "named").st_mtime == 1000
    assert os.stat(v.mnt / "linked").st_mtime == 1000
