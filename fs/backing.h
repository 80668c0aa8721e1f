/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_BACKING_H
#define ENVELOPEFS_FS_BACKING_H

/*
 * What the backing file system can do, found by trying it.
 *
 * envelopefs runs on any backing: ext4, XFS, Btrfs, tmpfs, and network or
 * FUSE file systems (GlusterFS, CephFS, NFS, a passthrough) that lack
 * some of the calls a local disk has.  backing_probe() tries each feature
 * once, at `init` and at every mount, inside a hidden scratch directory it
 * makes in the backing root and removes again; nothing is inferred from the
 * file-system type except whether the backing is shared (network or FUSE).
 *
 * Each missing feature has a fallback in the daemon that keeps the same
 * guarantee (see the fields); only a missing feature whose guarantee
 * cannot be kept makes `init` refuse (backing_refusal()).
 */

#include <stdbool.h>
#include <stddef.h>

struct backing_caps {
	long fs_type;		/* statfs f_type */
	/* "ext4", "xfs", "tmpfs", "nfs", "ceph", "glusterfs" (a FUSE mount
	 * of type fuse.glusterfs), "fuse" for any other FUSE..., or "unknown";
	 * static strings. */
	const char *fs_name;
	bool shared;		/* a network, cluster or FUSE file system (statfs type) */

	/* renameat2(RENAME_NOREPLACE); without it: a directory is renamed with
	 * plain rename() (every visible directory of an encrypted-names volume
	 * holds its ID, so it is never empty and never replaced), anything
	 * else is linked to its new name and unlinked from the old one. */
	bool rename_noreplace;
	/* renameat2(RENAME_EXCHANGE); without it: RENAME_EXCHANGE is refused
	 * with EINVAL, as the backing itself refuses it. */
	bool rename_exchange;
	/* open(O_TMPFILE): unused so far; reported. */
	bool tmpfile;
	/* user.* xattrs, and the largest value stored and read back, to the
	 * byte (0 when none; user_xattr == xattr_max > 0; at most 65536):
	 * `--header xattr` needs a key record to fit. */
	bool user_xattr;
	size_t xattr_max;
	/* SEEK_HOLE/SEEK_DATA tell the truth, right after the writes and once
	 * synced: a file written at 0 (512 bytes) and at 1 MiB (4 KiB) reports
	 * data at both and a hole between them (or data, which is never
	 * wrong), never a hole over written bytes.  Asked of 8 new files, as
	 * an answer may race the write: GlusterFS 10.3 answers ENXIO for
	 * SEEK_DATA while its write-behind holds a new file's writes.
	 * Without it: every block is read as data, lseek SEEK_HOLE answers the
	 * end of the file, writes always reserve. */
	bool holes_trusted;
	/* fallocate(FALLOC_FL_KEEP_SIZE) and FALLOC_FL_PUNCH_HOLE. */
	bool fallocate;
	bool punch_hole;
	/* name_to_handle_at() on the backing. */
	bool file_handles;
	/* fcntl(F_SETLK), fcntl(F_OFD_SETLK) and flock() on a backing file. */
	bool posix_locks;
	bool ofd_locks;
	bool flock;
};

/*
 * backing_probe - fill @caps for the backing directory open as @root_fd
 * (an O_PATH or O_RDONLY directory fd).  Makes a scratch directory
 * (NAMES_TEMP_PREFIX "probe.<16 random hex digits>", so several probes, and
 * several hosts, may run at once) in the volume's own hidden directory
 * VOLUME_PROBE_DIR, made at the first probe (`init`), so that a mount never
 * changes the root's times; tries every feature there, and removes the
 * scratch directory with all it holds whatever happened, so the backing
 * must be writable.  A feature whose probe fails in any way reads as missing:
 * the fallback is always safe.  About 250 system calls and one fsync
 * (under 0.1 s on GlusterFS here).  Returns 0, or -errno when statfs fails
 * or the scratch directory cannot be made (-EROFS, -EACCES, -ENOSPC...)
 * or removed again; every feature then reads as missing, while fs_type,
 * fs_name and shared stay filled when statfs answered.
 */
int backing_probe(int root_fd, struct backing_caps *caps);

/*
 * backing_fallbacks - one line per missing feature, each naming the
 * fallback in use ("renameat2 RENAME_NOREPLACE: missing; link and unlink,
 * plain rename for directories"), into @out (NUL-terminated, truncated to
 * @cap).  Empty when nothing is missing.  Returns the length written.
 */
size_t backing_fallbacks(const struct backing_caps *caps, char *out, size_t cap);

/*
 * backing_caps_json - the capabilities as one compact JSON object
 * {"fs":NAME,"fs_type":N,"shared":BOOL,"rename_noreplace":BOOL,...,"xattr_max":N}
 * (the features in struct order, each named as its field) into @out; returns
 * the length, or -ENOSPC when @cap is too small.
 */
int backing_caps_json(const struct backing_caps *caps, char *out, size_t cap);

/*
 * backing_refusal - why a volume with the given record placement cannot
 * live on this backing, or NULL when it can: `--header xattr`
 * (@xattr_records) needs user xattrs holding at least @record_len bytes.
 * A static sentence ending in what to choose instead ("choose --header
 * file"); the caller adds the sizes.
 */
const char *backing_refusal(const struct backing_caps *caps, bool xattr_records, size_t record_len);

#endif
