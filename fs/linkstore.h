/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_LINKSTORE_H
#define ENVELOPEFS_FS_LINKSTORE_H

/*
 * Reading the link store (docs/FORMAT.md, "Symlink targets, version 2"):
 * the file NAMES_LINK_STORE/b64(link ID) in the backing root holding the
 * sealed target of an external version-2 link.  Shared by the daemon
 * (fs/symlink.c, which also writes and removes store files) and
 * envelopefsctl fsck.  Nothing here knows about FUSE.
 */

#include <stdint.h>

#include "names.h"

/* "envelopefs.links/" b64(ID) with its NUL. */
#define LINKSTORE_PATH_LEN (sizeof(NAMES_LINK_STORE) + NAMES_LINK_ID_TEXT + 1)

/* linkstore_path - the store file's path of link @id, relative to the backing root. */
void linkstore_path(const uint8_t *id, char out[LINKSTORE_PATH_LEN]);

/*
 * linkstore_read - the store file of the external target @t, below the
 * backing root @root_fd, into @sealed (NAMES_TARGET_SEALED_MAX bytes).
 * -EBADMSG when it is missing, not a regular file or not exactly the
 * length the link says (a link and its store file always agree), else 0
 * or -errno.
 */
int linkstore_read(int root_fd, const struct names_target *t, uint8_t *sealed);

#endif
