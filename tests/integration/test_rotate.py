"""envelopefsctl rotate over a live mounted tree, and offline."""
import json
import os
import random
import signal
import subprocess
import threading
import time

import pytest

from mounts import CTL, Volume, unmount, vol, hvol  # noqa: F401

BLOCK = 4096
# The local provider notices a rotated keyring file at most once a second.
KEYRING_RELOAD = 1.1


def ctl(*args, check=False):
    return subprocess.run([str(CTL), *map(str, args)], capture_output=True, text=True,
                          check=check, timeout=600)


def rotate_keyring(v):
    ctl("keyring", "rotate", v.keyring, check=True)
    time.sleep(KEYRING_RELOAD)


def populate(m, n=30):
    """Files of many sizes, a hard link, an empty file, a symlink and a FIFO."""
    contents = {}
    os.makedirs(m / "sub" / "deeper")
    for i in range(n):
        rel = f"sub/f{i}" if i % 3 else f"sub/deeper/g{i}"
        data = os.urandom(random.choice([1, 100, BLOCK, 3 * BLOCK + 7, 70000]))
        (m / rel).write_bytes(data)
        contents[rel] = data
    os.link(m / "sub" / "f1", m / "hardlink")
    contents["hardlink"] = contents["sub/f1"]
    (m / "empty").write_bytes(b"")
    contents["empty"] = b""
    os.symlink("sub/f1", m / "symlink")
    os.mkfifo(m / "fifo")
    return contents


def regular_files(top):
    """(path relative to @top, path) of every regular file below @top; symlinks are left out."""
    for root, _, files in os.walk(top):
        for name in files:
            p = os.path.join(root, name)
            if os.path.isfile(p) and not os.path.islink(p):
                yield os.path.relpath(p, top), p


def backing_data(v):
    """Every backing file's bytes after its key-record header, by path."""
    out = {}
    for rel, p in regular_files(v.backing):
        if os.path.basename(p) == "envelopefs.conf":
            continue
        with open(p, "rb") as f:
            data = f.read()
        header = 640 if v.placement == "header" and data else 0  # format 3, local keyring
        out[rel] = data[header:]
    return out


def backing_mtimes(v):
    """Every backing regular file's mtime (ns), by path; not the volume epoch, which every
    mount raises (docs/FORMAT.md, "Volume epoch")."""
    return {p: os.stat(p).st_mtime_ns for _, p in regular_files(v.backing)
            if os.path.basename(p) != "envelopefs.epoch"}


def versions(v):
    out = {}
    for rel, p in regular_files(v.mnt):
        try:
            out[rel] = int(os.getxattr(p, "trusted.envelopefs.key").split()[0])
        except OSError:
            out[rel] = None  # empty: no record yet
    return out


def check_contents(m, contents):
    for rel, data in contents.items():
        assert (m / rel).read_bytes() == data, rel


def test_rotate_rewraps_every_file_without_rewriting_data(vol):
    # With encrypted names the volume key's record (on the mount root) is one more.
    vkey = 1 if vol.names == "encrypted" else 0
    contents = populate(vol.mnt)
    before = backing_data(vol)
    mtimes = backing_mtimes(vol)
    rotate_keyring(vol)
    check = ctl("rotate", "--check", "--json", vol.mnt)
    assert check.returncode == 1, check.stderr
    summary = json.loads(check.stdout)
    assert summary["target_version"] == 2 and summary["to_rewrap"] == 31 + vkey
    assert summary["versions"] == {"1": 31 + vkey} and summary["empty"] == 1
    run = ctl("rotate", "--jobs", "3", vol.mnt)
    assert run.returncode == 0, run.stderr
    # the hard link's second name is current
    assert f"re-wrapped:       {30 + vkey}" in run.stdout
    assert set(versions(vol).values()) == {2, None}
    after = backing_data(vol)
    assert after == before, "rotation rewrote data"
    check_contents(vol.mnt, contents)
    # Nothing left to do: a second run changes no byte.
    headers = {p: (vol.backing / p).read_bytes() for p in before}
    again = ctl("rotate", "--json", vol.mnt)
    assert again.returncode == 0
    assert json.loads(again.stdout)["already_current"] == 31 + vkey
    assert {p: (vol.backing / p).read_bytes() for p in before} == headers
    assert ctl("rotate", "--check", vol.mnt).returncode == 0
    # The cached DEKs sealed the new records: the KMS re-wrapped, never unwrapped.
    kms = vol.status()["kms"]
    # With encrypted names the volume key was re-wrapped too (and unwrapped at mount).
    # The volume key is unwrapped at mount, and again to check its record's MAC when
    # re-wrapped (the daemon keeps only the keys derived from it).
    assert kms["rewrap"] == 30 + vkey and kms["unwrap"] == 2 * vkey
    vol.remount()
    check_contents(vol.mnt, contents)
    # A record is not content: no mtime moved, in the backing tree or the mount.
    assert backing_mtimes(vol) == mtimes
    for rel in contents:
        assert os.stat(vol.mnt / rel).st_mtime_ns == mtimes[str(vol.backing_path(rel))], rel


def test_rotate_subtree_and_dry_run(hvol):
    populate(hvol.mnt)
    rotate_keyring(hvol)
    dry = ctl("rotate", "--dry-run", "--json", hvol.mnt)
    assert dry.returncode == 0 and json.loads(dry.stdout)["to_rewrap"] == 31
    assert set(versions(hvol).values()) == {1, None}
    part = ctl("rotate", "--json", hvol.mnt, hvol.mnt / "sub" / "deeper")
    assert part.returncode == 0, part.stderr
    assert json.loads(part.stdout)["rewrapped"] == 10
    v = versions(hvol)
    assert all(ver == 2 for p, ver in v.items() if p.startswith("sub/deeper/"))
    assert v["sub/f1"] == 1


def random_writer(path, span, key, stop, errors, models):
    """Overwrite random ranges below @span of @path until @stop, reading the whole file back after
    each write against a model; differences and errors go to @errors, the final model to
    models[@key]."""
    model = bytearray(path.read_bytes())
    rng = random.Random(key)
    try:
        with open(path, "r+b") as f:
            while not stop.is_set():
                off = rng.randrange(0, span)
                data = rng.randbytes(rng.randrange(1, 2 * BLOCK))
                f.seek(off)
                f.write(data)
                f.flush()
                if off > len(model):
                    model.extend(bytes(off - len(model)))
                model[off:off + len(data)] = data
                f.seek(0)
                if f.read() != bytes(model):
                    errors.append(f"{path.name}: read back differs")
    except OSError as e:
        errors.append(f"{path.name}: {e}")
    models[key] = bytes(model)


def test_rotate_while_applications_write(hvol):
    m = hvol.mnt
    os.mkdir(m / "w")
    for i in range(40):
        (m / "w" / f"f{i}").write_bytes(os.urandom(2 * BLOCK))
    rotate_keyring(hvol)
    errors, stop = [], threading.Event()
    models = {}
    threads = [threading.Thread(target=random_writer,
                                args=(m / "w" / f"f{k}", 3 * BLOCK, k, stop, errors, models))
               for k in range(0, 40, 5)]
    for t in threads:
        t.start()
    run = ctl("rotate", "--jobs", "4", m)
    stop.set()
    for t in threads:
        t.join()
    assert run.returncode == 0, run.stderr
    assert not errors, errors[:3]
    assert set(versions(hvol).values()) == {2}
    hvol.remount()
    for k, data in models.items():
        assert (m / "w" / f"f{k}").read_bytes() == data


def daemon_pid(v):
    out = subprocess.run(["pgrep", "-f", f"envelopefs .*{v.backing} "], capture_output=True,
                         text=True).stdout.split()
    return int(out[0])


@pytest.mark.parametrize("placement", ["header", "xattr"])
def test_kill_daemon_during_rotation(tmp_path, placement):
    """kill -9 the daemon at random moments of rotations; every file survives."""
    v = Volume(tmp_path, placement=placement)
    v.mount()
    contents = {}
    for i in range(150):
        data = os.urandom(random.choice([10, BLOCK + 1, 20000]))
        (v.mnt / f"f{i}").write_bytes(data)
        contents[f"f{i}"] = data
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    for round_ in range(6):
        rotate_keyring(v)
        tool = subprocess.Popen([str(CTL), "rotate", "--jobs", "4", str(v.mnt)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(daemon_pid(v), signal.SIGKILL)
        tool.wait(timeout=60)
        unmount(v.mnt)
        v.mount()
        for name, data in contents.items():
            assert (v.mnt / name).read_bytes() == data, f"seed={seed} round={round_} {name}"
    done = ctl("rotate", v.mnt)
    assert done.returncode == 0, done.stderr
    assert ctl("rotate", "--check", v.mnt).returncode == 0
    assert set(versions(v).values()) == {7}
    v.unmount()


def test_kill_tool_during_rotation_then_resume(hvol):
    for i in range(300):
        (hvol.mnt / f"f{i}").write_bytes(b"x" * 100)
    rotate_keyring(hvol)
    tool = subprocess.Popen([str(CTL), "rotate", "--jobs", "1", str(hvol.mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.15)
    tool.kill()
    tool.wait()
    partial = versions(hvol)
    resumed = ctl("rotate", "--json", hvol.mnt)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["rewrapped"] + summary["already_current"] == 300
    assert summary["already_current"] == sum(1 for ver in partial.values() if ver == 2)
    assert set(versions(hvol).values()) == {2}


def test_files_renamed_or_deleted_during_the_walk(hvol):
    m = hvol.mnt
    for i in range(400):
        (m / f"f{i}").write_bytes(b"y" * 50)
    rotate_keyring(hvol)
    stop = threading.Event()

    def churn():
        i = 0
        while not stop.is_set() and i < 400:
            if i % 2:
                os.unlink(m / f"f{i}")
            else:
                os.rename(m / f"f{i}", m / f"r{i}")
            i += 1

    t = threading.Thread(target=churn)
    tool = subprocess.Popen([str(CTL), "rotate", "--jobs", "2", "--json", str(m)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t.start()
    out, err = tool.communicate(timeout=120)
    stop.set()
    t.join()
    assert tool.returncode == 0, err
    # Whatever was renamed away is finished by a second run; nothing is broken.
    assert ctl("rotate", m).returncode == 0
    for name in os.listdir(m):
        assert (m / name).read_bytes() == b"y" * 50


def test_corrupt_record_is_reported_and_the_rest_done(tmp_path):
    v = Volume(tmp_path)
    v.mount()
    for i in range(10):
        (v.mnt / f"f{i}").write_bytes(b"z" * 300)
    v.unmount()
    with open(v.backing / "f3", "r+b") as f:
        f.write(b"\0" * 512)
    v.mount()
    rotate_keyring(v)
    run = ctl("rotate", "--json", v.mnt)
    assert run.returncode == 1
    assert "f3" in run.stderr
    summary = json.loads(run.stdout)
    assert summary["failed"] == 1 and summary["rewrapped"] == 9
    v.unmount()


def test_offline_rotation(tmp_path):
    v = Volume(tmp_path, placement="xattr")
    v.mount()
    contents = populate(v.mnt)
    refused = ctl("rotate", "--offline", v.backing)
    assert refused.returncode == 1 and "mounted" in refused.stderr
    v.unmount()
    mtimes = backing_mtimes(v)
    ctl("keyring", "rotate", v.keyring, check=True)
    assert ctl("rotate", "--offline", "--check", v.backing).returncode == 1
    run = ctl("rotate", "--offline", "--json", v.backing)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rewrapped"] == 30
    assert ctl("rotate", "--offline", "--check", v.backing).returncode == 0
    assert backing_mtimes(v) == mtimes
    v.mount()
    check_contents(v.mnt, contents)
    assert set(versions(v).values()) == {2, None}
    v.unmount()


def test_offline_rotation_of_a_relative_backing(tmp_path, monkeypatch):
    """BACKING given relative: the volume key (envelopefs.key, encrypted names) is still known
    for what it is, a bare record, and re-wrapped (it failed with EBADMSG, read as a file)."""
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    (v.mnt / "f").write_bytes(b"data")
    v.unmount()
    ctl("keyring", "rotate", v.keyring, check=True)
    monkeypatch.chdir(tmp_path)
    run = ctl("rotate", "--offline", "--json", "backing")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["rewrapped"] == 2 and summary["failed"] == 0, summary  # f and the volume key
    assert ctl("rotate", "--offline", "--check", "backing").returncode == 0


def test_rotation_rate_for_many_files(tmp_path, capsys):
    """Re-wraps per second with the local keyring (reported, and bounded in time)."""
    v = Volume(tmp_path)
    v.mount()
    n = 2000
    for i in range(n):
        (v.mnt / f"f{i}").write_bytes(b"r")
    rotate_keyring(v)
    t0 = time.monotonic()
    run = ctl("rotate", "--jobs", "8", "--json", v.mnt)
    elapsed = time.monotonic() - t0
    assert run.returncode == 0 and json.loads(run.stdout)["rewrapped"] == n
    with capsys.disabled():
        print(f"\n[rotate] {n} files re-wrapped in {elapsed:.2f} s: {n / elapsed:.0f} files/s")
    v.unmount()


def test_keyring_retire_refuses_while_used_then_shreds_old_backups(tmp_path):
    v = Volume(tmp_path)
    v.mount()
    for i in range(20):
        (v.mnt / f"f{i}").write_bytes(b"secret %d" % i)
    v.unmount()
    backup = tmp_path / "backup-f0"
    backup.write_bytes((v.backing / "f0").read_bytes())  # a backup under version 1
    v.mount()
    rotate_keyring(v)

    usage = ctl("keyring", "retire", v.keyring, "1")
    assert usage.returncode == 2 and "--volume" in usage.stderr
    refused = ctl("keyring", "retire", "--volume", v.mnt, v.keyring, "1")
    assert refused.returncode == 1 and "20 files still use version 1" in refused.stderr
    assert ctl("keyring", "retire", "--volume", v.mnt, v.keyring, "2").returncode == 1  # current
    assert ctl("rotate", v.mnt).returncode == 0
    readable = subprocess.run([str(CTL), "decrypt", str(v.backing), str(backup)],
                              capture_output=True)
    assert readable.returncode == 0 and readable.stdout == b"secret 0"
    done = ctl("keyring", "retire", "--volume", v.mnt, v.keyring, "1")
    assert done.returncode == 0, done.stderr
    assert "versions:         2" in ctl("keyring", "list", v.keyring, check=True).stdout
    v.remount()
    for i in range(20):
        assert (v.mnt / f"f{i}").read_bytes() == b"secret %d" % i
    v.unmount()
    # The live files moved on; the backup made under version 1 is now noise.
    shredded = subprocess.run([str(CTL), "decrypt", str(v.backing), str(backup)],
                              capture_output=True)
    assert shredded.returncode == 4 and shredded.stdout == b""
    # Offline volumes are checked from their backing directory.
    rotate_keyring(v)
    (v.backing / "sub").mkdir()
    assert ctl("keyring", "retire", "--volume", v.backing, v.keyring, "2").returncode == 1
    assert ctl("rotate", "--offline", v.backing).returncode == 0
    assert ctl("keyring", "retire", "--volume", v.backing, v.keyring, "2").returncode == 0


def test_keyring_retire_refuses_a_foreign_volume(tmp_path):
    a = Volume(tmp_path / "a" if (tmp_path / "a").mkdir() is None else None)
    b = Volume(tmp_path / "b" if (tmp_path / "b").mkdir() is None else None)
    ctl("keyring", "rotate", a.keyring, check=True)
    out = ctl("keyring", "retire", "--volume", b.backing, a.keyring, "1")
    assert out.returncode == 4 and "does not use keyring" in out.stderr
