/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_BINDOPS_H
#define ENVELOPEFS_FS_BINDOPS_H

/*
 * The FUSE operations' side of entry bindings (binding.h): which entry an
 * inode was reached by (lookup, create), and the record update a rename or
 * a new hard link makes before it changes the backing entry.  All no-ops on
 * volumes older than format 3 and for anything but regular files.
 */

#include "binding.h"
#include "ops_i.h"

/* binding_looked_up - @in was found or made as @name in @dir. */
void binding_looked_up(struct envfs *fs, struct inode *dir, struct inode *in, const char *name);

/* A rename's record update in progress: the file's inode, held until binding_after_rename(). */
struct binding_rename {
	struct inode *in; /* NULL: nothing to finish */
	struct binding_move move;
};

/*
 * binding_before_rename - the entry @bname (plaintext @name) of @from is
 * about to become @newname in @to: a regular file's record gets the new
 * entry first.  @r is for binding_after_rename(), also on failure.
 * 0 or -errno.
 */
int binding_before_rename(struct envfs *fs, struct inode *from, const char *bname,
			  const char *name, struct inode *to, const char *newname,
			  struct binding_rename *r);

/* binding_after_rename - the rename is over (@done: it succeeded); let go of @r. */
void binding_after_rename(struct envfs *fs, struct binding_rename *r, bool done);

/*
 * binding_before_link - @in (pinned) is about to get the name @newname in
 * @dir: its record lists the new entry first.  0 or -errno.
 */
int binding_before_link(struct envfs *fs, struct inode *in, struct inode *dir,
			const char *newname);

#endif
