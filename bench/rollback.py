#!/usr/bin/env python3
"""The cost of file versions (issue 15.3, docs/FORMAT.md tag 2): builds compared on a format-3 volume.

    sudo bench/rollback.py BUILD_DIR [BUILD_DIR...] [--work DIR] [--reps N]

For each repetition, for each build in turn (interleaved, as bench/run does), a fresh volume (the
default: format 3, encrypted names) is made with that build's envelopefsctl, mounted with its
daemon, and three workloads run:
  open-append-close   200 existing files, 4000 times: open O_APPEND, write 100 bytes, close
  fsync loop          one file, 1000 times: write 4 KiB, fsync
  append-fsync-close  200 existing files, 1000 times: open O_APPEND, write 100 bytes, fsync, close
Prints one tab-separated line per workload and run (operations per second), then the medians.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import time


def run(build, work):
    ctl, daemon = os.path.join(build, "tools/envelopefsctl"), os.path.join(build, "fs/envelopefs")
    shutil.rmtree(work, ignore_errors=True)
    backing, mnt = os.path.join(work, "b"), os.path.join(work, "m")
    os.makedirs(mnt)
    env = {**os.environ, "ENVELOPEFS_STATE_DIR": os.path.join(work, "state")}
    subprocess.run([ctl, "init", "--keyring", os.path.join(work, "k"), backing],
                   check=True, capture_output=True, env=env)
    subprocess.run([daemon, backing, mnt], check=True, env=env)
    files = [os.path.join(mnt, f"f{i}") for i in range(200)]
    for path in files:
        with open(path, "wb") as f:
            f.write(os.urandom(1000))
    os.sync()
    chunk = os.urandom(100)

    def append_close(n):
        for i in range(n):
            fd = os.open(files[i % len(files)], os.O_WRONLY | os.O_APPEND)
            os.write(fd, chunk)
            os.close(fd)

    def fsync_loop(n):
        block = os.urandom(4096)
        fd = os.open(os.path.join(mnt, "log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for _ in range(n):
            os.write(fd, block)
            os.fsync(fd)
        os.close(fd)

    def append_fsync_close(n):
        for i in range(n):
            fd = os.open(files[i % len(files)], os.O_WRONLY | os.O_APPEND)
            os.write(fd, chunk)
            os.fsync(fd)
            os.close(fd)

    rates = {}
    try:
        for name, fn, n in (("open-append-close", append_close, 4000),
                            ("fsync loop", fsync_loop, 1000),
                            ("append-fsync-close", append_fsync_close, 1000)):
            start = time.monotonic()
            fn(n)
            rates[name] = n / (time.monotonic() - start)
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
    return rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("builds", nargs="+")
    ap.add_argument("--work", default="/tmp/envelopefs-bench-rollback")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    results = {b: {} for b in args.builds}
    for rep in range(args.reps):
        for build in args.builds:
            for name, rate in run(build, args.work).items():
                results[build].setdefault(name, []).append(rate)
                print(f"{rep}\t{build}\t{name}\t{rate:.0f}/s", flush=True)
            time.sleep(1)  # the daemon's last unmount work
    print("medians:")
    for build, by_name in results.items():
        for name, rates in by_name.items():
            print(f"{build}\t{name}\t{statistics.median(rates):.0f}/s")
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
