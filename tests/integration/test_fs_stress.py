"""Concurrency, a bounded stress run, a full disk and other users."""
import errno
import hashlib
import os
import random
import subprocess
import sys
import shutil
import tempfile
import threading

import pytest

from mounts import Volume, vol, hvol  # noqa: F401

BLOCK = 4096


def test_concurrent_writers_and_readers_one_file(vol):
    """Writers own disjoint, block-straddling stripes; readers check stripe consistency."""
    path = vol.mnt / "shared"
    stripes, stripe = 8, 3 * BLOCK + 123
    with open(path, "wb") as f:
        f.truncate(stripes * stripe)
    errors = []
    stop = threading.Event()

    def writer(k):
        fd = os.open(path, os.O_RDWR)
        try:
            for gen in range(60):
                os.pwrite(fd, bytes([k * 16 + gen % 16]) * stripe, k * stripe)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            os.close(fd)

    def reader():
        fd = os.open(path, os.O_RDONLY)
        try:
            while not stop.is_set():
                k = random.randrange(stripes)
                data = os.pread(fd, stripe, k * stripe)
                # The page cache may mix generations across pages, but every
                # byte must be one this stripe's writer wrote: never foreign
                # or garbage bytes, never an I/O error.
                # (or the zeros it started as)
                foreign = set(data) - {0} - {k * 16 + g for g in range(16)}
                if foreign or len(data) != stripe:
                    errors.append(AssertionError(f"stripe {k}: {foreign} {len(data)}"))
        except Exception as e:  # noqa: BLE001
            errors.append(e)
        finally:
            os.close(fd)

    writers = [threading.Thread(target=writer, args=(k,)) for k in range(stripes)]
    readers = [threading.Thread(target=reader) for _ in range(3)]
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[:3]
    with open(path, "rb") as f:
        for k in range(stripes):
            assert f.read(stripe) == bytes([k * 16 + 59 % 16]) * stripe


def test_bounded_stress_many_files(vol):
    """Several threads create, write, read back, rename and delete files at random."""
    seed = int.from_bytes(os.urandom(4), "little")
    errors = []

    def worker(n):
        rng = random.Random(seed + n)
        d = vol.mnt / f"w{n}"
        os.mkdir(d)
        live = {}
        try:
            for step in range(400):
                r = rng.random()
                if r < 0.4 or not live:
                    name = f"f{step}"
                    data = rng.randbytes(rng.choice([0, 1, 100, BLOCK, 3 * BLOCK + 5, 70000]))
                    with open(d / name, "wb") as f:
                        f.write(data)
                    live[name] = data
                elif r < 0.7:
                    name = rng.choice(list(live))
                    with open(d / name, "rb") as f:
                        assert f.read() == live[name], f"seed={seed} {name}"
                elif r < 0.85:
                    name = rng.choice(list(live))
                    new = name + "r"
                    os.rename(d / name, d / new)
                    live[new] = live.pop(name)
                else:
                    name = rng.choice(list(live))
                    os.unlink(d / name)
                    del live[name]
            for name, data in live.items():
                with open(d / name, "rb") as f:
                    assert f.read() == data, f"seed={seed} {name}"
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, f"seed={seed}: {errors[:3]}"


def test_full_disk_gives_enospc_and_no_torn_block(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(small)], check=True)
    try:
        v = Volume(small)
        v.mount()
        written = {}
        hit = False
        for i in range(200):
            data = os.urandom(100_000 + i)
            try:
                with open(v.mnt / f"f{i}", "wb") as f:
                    f.write(data)
                written[f"f{i}"] = hashlib.sha256(data).digest()
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                hit = True
                break
        assert hit, "the tmpfs never filled up"
        # Every file that was written completely reads back; the failed one
        # holds no block that fails authentication.
        for name, digest in written.items():
            with open(v.mnt / name, "rb") as f:
                assert hashlib.sha256(f.read()).digest() == digest
        with open(v.mnt / f"f{len(written)}", "rb") as f:
            f.read()
        v.unmount()
    finally:
        subprocess.run(["umount", "-l", str(small)], check=False)


def run_as(uid, code, *args):
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           sys.executable, "-c", code, *map(str, args)],
                          capture_output=True, text=True)


def test_allow_other_permissions_and_ownership():
    # pytest's tmp_path sits in a root-only directory: use one others can enter.
    root = tempfile.mkdtemp(prefix="envelopefs-users-", dir="/var/tmp")
    os.chmod(root, 0o755)
    v = Volume(root)
    v.mount("allow_other")
    try:
        m = v.mnt
        os.chmod(m, 0o755)
        os.mkdir(m / "pub")
        os.chmod(m / "pub", 0o777)
        with open(m / "secret", "wb") as f:
            f.write(b"root only")
        os.chmod(m / "secret", 0o600)
        code = ("import sys,os\n"
                "try:\n open(sys.argv[1],'rb').read(); print('read')\n"
                "except PermissionError: print('EACCES')\n"
                "p=os.path.join(sys.argv[2],'mine'); open(p,'wb').write(b'hi')\n"
                "os.mkdir(p+'d'); os.symlink('x', p+'l')\n"
                "print(open(p,'rb').read().decode())\n")
        out = run_as(1000, code, m / "secret", m / "pub")
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["EACCES", "hi"]
        for name in ("mine", "mined", "minel"):
            st = os.lstat(m / "pub" / name)
            assert (st.st_uid, st.st_gid) == (1000, 1000), name
        # Backing files carry the same owners.
        assert os.stat(v.backing / "pub" / "mine").st_uid == 1000
        # A write by another user clears setuid, as on a local filesystem
        # (the daemon writes as root, so the kernel asks it to: fs/killpriv.h).
        with open(m / "pub" / "suid", "wb") as f:
            f.write(b"#!/bin/sh\n")
        os.chmod(m / "pub" / "suid", 0o4777)
        out = run_as(1000, "import sys\nopen(sys.argv[1],'ab').write(b'x')\n", m / "pub" / "suid")
        assert out.returncode == 0, out.stderr
        assert not os.stat(m / "pub" / "suid").st_mode & 0o4000
        os.chmod(m / "pub" / "suid", 0o4777)
        out = run_as(1000, "import os,sys\nos.truncate(sys.argv[1], 3)\n", m / "pub" / "suid")
        assert out.returncode == 0, out.stderr
        assert not os.stat(m / "pub" / "suid").st_mode & 0o4000
    finally:
        v.unmount()
        shutil.rmtree(root)
