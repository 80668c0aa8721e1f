#!/usr/bin/env python3
"""How long `envelopefsctl fsck` takes on a volume of many files (issue 15.5).

    sudo bench/fsck_time.py BUILD_DIR [--files N] [--size BYTES] [--names encrypted|plain]
                                      [--jobs J ...] [--work DIR]

Makes a fresh volume (local keyring), writes N files of SIZE random bytes through a mount, 100 to a
directory, with a symlink and an xattr every 100 files, unmounts, drops the page cache (so the check
reads the backing from disk, as after a reboot), and times one offline `fsck --json` per --jobs
value.  Prints one tab-separated line per run: files, jobs, seconds, files/s, and fsck's counts.
"""
import argparse
import json
import os
import shutil
import subprocess
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--size", type=int, default=8192)
    ap.add_argument("--names", default="encrypted")
    ap.add_argument("--jobs", type=int, nargs="+", default=[4])
    ap.add_argument("--work", default="/var/tmp/envfs-fsck-bench")
    a = ap.parse_args()
    ctl, daemon = os.path.join(a.build, "tools/envelopefsctl"), os.path.join(a.build, "fs/envelopefs")
    shutil.rmtree(a.work, ignore_errors=True)
    backing, mnt = os.path.join(a.work, "b"), os.path.join(a.work, "m")
    os.makedirs(mnt)
    env = {**os.environ, "ENVELOPEFS_STATE_DIR": os.path.join(a.work, "state")}
    subprocess.run([ctl, "init", "--keyring", os.path.join(a.work, "k"), "--names", a.names,
                    backing], check=True, capture_output=True, env=env)
    subprocess.run([daemon, backing, mnt], check=True, env=env)
    try:
        for i in range(a.files):
            d = os.path.join(mnt, f"d{i // 100}")
            if i % 100 == 0:
                os.mkdir(d)
                os.symlink(f"/target/{i}", os.path.join(d, "link"))
                os.setxattr(d, "user.n", str(i).encode())
            with open(os.path.join(d, f"file-{i}"), "wb") as f:
                f.write(os.urandom(a.size))
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=True)
    for jobs in a.jobs:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        start = time.monotonic()
        cp = subprocess.run([ctl, "fsck", "--json", "-j", str(jobs), backing], capture_output=True,
                            text=True, env=env)
        took = time.monotonic() - start
        report = json.loads(cp.stdout)
        assert cp.returncode == 0 and not report["findings"], cp.stdout + cp.stderr
        print(f"{report['files']}\t{jobs}\t{took:.2f}\t{report['files'] / took:.0f}\t"
              f"dirs={report['directories']} blocks={report['blocks']} "
              f"symlinks={report['symlinks']} xattrs={report['xattrs']}", flush=True)
    shutil.rmtree(a.work, ignore_errors=True)


if __name__ == "__main__":
    main()
