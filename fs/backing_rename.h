/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_BACKING_RENAME_H
#define ENVELOPEFS_FS_BACKING_RENAME_H

/*
 * Renames on the backing with the guarantees of renameat2's flags, whether
 * the backing has them or not (backing.h): GlusterFS, NFS and every FUSE
 * backing without rename2 refuse any flag.
 *
 * backing_rename_noreplace - move @old (in @olddir) to @new (in @newdir)
 * only if @new does not exist: -EEXIST when it does, never a replacement.
 * Without RENAME_NOREPLACE on the backing:
 *  - a non-directory is linked to its new name (link(2) never replaces)
 *    and unlinked from the old one; a crash in between leaves both names;
 *  - a directory is renamed with plain rename(2).  With @dir_never_empty
 *    (every visible directory of an encrypted-names volume holds its ID)
 *    rename(2) fails with ENOTEMPTY or ENOTDIR instead of replacing, which
 *    is reported as -EEXIST.  Otherwise an empty placeholder directory
 *    claims @new first (mkdir never replaces) and rename(2) replaces only
 *    that; a crash in between leaves the empty placeholder.
 * 0 or -errno.
 */

#include <stdbool.h>

#include "backing.h"

int backing_rename_noreplace(const struct backing_caps *caps, int olddir, const char *old,
			     int newdir, const char *new, bool is_dir, bool dir_never_empty);

/*
 * backing_rename_exchange - swap @a and @b atomically (RENAME_EXCHANGE), or
 * -EINVAL where the backing cannot: an exchange is atomic or refused.
 */
int backing_rename_exchange(const struct backing_caps *caps, int adir, const char *a, int bdir,
			    const char *b);

#endif
