# SPDX-License-Identifier: MIT
"""Converting a non-empty directory into a key scope, online (issue 19 point 1; docs/FORMAT.md,
"Converting a directory into a scope"), on real mounts with real local keyrings: a tree with
files, subdirectories, a long name, symlinks (an inline and an external target), xattrs, a
hard-link pair and a sparse file ends up exactly as written, every record under the scope's master
key; after a remount every unwrap for it goes to the scope's KMS, and with the scope's keyring
gone and the scope locked the tree answers EACCES while the rest of the volume works.  The
converter killed mid-way (and the daemon killed after it) leaves every file readable, and the same
command finishes the job; a writer inside the tree loses nothing; a hard link across the
boundary, or a scope below the directory, is refused before anything changes."""
import errno
import fcntl
import os
import re
import signal
import subprocess
import threading

import pytest

from mounts import CTL, Volume, daemon_pid, get, put, unmount, wait_exited
from test_prefetch import getdents

KEY_XATTR = "trusted.envelopefs.key"
SCOPE_XATTR = "trusted.envelopefs.scope"
CONVERT_XATTR = "trusted.envelopefs.convert"
LONG = "a-long-name-" + "x" * 188  # 200 bytes: longer than 255 once sealed
LONG_TARGET = "/" + "/".join(["t" * 99] * 33)  # beyond an inline target: the link store's


def ctl(*args, check=True, env=None):
    cp = subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True,
                        timeout=120, env=env)
    if check:
        assert cp.returncode == 0, f"envelopefsctl {args}: {cp.returncode}\n{cp.stderr}"
    return cp


def key_ref_of(path):
    return os.getxattr(path, KEY_XATTR).decode().split()[1]


class Tenant:
    """Directory @name of @vol, to become a scope under a local keyring of its own."""

    def __init__(self, vol, name):
        self.vol = vol
        self.dir = vol.mnt / name
        self.keyring = vol.root / f"{name.replace('/', '-')}.keyring"
        ctl("keyring", "create", self.keyring)
        out = ctl("keyring", "list", self.keyring).stdout
        self.keyring_id = next(line.split()[-1] for line in out.splitlines()
                               if line.startswith("keyring ID"))
        self.key_ref = f"local:{self.keyring_id}"

    def convert(self, check=True, env=None):
        return ctl("scope", "create", "--convert", "--kms", "local",
                   "--kms-setting", f"keyring={self.keyring}",
                   "--kms-setting", f"keyring_id={self.keyring_id}", self.dir,
                   check=check, env=env)

    def stats(self):
        return next(s for s in self.vol.status()["scopes"].values()
                    if s["key_ref"] == self.key_ref)


@pytest.fixture
def vol(tmp_path):
    vol = Volume(tmp_path, placement="header", names="encrypted")
    vol.mount()
    yield vol
    vol.unmount()


@pytest.fixture(params=["header", "xattr"])
def any_vol(request, tmp_path):
    """Key records in header slots, or in an xattr (a re-key replaces them differently)."""
    vol = Volume(tmp_path, placement=request.param, names="encrypted")
    vol.mount()
    yield vol
    vol.unmount()


def write_tree(t):
    """The tree to convert: {relative path: content} of its regular files (hard links once)."""
    files = {
        "small.txt": b"small",
        "multi.bin": os.urandom(3 * 4096 + 123),
        "sub/deeper/f.txt": b"deep file" * 50,
        LONG: b"a long name's content",
        "empty": b"",
    }
    (t / "sub" / "deeper").mkdir(parents=True)
    for rel, data in files.items():
        put(t / rel, data)
    with open(t / "sparse", "wb") as f:  # a hole, then data
        f.seek(1 << 20)
        f.write(b"after the hole")
    files["sparse"] = b"\0" * (1 << 20) + b"after the hole"
    os.link(t / "small.txt", t / "sub" / "hardlink")
    os.symlink("small.txt", t / "link")
    os.symlink(LONG_TARGET, t / "sub" / "far")
    os.setxattr(t / "small.txt", "user.note", b"file note")
    os.setxattr(t / "sub", "user.dirnote", b"dir note")
    return files


def listing(t):
    return sorted(os.path.relpath(os.path.join(top, name), t)
                  for top, dirs, others in os.walk(t) for name in dirs + others)


def check_tree(t, files, names):
    for rel, data in files.items():
        assert get(t / rel) == data, rel
    assert listing(t) == names
    assert os.readlink(t / "link") == "small.txt"
    assert os.readlink(t / "sub" / "far") == LONG_TARGET
    assert os.getxattr(t / "small.txt", "user.note") == b"file note"
    assert os.getxattr(t / "sub", "user.dirnote") == b"dir note"
    assert os.listxattr(t / "sub") == ["user.dirnote"]
    a, b = os.stat(t / "small.txt"), os.stat(t / "sub" / "hardlink")
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)


def times(t):
    """Each entry's mtime (lstat), the top's too: a conversion changes keys, not what the tree shows."""
    return {rel: os.lstat(t / rel).st_mtime_ns for rel in listing(t) + ["."]}


def records_under(t, key_ref):
    for rel in ("small.txt", "multi.bin", "sub/deeper/f.txt", LONG, "sparse"):
        assert key_ref_of(t / rel) == key_ref, rel


def test_convert_a_tree_into_a_scope(any_vol):
    vol = any_vol
    tenant = Tenant(vol, "acme")
    tenant.dir.mkdir()
    put(vol.mnt / "outside.txt", b"the volume's own")
    files = write_tree(tenant.dir)
    names = listing(tenant.dir)
    volume_ref = key_ref_of(vol.mnt / "outside.txt")
    records_under(tenant.dir, volume_ref)

    before = times(tenant.dir)

    out = tenant.convert()
    assert "5 files re-keyed" in out.stdout, out.stdout
    assert not tenant.stats()["converting"]
    assert len(os.getxattr(tenant.dir, SCOPE_XATTR)) == 22
    check_tree(tenant.dir, files, names)
    assert times(tenant.dir) == before
    records_under(tenant.dir, tenant.key_ref)
    # Run again: a settled scope is not converted twice.
    assert tenant.convert(check=False).returncode == 1

    # After a remount the tree opens through the scope's KMS only: its scope key and one DEK
    # per file read (the hard link is one file); the volume's KMS, its own key and file.
    vol.remount()
    check_tree(tenant.dir, files, names)
    assert get(vol.mnt / "outside.txt") == b"the volume's own"
    status = vol.status()
    assert tenant.stats()["unwrap"] == 1 + 5, status["scopes"]
    assert status["kms"]["unwrap"] == 1 + 1, status["kms"]

    # The tenant revokes its key (its keyring goes) and the scope is locked: names and
    # content under it refuse, the rest of the volume goes on.
    os.rename(tenant.keyring, f"{tenant.keyring}.revoked")
    ctl("scope", "lock", tenant.dir)
    for probe in (lambda: os.listdir(tenant.dir), lambda: get(tenant.dir / "multi.bin")):
        with pytest.raises(PermissionError):
            probe()
    assert get(vol.mnt / "outside.txt") == b"the volume's own"
    put(vol.mnt / "new.txt", b"still writable")
    os.rename(f"{tenant.keyring}.revoked", tenant.keyring)
    check_tree(tenant.dir, files, names)


def test_killed_converter_and_daemon_leave_files_readable_and_resume(vol):
    tenant = Tenant(vol, "globex")
    tenant.dir.mkdir()
    files = write_tree(tenant.dir)
    for i in range(6):
        files[f"sub/n{i}"] = os.urandom(5000 + i)
        put(tenant.dir / f"sub/n{i}", files[f"sub/n{i}"])
    names = listing(tenant.dir)

    env = dict(os.environ, ENVELOPEFS_CONVERT_KILL_AFTER="4")
    assert tenant.convert(check=False, env=env).returncode == -signal.SIGKILL
    check_tree(tenant.dir, files, names)
    refs = {key_ref_of(tenant.dir / rel) for rel in files if files[rel]}
    assert tenant.key_ref in refs and len(refs) == 2, refs  # half way: both keys in use
    assert tenant.stats()["converting"]
    assert "converting" in ctl("scope", "list", vol.mnt).stdout
    # Revoked and locked mid-way, the whole tree refuses, what is not converted yet included.
    os.rename(tenant.keyring, f"{tenant.keyring}.revoked")
    ctl("scope", "lock", tenant.dir)
    for rel in ("sub", "sub/deeper"):
        with pytest.raises(PermissionError):
            os.listdir(tenant.dir / rel)
    for rel in files:
        if files[rel]:
            with pytest.raises(PermissionError):
                get(tenant.dir / rel)
    os.rename(f"{tenant.keyring}.revoked", tenant.keyring)
    check_tree(tenant.dir, files, names)
    # Not rotated meanwhile: a re-wrap would keep a DEK the volume's KMS wraps.
    out = ctl("rotate", "--scope", tenant.dir, check=False)
    assert out.returncode == 1 and "being converted" in out.stderr, out.stderr

    # The daemon dies too; mounted again, the half-converted tree reads as it was written.
    pid = daemon_pid(vol.mnt)
    os.kill(pid, signal.SIGKILL)
    wait_exited(pid)
    unmount(vol.mnt)
    vol.mount()
    check_tree(tenant.dir, files, names)
    put(tenant.dir / "sub" / "written-meanwhile", b"new")
    files["sub/written-meanwhile"] = b"new"
    names = listing(tenant.dir)

    out = tenant.convert()
    assert "resuming" in out.stderr, out.stderr
    check_tree(tenant.dir, files, names)
    records_under(tenant.dir, tenant.key_ref)
    assert key_ref_of(tenant.dir / "sub" / "written-meanwhile") == tenant.key_ref
    vol.remount()
    check_tree(tenant.dir, files, names)


def test_check_walk_converts_what_it_finds_and_says_so(vol):
    """The converter killed as soon as the scope exists: nothing converted yet, everything
    reads; the checking walk's setxattr on a directory converts it and answers EINPROGRESS
    (another walk is due), then 0 once nothing is left; the command then finishes."""
    tenant = Tenant(vol, "soylent")
    tenant.dir.mkdir()
    files = write_tree(tenant.dir)
    names = listing(tenant.dir)
    env = dict(os.environ, ENVELOPEFS_CONVERT_KILL_AFTER="0")
    assert tenant.convert(check=False, env=env).returncode == -signal.SIGKILL
    assert tenant.stats()["converting"]
    check_tree(tenant.dir, files, names)
    for rel in ("sub", "sub/deeper"):
        with pytest.raises(OSError) as e:
            os.setxattr(tenant.dir / rel, CONVERT_XATTR, b"check")
        assert e.value.errno == errno.EINPROGRESS
        os.setxattr(tenant.dir / rel, CONVERT_XATTR, b"check")  # nothing left
    check_tree(tenant.dir, files, names)
    tenant.convert()
    check_tree(tenant.dir, files, names)
    records_under(tenant.dir, tenant.key_ref)


def test_not_ended_while_a_rekey_journal_is_left(vol):
    """A re-key journal left in the volume may be one of the tree's files, cut short after its new
    record (which opens only through the scope's KMS) was written: the conversion converts
    everything but does not end (the scope stays converting, so the next mount's recovery can still
    finish that file), says what to do, and ends once the journal is gone."""
    tenant = Tenant(vol, "initech")
    tenant.dir.mkdir()
    files = write_tree(tenant.dir)
    names = listing(tenant.dir)
    journals = vol.backing / "envelopefs.rekey"
    journals.mkdir(exist_ok=True)
    stray = journals / ("00" * 16 + ".tmp")
    stray.write_bytes(b"")
    proc = tenant.convert(check=False)
    assert proc.returncode != 0 and "run the command again" in proc.stderr, proc.stderr
    assert tenant.stats()["converting"]
    check_tree(tenant.dir, files, names)
    stray.unlink()
    tenant.convert()
    assert not tenant.stats()["converting"]
    check_tree(tenant.dir, files, names)
    records_under(tenant.dir, tenant.key_ref)


def test_readers_and_a_writer_inside_see_no_error_and_lose_nothing(vol):
    """While the tree converts: a writer appends, a reader lists and reads, a thread looks every
    name up again and again (no entry lifetime: each use is a revalidating LOOKUP, which does not
    wait for the directory's lock as the conversion's renames do), and a process works in a
    subdirectory (a revalidation answered ENOENT would unhash its working directory: getcwd
    fails).  None sees an error.  The race of one lookup with one rename (fs/lookup.c do_lookup's
    second look) is too narrow to be hit here on purpose: this checks that nothing else fails."""
    vol.unmount()
    vol.mount("entry_timeout=0")
    tenant = Tenant(vol, "initech")
    (tenant.dir / "sub").mkdir(parents=True)
    files = {f"sub/f{i}" if i % 2 else f"f{i}": os.urandom(20000 + i) for i in range(20)}
    for rel, data in files.items():
        put(tenant.dir / rel, data)
    chunks, errors, stop = [], [], threading.Event()

    def writer():
        with open(tenant.dir / "log", "ab") as f:
            while not stop.is_set():
                chunk = os.urandom(997)
                f.write(chunk)
                f.flush()
                chunks.append(chunk)

    def reader():
        while not stop.is_set():
            try:
                assert sorted(os.listdir(tenant.dir / "sub")) == sorted(
                    rel[4:] for rel in files if rel.startswith("sub/"))
                for rel, data in files.items():
                    assert get(tenant.dir / rel) == data, rel
            except (OSError, AssertionError) as e:
                errors.append(repr(e))
                return

    def looker():
        while not stop.is_set():
            for rel in ["sub", *files]:
                try:
                    os.stat(tenant.dir / rel)
                except OSError as e:
                    errors.append(repr(e))
                    return

    put(tenant.dir / "log", b"")
    worker = subprocess.Popen(["sh", "-c", "while [ -e ../log ]; do /bin/pwd >/dev/null || exit 1; done"],
                              cwd=tenant.dir / "sub")
    threads = [threading.Thread(target=f) for f in (writer, reader, looker)]
    for thread in threads:
        thread.start()
    try:
        tenant.convert()
        assert worker.poll() is None  # its working directory kept its path throughout
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        os.rename(tenant.dir / "log", tenant.dir / "log.done")
        worker.wait(timeout=30)
        os.rename(tenant.dir / "log.done", tenant.dir / "log")
    assert errors == []
    assert get(tenant.dir / "log") == b"".join(chunks)
    assert key_ref_of(tenant.dir / "log") == tenant.key_ref
    vol.remount()
    assert get(tenant.dir / "log") == b"".join(chunks)


def test_a_hard_link_across_the_boundary_and_a_nested_scope_are_refused(vol):
    tenant = Tenant(vol, "umbrella")
    tenant.dir.mkdir()
    inner = Tenant(vol, "umbrella/inner")
    inner.dir.mkdir()
    inner.convert()  # an empty directory converts at once
    out = tenant.convert(check=False)
    assert out.returncode == 1 and "nested" in out.stderr, out.stderr
    os.rmdir(inner.dir)
    put(tenant.dir / "shared.txt", b"linked from outside")
    os.link(tenant.dir / "shared.txt", vol.mnt / "outside-link")
    out = tenant.convert(check=False)
    assert out.returncode == 1 and "EXDEV" in out.stderr, out.stderr
    with pytest.raises(OSError) as e:
        os.getxattr(tenant.dir, SCOPE_XATTR)
    assert e.value.errno == errno.ENODATA  # nothing changed: not a scope
    assert get(tenant.dir / "shared.txt") == b"linked from outside"
    os.unlink(vol.mnt / "outside-link")
    tenant.convert()
    assert get(tenant.dir / "shared.txt") == b"linked from outside"
    assert key_ref_of(tenant.dir / "shared.txt") == tenant.key_ref


def records(fd, slot_size):
    """(sequence, record flags) of each header slot of backing file @fd that holds a record
    (docs/FORMAT.md, "Header slots": magic, sequence, length, then the record, flags at 5)."""
    found = []
    for off in (0, slot_size):
        head = os.pread(fd, 20, off)
        if head[:4] == b"EFSL":
            found.append((int.from_bytes(head[4:12], "big"), head[19]))
    return found


def test_daemon_killed_mid_rekey_finishes_it_at_mount(vol):
    """kill -9 of the daemon while a file is re-keyed into the scope: the next mount finishes
    that re-key with the scope's keys (its new record opens through no other KMS), the file reads
    as written, and the same command ends the conversion."""
    tenant = Tenant(vol, "hooli")
    tenant.dir.mkdir()
    big = os.urandom(1 << 20) * 48  # long enough a copy that the kill lands inside the re-key
    put(tenant.dir / "big", big)
    journals = vol.backing / "envelopefs.rekey"
    # The backing file, held open: the conversion renames it (its name sealed anew) first.
    backing = os.open(next(p for p in vol.backing.glob("*/*")
                           if p.parent != journals and p.lstat().st_size > len(big)), os.O_RDONLY)
    conf = (vol.backing / "envelopefs.conf").read_text()
    slot = int(re.search(r"header_size = (\d+)", conf)[1]) // 2
    pid = daemon_pid(vol.mnt)
    converter = subprocess.Popen(
        [str(CTL), "scope", "create", "--convert", "--kms", "local",
         "--kms-setting", f"keyring={tenant.keyring}",
         "--kms-setting", f"keyring_id={tenant.keyring_id}", str(tenant.dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill once the re-key's flagged record is in (step 2): its blocks are being copied.
        while not any(flags == 1 for _, flags in records(backing, slot)):
            assert converter.poll() is None, "the re-key ended before the daemon could be killed"
    finally:
        os.kill(pid, signal.SIGKILL)
        converter.wait(timeout=60)
    wait_exited(pid)
    unmount(vol.mnt)
    # The current record (the higher sequence) is the scope's, flagged mid re-key: only the
    # scope's KMS opens it, and the mount must finish the re-key with it.
    current = max(records(backing, slot))
    os.close(backing)
    assert current[1] == 1, current
    assert len(os.listdir(journals)) == 1
    vol.mount()
    assert os.listdir(journals) == []  # finished (or undone) before the mount served anything
    assert get(tenant.dir / "big") == big
    tenant.convert()
    assert key_ref_of(tenant.dir / "big") == tenant.key_ref
    vol.remount()
    assert get(tenant.dir / "big") == big


SCOPE_CONVERT_END = (0xEF << 8) | 23  # _IO(0xef, 23)


def convert_end(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return fcntl.ioctl(fd, SCOPE_CONVERT_END)
    finally:
        os.close(fd)


def test_a_rename_inside_during_the_check_keeps_it_from_ending(vol):
    """The checking walk passes each directory once, so a rename (or a link) inside the scope while
    it runs can carry a directory it has not seen into one it has passed, where nothing would ever
    convert it.  The daemon counts them: the end is refused (EAGAIN) when one came after the walk
    began at the root, or when no walk began since mount; the command then walks again."""
    tenant = Tenant(vol, "hooli")
    tenant.dir.mkdir()
    files = write_tree(tenant.dir)
    env = dict(os.environ, ENVELOPEFS_CONVERT_KILL_AFTER="0")
    assert tenant.convert(check=False, env=env).returncode == -signal.SIGKILL
    with pytest.raises(OSError) as e:
        convert_end(tenant.dir)  # no checking walk yet
    assert e.value.errno == errno.EAGAIN
    try:
        os.setxattr(tenant.dir, CONVERT_XATTR, b"check")
    except OSError as err:
        assert err.errno == errno.EINPROGRESS  # it converted the root's names meanwhile
    os.rename(tenant.dir / "sub" / "deeper", tenant.dir / "deeper")
    with pytest.raises(OSError) as e:
        convert_end(tenant.dir)
    assert e.value.errno == errno.EAGAIN
    assert tenant.stats()["converting"]
    files = {rel.replace("sub/deeper/", "deeper/"): data for rel, data in files.items()}
    names = listing(tenant.dir)
    tenant.convert()
    assert not tenant.stats()["converting"]
    check_tree(tenant.dir, files, names)
    assert key_ref_of(tenant.dir / "deeper" / "f.txt") == tenant.key_ref


def test_a_listing_across_the_conversion_of_its_directory(vol):
    """A listing read in small pieces (one getdents call after another: the directory's lock is not
    held in between) while the conversion renames every entry of the directory to its scope form:
    every name shows exactly once.  The backing's offsets are hashes of the names, so a listing going
    on by offset would miss some and repeat others; in a converting scope the daemon lists from a
    copy made as the listing began."""
    tenant = Tenant(vol, "massive")
    (tenant.dir / "many").mkdir(parents=True)
    names = {f"entry-{i:04d}-" + "n" * (i % 40) for i in range(300)}
    for name in names:
        put(tenant.dir / "many" / name, b"x")
    env = dict(os.environ, ENVELOPEFS_CONVERT_KILL_AFTER="0")
    assert tenant.convert(check=False, env=env).returncode == -signal.SIGKILL
    fd = os.open(tenant.dir / "many", os.O_RDONLY | os.O_DIRECTORY)
    try:
        seen = [name for name, _ in getdents(fd, 1024)]
        assert 0 < len(seen) < len(names)
        os.setxattr(tenant.dir, CONVERT_XATTR, b"")
        os.setxattr(tenant.dir / "many", CONVERT_XATTR, b"")
        while True:
            more = getdents(fd, 1024)
            if not more:
                break
            seen += [name for name, _ in more]
    finally:
        os.close(fd)
    seen = [name for name in seen if name not in (".", "..")]
    assert sorted(seen) == sorted(names)
    assert sorted(os.listdir(tenant.dir / "many")) == sorted(names)
    tenant.convert()
    assert sorted(os.listdir(tenant.dir / "many")) == sorted(names)
