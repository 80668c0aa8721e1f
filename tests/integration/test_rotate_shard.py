"""envelopefsctl rotate --shard I/N: one rotation split across hosts, each doing its part.

A shard run is per-host logic, so one local volume stands for the shared one: the three parts
run one after another (or side by side) against the same mount, as three hosts would.
"""
import json
import os
import subprocess
import time

import pytest

from mounts import CTL, Volume
from test_rekey import file_id
from test_rotate import check_contents, ctl, rotate_keyring

N = 3
MASK = (1 << 64) - 1


def shard_of(ino, n=N):
    """The shard (from 1) of inode @ino: murmur3's fmix64, as the tool computes it."""
    x = ino
    x ^= x >> 33
    x = (x * 0xff51afd7ed558ccd) & MASK
    x ^= x >> 33
    x = (x * 0xc4ceb9fe1a85ec53) & MASK
    x ^= x >> 33
    return x % n + 1


def populate(m, n=60):
    """@n files in a small tree, three hard links (two across directories), an empty file, a
    symlink and a FIFO; returns the content of every name."""
    contents = {}
    for d in ("a/b", "c"):
        os.makedirs(m / d)
    for i in range(n):
        rel = ["a", "a/b", "c"][i % 3] + f"/f{i}"
        contents[rel] = os.urandom([1, 100, 4096, 9000][i % 4])
        (m / rel).write_bytes(contents[rel])
    for src, dst in (("a/f0", "c/link0"), ("a/b/f1", "a/b/link1"), ("c/f2", "link2")):
        os.link(m / src, m / dst)
        contents[dst] = contents[src]
    (m / "empty").write_bytes(b"")
    contents["empty"] = b""
    os.symlink("a/f0", m / "symlink")
    os.mkfifo(m / "fifo")
    return contents


def expected(m, contents, volume_key):
    """Per shard: the names with a key record, and their distinct inodes (the volume key's
    record, if any, is one more of shard 1's)."""
    names = {k: 0 for k in range(1, N + 1)}
    inodes = {k: set() for k in range(1, N + 1)}
    for rel, data in contents.items():
        if data:
            ino = os.lstat(m / rel).st_ino
            names[shard_of(ino)] += 1
            inodes[shard_of(ino)].add(ino)
    counts = {k: len(v) for k, v in inodes.items()}
    names[1] += volume_key
    counts[1] += volume_key
    return names, counts


def summary(stdout):
    """The text summary's lines as {label: first word of the value}."""
    out = {}
    for line in stdout.splitlines():
        label, sep, value = line.partition(":")
        if sep and value.split():
            out[label.strip()] = value.split()[0]
    return out


@pytest.mark.parametrize("names", ["plain", "encrypted"])
def test_shards_rewrap_every_file_exactly_once(tmp_path, names):
    v = Volume(tmp_path, names=names)
    v.mount()
    try:
        contents = populate(v.mnt)
        vkey = 1 if names == "encrypted" else 0
        per_names, per_inodes = expected(v.mnt, contents, vkey)
        assert all(per_inodes.values()), per_inodes  # 60 inodes leave no shard empty
        total = sum(per_inodes.values())
        assert total == 60 + vkey
        rotate_keyring(v)

        # Each shard's check counts its own names, and no other's.
        skipped = 0
        for k in range(1, N + 1):
            cp = ctl("rotate", "--check", "--json", "--shard", f"{k}/{N}", v.mnt)
            assert cp.returncode == 1, cp.stderr
            s = json.loads(cp.stdout)
            assert s["shard"] == f"{k}/{N}"
            assert s["to_rewrap"] == per_names[k] and s["versions"] == {"1": per_names[k]}
            skipped += s["skipped"]
        assert skipped == 2  # the symlink and the FIFO, each in one shard

        # Two hosts done: the unsharded check finds exactly the third one's part left.
        for k in (1, 2):
            cp = ctl("rotate", "--shard", f"{k}/{N}", v.mnt)
            assert cp.returncode == 0, cp.stderr
            s = summary(cp.stdout)
            assert s["shard"] == f"{k}/{N}" and s["target version"] == "2"
            # A hard link's second name finds its file current.
            assert int(s["re-wrapped"]) == per_inodes[k]
            assert int(s["already current"]) == per_names[k] - per_inodes[k]
        left = ctl("rotate", "--check", "--json", v.mnt)
        assert left.returncode == 1
        assert json.loads(left.stdout)["to_rewrap"] == per_names[3]
        assert "shard" not in json.loads(left.stdout)

        last = ctl("rotate", "--json", "--shard", f"3/{N}", v.mnt)
        assert last.returncode == 0, last.stderr
        assert json.loads(last.stdout)["rewrapped"] == per_inodes[3]
        done = ctl("rotate", "--check", v.mnt)
        assert done.returncode == 0, done.stdout
        assert "shard:" not in done.stdout
        assert f"version 2: {sum(per_names.values())}" in done.stdout
        # Every file's key was re-wrapped by the KMS once: no shard did another's.
        assert v.status()["kms"]["rewrap"] == total

        # Run again, a shard finds its part current and changes nothing.
        again = ctl("rotate", "--json", "--shard", f"2/{N}", v.mnt)
        assert again.returncode == 0, again.stderr
        s = json.loads(again.stdout)
        assert s["rewrapped"] == 0 and s["already_current"] == per_names[2]
        assert v.status()["kms"]["rewrap"] == total
        check_contents(v.mnt, contents)
    finally:
        v.unmount()


@pytest.mark.parametrize("bad", ["0/3", "4/3", "x", "3", "1/0", "1/4097", "-1/3", "+1/3",
                                 " 1/3", "1/3x", "1/", "/3", "1/-3", "", "99999999999999999999/3"])
def test_bad_shard_is_a_usage_error(tmp_path, bad):
    cp = ctl("rotate", "--check", "--shard", bad, tmp_path)
    assert cp.returncode == 2, cp.stderr
    assert "--shard wants I/N with 1 <= I <= N <= 4096" in cp.stderr


def test_shard_bounds_to_kms_and_offline_rekey(tmp_path):
    (tmp_path / "v").mkdir()
    v = Volume(tmp_path / "v")
    v.mount()
    try:
        contents = populate(v.mnt, 12)
        # The largest split there is: one shard of 4096 holds few files, or none.
        cp = ctl("rotate", "--json", "--shard", "4096/4096", v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["shard"] == "4096/4096"

        # A move to another KMS is one run over the whole volume: refused, nothing changed.
        other = tmp_path / "other.keyring"
        ctl("keyring", "create", other, check=True)
        keyring_id = ctl("keyring", "list", other).stdout.split("keyring ID:")[1].split()[0]
        config = tmp_path / "to-other.ini"
        config.write_text(f"[kms]\nprovider = local\nkeyring = {other}\n"
                          f"keyring_id = {keyring_id}\n")
        conf = (v.backing / "envelopefs.conf").read_bytes()
        ref = v.status()["kms"]["key_ref"]
        cp = ctl("rotate", "--to-kms", config, "--shard", "1/2", v.mnt)
        assert cp.returncode == 2
        assert "moves the whole volume in one run" in cp.stderr and "--shard" in cp.stderr
        assert (v.backing / "envelopefs.conf").read_bytes() == conf
        assert v.status()["kms"]["key_ref"] == ref
        # ... done by one host, unsharded, it completes.
        cp = ctl("rotate", "--to-kms", config, v.mnt)
        assert cp.returncode == 0, cp.stderr
        assert v.status()["kms"]["key_ref"] != ref
        check_contents(v.mnt, contents)
    finally:
        v.unmount()
    # Parallel offline re-keys would finish each other's journals: refused.
    cp = ctl("rotate", "--offline", "--rekey", "--shard", "1/2", v.backing)
    assert cp.returncode == 2 and "does not take --shard" in cp.stderr


def test_offline_shards_split_as_the_mount_does(tmp_path):
    """The daemon shows the backing inode numbers: offline parts are the online parts, the
    volume key (a backing file here, the mount root online) going to shard 1 both ways."""
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    contents = populate(v.mnt, 30)
    per_names, per_inodes = expected(v.mnt, contents, 1)
    online = {}
    for k in range(1, N + 1):
        cp = ctl("rotate", "--check", "--json", "--shard", f"{k}/{N}", v.mnt)
        online[k] = json.loads(cp.stdout)["versions"]
    v.unmount()
    rotate_keyring(v)
    for k in range(1, N + 1):
        cp = ctl("rotate", "--offline", "--check", "--json", "--shard", f"{k}/{N}", v.backing)
        assert json.loads(cp.stdout)["versions"] == online[k] == {"1": per_names[k]}
    for k in range(1, N + 1):
        cp = ctl("rotate", "--offline", "--json", "--shard", f"{k}/{N}", v.backing)
        assert cp.returncode == 0, cp.stderr
        assert json.loads(cp.stdout)["rewrapped"] == per_inodes[k]
    assert ctl("rotate", "--offline", "--check", v.backing).returncode == 0
    v.mount()
    check_contents(v.mnt, contents)
    v.unmount()


def test_rekey_shards_keep_their_own_state_and_resume(tmp_path, monkeypatch):
    """Two shards re-key side by side with one state directory (hosts sharing a home); one is
    killed midway and resumes from its own state file, untouched by the other's."""
    state_home = tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    (tmp_path / "v").mkdir()
    v = Volume(tmp_path / "v")
    v.mount()
    try:
        m = v.mnt
        for i in range(150):
            (m / f"f{i}").write_bytes(b"x" * 3000)
        ids = {i: file_id(m / f"f{i}") for i in range(150)}
        shard = {i: shard_of(os.stat(m / f"f{i}").st_ino) for i in range(150)}
        mine = {k: [i for i in range(150) if shard[i] == k] for k in range(1, N + 1)}
        assert all(len(files) >= 20 for files in mine.values()), mine
        uuid = v.status()["volume"]
        state = {k: state_home / "envelopefs" / f"rekey-{uuid}.shard-{k}-of-{N}.ids"
                 for k in range(1, N + 1)}

        # Shard 2, slowed down, is killed once it has listed some files; shard 1 runs beside it.
        slow = subprocess.Popen([str(CTL), "rotate", "--rekey", "--shard", f"2/{N}", "--jobs",
                                 "1", "--max-rate", "10", str(m)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = subprocess.Popen([str(CTL), "rotate", "--rekey", "--json", "--shard", f"1/{N}",
                                  str(m)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        deadline = time.monotonic() + 30
        while (not state[2].exists() or len(state[2].read_text().split()) < 5) and \
                time.monotonic() < deadline:
            time.sleep(0.01)
        slow.kill()
        slow.wait()
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, err
        assert json.loads(out)["rekeyed"] == len(mine[1])
        assert not state[1].exists()  # complete: its state is gone, shard 2's is not
        assert state[2].exists()
        assert not (state_home / "envelopefs" / f"rekey-{uuid}.ids").exists()
        changed = {i for i in range(150) if file_id(m / f"f{i}") != ids[i]}
        done_before = len(changed & set(mine[2]))
        assert 5 <= done_before < len(mine[2])
        assert changed - set(mine[2]) == set(mine[1])  # shard 3's files are untouched

        resumed = ctl("rotate", "--rekey", "--json", "--shard", f"2/{N}", m)
        assert resumed.returncode == 0, resumed.stderr
        assert "resuming a re-key run" in resumed.stderr and str(state[2]) in resumed.stderr
        s = json.loads(resumed.stdout)
        # Files listed are skipped; at most one was re-keyed but not yet listed.
        assert s["already_current"] >= done_before - 1
        assert s["rekeyed"] + s["already_current"] == len(mine[2])
        assert not state[2].exists()

        last = ctl("rotate", "--rekey", "--json", "--shard", f"3/{N}", m)
        assert last.returncode == 0, last.stderr
        assert json.loads(last.stdout)["rekeyed"] == len(mine[3])
        assert all(file_id(m / f"f{i}") != ids[i] for i in range(150))
        for i in range(150):
            assert (m / f"f{i}").read_bytes() == b"x" * 3000
    finally:
        v.unmount()
