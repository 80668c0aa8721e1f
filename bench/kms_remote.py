#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Remote-KMS cost: a vault volume (Transit test server with --latency-ms) against a local-keyring volume.

  sudo bench/kms_remote.py [--build DIR] [--compare-build DIR] [--files N] [--rotate-files N]
                           [--latency-ms MS] [--reps R]

Volumes, all in the same run, interleaved (each rep mounts them in turn):
  local             the local keyring
  vault             Vault with the daemon's defaults: DEK pool (refilled by batched Transit encrypt) and
                    prefetch on listing (batched Transit decrypt)
  vault-noprefetch  the same with [daemon] prefetch = false
  vault-nopool      the same with [daemon] dek_pool = 0
  vault-before      --compare-build's daemon and tools (e.g. a release build of an older commit), defaults
The order of the volumes turns with each rep.  Rows (medians of R runs, and the medians of the per-rep
ratios to the local volume, which the machine's load moves less):
  untar      tar -xf of N small files (1..8 KiB, 20 directories) into the mount, then sync
  read-seq   after a remount (DEK cache empty) and drop_caches: tar -cf /dev/null of the tree (one cold open each)
  read-par8  the same with 8 reader threads
  rotate     envelopefsctl rotate --jobs 1 and --jobs 8 after a Transit key rotation, on --rotate-files files
             (vault only: the local provider needs no network)
"""
import argparse
import io
import os
import pathlib
import random
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
from vaultd import VaultServer  # noqa: E402


def sh(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def drop_caches():
    os.sync()
    pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Mounted:
    def __init__(self, build, root, init_args, daemon_settings=None):
        self.build, self.backing, self.mnt = build, root / "backing", root / "mnt"
        self.backing.mkdir(parents=True)
        self.mnt.mkdir()
        self.options = []
        if daemon_settings:
            conf = root / "daemon.ini"
            conf.write_text("[daemon]\n" + "".join(f"{k} = {v}\n" for k, v in daemon_settings.items()))
            self.options = ["-o", f"config={conf}"]
        sh(build / "tools" / "envelopefsctl", "init", *init_args, self.backing)

    def mount(self):
        sh(self.build / "fs" / "envelopefs", *self.options, self.backing, self.mnt)

    def unmount(self):
        subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
        for _ in range(200):
            if not os.path.ismount(self.mnt):
                return
            time.sleep(0.05)


def make_tar(n):
    rng = random.Random(1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(n):
            data = rng.randbytes(rng.randint(1024, 8192))
            info = tarfile.TarInfo(f"t/d{i % 20}/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def read_all(root, threads):
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]

    def one(path):
        with open(path, "rb") as f:
            while f.read(1 << 16):
                pass

    if threads == 1:
        for p in files:
            one(p)
    else:
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(one, files))


def create_flat(root, n):
    os.makedirs(root, exist_ok=True)
    for i in range(n):
        with open(root / f"r{i}", "wb") as f:
            f.write(b"r" * 100)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(REPO / "build-rel"))
    ap.add_argument("--compare-build", help="another build to run as vault-before")
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--rotate-files", type=int, default=10000)
    ap.add_argument("--latency-ms", type=float, default=2)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    build = pathlib.Path(args.build)
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="envfs-kms-bench-", dir="/var/tmp"))
    tar_path = work / "tree.tar"
    tar_path.write_bytes(make_tar(args.files))
    srv = VaultServer(work / "vault", latency_ms=args.latency_ms)
    srv.create_key("bench")
    rows = {}
    try:
        for rep in range(args.reps):
            vault_init = ["--kms", "vault", "--kms-setting", f"address={srv.url}",
                          "--kms-setting", "key=bench", "--kms-setting", f"token_file={srv.token_file}"]
            vols = {
                "local": Mounted(build, work / f"local{rep}", ["--keyring", work / f"k{rep}.keyring"]),
                # The daemon's defaults for a remote KMS: new-file keys made ahead (dek_pool = 64),
                # DEKs of listed files unwrapped ahead (prefetch = auto).
                "vault": Mounted(build, work / f"vault{rep}", vault_init),
                "vault-noprefetch": Mounted(build, work / f"vaultnpf{rep}", vault_init, {"prefetch": "false"}),
                "vault-nopool": Mounted(build, work / f"vaultnp{rep}", vault_init, {"dek_pool": 0}),
            }
            if args.compare_build:
                vols["vault-before"] = Mounted(pathlib.Path(args.compare_build), work / f"vaultb{rep}",
                                               vault_init)
            # The order turns each rep, so no volume always runs first (or after the same one).
            order = list(vols.items())
            order = order[rep % len(order):] + order[:rep % len(order)]
            for name, v in order:
                v.mount()
                try:
                    rows.setdefault(("untar", name), []).append(timed(lambda: (
                        sh("tar", "-xf", tar_path, "-C", v.mnt), os.sync())))
                    for label, threads in (("read-seq", 1), ("read-par8", 8)):
                        v.unmount()
                        drop_caches()
                        v.mount()
                        rows.setdefault((label, name), []).append(
                            timed(lambda: read_all(v.mnt / "t", threads)))
                finally:
                    v.unmount()
        if not args.rotate_files:
            return print_rows(args, rows)
        # Rotation on the vault volume: files created once, the Transit key rotated before each run.
        v = Mounted(build, work / "rotate", ["--kms", "vault", "--kms-setting", f"address={srv.url}",
                                             "--kms-setting", "key=bench", "--kms-setting",
                                             f"token_file={srv.token_file}"])
        v.mount()
        try:
            t = timed(lambda: create_flat(v.mnt / "r", args.rotate_files))
            print(f"created {args.rotate_files} files for rotation in {t:.1f} s", flush=True)
            for rep in range(args.reps):
                for jobs in (1, 8):
                    srv.rotate("bench")
                    v.unmount()
                    v.mount()  # cold DEK cache, as after a restart
                    t = timed(lambda: sh(build / "tools" / "envelopefsctl", "rotate", "--jobs", jobs,
                                         v.mnt))
                    rows.setdefault((f"rotate-jobs{jobs}", "vault"), []).append(t)
                    print(f"rotate --jobs {jobs}: {args.rotate_files / t:.0f} files/s", flush=True)
        finally:
            v.unmount()
    finally:
        srv.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print_rows(args, rows)


def print_rows(args, rows):
    names = [n for n in ("local", "vault", "vault-noprefetch", "vault-nopool", "vault-before")
             if any(k == n for _, k in rows)]
    print(f"\nlatency {args.latency_ms} ms per KMS request, {args.files} files, medians of {args.reps}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    print(f"{'row':13}" + "".join(f"{n + ' s':>18}" for n in names) +
          "".join(f"{n + '/local':>22}" for n in names if n != "local"))
    for row in ("untar", "read-seq", "read-par8", "rotate-jobs1", "rotate-jobs8"):
        med = {n: statistics.median(rows[(row, n)]) for n in names if rows.get((row, n))}
        if not med:
            continue
        lo = med.get("local")
        line = f"{row:13}" + "".join(f"{med[n]:18.2f}" if n in med else f"{'-':>18}" for n in names)
        line += "".join(f"{med[n] / lo:22.2f}" if n in med and lo else f"{'-':>22}"
                        for n in names if n != "local")
        print(line)
    print("per-rep ratios to local (same rep), median [min..max]:")
    for row in ("untar", "read-seq", "read-par8"):
        lo = rows.get((row, "local"))
        if not lo:
            continue
        parts = []
        for n in names:
            if n == "local" or not rows.get((row, n)):
                continue
            ratios = [x / l for x, l in zip(rows[(row, n)], lo)]
            parts.append(f"{n} {statistics.median(ratios):.2f} [{min(ratios):.2f}..{max(ratios):.2f}]")
        print(f"  {row:10} " + ", ".join(parts))
    for (row, name), samples in sorted(rows.items()):
        print(f"  samples {row} {name}: " + " ".join(f"{x:.2f}" for x in samples))


if __name__ == "__main__":
    main()
