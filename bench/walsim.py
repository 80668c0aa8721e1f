#!/usr/bin/env python3
"""A database commit reduced to its file-system calls: pwrite 8 KiB in place
into a preallocated file, then fdatasync; N times.  Prints commits per second
and what each commit cost the disk (requests and KiB from /proc/diskstats).

    bench/walsim.py FILE N [DISK]

FILE is created (16 MiB of zeros, fsynced) and left behind.  DISK is the
block device under the backing file system as /proc/diskstats names it
(default: the one holding /).  Other I/O on that disk meanwhile counts too:
run it on a quiet machine.  See bench/FINDINGS.md ("The commit path and the
backing inode")."""
import os
import sys
import time

SIZE = 16 << 20
WRITE = 8192


def root_disk():
    st = os.stat("/")
    name = os.path.basename(os.path.realpath(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"))
    # A partition counts in its disk's line too; its own line is enough.
    return name


def disk_writes(disk):
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            if fields[2] == disk:
                return int(fields[7]), int(fields[9])  # writes completed, sectors written
    raise SystemExit(f"walsim: no disk {disk} in /proc/diskstats")


def main():
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    path, n = sys.argv[1], int(sys.argv[2])
    disk = sys.argv[3] if len(sys.argv) == 4 else root_disk()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.pwrite(fd, b"\0" * SIZE, 0)
    os.fsync(fd)
    buf = os.urandom(WRITE)
    w0, s0 = disk_writes(disk)
    t0 = time.monotonic()
    for i in range(n):
        os.pwrite(fd, buf, (i * WRITE) % SIZE)
        os.fdatasync(fd)
    t = time.monotonic() - t0
    w1, s1 = disk_writes(disk)
    os.close(fd)
    print(f"{n / t:8.0f} commits/s  {(w1 - w0) / n:5.2f} disk writes/commit  "
          f"{(s1 - s0) / n * 512 / 1024:6.1f} KiB/commit")


if __name__ == "__main__":
    main()
