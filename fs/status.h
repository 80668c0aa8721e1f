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
 *    "kms": {"provider", "key_ref", "previous_key_ref" (mid-migration only),
 *            "current_version", "generate", "unwrap",
 *            "rewrap", "wrap", "failures",
 *            "service": {"calls", "retries", "failures", "throttled", "latency_us",
 *                        "breaker", "breaker_opens"}},      (remote providers only)
 *    "cache": {"entries", "pinned", "hits", "misses", "evictions",
 *              "max_entries", "max_age"},
 *    "prefetch": {"enabled": true|false, "queued", "unwrapped", "skipped",
 *                 "failed", "overflow", "batches", "waited"},   (fs/prefetch.h)
 *    "errors": {"integrity", "key"},
 *    "inodes": N, "uptime": SECONDS,
 *    "daemon": {"pid", "version", "writeback_cache": true|false,
 *               "handle_killpriv_v2": true|false, "shared": true|false},
 *    "backing_fs": {"fs", "shared", and each capability (backing.h)},
 *    "scopes": {SCOPE_ID: {"provider", "key_ref", "unlocked": true|false,
 *                          "converting": true|false (scope_convert.h),
 *                          "generate", "unwrap", "failures", "refusals", "locks"}}}
 *                            (key scopes, fs/scopes.h, by base64url ID; null if too many)
 *
 * Counters count since mount.  New fields may be added; none is removed.
 */

#include <linux/ioctl.h>

#define STATUS_XATTR "trusted.envelopefs.status"

/*
 * The rotation interface, on regular files, same rules (root only, never
 * listed, no key material):
 *
 *   getxattr KEY_XATTR     "VERSION KEY_REF FILE_ID_HEX\n" of the file's key
 *                          record; ENODATA for an empty file without one
 *
 * and two ioctls on an open regular file (any access mode), root only:
 *
 *   ENVELOPEFS_IOC_REWRAP  re-wrap the record onto the KMS's current
 *                          master-key version, under the file's lock; ioctl(2)
 *                          returns 0, or 1 when it already was (two names of
 *                          one file reach two workers); EIO when the record is
 *                          corrupt or the KMS fails (logged by the daemon)
 *   ENVELOPEFS_IOC_REKEY   give the file a fresh DEK and file ID and
 *                          re-encrypt its content in place (fs/rekey.h),
 *                          under the file's lock; ENODATA for an empty file,
 *                          EIO for a corrupt record or block or a KMS
 *                          failure, ENOSPC when the journal does not fit, EBUSY in
 *                          shared mode when another host re-keys the file
 *                          or keeps it open for writing (fs/shared.h)
 *
 * Why ioctls and not setxattr: with the writeback cache, the kernel updates
 * a file's ctime after a successful setxattr and writes it back at once in
 * the calling task.  If that task is being killed (an interrupted rotation),
 * the write-back fails and the kernel records an I/O error on the file's
 * page cache, which the next close(2) by any application returns as EIO.
 * An ioctl changes no attribute.
 *
 * Everything under VIRTUAL_XATTR_PREFIX belongs to the daemon: users can
 * neither set nor remove such names.
 */
#define VIRTUAL_XATTR_PREFIX "trusted.envelopefs."
#define KEY_XATTR "trusted.envelopefs.key"
#define ENVELOPEFS_IOC_REWRAP _IO(0xef, 1)
#define ENVELOPEFS_IOC_REKEY _IO(0xef, 2)

/*
 * On the mount root only (EINVAL elsewhere), root only:
 *
 *   ENVELOPEFS_IOC_RELOAD_KMS  re-read BACKING/envelopefs.conf and make the
 *                          providers of its [kms] (and [kms_previous]) the
 *                          volume's, without a remount (fs/kmsset.h); on
 *                          return, new files get keys from [kms] and no
 *                          record is written under a provider it no longer
 *                          names.  EINVAL for a configuration whose
 *                          [volume] differs from the mounted one or whose
 *                          two providers share a key reference, EIO when a
 *                          provider cannot be opened (logged by the daemon);
 *                          the old providers then stay
 *
 * During a migration ENVELOPEFS_IOC_REWRAP moves a record from the previous
 * provider to the current one (on the mount root: the volume key), and the
 * status names the previous provider's key as "previous_key_ref".
 */
#define ENVELOPEFS_IOC_RELOAD_KMS _IO(0xef, 3)

#endif
