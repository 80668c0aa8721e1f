/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_STATUS_H
#define ENVELOPEFS_FS_STATUS_H

/*
 * The daemon's run-time status interface, read by `envelopefsctl status`.
 *
 * The mount root carries a virtual xattr, STATUS_XATTR.  It lives in the
 * trusted.* namespace, so the kernel only lets a process with CAP_SYS_ADMIN
 * read it, and the daemon also refuses any caller but uid 0.  It cannot be
 * set or removed, never appears in listxattr, and holds no key material.
 * Its value is one JSON object:
 *
 *   {"volume": UUID, "backing": PATH,
 *    "kms": {"provider", "key_ref", "current_version", "generate", "unwrap",
 *            "rewrap", "failures",
 *            "service": {"calls", "retries", "failures", "latency_us", "breaker",
 *                        "breaker_opens"}},      (remote providers only)
 *    "cache": {"entries", "pinned", "hits", "misses", "evictions",
 *              "max_entries", "max_age"},
 *    "errors": {"integrity", "key"},
 *    "inodes": N, "uptime": SECONDS}
 *
 * Counters count since mount.  New fields may be added; none is removed.
 */

#define STATUS_XATTR "trusted.envelopefs.status"

/*
 * The rotation interface, on regular files, same rules (root only, never
 * listed, no key material):
 *
 *   getxattr KEY_XATTR     "VERSION KEY_REF FILE_ID_HEX\n" of the file's key
 *                          record; ENODATA for an empty file without one
 *   setxattr REWRAP_XATTR  (any value) re-wrap the record onto the KMS's
 *                          current master-key version, under the file's lock;
 *                          0 also when it already was; EIO when the record
 *                          is corrupt or the KMS fails (logged by the daemon)
 *
 * Everything under VIRTUAL_XATTR_PREFIX belongs to the daemon: users can
 * neither set nor remove such names.
 */
#define VIRTUAL_XATTR_PREFIX "trusted.envelopefs."
#define KEY_XATTR "trusted.envelopefs.key"
#define REWRAP_XATTR "trusted.envelopefs.rewrap"

#endif
