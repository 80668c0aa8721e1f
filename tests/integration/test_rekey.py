"""envelopefsctl rotate --rekey: a fresh DEK per file, content re-encrypted in place, crash-safe."""
import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from mounts import CTL, Volume, unmount, vol, hvol  # noqa: F401
from test_rotate import backing_data, ctl, daemon_pid, random_writer

BLOCK = 4096
HEADER = 640  # header placement, local keyring, format 3
KEY_XATTR = "trusted.envelopefs.key"
KEY_RECORD_XATTR = "user.envelopefs.key"  # the record itself, with xattr placement


def file_id(path):
    return os.getxattr(path, KEY_XATTR).split()[2]


def populate(m):
    """Sizes around block edges, a sparse file, a hard link, an empty file."""
    contents = {}
    for size in (1, BLOCK - 1, BLOCK, BLOCK + 1, 5 * BLOCK + 17, 300000):
        contents[f"s{size}"] = os.urandom(size)
    for name, data in contents.items():
        (m / name).write_bytes(data)
    with open(m / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(8 * 1024 * 1024)
        f.write(b"tail")
    contents["sparse"] = b"head" + bytes(8 * 1024 * 1024 - 4) + b"tail"
    os.link(m / "s4097", m / "link")
    contents["link"] = contents["s4097"]
    (m / "empty").write_bytes(b"")
    contents["empty"] = b""
    return contents


def check(m, contents):
    for name, data in contents.items():
        assert (m / name).read_bytes() == data, name


def journals(v):
    d = v.backing / "envelopefs.rekey"
    return sorted(os.listdir(d)) if d.exists() else []


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_rekey_online_keeps_content_inodes_links_and_holes(tmp_path, placement, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v = Volume(tmp_path, placement=placement)
    v.mount()
    m = v.mnt
    contents = populate(m)
    names = [n for n in contents if n != "empty"]
    ids = {n: file_id(m / n) for n in names}
    inodes = {n: os.stat(m / n).st_ino for n in contents}
    mtimes = {n: os.stat(v.backing_path(n)).st_mtime_ns for n in contents}
    sparse_blocks = os.stat(v.backing / "sparse").st_blocks
    before = backing_data(v)

    run = ctl("rotate", "--rekey", "--json", m)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    # The hard link's inode is re-keyed once or twice (both names walked); both are fine.
    assert summary["rekeyed"] + summary["already_current"] == len(names)
    assert summary["empty"] == 1 and summary["failed"] == 0

    after = backing_data(v)
    for n in names:
        assert file_id(m / n) != ids[n], n
        # Every stored block changed (new key, new nonce), holes stayed holes.
        assert len(after[n]) == len(before[n])
        assert after[n] != before[n]
    assert os.stat(v.backing / "sparse").st_blocks <= sparse_blocks + 8
    assert file_id(m / "link") == file_id(m / "s4097")
    assert {n: os.stat(m / n).st_ino for n in contents} == inodes
    check(m, contents)
    assert journals(v) == []
    assert not (tmp_path / "state" / "envelopefs").exists() or \
        os.listdir(tmp_path / "state" / "envelopefs") == []  # a complete run leaves no state
    v.remount()
    check(m, contents)
    # No content changed: no mtime moved, in the backing tree or the mount.
    assert {n: os.stat(v.backing_path(n)).st_mtime_ns for n in contents} == mtimes
    assert {n: os.stat(m / n).st_mtime_ns for n in contents} == mtimes
    assert "envelopefs.rekey" not in os.listdir(m)
    with pytest.raises(PermissionError):
        os.mkdir(m / "envelopefs.rekey")
    v.unmount()


def test_rekey_old_key_no_longer_opens_the_content(tmp_path, monkeypatch):
    """The old record (and with it the old DEK) put back in front of re-keyed content fails."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v = Volume(tmp_path)
    v.mount()
    (v.mnt / "f").write_bytes(b"secret" * 2000)
    v.unmount()
    old_header = (v.backing / "f").read_bytes()[:HEADER]
    v.mount()
    assert ctl("rotate", "--rekey", v.mnt).returncode == 0
    v.unmount()
    data = bytearray((v.backing / "f").read_bytes())
    data[:HEADER] = old_header
    (v.backing / "f").write_bytes(bytes(data))
    v.mount()
    with pytest.raises(OSError):
        (v.mnt / "f").read_bytes()
    v.unmount()


def test_rekey_while_applications_write(hvol, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    m = hvol.mnt
    for i in range(16):
        (m / f"f{i}").write_bytes(os.urandom(40 * BLOCK))
    errors, stop, models = [], threading.Event(), {}
    threads = [threading.Thread(target=random_writer,
                                args=(m / f"f{k}", 42 * BLOCK, k, stop, errors, models))
               for k in range(0, 16, 3)]
    for t in threads:
        t.start()
    for _ in range(2):
        run = ctl("rotate", "--rekey", "--jobs", "4", m)
        assert run.returncode == 0, run.stderr
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    hvol.remount()
    for k, data in models.items():
        assert (m / f"f{k}").read_bytes() == data


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_kill_daemon_during_rekey(tmp_path, placement, monkeypatch):
    """kill -9 the daemon at random moments of re-keys; the next mount finishes them from the
    journal and every file reads back byte-identical."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v = Volume(tmp_path, placement=placement)
    v.mount()
    contents = {}
    for i in range(6):
        contents[f"big{i}"] = os.urandom(random.choice([3, 6, 9]) * 1024 * 1024 + 5)
        (v.mnt / f"big{i}").write_bytes(contents[f"big{i}"])
    for i in range(40):
        contents[f"small{i}"] = os.urandom(random.choice([10, BLOCK + 1, 20000]))
        (v.mnt / f"small{i}").write_bytes(contents[f"small{i}"])
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    for round_ in range(6):
        tool = subprocess.Popen([str(CTL), "rotate", "--rekey", "--jobs", "3", str(v.mnt)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.02, 0.4))
        os.kill(daemon_pid(v), signal.SIGKILL)
        tool.wait(timeout=60)
        unmount(v.mnt)
        proc = v.mount()
        assert journals(v) == [], f"seed={seed} round={round_}: {proc.stderr}"
        for name, data in contents.items():
            assert (v.mnt / name).read_bytes() == data, f"seed={seed} round={round_} {name}"
            assert file_id(v.mnt / name) is not None
    done = ctl("rotate", "--rekey", v.mnt)
    assert done.returncode == 0, done.stderr
    v.unmount()


def test_kill_tool_then_resume(hvol, tmp_path):
    state = tmp_path / "rekey.ids"
    for i in range(200):
        (hvol.mnt / f"f{i}").write_bytes(b"x" * 3000)
    ids = {i: file_id(hvol.mnt / f"f{i}") for i in range(200)}
    tool = subprocess.Popen([str(CTL), "rotate", "--rekey", "--state", str(state), "--jobs", "1",
                             str(hvol.mnt)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while (not state.exists() or len(state.read_text().split()) < 20) and \
            time.monotonic() < deadline:
        time.sleep(0.01)
    tool.kill()
    tool.wait()
    done_before = sum(1 for i in range(200) if file_id(hvol.mnt / f"f{i}") != ids[i])
    assert 20 <= done_before < 200
    resumed = ctl("rotate", "--rekey", "--state", state, "--json", hvol.mnt)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming a re-key run" in resumed.stderr
    summary = json.loads(resumed.stdout)
    # Files listed in the state are skipped; at most one was re-keyed but not yet listed.
    assert summary["already_current"] >= done_before - 1
    assert summary["rekeyed"] + summary["already_current"] == 200
    assert all(file_id(hvol.mnt / f"f{i}") != ids[i] for i in range(200))
    assert not state.exists()
    for i in range(200):
        assert (hvol.mnt / f"f{i}").read_bytes() == b"x" * 3000


def test_rekey_offline_and_tampered_block(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v = Volume(tmp_path)
    v.mount()
    contents = populate(v.mnt)
    (v.mnt / "bad").write_bytes(b"b" * (3 * BLOCK))
    ids = {n: file_id(v.mnt / n) for n in contents if n != "empty"}
    v.unmount()
    raw = bytearray((v.backing / "bad").read_bytes())
    raw[HEADER + BLOCK + 100] ^= 1  # one bit of block 1
    (v.backing / "bad").write_bytes(bytes(raw))

    mounted = ctl("rotate", "--offline", "--rekey", v.backing)
    assert mounted.returncode == 0 or "mounted" not in mounted.stderr
    run = ctl("rotate", "--offline", "--rekey", "--keyring", v.keyring, "--json", v.backing)
    assert run.returncode == 1
    assert "bad" in run.stderr
    summary = json.loads(run.stdout)
    assert summary["failed"] == 1
    # The tampered file is left exactly as it was; no journal is left behind.
    assert (v.backing / "bad").read_bytes() == bytes(raw)
    assert journals(v) == []
    v.mount()
    check(v.mnt, contents)
    for n, old in ids.items():
        assert file_id(v.mnt / n) != old, n
    v.unmount()


# Crash points of one offline re-key (fs/rekey.h): the Nth call of a system call is the process's
# last.  fsync 1: journal; 2: the journal directory; fdatasync 1, fsync 3: flagged record (before,
# after); fdatasync 2: copied content; fsync 4: the file's mtime set back; fdatasync 3, fsync 5:
# final record; fsync 6: the journal directory again; utimensat 1: the journal takes the file's
# mtime; 3: the flagged record keeps it; renameat: journal into place; unlinkat: journal removed;
# pwrite64 40 and 100: mid-journal and mid-copy.
# With encrypted names, user xattrs are re-sealed: fsetxattr adds the copy sealed to the new ID
# (before step 2), fremovexattr drops the originals (after step 4).
KILL_POINTS = [("fdatasync", n) for n in range(1, 4)] + [("fsync", n) for n in range(1, 7)] + [
    ("utimensat", 1), ("utimensat", 3), ("renameat", 1), ("unlinkat", 1), ("pwrite64", 40),
    ("pwrite64", 100)]
XATTR_KILL_POINTS = [("fsetxattr", 1), ("fsetxattr", 2), ("fremovexattr", 1),
                     ("fremovexattr", 2)]
CRASH_CASES = ([("header", "plain", *p) for p in KILL_POINTS] +
               [("xattr", "plain", *p) for p in KILL_POINTS] +
               [("header", "encrypted", *p) for p in KILL_POINTS + XATTR_KILL_POINTS])


@pytest.mark.parametrize("placement, names, syscall, nth", CRASH_CASES)
def test_rekey_crash_at_every_step_is_finished(tmp_path, placement, names, syscall, nth,
                                               monkeypatch):
    """Kill the re-keying process just before the Nth call of a system call; the next mount (or
    offline run) finishes or forgets the re-key, and the file reads back byte-identical under one
    key: the old or the new, with its user xattrs and no stale sealed copy of them."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v = Volume(tmp_path, placement=placement, names=names)
    v.mount()
    data = os.urandom(74 * BLOCK - 100)
    (v.mnt / "f").write_bytes(data)
    (v.mnt / "g").write_bytes(b"other")
    os.setxattr(v.mnt / "f", "user.one", b"1")
    os.setxattr(v.mnt / "f", "user.two", b"22")
    mtime = 1_300_000_000_123_456_789
    os.utime(v.mnt / "f", ns=(mtime, mtime))
    old_id = file_id(v.mnt / "f")
    backing_f = v.backing_path("f")
    v.unmount()
    killed = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={syscall}",
         "-e", f"inject={syscall}:error=EIO:signal=SIGKILL:when={nth}",
         str(CTL), "rotate", "--offline", "--rekey", "--jobs", "1", "--keyring", str(v.keyring),
         str(v.backing)], capture_output=True, text=True, timeout=60)
    assert killed.returncode != 0  # the crash point was reached
    # Recovery by the daemon at mount for one half of the points, by the offline tool for the other.
    if (nth + len(syscall)) % 2:
        proc = v.mount()
    else:
        fixed = ctl("rotate", "--offline", "--check", "--keyring", v.keyring, v.backing)
        assert fixed.returncode in (0, 1), fixed.stderr
        redo = ctl("rotate", "--offline", "--rekey", "--keyring", v.keyring, v.backing)
        assert redo.returncode == 0, redo.stderr
        proc = v.mount()
    assert journals(v) == [], proc.stderr
    assert (v.mnt / "f").read_bytes() == data
    assert os.stat(v.mnt / "f").st_mtime_ns == mtime  # re-keying changes no content
    assert (v.mnt / "g").read_bytes() == b"other"
    assert file_id(v.mnt / "f") is not None
    assert os.getxattr(v.mnt / "f", "user.one") == b"1"
    assert os.getxattr(v.mnt / "f", "user.two") == b"22"
    user = [x for x in os.listxattr(backing_f) if x.startswith("user.") and x != KEY_RECORD_XATTR]
    assert len(user) == 2, user
    again = ctl("rotate", "--rekey", v.mnt)
    assert again.returncode == 0, again.stderr
    assert file_id(v.mnt / "f") != old_id
    assert (v.mnt / "f").read_bytes() == data
    assert os.getxattr(v.mnt / "f", "user.two") == b"22"
    v.unmount()


@pytest.mark.parametrize("offline", [False, True])
def test_rekey_with_encrypted_names(tmp_path, offline, monkeypatch):
    """On an encrypted-names volume the files are re-keyed and the volume key only re-wrapped;
    names, symlinks and user xattrs (sealed to the file ID, so re-sealed) still decrypt, no stale
    sealed copy is left behind, and the journal directory stays hidden."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    m = v.mnt
    os.makedirs(m / "dir one" / "sub")
    contents = {"dir one/a": os.urandom(9000), "dir one/sub/" + "n" * 200: os.urandom(100)}
    for name, data in contents.items():
        (m / name).write_bytes(data)
    os.symlink("dir one/a", m / "link")
    (m / "tagged").write_bytes(b"t" * 5000)
    os.setxattr(m / "tagged", "user.note", b"kept")
    os.setxattr(m / "tagged", "user.empty", b"")
    ids = {n: file_id(m / n) for n in [*contents, "tagged"]}
    if offline:
        v.unmount()
        run = ctl("rotate", "--offline", "--rekey", "--json", "--keyring", v.keyring, v.backing)
    else:
        run = ctl("rotate", "--rekey", "--json", m)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["rekeyed"] == len(contents) + 1 and summary["failed"] == 0
    if offline:
        v.mount()
    for name, data in contents.items():
        assert (m / name).read_bytes() == data
        assert file_id(m / name) != ids[name]
    assert file_id(m / "tagged") != ids["tagged"]
    assert (m / "tagged").read_bytes() == b"t" * 5000
    assert os.getxattr(m / "tagged", "user.note") == b"kept"
    assert os.getxattr(m / "tagged", "user.empty") == b""
    assert sorted(os.listxattr(m / "tagged")) == ["user.empty", "user.note"]
    backing_tagged = v.backing_path("tagged")
    assert len([x for x in os.listxattr(backing_tagged) if x.startswith("user.")]) == 2
    assert os.readlink(m / "link") == "dir one/a"
    assert sorted(os.listdir(m)) == ["dir one", "link", "tagged"]
    v.remount()
    assert (m / "dir one" / "a").read_bytes() == contents["dir one/a"]
    v.unmount()
