"""Backing faults (issue 17, part 3): EIO, ENOSPC, EDQUOT and short reads and
writes from the backing, at each kind of request the daemon makes of it.

The backing is tests/powerloss/powerloss with a fault plan (its header): the
volume is mounted, the plan armed, a workload run through the mount (files
written, synced, overwritten, read, truncated; xattrs; mkdir, rename, link,
symlink, unlink, chmod, utimes, fallocate, statfs, readdir, directory fsync,
rmdir, mknod), the plan
cleared.  Then:
  - every call that failed, failed with an errno (no hang, no crash), the one
    injected or EIO (or ENOENT for a file an earlier failure left unmade), or
    with a short count (a write across blocks, as on ext4);
  - the daemon is alive and every file of the tree reads whole, without EIO
    (no block torn); a file whose calls all succeeded has the content they gave;
  - the same workload on fresh names succeeds in full once the fault cleared,
    and so does a remount, with the same checks;
  - the daemon's log holds no 32-byte value in hex (no key).
Each plan is either persistent (every call of the kind fails while armed) or a
single failure at the 2nd or 3rd call of the kind (mid-way through a write).
"""
import errno
import os
import re
import signal

import pytest

from mounts import STATUS_XATTR, put
from test_powerloss import Stack, gone, pids_with

BLOCK = 4096
ERRNOS = {"EIO": errno.EIO, "ENOSPC": errno.ENOSPC, "EDQUOT": errno.EDQUOT}
# Each kind of backing request, with the faults it gets beyond the persistent errnos.
SITES = {
    "create": [], "open": [], "read": ["short", "EIO:2", "EIO:3"],
    "write": ["short", "EIO:2", "ENOSPC:3"], "fsync": ["EIO:2"], "fsyncdir": [],
    "truncate": [], "setxattr": ["ENOSPC:2"], "getxattr": ["EIO:2"], "listxattr": [],
    "removexattr": [], "mkdir": [], "unlink": [], "rmdir": [], "rename": [], "link": [],
    "symlink": [], "readlink": [], "chmod": [], "utimens": [], "fallocate": [], "getattr": [],
    "opendir": [], "readdir": [], "statfs": [], "mknod": [],
}
KEYLIKE = re.compile(rb"[0-9a-fA-F]{64}")


def plans(op):
    """(fault line, errno the caller may see besides EIO) for @op."""
    out = [(f"{op}:{name}:1:1000000", num) for name, num in ERRNOS.items()]
    for extra in SITES[op]:
        name, _, nth = extra.partition(":")
        if name == "short":
            out.append((f"{op}:short:1:1000000", None))
        else:
            out.append((f"{op}:{name}:{nth}:1", ERRNOS[name]))
    return out


class Run:
    """One workload on fresh names: what failed, and what each file must hold."""

    def __init__(self, m, tag):
        self.m, self.tag = m, tag
        self.failures = []
        self.model = {}  # path relative to the mount -> bytes, or None: unknown after a failure

    def step(self, label, fn, *touched):
        try:
            fn()
        except OSError as e:
            self.failures.append((label, e.errno))
            for rel in touched:
                self.model[rel] = None

    def expect(self, rel, data):
        self.model[rel] = data

    def run(self):
        m, t = self.m, self.tag
        a, d, h = f"{t}-a", f"{t}-d", f"{t}-h"
        data = os.urandom(3 * BLOCK + 100)

        def create():
            self.model[a] = None
            put(m / a, data)
            self.expect(a, data)
        self.step("write", create, a)

        def fsync():
            fd = os.open(m / a, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self.step("fsync", fsync, a)

        def overwrite():
            fd = os.open(m / a, os.O_RDWR)
            try:
                # Across a block boundary.  A fault after the first block gives a
                # short count, as on ext4 (the error comes with the next call).
                done = os.pwrite(fd, b"Z" * 30, BLOCK - 10)
                if self.model.get(a) is not None:
                    b = bytearray(self.model[a])
                    b[BLOCK - 10:BLOCK - 10 + done] = b"Z" * done
                    self.expect(a, bytes(b))
                if done < 30:
                    self.failures.append(("overwrite: short write", None))
                os.fsync(fd)
            finally:
                os.close(fd)
        self.step("overwrite", overwrite, a)

        def read():
            got = (m / a).read_bytes()
            if self.model.get(a) is not None:
                assert got == self.model[a], "a read returned other bytes than written"
        self.step("read", read)

        def truncate():
            os.truncate(m / a, 5000)
            if self.model.get(a) is not None:
                self.expect(a, self.model[a][:5000])
        self.step("truncate", truncate, a)

        def xattrs():
            os.setxattr(m / a, "user.k", b"v" * 100)
            assert os.getxattr(m / a, "user.k") == b"v" * 100
            assert "user.k" in os.listxattr(m / a)
            os.removexattr(m / a, "user.k")
        self.step("xattrs", xattrs)

        def tree():
            os.mkdir(m / d)
            body = os.urandom(2 * BLOCK)
            self.model[f"{d}/f"] = None
            put(m / d / "f", body)
            os.rename(m / d / "f", m / d / "g")
            self.model.pop(f"{d}/f")
            self.expect(f"{d}/g", body)
            os.link(m / d / "g", m / h)
            os.symlink("target", m / f"{t}-s")
            assert os.readlink(m / f"{t}-s") == "target"
            os.unlink(m / h)
            os.chmod(m / d / "g", 0o600)
            os.utime(m / d / "g", ns=(10**18, 10**18))
            fd = os.open(m / d / "g", os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, 3 * BLOCK)
            finally:
                os.close(fd)
            self.expect(f"{d}/g", body + bytes(BLOCK))
            os.statvfs(m)
            assert sorted(os.listdir(m / d)) == ["g"]
            dfd = os.open(m / d, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            os.mkdir(m / f"{t}-e")
            os.rmdir(m / f"{t}-e")
            os.mknod(m / f"{t}-fifo", 0o600 | 0o010000)
        self.step("tree", tree, f"{d}/g", f"{d}/f", h)


def read_all(m, model):
    """Every regular file below @m reads whole; those @model knows hold what it says."""
    for root, _, files in os.walk(m):
        for name in files:
            p = os.path.join(root, name)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            rel = os.path.relpath(p, m)
            with open(p, "rb") as f:
                got = f.read()
            if model.get(rel) is not None:
                assert got == model[rel], f"{rel}: {len(got)} bytes, expected {len(model[rel])}"


def signal_layer(st, sig):
    for pid in pids_with(str(st.lower)):
        os.kill(pid, sig)


@pytest.mark.parametrize("op", sorted(SITES))
def test_backing_fault(tmp_path, op):
    st = Stack(tmp_path / "stack", tmp_path / "disk", "header", "plain", [])
    plan = tmp_path / "plan"
    plan.write_text("")
    st.start(fault_file=plan)
    try:
        st.init()
        st.mount()
        m, hits, seen = st.mnt, tmp_path / "plan.hits", {}
        for i, (line, injected) in enumerate(plans(op)):
            plan.write_text(line + "\n")
            hits.unlink(missing_ok=True)
            signal_layer(st, signal.SIGUSR1)
            faulty = Run(m, f"f{i}")
            try:
                faulty.run()
            finally:
                signal_layer(st, signal.SIGUSR2)
                os.stat(m)  # the layer takes the signal between two requests
            assert [p for p in pids_with(str(m)) if not gone(p)], f"{line}: the daemon died: {st.log()}"
            allowed = {errno.EIO, None} | ({injected} if injected else set())
            # After a first failure, a later step may find its file missing.
            wrong = [(label, errno.errorcode.get(e, e)) for n, (label, e) in
                     enumerate(faulty.failures) if e not in allowed and
                     not (n and e == errno.ENOENT)]
            assert not wrong, f"{line}: {wrong}"
            count = int(hits.read_text()) if hits.exists() else 0
            seen[line] = (count, len(faulty.failures))
            # The fault cleared: the daemon answers, the tree reads, all works again.
            os.getxattr(m, STATUS_XATTR)
            read_all(m, faulty.model)
            again = Run(m, f"c{i}")
            again.run()
            assert not again.failures, f"after {line}: {again.failures}"
            read_all(m, {**faulty.model, **again.model})
        st.unmount_volume()
        st.mount()
        read_all(m, {})
        st.unmount_volume()
        assert not KEYLIKE.search((st.root / "daemon.log").read_bytes())
        injected = sum(1 for count, _ in seen.values() if count)
        print(f"{op}: {len(seen)} plans, {injected} injected faults "
              f"({sum(c for c, _ in seen.values())} in all), "
              f"{sum(f for _, f in seen.values())} calls failed: {seen}")
        assert injected, f"no fault at {op} was ever injected"
    finally:
        st.stop()
