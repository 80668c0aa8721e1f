#!/usr/bin/env python3
"""Micro-benchmark of the hole bookkeeping of format-2 volumes (issue 15.1, docs/FORMAT.md "Holes").

    sudo bench/holes.py BUILD_DIR [BUILD_DIR...] [--work DIR] [--reps N]

For each repetition, for each build in turn (interleaved, as bench/run does), a fresh plain-names
volume is made with that build's envelopefsctl, mounted with its daemon, and four workloads run:
  small files      2000 files of 10000 bytes (no hole: the record is written once per file)
  seq write        one 256 MiB file in 1 MiB writes, then fsync (no hole, whatever order the
                   kernel's writeback delivers the writes in)
  truncate-grow    1000 files: 1 byte, then ftruncate to 1 MiB (one recorded hole range each)
  write-past-end   1000 files: 1 byte, then 1 byte at 64 KiB (a gap, recorded at close)
Prints one tab-separated line per workload and run, then the medians per build.
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
    subprocess.run([ctl, "init", "--keyring", os.path.join(work, "k"), "--names", "plain", backing],
                   check=True, capture_output=True, env=env)
    subprocess.run([daemon, backing, mnt], check=True, env=env)

    def small_files(n):
        for i in range(n):
            with open(os.path.join(mnt, f"s{i}"), "wb") as f:
                f.write(os.urandom(10000))

    def seq_write(n):
        buf = os.urandom(1 << 20)
        with open(os.path.join(mnt, "big"), "wb") as f:
            for _ in range(n):
                f.write(buf)
            f.flush()
            os.fsync(f.fileno())

    def truncate_grow(n):
        for i in range(n):
            with open(os.path.join(mnt, f"t{i}"), "wb") as f:
                f.write(b"x")
                f.truncate(1 << 20)

    def write_past_end(n):
        for i in range(n):
            with open(os.path.join(mnt, f"p{i}"), "wb") as f:
                f.write(b"x")
                f.seek(64 << 10)
                f.write(b"y")

    rates = {}
    try:
        for name, fn, n in (("small files/s", small_files, 2000), ("seq write MiB/s", seq_write, 256),
                            ("truncate-grow files/s", truncate_grow, 1000),
                            ("write-past-end files/s", write_past_end, 1000)):
            subprocess.run(["sync"], check=True)
            t0 = time.perf_counter()
            fn(n)
            rates[name] = n / (time.perf_counter() - t0)
    finally:
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return rates


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("builds", nargs="+")
    p.add_argument("--work", default="/var/tmp/envelopefs-holes-bench")
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    samples = {b: {} for b in a.builds}
    for rep in range(a.reps):
        for b in a.builds:
            for name, rate in run(b, a.work).items():
                samples[b].setdefault(name, []).append(rate)
                print(f"{rep}\t{b}\t{name}\t{rate:.0f}", flush=True)
    print("median:")
    for b in a.builds:
        print(b, "  ".join(f"{k} {statistics.median(v):.0f}" for k, v in samples[b].items()))


if __name__ == "__main__":
    main()
