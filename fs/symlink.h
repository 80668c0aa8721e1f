/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_SYMLINK_H
#define ENVELOPEFS_FS_SYMLINK_H

/*
 * Symlinks in the daemon with encrypted names (docs/FORMAT.md, "Symlink
 * targets, version 2"): making them, reading their targets, and the link
 * store, the reserved directory NAMES_LINK_STORE in the backing root that
 * holds the sealed targets too long to sit in their links.  The codec is
 * names.h's; this module owns the backing files and the inode's cache.
 *
 * A volume of format version 2 makes version-2 links: bound to a random
 * link ID, they rename, hard-link and exchange like files.  A volume of
 * version 1 makes version-1 links, bound to their directory and name, as
 * before; a version-2 volume reads both (a volume upgraded in place holds
 * both).  With plain names a target is stored as it is.
 *
 * Invariants:
 *  - an external target's store file is durable before its link exists,
 *    and is removed only once the backing reports no link left to it, so a
 *    link never lacks its target; an orphan store file (a crash in between)
 *    is hidden, unread and harmless.
 *  - a backing symlink never changes its target, so what is cached in the
 *    inode (the target, its length) stays true for as long as the inode.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "envfs.h"
#include "inode.h"
#include "names.h"

/* symlinks_v2 - whether links made on this volume are version 2 (format version 2). */
static inline bool symlinks_v2(const struct envfs *fs)
{
	return fs->cfg.format_version >= 2;
}

/*
 * symlink_write - make the backing symlink @entry in @dirfd holding
 * @target, for the link @name in directory @dir: sealed for the volume's
 * version (a version-2 target too long for its link goes to the link store
 * first).  Returns 0 or -errno (-ENAMETOOLONG, -ENOENT for an empty target).
 */
int symlink_write(struct envfs *fs, struct inode *dir, const char *name, const char *target,
		  int dirfd, const char *entry);

/*
 * symlink_bound_to_name - 1 when the backing symlink @entry in @dirfd ("" with
 * the link's own O_PATH fd) is a version-1 link, bound to its name (it can
 * be neither hard-linked nor exchanged, and a rename re-makes it), else 0
 * (version 2, or plain names), or -errno.
 */
int symlink_bound_to_name(struct envfs *fs, int dirfd, const char *entry);

/*
 * symlink_looked_up - the symlink @in was found as @bname (plaintext @name)
 * in @dir: a version-1 target is decrypted now, while its name is known
 * (readlink names only the inode), and kept in the inode; a version-2 one
 * waits for readlink.  A target that does not decrypt is logged; readlink
 * is then EIO.
 */
void symlink_looked_up(struct envfs *fs, struct inode *dir, struct inode *in, const char *bname,
		       const char *name);

/*
 * symlink_target - the plaintext target of symlink @in into @out
 * (NAMES_TARGET_MAX + 1): cached, or (version 2) decrypted now from the
 * backing link and its store file and then cached.  -EIO when it does not
 * decrypt (logged), or -errno.
 */
int symlink_target(struct envfs *fs, struct inode *in, char *out);

/* symlink_plain_size - the size stat shows for symlink @in, stored in @backing_size bytes. */
off_t symlink_plain_size(struct envfs *fs, struct inode *in, off_t backing_size);

/*
 * Removing a name that may be the last of an external link.  symlink_drop_begin
 * - before the backing symlink @entry in @dirfd (attributes @st) goes
 * (unlink, or a rename over it), hold it open if it has a store file.  symlink_drop_end -
 * after: @gone tells whether the entry was removed; if the backing then
 * reports no link left, the store file goes.  Failures leave an orphan
 * store file (harmless) and are not reported.
 */
struct symlink_drop {
	int fd; /* O_PATH on the link, or -1 */
	uint8_t id[NAMES_LINK_ID_LEN];
};

void symlink_drop_begin(struct envfs *fs, int dirfd, const char *entry, const struct stat *st,
			struct symlink_drop *d);
void symlink_drop_end(struct envfs *fs, struct symlink_drop *d, bool gone);

#endif
