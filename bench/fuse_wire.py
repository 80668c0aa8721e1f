#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Decode the FUSE traffic of a daemon from an strace of its /dev/fuse reads and replies.

    strace -f -qq -xx -s 300 -e trace=read,write,writev -e signal=none -o TRACE -p DAEMON_PID
    bench/fuse_wire.py TRACE

Prints, in order, every request the daemon read (opcode, unique, node ID, the name for the
name-taking opcodes, nlookup and node IDs of FORGET and BATCH_FORGET), the entry replies of LOOKUP,
MKDIR, MKNOD, SYMLINK, LINK and CREATE (node ID, generation, entry and attribute lifetimes, inode
number, mode, nlink), errors, and the INIT reply (protocol version and flags by name).  For the
small experiments that tell which request the kernel sends when, e.g. FORGETs after a mkdir
(FINDINGS.md, "securefs in the bench").  -xx: every byte in hex, -s 300: enough of each buffer.
"""
import re
import struct
import sys

OPCODES = {1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK", 6: "SYMLINK",
           8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR", 12: "RENAME", 13: "LINK",
           14: "OPEN", 15: "READ", 16: "WRITE", 17: "STATFS", 18: "RELEASE", 20: "FSYNC",
           21: "SETXATTR", 22: "GETXATTR", 23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH",
           26: "INIT", 27: "OPENDIR", 28: "READDIR", 29: "RELEASEDIR", 30: "FSYNCDIR",
           34: "ACCESS", 35: "CREATE", 36: "INTERRUPT", 38: "DESTROY", 42: "BATCH_FORGET",
           43: "FALLOCATE", 44: "READDIRPLUS", 45: "RENAME2", 46: "LSEEK", 50: "SYNCFS",
           52: "STATX"}
INIT_FLAGS = ["ASYNC_READ", "POSIX_LOCKS", "FILE_OPS", "ATOMIC_O_TRUNC", "EXPORT_SUPPORT",
              "BIG_WRITES", "DONT_MASK", "SPLICE_WRITE", "SPLICE_MOVE", "SPLICE_READ",
              "FLOCK_LOCKS", "HAS_IOCTL_DIR", "AUTO_INVAL_DATA", "DO_READDIRPLUS",
              "READDIRPLUS_AUTO", "ASYNC_DIO", "WRITEBACK_CACHE", "NO_OPEN_SUPPORT",
              "PARALLEL_DIROPS", "HANDLE_KILLPRIV", "POSIX_ACL", "ABORT_ERROR", "MAX_PAGES",
              "CACHE_SYMLINKS", "NO_OPENDIR_SUPPORT", "EXPLICIT_INVAL_DATA", "MAP_ALIGNMENT",
              "SUBMOUNTS", "HANDLE_KILLPRIV_V2", "SETXATTR_EXT", "INIT_EXT", "INIT_RESERVED"]
ENTRY_OPS = {1, 6, 8, 9, 13, 35}
IN_HEADER = 40   # struct fuse_in_header
OUT_HEADER = 16  # struct fuse_out_header
# Where the name starts after the in header, for the opcodes that carry one.
NAME_AT = {1: 0, 10: 0, 11: 0, 9: 8, 8: 16, 35: 16, 6: 0, 13: 8}
BUFFER = re.compile(r'"((?:\\x[0-9a-f]{2})+)"')
IOV = re.compile(r'iov_base="((?:\\x[0-9a-f]{2})+)"')
RETURNED = re.compile(r"\) += (\d+)\s*$")


def raw_of(matches):
    return b"".join(bytes.fromhex(m.replace("\\x", "")) for m in matches)


def request(raw, opcode_of):
    """One line for the request in @raw; remembers its opcode by unique ID in @opcode_of."""
    _, opcode, unique, nodeid = struct.unpack_from("<IIQQ", raw, 0)
    opcode_of[unique] = opcode
    body = raw[IN_HEADER:]
    extra = ""
    if opcode in NAME_AT:
        extra = body[NAME_AT[opcode]:].split(b"\0")[0].decode(errors="replace")
    elif opcode == 2 and len(body) >= 8:
        extra = f"nlookup={struct.unpack_from('<Q', body, 0)[0]}"
    elif opcode == 42 and len(body) >= 8:
        count = struct.unpack_from("<I", body, 0)[0]
        ids = [hex(struct.unpack_from("<Q", body, 8 + 16 * i)[0])
               for i in range(count) if 8 + 16 * i + 8 <= len(body)]
        extra = f"count={count} {' '.join(ids)}{' ...' if len(ids) < count else ''}"
    return f"{OPCODES.get(opcode, opcode):<12} u={unique:<6} node={nodeid:#x} {extra}".rstrip()


def reply(raw, opcode_of):
    """One line for the reply in @raw, or None for replies not worth showing."""
    _, error, unique = struct.unpack_from("<IiQ", raw, 0)
    opcode = opcode_of.get(unique)
    body = raw[OUT_HEADER:]
    if error:
        return f"  -> u={unique} {OPCODES.get(opcode, opcode)} error {error}"
    if opcode == 26 and len(body) >= 16:
        major, minor, _, flags = struct.unpack_from("<IIII", body, 0)
        names = [n for bit, n in enumerate(INIT_FLAGS) if flags >> bit & 1]
        return f"  -> INIT {major}.{minor} flags={flags:#x} {' '.join(names)}"
    if opcode in ENTRY_OPS and len(body) >= 40 + 88:
        nodeid, gen, ev, av, evn, avn = struct.unpack_from("<QQQQII", body, 0)
        ino = struct.unpack_from("<Q", body, 40)[0]
        mode, nlink = struct.unpack_from("<II", body, 40 + 60)
        return (f"  -> u={unique} {OPCODES[opcode]} nodeid={nodeid:#x} gen={gen} "
                f"entry_valid={ev}.{evn:09d} attr_valid={av}.{avn:09d} ino={ino} "
                f"mode={mode:o} nlink={nlink}")
    return None


def main():
    if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 2
    opcode_of = {}
    with open(sys.argv[1]) as trace:
        for line in trace:
            if "writev(" in line or " write(" in line:
                raw = raw_of(IOV.findall(line) or BUFFER.findall(line))
                if len(raw) >= OUT_HEADER and struct.unpack_from("<I", raw, 0)[0] == len(raw):
                    out = reply(raw, opcode_of)
                    if out:
                        print(out)
            elif "read(" in line or "read resumed>" in line:
                # A request is what a read returned whose header says that length: other
                # reads of the daemon (files, /proc) do not start with their own length.
                raw = raw_of(BUFFER.findall(line)[:1])
                got = RETURNED.search(line)
                if (got and len(raw) >= IN_HEADER
                        and struct.unpack_from("<I", raw, 0)[0] == int(got.group(1))):
                    print(request(raw, opcode_of))
    return 0


if __name__ == "__main__":
    sys.exit(main())
