#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Remote-KMS cost: the ways people read whole trees, on a local-keyring volume and on remote-KMS volumes.

  sudo bench/kms_remote.py [--build DIR] [--files N] [--big N] [--latency-ms MS] [--reps R]
                           [--providers local,vault,aws] [--extra local-prefetch,vault-noprefetch]
                           [--big-providers local,vault] [--rotate-files N] [--cpu] [--base-build DIR]

Volumes, all in the same run, interleaved (each rep mounts them in turn, in an order that turns):
  local             the local keyring (prefetch off: auto)
  vault             Vault Transit (tests/kmsd/vault_transit.py) with --latency-ms per request, the daemon's
                    defaults (DEK pool, prefetch on)
  aws               AWS KMS (moto_server, tests/kmsd/aws_moto.py) behind its throttling proxy delaying every
                    request by --latency-ms (moto's own time comes on top), the daemon's defaults
  --extra:  local-prefetch (local keyring with prefetch = true), vault-noprefetch (prefetch = false)
  --base-build DIR: KIND-base for each KIND of --providers (e.g. vault-base), the same volume made and mounted
            by another build (an older commit): an A/B under the same load
Rows, each on cold caches (unmount, drop_caches, mount) but the first; medians of R runs, and the medians of
the per-rep ratios to the local volume (which the machine's load moves less):
  untar      tar -xf of N small files (1..8 KiB, 20 directories) into a new volume, then sync
  find-cat   find t -type f -print0 | xargs -0 cat      (READDIR, then a lookup and a read per file)
  cp-r       cp -r t to a local directory                (looks each file up just before reading it)
  rsync      rsync -a t/ to a local directory
  tar-cf     tar -cf a local file -C mount t
  bigdir     find | xargs cat of one directory of --big files of 64..512 bytes (made once per volume)
  rotate     envelopefsctl rotate --jobs 1 / 8 after a Transit key rotation, --rotate-files files (vault)
Also printed: the KMS service calls each remote volume made per row (median), and per rep the opens that
waited for a prefetch batch (the reader caught up with the read ahead) and the new files whose key the pool
did not hold (made on the spot: a KMS call while creating), from its status, where not all 0.
--cpu adds, per row and volume, the median CPU time of the daemon, of the KMS test server (Transit server or
moto_server) and of the row's commands (tar, cp, ...), and for untar the `sync` at its end on its own: where a
row's time goes on a machine whose cores they all share.
"""
import argparse
import io
import json
import os
import pathlib
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests" / "kmsd"))
from vaultd import VaultServer  # noqa: E402

READ_ROWS = ("find-cat", "cp-r", "rsync", "tar-cf")
ROWS = ("untar",) + READ_ROWS + ("bigdir", "rotate-jobs1", "rotate-jobs8")


def sh(*args, env=None, **kw):
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))}: exit {r.returncode}: {r.stderr[-2000:]}")
    return r


TICK = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid):
    """CPU ms @pid has used, all its threads (exited ones too): utime + stime of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / TICK


def children_cpu_ms():
    """CPU ms of this process's waited-for children (the rows' commands)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r.ru_utime + r.ru_stime) * 1000


def drop_caches():
    os.sync()
    pathlib.Path("/proc/sys/vm/drop_caches").write_text("3\n")


class Mounted:
    def __init__(self, build, root, init_args, daemon_settings=None, env=None):
        self.build, self.backing, self.mnt, self.env = build, root / "backing", root / "mnt", env
        self.backing.mkdir(parents=True)
        self.mnt.mkdir()
        self.options = []
        if daemon_settings:
            conf = root / "daemon.ini"
            conf.write_text("[daemon]\n" + "".join(f"{k} = {v}\n" for k, v in daemon_settings.items()))
            self.options = ["-o", f"config={conf}"]
        sh(build / "tools" / "envelopefsctl", "init", *init_args, self.backing, env=env)

    def mount(self):
        sh(self.build / "fs" / "envelopefs", *self.options, self.backing, self.mnt, env=self.env)

    def unmount(self):
        """Unmount, and wait for the daemon to exit (so the next mount's daemon is the only one)."""
        pid = self.daemon_pid() if os.path.ismount(self.mnt) else None
        for i in range(200):
            # Again every second while still mounted: something else on the machine may hold the mount
            # for a moment (fusermount3: "Device or resource busy").
            if i % 20 == 0 and os.path.ismount(self.mnt):
                subprocess.run(["fusermount3", "-u", str(self.mnt)], check=False)
            if not os.path.ismount(self.mnt) and not (pid and os.path.exists(f"/proc/{pid}")):
                return
            time.sleep(0.05)

    def daemon_pid(self):
        """The pid of the daemon serving this mount (it forks away from `envelopefs`), or None."""
        want = [str(self.backing).encode(), str(self.mnt).encode()]
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                args = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if args[0].endswith(b"envelopefs") and all(w in args for w in want):
                return int(pid)
        return None

    def status(self):
        return json.loads(os.getxattr(self.mnt, "trusted.envelopefs.status"))

    def cold(self):
        """Remount with empty caches, and wait for the new-file key pool to fill: its calls at mount
        (one Transit batch; 64 GenerateDataKey calls for AWS) are the mount's, not the workload's."""
        self.unmount()
        drop_caches()
        self.mount()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            pool = self.status()["pool"]
            if pool["entries"] >= pool["capacity"]:
                return
            time.sleep(0.05)

    def service_calls(self):
        return self.status()["kms"].get("service", {}).get("calls", 0)

    def counters(self):
        """Opens that waited for a prefetch batch so far (the reader caught up with the read ahead), and
        new files whose key the pool did not hold (a KMS call on the create path)."""
        st = self.status()
        return {"opens that waited for a batch": st["prefetch"]["waited"],
                "new files the key pool missed": st["pool"]["misses"]}


def make_tar(path, n, dirs, prefix, sizes=(1024, 8192)):
    rng = random.Random(1)
    with open(path, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
        for i in range(n):
            data = rng.randbytes(rng.randint(*sizes))
            info = tarfile.TarInfo(f"{prefix}/d{i % dirs}/f{i}" if dirs > 1 else f"{prefix}/f{i}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def timed(fn):
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def find_cat(root):
    sh("sh", "-c", f"find '{root}' -type f -print0 | xargs -0 cat > /dev/null")


class Providers:
    """The KMS servers and each volume kind's `envelopefsctl init` arguments and environment."""

    def __init__(self, work, names, latency_ms):
        self.work, self.vault, self.aws = work, None, None
        if any(n.startswith("vault") for n in names):
            self.vault = VaultServer(work / "vault", latency_ms=latency_ms)
            self.vault.create_key("bench")
        if "aws" in names:
            from aws_moto import AwsPeer
            self.aws = AwsPeer()
            self.aws.throttle.set(latency_ms=latency_ms)

    def volume(self, build, kind, root, keyring):
        kind = kind.removesuffix("-base")
        if kind.startswith("local"):
            return Mounted(build, root, ["--keyring", keyring],
                           {"prefetch": "true"} if kind == "local-prefetch" else None)
        if kind.startswith("vault"):
            v = self.vault
            return Mounted(build, root, ["--kms", "vault", "--kms-setting", f"address={v.url}",
                                         "--kms-setting", "key=bench",
                                         "--kms-setting", f"token_file={v.token_file}"],
                           {"prefetch": "false"} if kind == "vault-noprefetch" else None)
        a = self.aws
        env = dict(os.environ, AWS_ACCESS_KEY_ID=a.access_key, AWS_SECRET_ACCESS_KEY=a.secret,
                   AWS_SHARED_CREDENTIALS_FILE=str(self.work / "no-credentials"))
        env.pop("AWS_SESSION_TOKEN", None)
        return Mounted(build, root, ["--kms", "aws", "--kms-setting", f"key_id={a.key_arn}",
                                     "--kms-setting", f"endpoint={a.throttle_endpoint}",
                                     "--kms-setting", "region=us-east-1"], env=env)

    def server_pid(self, kind):
        """The pid of the KMS test server a volume of @kind talks to, or None (local keyring)."""
        kind = kind.removesuffix("-base")
        if kind.startswith("vault"):
            return self.vault.proc.pid
        if kind == "aws":
            return self.aws.proc.pid
        return None

    def stop(self):
        if self.vault:
            self.vault.stop()
        if self.aws:
            self.aws.stop()


def record(rows, calls, row, name, v, fn, cpu=None):
    """Time @fn as @row of volume @name; with @cpu (a dict, --cpu) also the CPU ms of the daemon, the KMS
    server (@v.server_pid) and the row's commands."""
    before, counted_before = v.service_calls(), v.counters()
    if cpu is not None:
        pids = {"daemon": v.daemon_pid(), "server": v.server_pid}
        start = {k: cpu_ms(p) for k, p in pids.items() if p}
        start["commands"] = children_cpu_ms()
    rows.setdefault((row, name), []).append(timed(fn))
    if cpu is not None:
        end = {k: cpu_ms(p) for k, p in pids.items() if p}
        end["commands"] = children_cpu_ms()
        for k in start:
            cpu.setdefault((row, name, k), []).append(end[k] - start[k])
    calls.setdefault((row, name), []).append(v.service_calls() - before)
    for k, n in v.counters().items():
        calls.setdefault((row, name, k), []).append(n - counted_before[k])


def untar(tar_path, v, sync_times):
    """tar -xf into the volume, then sync (its time also in @sync_times)."""
    sh("tar", "-xf", tar_path, "-C", v.mnt)
    sync_times.append(timed(os.sync))


def build_of(args, name):
    """The build a volume of @name runs: --base-build for KIND-base, else --build."""
    return pathlib.Path(args.base_build if name.endswith("-base") else args.build)


def run_tree(args, build, prov, work, names, rows, calls, tar_path, cpu):
    for rep in range(args.reps):
        vols = {n: prov.volume(build_of(args, n), n, work / f"{n}{rep}", work / f"k-{n}{rep}.keyring")
                for n in names}
        for n, v in vols.items():
            v.server_pid = prov.server_pid(n)
        order = list(vols.items())
        order = order[rep % len(order):] + order[:rep % len(order)]
        for name, v in order:
            v.mount()
            try:
                record(rows, calls, "untar", name, v,
                       lambda: untar(tar_path, v, rows.setdefault(("untar-sync", name), [])), cpu)
                dest = work / "dest"
                for row in READ_ROWS:
                    shutil.rmtree(dest, ignore_errors=True)
                    dest.mkdir()
                    v.cold()
                    cmd = {"find-cat": lambda: find_cat(v.mnt / "t"),
                           "cp-r": lambda: sh("cp", "-r", v.mnt / "t", dest / "t"),
                           "rsync": lambda: sh("rsync", "-a", f"{v.mnt}/t/", dest / "t"),
                           "tar-cf": lambda: sh("tar", "-cf", dest / "t.tar", "-C", v.mnt, "t")}[row]
                    record(rows, calls, row, name, v, cmd, cpu)
                shutil.rmtree(dest, ignore_errors=True)
            finally:
                v.unmount()
            print(f"rep {rep} {name}: " + ", ".join(f"{r} {rows[(r, name)][-1]:.2f} s"
                                                     for r in ("untar",) + READ_ROWS), flush=True)


def run_bigdir(args, build, prov, work, names, rows, calls):
    big_tar = work / "big.tar"
    make_tar(big_tar, args.big, 1, "big", (64, 512))
    vols = {}
    for n in names:
        v = vols[n] = prov.volume(build_of(args, n), n, work / f"big-{n}", work / f"k-big-{n}.keyring")
        v.mount()
        try:
            t = timed(lambda: (sh("tar", "-xf", big_tar, "-C", v.mnt), os.sync()))
            print(f"bigdir {n}: {args.big} files made in {t:.1f} s", flush=True)
        finally:
            v.unmount()
    big_tar.unlink()
    for rep in range(args.reps):
        order = list(vols.items())
        order = order[rep % len(order):] + order[:rep % len(order)]
        for name, v in order:
            v.unmount()
            drop_caches()
            v.mount()
            try:
                record(rows, calls, "bigdir", name, v, lambda: find_cat(v.mnt / "big"))
            finally:
                v.unmount()
            print(f"rep {rep} {name}: bigdir {rows[('bigdir', name)][-1]:.2f} s", flush=True)


def run_rotate(args, build, prov, work, rows):
    v = prov.volume(build, "vault", work / "rotate", None)
    v.mount()
    try:
        for i in range(args.rotate_files):
            (v.mnt / f"r{i}").write_bytes(b"r" * 100)
        for rep in range(args.reps):
            for jobs in (1, 8):
                prov.vault.rotate("bench")
                v.cold()
                t = timed(lambda: sh(build / "tools" / "envelopefsctl", "rotate", "--jobs", jobs, v.mnt))
                rows.setdefault((f"rotate-jobs{jobs}", "vault"), []).append(t)
    finally:
        v.unmount()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(REPO / "build-rel"))
    ap.add_argument("--files", type=int, default=800, help="files of the tree rows (0: none)")
    ap.add_argument("--big", type=int, default=100000, help="files of the one-directory row (0: none)")
    ap.add_argument("--providers", default="local,vault,aws")
    ap.add_argument("--extra", default="", help="more volumes: local-prefetch, vault-noprefetch")
    ap.add_argument("--big-providers", default="local,vault",
                    help="volumes of the bigdir row (aws: moto answers too slowly for 100,000 files)")
    ap.add_argument("--rotate-files", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--cpu", action="store_true", help="also the CPU ms of daemon, KMS server and commands")
    ap.add_argument("--base-build", help="also each provider's volume run by this build (KIND-base)")
    args = ap.parse_args()
    build = pathlib.Path(args.build)
    names = [n for n in (args.providers + "," + args.extra).split(",") if n]
    if args.base_build:
        names += [n + "-base" for n in args.providers.split(",") if n]
    big_names = [n for n in args.big_providers.split(",") if n and n in names] if args.big else []
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the start", flush=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="envfs-kms-bench-", dir="/var/tmp"))
    prov = Providers(work, [n.removesuffix("-base") for n in names] + (["vault"] if args.rotate_files else []),
                     args.latency_ms)
    rows, calls = {}, {}
    cpu = {} if args.cpu else None
    try:
        if args.files:
            tar_path = work / "tree.tar"
            make_tar(tar_path, args.files, 20, "t")
            run_tree(args, build, prov, work, names, rows, calls, tar_path, cpu)
            print_rows(args, names, rows, calls, cpu)  # the tree's table now, in case the bigdir phase fails
        if big_names:
            run_bigdir(args, build, prov, work, big_names, rows, calls)
        if args.rotate_files:
            run_rotate(args, build, prov, work, rows)
    finally:
        prov.stop()
        subprocess.run(["rm", "-rf", str(work)], check=False)
    print_rows(args, names, rows, calls, cpu)


def print_rows(args, names, rows, calls, cpu=None):
    print(f"\nlatency {args.latency_ms} ms per KMS request, {args.files} files in 20 directories, "
          f"bigdir {args.big} files, medians of {args.reps}, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")
    others = [n for n in names if n != "local"]
    print(f"| row | {' | '.join(n + ' s' for n in names)} | "
          f"{' | '.join(n + '/local' for n in others)} | {' | '.join(n + ' calls' for n in others)} |")
    print("|---" * (1 + len(names) + 2 * len(others)) + "|")
    for row in ROWS:
        med = {n: statistics.median(rows[(row, n)]) for n in names if rows.get((row, n))}
        if not med:
            continue
        lo = rows.get((row, "local"))
        cells = [f"{med[n]:.2f}" if n in med else "-" for n in names]
        # The median of the per-rep ratios: each rep's volumes ran back to back, under the same load.
        cells += [f"{statistics.median(x / l for x, l in zip(rows[(row, n)], lo)):.2f}"
                  if n in med and lo else "-" for n in others]
        cells += [f"{statistics.median(calls[(row, n)]):.0f}" if calls.get((row, n)) else "-"
                  for n in others]
        print(f"| {row} | " + " | ".join(cells) + " |")
    for (row, name), samples in sorted(rows.items()):
        print(f"  samples {row} {name}: " + " ".join(f"{x:.2f}" for x in samples))
    for (row, name, what), samples in sorted(k_v for k_v in calls.items() if len(k_v[0]) == 3):
        if not name.startswith("local") and any(samples):
            print(f"  {what}, {row} {name}: " + " ".join(map(str, samples)))
    if cpu:
        print("\nCPU ms, medians (daemon / KMS server / the row's commands), and the untar's sync s:")
        for row in ("untar",) + READ_ROWS:
            cells = []
            for n in names:
                parts = [f"{statistics.median(cpu[(row, n, k)]):.0f}" if cpu.get((row, n, k)) else "-"
                         for k in ("daemon", "server", "commands")]
                cells.append(f"{n} " + " / ".join(parts))
            print(f"  {row}: " + "; ".join(cells))
        print("  untar sync s: " + "; ".join(f"{n} {statistics.median(rows[('untar-sync', n)]):.2f}"
                                              for n in names if rows.get(("untar-sync", n))))


if __name__ == "__main__":
    main()
