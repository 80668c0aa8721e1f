/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_REKEY_FIND_H
#define ENVELOPEFS_FS_REKEY_FIND_H

/*
 * Finding the file an interrupted re-key's journal is about when the file
 * handle it holds (rekey.h) does not name it any more.  On a backing whose
 * handles do not outlive its mount — a FUSE file system, GlusterFS's client
 * among them — a handle from before a crash answers ESTALE for a file that is
 * still there, or opens another file that took its node number.  Taking
 * either for "the file is gone" drops the journal of a file whose record may
 * already be the new, flagged one, and its content with it (found by
 * tests/integration/test_powerloss.py).  The record is what names the file:
 * recovery checks the handle's file by it, and walks the backing tree for it
 * when the handle fails that check.
 */

#include <stdint.h>

#include "layout.h"

/*
 * rekey_file_has_id - whether the key record of the backing file @fd has file
 * ID @old_id or @new_id: 1, or 0 (also for a file without a record or with
 * one that is not a record), or the -errno of a failed read.
 */
int rekey_file_has_id(const struct layout *l, int fd, const uint8_t old_id[16],
		      const uint8_t new_id[16]);

/*
 * rekey_find_file - a read-write fd of the regular file below the backing
 * root @root_fd (O_PATH is enough) whose key record has file ID @old_id or
 * @new_id; the re-key journal directory and symlinks are not entered.
 * Returns the fd, -ENOENT if no file has either ID, or another -errno (a
 * record that could not be read: the file may be that one, so the caller
 * keeps the journal for a later attempt).
 */
int rekey_find_file(const struct layout *l, int root_fd, const uint8_t old_id[16],
		    const uint8_t new_id[16]);

#endif
