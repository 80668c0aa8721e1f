"""fsck and rotate walk the tree through a bounded queue (issue 16, tools/ctl_workq.h): a directory
of 20,000 entries is checked and rotated right, and their peak RSS does not follow the number of
files (before the queue, fsck kept about 265 bytes per file and rotate every path)."""
import json
import os
import subprocess
import tempfile
import time

import pytest

from mounts import CTL, Volume

SMALL, BIG = 1000, 20000
BLOCK = 4096
SLOT = 320  # header placement, local keyring, format 3 (docs/FORMAT.md, "Header slots")
# What the tools may grow by from SMALL to BIG files.  Measured: before the queue fsck grew by
# 5,476 KiB and rotate by 1,660 KiB (release build); with it, by 136 and -100 KiB (release), 592
# and 80 KiB (AddressSanitizer, whose allocator keeps more): both runs fill the queue (1,000
# objects are about its depth) and nothing else follows the tree.
FSCK_GROWTH_KIB, ROTATE_GROWTH_KIB = 2048, 1024
TIME = "/usr/bin/time"  # GNU time (tools/setup.sh installs it)


@pytest.fixture(autouse=True)
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("ENVELOPEFS_STATE_DIR", str(tmp_path / "state"))


def run_measured(*args):
    """envelopefsctl @args under GNU time: (exit status, stdout, its peak RSS in KiB).  Not
    wait4()'s own figure: a child this (large) process spawns starts with its memory counted.
    Under AddressSanitizer freed memory is held back in a quarantine, which would count every
    object ever freed, and every allocation's stack is stored: neither is kept here."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "quarantine_size_mb=0",
                                                 "thread_local_quarantine_size_kb=0",
                                                 "malloc_context_size=0"]))
    with tempfile.NamedTemporaryFile() as rss:
        cp = subprocess.run([TIME, "-o", rss.name, "-f", "%M", str(CTL), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=600)
        assert cp.stdout, cp.stderr
        return cp.returncode, cp.stdout, int(open(rss.name).read().split()[-1])


def fill(v, start, stop):
    big = v.mnt / "big"
    big.mkdir(exist_ok=True)
    for i in range(start, stop):
        (big / f"f{i}").write_bytes(b"%d" % i)


def fsck(v):
    rc, out, rss = run_measured("fsck", "--json", v.backing)
    return rc, json.loads(out), rss


def rotate(v, *args):
    rc, out, rss = run_measured("rotate", "--json", *args, v.mnt)
    return rc, json.loads(out), rss


def rotate_keyring(v):
    subprocess.run([str(CTL), "keyring", "rotate", str(v.keyring)], check=True,
                   capture_output=True)
    time.sleep(1.1)  # the local provider notices a rotated keyring within a second


def test_many_entries_bounded(tmp_path):
    v = Volume(tmp_path, names="encrypted")
    v.mount()
    try:
        fill(v, 0, SMALL)
        _, small_check, rotate_small = rotate(v, "--check")
        assert small_check["files"] == SMALL + 1, small_check  # and the volume key
    finally:
        v.unmount()
    rc, report, fsck_small = fsck(v)
    assert rc == 0 and report["files"] == SMALL, report

    v.mount()
    try:
        fill(v, SMALL, BIG)
        os.link(v.mnt / "big" / "f7", v.mnt / "big" / "hard")
    finally:
        v.unmount()
    # fsck of the 20,000 entries (a hard link among them): clean, each file checked once
    rc, report, fsck_big = fsck(v)
    assert rc == 0 and report["findings"] == [], report
    assert report["files"] == BIG and report["directories"] == 2, report
    assert fsck_big - fsck_small < FSCK_GROWTH_KIB, (fsck_small, fsck_big)

    # one damaged block among them is found, under its path
    victim = v.backing_path("big/f12345")
    with open(victim, "r+b") as f:
        f.seek(2 * SLOT + 2)
        byte = f.read(1)
        f.seek(2 * SLOT + 2)
        f.write(bytes([byte[0] ^ 1]))
    rc, report, _ = fsck(v)
    assert rc == 3, report
    assert [(f["kind"], f["path"]) for f in report["findings"]] == [("block", "/big/f12345")]
    with open(victim, "r+b") as f:
        f.seek(2 * SLOT + 2)
        f.write(byte)

    v.mount()
    try:
        rotate_keyring(v)
        rc, summary, _ = rotate(v)
        # every file once (the hard link's second name finds it done), and the volume key
        assert rc == 0 and summary["rewrapped"] == BIG + 1 and summary["failed"] == 0, summary
        rc, summary, rotate_big = rotate(v, "--check")
        assert rc == 0 and summary["files"] == BIG + 2, summary
        assert summary["versions"] == {"2": BIG + 2}, summary
    finally:
        v.unmount()
    assert rotate_big - rotate_small < ROTATE_GROWTH_KIB, (rotate_small, rotate_big)
