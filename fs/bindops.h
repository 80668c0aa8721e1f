/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_BINDOPS_H
#define ENVELOPEFS_FS_BINDOPS_H

/*
 * The FUSE operations' side of entry bindings (binding.h): which entry an
 * inode was reached by (lookup, create), and the record update a rename or
 * a new hard link makes before it changes the backing entry.  All no-ops on
 * volumes older than format 3 and for anything but regular files.
 *
 * Shared mode: the update and the backing change happen under the file's
 * binding lock (ofdlock.h), held through the update's own fd until
 * binding_after(); the file's link count and, for a rename, that its name
 * still leads to it are read under the lock.  So a host that prunes the
 * record to a rename's two names has seen every other host's rename and
 * link of the file before it.  A rename or link that fails after its
 * update (one that lost a race for the same name to another host, whose
 * dentry cache still showed the name) gives the record back the entries
 * it listed before, still under the lock.
 */

#include "binding.h"
#include "ops_i.h"

/* binding_looked_up - @in was found or made as @name in @dir. */
void binding_looked_up(struct envfs *fs, struct inode *dir, struct inode *in, const char *name);

/* A record update in progress, until binding_after(). */
struct binding_change {
	struct inode *in; /* NULL: nothing to finish */
	int fd;		  /* the update's fd, holding the binding lock (shared mode); -1 */
	bool second;	  /* an exchange's second file: its lock is polled, not waited for */
	struct binding_move move;
};

/*
 * binding_before_rename - the entry @bname (plaintext @name) of @from is
 * about to become @newname in @to: a regular file's record gets the new
 * entry first.  @second: the second file of a RENAME_EXCHANGE, whose lock
 * (shared mode) is given up on after a while (-EBUSY) rather than waited
 * for with the first one held.  @c is for binding_after(), also on
 * failure.  0 or -errno.
 */
int binding_before_rename(struct envfs *fs, struct inode *from, const char *bname,
			  const char *name, struct inode *to, const char *newname, bool second,
			  struct binding_change *c);

/*
 * binding_before_link - @in (pinned) is about to get the name @newname in
 * @dir: its record lists the new entry first.  @c is for binding_after(),
 * also on failure.  0 or -errno.
 */
int binding_before_link(struct envfs *fs, struct inode *in, struct inode *dir,
			const char *newname, struct binding_change *c);

/* binding_after - the rename or link is over (@done: it succeeded); let go of @c. */
void binding_after(struct envfs *fs, struct binding_change *c, bool done);

#endif
