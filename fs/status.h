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
 *    "kms": {"provider", "key_ref", "generate", "unwrap", "rewrap", "failures"},
 *    "cache": {"entries", "pinned", "hits", "misses", "evictions",
 *              "max_entries", "max_age"},
 *    "errors": {"integrity", "key"},
 *    "inodes": N, "uptime": SECONDS}
 *
 * Counters count since mount.  New fields may be added; none is removed.
 */

#define STATUS_XATTR "trusted.envelopefs.status"

#endif
