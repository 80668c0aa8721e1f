/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_BINDING_H
#define ENVELOPEFS_FS_BINDING_H

/*
 * Files bound to their directory entries (format-3 volumes; docs/FORMAT.md,
 * "Entry bindings"; docs/THREAT-MODEL.md, B).  A regular file's key record
 * lists the entries it may be reached by, each the binding of its parent
 * directory's ID (zeros with plain names) and its plaintext name
 * (record_binding_of()).  The storage can move a backing file under another
 * name, into another directory, or put an older copy of another file in its
 * place, but cannot edit that list (the record MAC): a file reached by an
 * entry its record does not list is refused (EIO).
 *
 * The inode remembers the entry the kernel last reached it by (set at
 * lookup, create and rename); reading the record checks it.  A rename or a
 * new hard link adds its new entry to the record (one crash-safe record
 * replacement) before the backing entry changes, so a power loss in between
 * leaves a record that accepts both names.  A rename of a file with one
 * link keeps just the old and the new entry; a file with several links
 * keeps adding, and past RECORD_MAX_BINDINGS entries is bound to none.
 *
 * Nothing here knows about FUSE; the operations call in (bindops.h).
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "envfs.h"

/*
 * binding_note_entry - @in was reached as @name in the directory of ID
 * @dirid (NULL with plain names).  No-op on older volumes and for anything
 * but regular files.
 */
void binding_note_entry(struct envfs *fs, struct inode *in, const uint8_t *dirid,
			const char *name);

/*
 * binding_check - @rec was just read for @in: 0 when it binds the file to
 * no entry or to the one @in was reached by, else -EIO (logged, counted as
 * an integrity error); in shared mode -ESTALE instead unless a lookup noted
 * the entry just before (the kernel may have used a cached name another
 * host renamed the file away from).  Key lock held.
 */
int binding_check(struct envfs *fs, struct inode *in, const struct key_record *rec);

/*
 * binding_retrying - whether binding_check() answered ESTALE for @in since
 * its last lookup, or for the backing inode of @in or @st (either may be
 * NULL) in the last seconds (the kernel may have forgotten the inode
 * meanwhile): a lookup that finds it must ask the backing past its name
 * cache.
 */
bool binding_retrying(struct inode *in, const struct stat *st);

/*
 * binding_stamp - a new record @rec for @in (backing fd @fd) lists @in's
 * entry, and the one a rename took it from (a file renamed while it had no
 * record: the rename may not be durable yet); none when the file has more
 * than one link (its other names are not known here).  Key lock held.
 */
void binding_stamp(struct envfs *fs, const struct inode *in, int fd, struct key_record *rec);

/*
 * The entry a file is about to be reached by: binding_add_entry() puts it
 * in the file's record, @old (when set) being the entry a rename leaves.
 */
struct binding_move {
	bool renamed;		      /* old is set: a rename, not a new link */
	bool sole;		      /* the file has one link: old and new are all */
	uint8_t old[RECORD_BINDING_LEN];
	uint8_t new[RECORD_BINDING_LEN];
	/* Set by binding_add_entry(): the record was rewritten, and what it listed before. */
	bool changed;
	struct record_bindings before;
};

/*
 * binding_entry - fill @out with the binding of @name in the directory of ID
 * @dirid (NULL with plain names).  0 or -errno.
 */
int binding_entry(const uint8_t *dirid, const char *name, uint8_t out[RECORD_BINDING_LEN]);

/*
 * binding_add_entry - record @move in the key record of @in (backing fd
 * @fd, read-write) by the crash-safe replacement, before the backing entry
 * changes; a file without a record has nothing to change.  No-op on older
 * volumes.  Call without @in's content lock.  0 or -errno (-EIO logged).
 */
int binding_add_entry(struct envfs *fs, struct inode *in, int fd, struct binding_move *move);

/*
 * binding_undo - the rename or link of @move failed after binding_add_entry()
 * changed the record: give it back the entries it listed before (another
 * host's rename of the same file may have won, and its record must list
 * where the file went).  No-op when nothing changed.  0 or -errno.
 */
int binding_undo(struct envfs *fs, struct inode *in, int fd, struct binding_move *move);

/*
 * binding_moved - the rename or link of @move succeeded: @in is now reached
 * by move->new (and a rename's old entry is kept for binding_stamp()).
 */
void binding_moved(struct envfs *fs, struct inode *in, const struct binding_move *move);

#endif
