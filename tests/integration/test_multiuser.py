"""A root mount with allow_other used by unprivileged users (issue 7, "Multi-user").

The daemon runs as root and adds default_permissions, so the kernel enforces
modes and owners, and the daemon hands every new entry to its creator.  Each
check runs a small Python program under `setpriv` as an unprivileged uid with
chosen groups, and compares what it could and could not do with what the
same modes allow on a local filesystem.
"""
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mounts import Volume

ALICE, BOB, CAROL = 2101, 2102, 2103  # plain uids; no passwd entry is needed
STAFF = 2200                          # a group alice belongs to, bob does not

# Runs inside setpriv: try each (label, python expression) and report
# "ok" (or the expression's value) / the errno name, as one JSON object.
PROBE = r"""
import errno, json, os, socket, sys
m = sys.argv[1]
os.umask(int(sys.argv[2], 8))
def sock(p):
    s = socket.socket(socket.AF_UNIX); s.bind(p); s.close()
def write(p, data=b"x", flags=os.O_WRONLY):
    fd = os.open(p, flags); os.write(fd, data); os.close(fd)
out = {}
for label, expr in json.loads(sys.stdin.read()):
    try:
        value = eval(expr)
        out[label] = "ok" if value is None else value
    except OSError as e:
        out[label] = errno.errorcode[e.errno]
print(json.dumps(out))
"""


def probe(mnt, uid, groups, steps, umask=0o022):
    """Run @steps [(label, expr)] as @uid (primary group = first of @groups)."""
    cmd = ["setpriv", f"--reuid={uid}", f"--regid={groups[0]}",
           "--groups=" + ",".join(map(str, groups)), "--inh-caps=-all", "--bounding-set=-all",
           sys.executable, "-c", PROBE, str(mnt), f"{umask:o}"]
    proc = subprocess.run(cmd, input=json.dumps(steps), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@contextlib.contextmanager
def users_volume():
    """A volume in a directory every uid can enter (pytest's tmp_path is
    root-only); unmounted and removed afterwards."""
    root = Path(tempfile.mkdtemp(prefix="envelopefs-users-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    v = Volume(root)
    try:
        yield v
    finally:
        v.unmount()
        shutil.rmtree(root)


def mount_for_users(v, daemon_settings):
    """Mount @v with allow_other and the [daemon] lines @daemon_settings, the mount point 0755."""
    settings = v.root / "daemon.ini"
    settings.write_text("[daemon]\n" + daemon_settings)
    v.mount("allow_other", f"config={settings}")
    os.chmod(v.mnt, 0o755)


@pytest.fixture(scope="module", params=[True, False], ids=["writeback", "direct"])
def shared(request):
    """One allow_other mount per module."""
    with users_volume() as v:
        mount_for_users(v, f"writeback_cache = {str(request.param).lower()}\n")
        yield v


@pytest.fixture
def area(shared, request):
    """A fresh root-owned directory per test, mode 0755."""
    d = shared.mnt / request.node.name.replace("[", "_").replace("]", "")
    d.mkdir(mode=0o755)
    yield d
    shutil.rmtree(d)


def lst(path):
    st = os.lstat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_permissions_are_enforced_for_other_users(shared, area):
    (area / "secret").write_bytes(b"root only")
    os.chmod(area / "secret", 0o600)
    (area / "readable").write_bytes(b"everyone reads")
    os.chmod(area / "readable", 0o644)
    (area / "locked").mkdir(mode=0o700)
    (area / "locked" / "inside").write_bytes(b"x")
    r = probe(area, ALICE, [ALICE], [
        ("read_secret", "open(m + '/secret', 'rb').read()"),
        ("read_readable", "open(m + '/readable', 'rb').read().decode()"),
        ("write_readable", "write(m + '/readable')"),
        ("truncate_readable", "os.truncate(m + '/readable', 0)"),
        ("create_in_root_dir", "write(m + '/new', flags=os.O_WRONLY | os.O_CREAT)"),
        ("mkdir_in_root_dir", "os.mkdir(m + '/newdir')"),
        ("unlink_root_file", "os.unlink(m + '/readable')"),
        ("rename_root_file", "os.rename(m + '/readable', m + '/moved')"),
        ("list_locked", "os.listdir(m + '/locked')"),
        ("stat_in_locked", "os.stat(m + '/locked/inside')"),
        ("chmod_root_file", "os.chmod(m + '/readable', 0o666)"),
        ("chown_root_file", "os.chown(m + '/readable', %d, -1)" % ALICE),
        ("utime_explicit", "os.utime(m + '/readable', (1, 1))"),
        ("setxattr_root_file", "os.setxattr(m + '/readable', 'user.x', b'1')"),
        ("access_w", "os.access(m + '/readable', os.W_OK)"),
        ("access_r", "os.access(m + '/readable', os.R_OK)"),
    ])
    assert r == {
        "read_secret": "EACCES", "read_readable": "everyone reads",
        "write_readable": "EACCES", "truncate_readable": "EACCES",
        "create_in_root_dir": "EACCES", "mkdir_in_root_dir": "EACCES",
        "unlink_root_file": "EACCES", "rename_root_file": "EACCES",
        "list_locked": "EACCES", "stat_in_locked": "EACCES",
        "chmod_root_file": "EPERM", "chown_root_file": "EPERM",
        "utime_explicit": "EPERM", "setxattr_root_file": "EACCES",
        "access_w": False, "access_r": True,
    }
    assert (area / "readable").read_bytes() == b"everyone reads"
    assert not (area / "new").exists() and not (area / "newdir").exists()


def test_created_entries_belong_to_their_creator(shared, area):
    os.chmod(area, 0o777)
    r = probe(area, ALICE, [ALICE, STAFF], [
        ("file", "write(m + '/f', flags=os.O_WRONLY | os.O_CREAT)"),
        ("file600", "os.close(os.open(m + '/f600', os.O_CREAT | os.O_WRONLY, 0o600))"),
        ("dir", "os.mkdir(m + '/d')"),
        ("symlink", "os.symlink('f', m + '/l')"),
        ("fifo", "os.mkfifo(m + '/p')"),
        ("socket", "sock(m + '/s')"),
        ("hardlink", "os.link(m + '/f', m + '/f.link')"),
        ("chmod_own", "os.chmod(m + '/f', 0o640)"),
        ("chgrp_member", "os.chown(m + '/f', -1, %d)" % STAFF),
        ("chgrp_not_member", "os.chown(m + '/d', -1, 0)"),
        ("chown_give_away", "os.chown(m + '/d', %d, -1)" % BOB),
        ("utime_own", "os.utime(m + '/f600', (100, 200))"),
        ("setxattr_own", "os.setxattr(m + '/f600', 'user.tag', b'v')"),
        ("device", "os.mknod(m + '/null', 0o666 | 0o020000, os.makedev(1, 3))"),
    ])
    assert set(r.values()) == {"ok", "EPERM"}
    assert [k for k, v in r.items() if v == "EPERM"] == [
        "chgrp_not_member", "chown_give_away", "device"]
    assert lst(area / "f") == (ALICE, STAFF, 0o640)
    assert lst(area / "f600") == (ALICE, ALICE, 0o600)
    assert lst(area / "d") == (ALICE, ALICE, 0o755)
    assert lst(area / "l")[:2] == (ALICE, ALICE)
    assert lst(area / "p") == (ALICE, ALICE, 0o644)
    assert lst(area / "s")[:2] == (ALICE, ALICE)
    assert os.stat(area / "f.link").st_ino == os.stat(area / "f").st_ino
    assert os.stat(area / "f600").st_mtime == 200
    assert os.getxattr(area / "f600", "user.tag") == b"v"
    assert not (area / "null").exists()
    # The backing entries carry the same owners (a root daemon would
    # otherwise leave them root's), so they survive a remount.
    rel = area.relative_to(shared.mnt)
    assert lst(shared.backing_path(f"{rel}/d")) == (ALICE, ALICE, 0o755)
    assert os.lstat(shared.backing_path(f"{rel}/l")).st_uid == ALICE


def test_root_keeps_full_control(shared, area):
    (area / "dev").mkdir()
    os.mknod(area / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    st = os.stat(area / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    # FUSE mounts are nodev unless mounted with -o dev: the node is kept
    # (an import or a restore can carry it), but it opens nothing.
    with pytest.raises(PermissionError):
        open(area / "dev" / "null", "wb")
    (area / "f").write_bytes(b"x")
    os.chown(area / "f", ALICE, STAFF)
    os.chown(area / "dev" / "null", BOB, BOB)
    os.symlink("f", area / "l")
    os.chown(area / "l", CAROL, CAROL, follow_symlinks=False)
    assert lst(area / "f") == (ALICE, STAFF, 0o644)
    assert lst(area / "l")[:2] == (CAROL, CAROL)
    assert lst(area / "dev" / "null")[:2] == (BOB, BOB)
    # The owner may now use it; another user may not write it.
    r = probe(area, ALICE, [ALICE], [("own", "write(m + '/f', b'mine')")])
    assert r == {"own": "ok"}
    r = probe(area, BOB, [BOB], [("other", "write(m + '/f', b'bob')")])
    assert r == {"other": "EACCES"}
    assert (area / "f").read_bytes() == b"mine"


def test_sticky_directory(shared, area):
    tmp = area / "tmp"
    tmp.mkdir()
    os.chmod(tmp, 0o1777)
    r = probe(tmp, ALICE, [ALICE], [
        ("create", "write(m + '/alice', flags=os.O_WRONLY | os.O_CREAT)"),
        ("create2", "write(m + '/alice2', flags=os.O_WRONLY | os.O_CREAT)"),
        ("chmod", "os.chmod(m + '/alice', 0o666)"),
    ])
    assert set(r.values()) == {"ok"}
    r = probe(tmp, BOB, [BOB], [
        ("unlink_other", "os.unlink(m + '/alice')"),
        ("rename_other", "os.rename(m + '/alice', m + '/bob')"),
        ("replace_other", "write(m + '/b', flags=os.O_WRONLY | os.O_CREAT) or "
                          "os.rename(m + '/b', m + '/alice2')"),
        ("write_other", "write(m + '/alice', b'bob was here')"),
        ("own_create_unlink", "write(m + '/c', flags=os.O_WRONLY | os.O_CREAT) or "
                              "os.unlink(m + '/c')"),
    ])
    assert r == {"unlink_other": "EPERM", "rename_other": "EPERM", "replace_other": "EPERM",
                 "write_other": "ok", "own_create_unlink": "ok"}
    r = probe(tmp, ALICE, [ALICE], [("unlink_own", "os.unlink(m + '/alice')")])
    assert r == {"unlink_own": "ok"}
    os.unlink(tmp / "alice2")  # root may


def test_setgid_directory_inherits_group(shared, area):
    proj = area / "proj"
    proj.mkdir()
    os.chown(proj, 0, STAFF)
    os.chmod(proj, 0o2775)
    r = probe(proj, ALICE, [ALICE, STAFF], [
        ("file", "write(m + '/f', flags=os.O_WRONLY | os.O_CREAT)"),
        ("dir", "os.mkdir(m + '/sub')"),
        ("nested", "write(m + '/sub/g', flags=os.O_WRONLY | os.O_CREAT)"),
        ("fifo", "os.mkfifo(m + '/p')"),
        ("symlink", "os.symlink('f', m + '/l')"),
    ])
    assert set(r.values()) == {"ok"}
    assert lst(proj / "f") == (ALICE, STAFF, 0o755)
    assert lst(proj / "sub") == (ALICE, STAFF, 0o2755)  # subdirectories stay setgid
    assert lst(proj / "sub" / "g") == (ALICE, STAFF, 0o755)
    assert lst(proj / "p")[:2] == (ALICE, STAFF)
    assert lst(proj / "l")[:2] == (ALICE, STAFF)
    # A non-member cannot make a file setgid to a group it is not in: the
    # bit is dropped, as on a local filesystem.
    os.chmod(proj, 0o2777)
    r = probe(proj, BOB, [BOB], [
        ("create_sgid", "os.close(os.open(m + '/b', os.O_CREAT | os.O_WRONLY, 0o2755))"),
        ("chmod_sgid", "os.chmod(m + '/b', 0o2755)"),
    ])
    assert r == {"create_sgid": "ok", "chmod_sgid": "ok"}
    assert lst(proj / "b") == (BOB, STAFF, 0o755)


@pytest.mark.parametrize("writeback", [True, False], ids=["writeback", "direct"])
def test_writes_by_others_clear_setuid_setgid_as_locally(writeback):
    """The daemon negotiates FUSE_HANDLE_KILLPRIV_V2 (fs/killpriv.h), so the kernel
    leaves clearing setuid/setgid on a write or truncate by a caller without
    CAP_FSETID to it.  Every (mode, caller, operation) ends with the mode the
    same steps leave on a local filesystem; root's own writes keep the bits.
    Long attribute and entry timeouts: a mode the kernel kept cached after
    the daemon changed it would show."""
    modes = (0o4777, 0o2777, 0o2767, 0o6777, 0o6766, 0o0777)
    ops = {"append": "write(m + '/%s', flags=os.O_WRONLY | os.O_APPEND)",
           "truncate": "os.truncate(m + '/%s', 1)",
           "o_trunc": "write(m + '/%s', flags=os.O_WRONLY | os.O_TRUNC)",
           "overwrite": "write(m + '/%s', b'y' * 9000)"}
    callers = {"alice": (ALICE, [ALICE, STAFF]), "bob": (BOB, [BOB]), "root": None}
    with users_volume() as v:
        mount_for_users(v, f"writeback_cache = {str(writeback).lower()}\n"
                        "attr_timeout = 600\nentry_timeout = 600\n")
        area, local = v.mnt, v.root / "local"
        assert v.status()["daemon"]["handle_killpriv_v2"] is True
        local.mkdir()
        os.chmod(local, 0o755)
        results = {}
        for where in (area, local):
            names = []
            for mode in modes:
                for op in ops:
                    for who in callers:
                        name = f"{mode:o}-{op}-{who}"
                        (where / name).write_bytes(b"#!/bin/sh\n" * 500)
                        os.chown(where / name, 0, STAFF)
                        os.chmod(where / name, mode)
                        names.append(name)
            # The mode as the caller sees it right after its step: the
            # kernel's cached attributes must not keep a cleared bit.
            # stat(1) asks statx for the mode alone, which the kernel
            # answers from its cache while that is valid.
            results[where] = {}
            for who, caller in callers.items():
                shown = ("int(__import__('subprocess').run(['stat', '-c', '%%a', m + '/%s'], "
                         "capture_output=True, text=True, check=True).stdout, 8)")
                steps = [(n, f"({ops[n.split('-')[1]] % n}, {shown % n})[1]")
                         for n in names if n.endswith(who)]
                if caller is None:
                    env = {"os": os, "m": str(where), "write": _root_write,
                           "__builtins__": __builtins__}
                    results[where].update({n: eval(expr, env) for n, expr in steps})
                else:
                    results[where].update(probe(where, caller[0], caller[1], steps))
        assert results[area] == results[local]
        # The cases that matter did change: not a comparison of two no-ops.
        assert results[area]["4777-append-bob"] == 0o777
        assert results[area]["2767-overwrite-bob"] == 0o767
        assert results[area]["2767-overwrite-alice"] == 0o2767
        assert results[area]["6777-truncate-root"] == 0o6777



def test_fallocate_and_chown_clear_setuid_setgid_as_locally():
    """Two cases FUSE_HANDLE_KILLPRIV_V2 leaves to the daemon without a flag
    that says whether the caller has CAP_FSETID: fallocate(2) (FUSE_FALLOCATE
    carries no kill flag at all) and chown(2) (flagged whatever the caller).
    A local filesystem clears setuid/setgid on fallocate by a caller without
    CAP_FSETID, and on chown keeps a setgid bit without group execute for a
    caller in the file's group or with CAP_FSETID (root; the root of a user
    namespace of one's own holds it only there), and on a write keeps it
    for a member of the file's group, whatever its place among the caller's
    groups.  Each step's mode,
    as the caller sees it at once (long attribute timeouts), must be the
    local one."""
    root = Path(tempfile.mkdtemp(prefix="envelopefs-users-", dir="/var/tmp"))
    os.chmod(root, 0o755)
    v = Volume(root)
    settings = root / "daemon.ini"
    settings.write_text("[daemon]\nattr_timeout = 600\nentry_timeout = 600\n")
    v.mount("allow_other", f"config={settings}")
    os.chmod(v.mnt, 0o755)
    local = root / "local"
    shown = ("int(__import__('subprocess').run(['stat', '-c', '%%a', m + '/%s'], "
             "capture_output=True, text=True, check=True).stdout, 8)")
    fallocate = ("(lambda fd: (os.posix_fallocate(fd, 0, %d), os.close(fd)))"
                 "(os.open(m + '/%s', os.O_WRONLY))")
    # (name, owner, group, mode, caller, step)
    cases = []
    for mode in (0o4777, 0o2777, 0o2767, 0o6777, 0o6766):
        for who in ("alice", "bob", "root"):
            for size in (100, 100000):  # inside the file, and growing it
                cases.append((f"{mode:o}-falloc{size}-{who}", 0, STAFF, mode, who,
                              fallocate % (size, f"{mode:o}-falloc{size}-{who}")))
        # alice again, her group STAFF after 70 others (the kernel sorts them)
        cases.append((f"{mode:o}-append-groups", 0, STAFF, mode, "groups",
                      f"write(m + '/{mode:o}-append-groups', flags=os.O_WRONLY | os.O_APPEND)"))
        # bob as the root of a user namespace of his own: every capability
        # there, none over the volume's files
        cases.append((f"{mode:o}-falloc-userns", 0, STAFF, mode, "userns",
                      fallocate % (100000, f"{mode:o}-falloc-userns")))
        # root gives the file away; alice takes it into her group
        cases.append((f"{mode:o}-chown-root", 0, STAFF, mode, "root",
                      f"os.chown(m + '/{mode:o}-chown-root', {ALICE}, -1)"))
        cases.append((f"{mode:o}-chgrp-alice", ALICE, 0, mode, "alice",
                      f"os.chown(m + '/{mode:o}-chgrp-alice', -1, {STAFF})"))
    callers = {"alice": (ALICE, [ALICE, STAFF]), "bob": (BOB, [BOB]),
               "groups": (ALICE, [ALICE, *range(1000, 1070), STAFF])}  # kept sorted
    try:
        local.mkdir()
        os.chmod(local, 0o755)
        results = {}
        for where in (v.mnt, local):
            for name, uid, gid, mode, _, _ in cases:
                (where / name).write_bytes(b"#!/bin/sh\n" * 500)
                os.chown(where / name, uid, gid)
                os.chmod(where / name, mode)
            results[where] = {}
            for who in ("alice", "bob", "root", "userns", "groups"):
                steps = [(name, f"({step}, {shown % name})[1]")
                         for name, _, _, _, caller, step in cases if caller == who]
                if who == "root":
                    env = {"os": os, "m": str(where), "__builtins__": __builtins__}
                    results[where].update({n: eval(expr, env) for n, expr in steps})
                elif who == "userns":
                    for name, expr in steps:
                        proc = subprocess.run(
                            ["setpriv", f"--reuid={BOB}", f"--regid={BOB}", "--clear-groups",
                             "unshare", "--user", "--map-root-user", sys.executable, "-c",
                             f"import os\nm = {str(where)!r}\nprint({expr})"],
                            capture_output=True, text=True, timeout=60)
                        assert proc.returncode == 0, proc.stderr
                        results[where][name] = int(proc.stdout)
                else:
                    results[where].update(probe(where, *callers[who], steps))
        assert results[v.mnt] == results[local]
        # The cases that matter did change, or stayed: not two no-ops compared.
        assert results[local]["4777-falloc100000-bob"] == 0o777
        assert results[local]["2767-falloc100-bob"] == 0o767
        assert results[local]["2767-falloc100-alice"] == 0o2767
        assert results[local]["6777-falloc100-root"] == 0o6777
        assert results[local]["6777-falloc-userns"] == 0o777
        assert results[local]["6766-append-groups"] == 0o2766
        assert results[local]["2767-chown-root"] == 0o2767
        assert results[local]["6766-chown-root"] == 0o2766
        assert results[local]["2767-chgrp-alice"] == 0o767
    finally:
        v.unmount()
        shutil.rmtree(root)

def _root_write(p, data=b"x", flags=os.O_WRONLY):
    fd = os.open(p, flags)
    os.write(fd, data)
    os.close(fd)


def test_ownership_survives_remount(tmp_path):
    """Owners and modes live in the backing entries themselves."""
    with users_volume() as v:
        v.mount("allow_other")
        os.chmod(v.mnt, 0o1777)
        r = probe(v.mnt, ALICE, [ALICE], [
            ("f", "write(m + '/a', b'alice data', os.O_WRONLY | os.O_CREAT)"),
            ("chmod", "os.chmod(m + '/a', 0o600)"),
        ])
        assert set(r.values()) == {"ok"}
        v.unmount()
        v.mount("allow_other")
        assert lst(v.mnt / "a") == (ALICE, ALICE, 0o600)
        r = probe(v.mnt, ALICE, [ALICE], [("read", "open(m + '/a', 'rb').read().decode()")])
        assert r == {"read": "alice data"}
        r = probe(v.mnt, BOB, [BOB], [("read", "open(m + '/a', 'rb').read()")])
        assert r == {"read": "EACCES"}


def test_without_allow_other_other_users_are_shut_out(tmp_path):
    with users_volume() as v:
        v.mount()
        os.chmod(v.mnt, 0o777)
        r = probe(v.root, ALICE, [ALICE], [("stat", "os.stat(m + '/mnt') and None"),
                                         ("list", "os.listdir(m + '/mnt')")])
        assert r == {"stat": "EACCES", "list": "EACCES"}
