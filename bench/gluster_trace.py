#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Which backing syscalls each FUSE request of a libfuse daemon made, from a full strace.

    bench/gluster_trace.py TRACE [--per N] [--show OPCODE[,OPCODE]] [--flat]

TRACE is a `strace -f -tt -T -y -p PID` of the envelopefs daemon (`bench/gluster --strace ROWS
--strace-full` writes them).  A libfuse worker thread reads one request from /dev/fuse, makes its
backing syscalls and writes the reply on the same thread, so every syscall of a thread between two
reads of /dev/fuse belongs to the request read first.  Prints, per FUSE opcode: how many requests,
their mean wall time in backing syscalls, and the syscalls per request with their mean wall µs
(strace -T: entry to exit); and, over all requests, the syscalls ranked by wall µs per N (e.g. the
number of files of the row).  --show prints the syscall sequence of the first request of each named
opcode.  Syscalls are told apart by what they did where it matters (openat O_CREAT or of
/proc/self/fd, statx with AT_STATX_FORCE_SYNC or not, the 512-byte key record write at offset 0,
the fcntl command, the xattr name).  The per-request split is not for go-fuse (gocryptfs): its
goroutines hop between threads; --flat ranks a trace's backing syscalls without it, for any daemon.
"""
import argparse
import codecs
import collections
import re
import sys

OPCODES = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK",
           8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK",
           14: "OPEN", 15: "READ", 16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC",
           21: "SETXATTR", 22: "GETXATTR", 23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH",
           26: "INIT", 27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR", 30: "FSYNCDIR",
           31: "GETLK", 32: "SETLK", 33: "SETLKW", 34: "ACCESS", 35: "CREATE", 36: "INTERRUPT",
           38: "DESTROY", 39: "IOCTL", 42: "BATCH_FORGET", 43: "FALLOCATE", 44: "READDIRPLUS",
           45: "RENAME2", 46: "LSEEK", 47: "COPY_FILE_RANGE"}

LINE = re.compile(r"^(\d+)\s+[\d:.]+\s+(.*)$")
CALL = re.compile(r"^([a-z0-9_]+)\((.*)$")
RESUMED = re.compile(r"^<\.\.\. ([a-z0-9_]+) resumed>(.*)$")
DURATION = re.compile(r"<(\d+\.\d+)>\s*$")
FUSE_FD = re.compile(r"^\d+</dev/fuse>")
# Syscalls that are the daemon's own FUSE plumbing or waiting, not backing work.
PLUMBING = {"futex", "restart_syscall", "rt_sigprocmask", "mmap", "munmap", "mprotect",
            "madvise", "clone3", "set_robust_list", "rseq", "mlock"}
# The Go runtime's own (gocryptfs, --flat).
GO_PLUMBING = {"nanosleep", "epoll_pwait", "epoll_ctl", "sched_yield", "tgkill", "getpid",
               "rt_sigreturn", "sigaltstack", "gettid"}


def opcode_of(text):
    """The opcode of a /dev/fuse read's returned buffer, as strace prints it ("0\\0\\0\\0\\33...")."""
    m = re.search(r'\s"((?:[^"\\]|\\.)*)"', text)
    if not m:
        return None
    try:
        raw = codecs.escape_decode(m.group(1).encode())[0]
    except ValueError:
        return None
    return int.from_bytes(raw[4:8], "little") if len(raw) >= 8 else None


def kind(name, call):
    """@name, told apart by what @call (the syscall as strace printed it) did, where it matters."""
    if name == "openat":
        if "O_CREAT" in call:
            return "openat O_CREAT"
        if "/proc/self/fd" in call:
            return "openat /proc/self/fd " + ("O_PATH" if "O_PATH" in call else "(reopen)")
        return "openat"
    if name == "statx":
        return "statx FORCE_SYNC" if "FORCE_SYNC" in call else "statx"
    if name == "pwrite64" and re.search(r", 512, 0\) = 512", call):
        return "pwrite64 key record"
    if name == "fcntl":
        m = re.search(r"\b(F_[A-Z_]+)", call)
        return f"fcntl {m.group(1)}" if m else name
    if name.endswith("getxattr"):
        m = re.search(r'"([a-z]+\.[A-Za-z0-9_.]+)"', call)
        return f"{name} {m.group(1)}" if m else name
    return name


def flat(path):
    """[(kind, seconds)] of every finished syscall but the FUSE plumbing, whatever the thread."""
    pending, out = {}, []
    for raw in open(path, errors="replace"):
        m = LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        r = RESUMED.match(rest)
        if r:
            name, args = r.group(1), pending.pop(pid, (r.group(1), ""))[1] + r.group(2)
        else:
            c = CALL.match(rest)
            if not c:
                continue
            name, args = c.group(1), c.group(2)
            if args.endswith("<unfinished ...>"):
                pending[pid] = (name, args[: -len("<unfinished ...>")])
                continue
        if name in PLUMBING or name in GO_PLUMBING or "/dev/fuse" in args:
            continue
        d = DURATION.search(args)
        out.append((kind(name, f"{name}({args}"), float(d.group(1)) if d else 0.0))
    return out


def parse(path):
    """[(opcode name, [(syscall, seconds, line)])] per request, in order of completion."""
    pending = {}      # pid -> (syscall, args) of an unfinished call
    current = {}      # pid -> (opcode name, [calls]) of the request being served
    done = []
    for raw in open(path, errors="replace"):
        m = LINE.match(raw.rstrip("\n"))
        if not m:
            continue
        pid, rest = int(m.group(1)), m.group(2)
        r = RESUMED.match(rest)
        if r:
            name, args = r.group(1), pending.pop(pid, (r.group(1), ""))[1] + r.group(2)
        else:
            c = CALL.match(rest)
            if not c:
                continue
            name, args = c.group(1), c.group(2)
            if args.endswith("<unfinished ...>"):
                pending[pid] = (name, args[: -len("<unfinished ...>")])
                continue
        d = DURATION.search(args)
        secs = float(d.group(1)) if d else 0.0
        if name in ("read", "readv") and FUSE_FD.match(args):
            if pid in current:
                done.append(current.pop(pid))
            op = opcode_of(args)
            if op is not None:
                current[pid] = (OPCODES.get(op, f"op{op}"), [])
            continue
        if pid in current:
            current[pid][1].append((name, secs, f"{name}({args}"))
    done.extend(current.values())
    return done


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("trace")
    p.add_argument("--per", type=float, default=1, help="divide the totals by N (files)")
    p.add_argument("--show", default="", help="opcodes whose first request to print in full")
    p.add_argument("--flat", action="store_true",
                   help="no split by FUSE request (any daemon, e.g. gocryptfs)")
    a = p.parse_args()
    if a.flat:
        agg = collections.defaultdict(lambda: [0, 0.0])
        for k, secs in flat(a.trace):
            agg[k][0] += 1
            agg[k][1] += secs
        print(f"Backing syscalls of {a.trace} ranked by wall µs per N={a.per:g}: "
              f"{sum(v[0] for v in agg.values()) / a.per:.1f} calls, "
              f"{sum(v[1] for v in agg.values()) / a.per * 1e6:.0f} µs per N")
        print("\n| rank | syscall | calls per N | µs per N | µs per call |")
        print("|---:|---|---:|---:|---:|")
        for i, (k, (cnt, secs)) in enumerate(sorted(agg.items(), key=lambda kv: -kv[1][1]), 1):
            print(f"| {i} | {k} | {cnt / a.per:.2f} | {secs / a.per * 1e6:.0f} | "
                  f"{secs / cnt * 1e6:.0f} |")
        return
    reqs = parse(a.trace)
    by_op = collections.defaultdict(list)
    for op, calls in reqs:
        by_op[op].append([c for c in calls if c[0] not in PLUMBING])
    print(f"{len(reqs)} FUSE requests in {a.trace}")
    print("\n| FUSE request | count | per N | backing µs/request | syscalls per request (mean µs) |")
    print("|---|---:|---:|---:|---|")
    rank = collections.defaultdict(lambda: [0, 0.0])
    for op, lst in sorted(by_op.items(), key=lambda kv: -sum(s for c in kv[1] for _, s, _ in c
                                                              if _ not in ("writev", "write"))):
        per_call = collections.defaultdict(lambda: [0, 0.0])
        for calls in lst:
            for name, secs, call in calls:
                name = "reply(writev)" if name in ("writev", "write") and "/dev/fuse" in call \
                    else kind(name, call)
                per_call[name][0] += 1
                per_call[name][1] += secs
                rank[(op, name)][0] += 1
                rank[(op, name)][1] += secs
        n = len(lst)
        backing = sum(v[1] for k, v in per_call.items() if k != "reply(writev)") / n * 1e6
        desc = ", ".join(f"{k} {v[0] / n:.2g}× ({v[1] / v[0] * 1e6:.0f})"
                         for k, v in sorted(per_call.items(), key=lambda kv: -kv[1][1]))
        print(f"| {op} | {n} | {n / a.per:.2f} | {backing:.0f} | {desc} |")
    print(f"\nBacking syscalls ranked by wall µs per N={a.per:g} (request: syscall):")
    print("\n| rank | request: syscall | calls per N | µs per N |")
    print("|---:|---|---:|---:|")
    items = [(k, v) for k, v in rank.items() if k[1] != "reply(writev)"]
    for i, ((op, name), (cnt, secs)) in enumerate(sorted(items, key=lambda kv: -kv[1][1]), 1):
        print(f"| {i} | {op}: {name} | {cnt / a.per:.2f} | {secs / a.per * 1e6:.0f} |")
    for op in filter(None, a.show.split(",")):
        if by_op.get(op):
            print(f"\nfirst {op}:")
            for name, secs, line in by_op[op][0]:
                print("   ", re.sub(r"/tmp/envfs-gluster/[^>]*/envelopefs\.backing", "B", line))


if __name__ == "__main__":
    main()
