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
	const char *fs_name;	/* "ext4", "fuse", "glusterfs"..., or "unknown" */
	bool shared;		/* a network or FUSE file system (statfs type) */

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
	/* user.* xattrs, and the largest value stored (0 when none):
	 * `--header xattr` needs a key record to fit. */
	bool user_xattr;
	size_t xattr_max;
	/* SEEK_HOLE/SEEK_DATA tell the truth: a file written only at 1 MiB
	 * reports data there and a hole before it (or data from 0, which is
	 * never wrong).  Without it: every block is read as data, lseek
	 * SEEK_HOLE answers the end of the file, writes always reserve. */
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
 * (an O_PATH or O_RDONLY directory fd).  Makes and removes a hidden scratch
 * directory in it (NAMES_TEMP_PREFIX "probe.<random>"), so the backing must
 * be writable.  0, or -errno when the scratch directory cannot be made.
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
 * backing_caps_json - the capabilities as one JSON object
 * {"fs": NAME, "shared": BOOL, "rename_noreplace": BOOL, ..., "xattr_max": N}
 * into @out; returns the length, or -ENOSPC when @cap is too small.
 */
int backing_caps_json(const struct backing_caps *caps, char *out, size_t cap);

/*
 * backing_refusal - why a volume with the given record placement cannot
 * live on this backing, or NULL when it can: `--header xattr` needs user
 * xattrs holding at least @record_len bytes ("choose --header file").
 */
const char *backing_refusal(const struct backing_caps *caps, bool xattr_records, size_t record_len);

#endif
