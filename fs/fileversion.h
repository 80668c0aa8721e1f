/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_FILEVERSION_H
#define ENVELOPEFS_FS_FILEVERSION_H

/*
 * What an inode's record versions mean to the daemon (format-3 volumes;
 * rollback.h has the rule (R) and the host's table).
 *
 * Per inode, in memory (inode.h, key_lock): which record this daemon last
 * read or wrote (its MAC and slot sequence: two writes never leave the same
 * pair), whether that record is known durable, and whether the next
 * content change is due to raise the version.  Known durable means: an
 * fsync of the file completed after it was read or written, or a crash-safe
 * replacement (which syncs) wrote it, or a periodic syncfs started after
 * it.  A record only read since the daemon started is not.
 *
 * On volumes older than format 3 every function here does nothing.
 * Functions named _locked want the key lock held.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "envfs.h"
#include "layout.h"

struct inode;

/*
 * fileversion_check_locked - @rec (at @pos) was just read for @in: -EIO
 * (logged, counted) when its version is below what this host learnt, else
 * 0; it becomes the record @in's durability is tracked for.
 */
int fileversion_check_locked(struct envfs *fs, struct inode *in, const struct key_record *rec,
			     const struct record_pos *pos);

/* fileversion_authentic - @rec authenticated: learn its version - 1 (rule R). */
void fileversion_authentic(struct envfs *fs, const struct key_record *rec);

/*
 * fileversion_written_locked - this daemon made @rec (at @pos) @in's
 * record: @synced when the write was synced (a crash-safe replacement:
 * durable, its version learnt now), else not (a first record, a bump:
 * durable after the next fsync or periodic syncfs).
 */
void fileversion_written_locked(struct envfs *fs, struct inode *in,
				const struct key_record *rec, const struct record_pos *pos,
				bool synced);

/* fileversion_durable_locked - is @rec at @pos the record known durable? */
bool fileversion_durable_locked(struct envfs *fs, struct inode *in, const struct key_record *rec,
				const struct record_pos *pos);

/*
 * fileversion_tracked_durable_locked - is the record this daemon last read
 * or wrote for @in known durable (a bump may be worth reading it for)?
 */
bool fileversion_tracked_durable_locked(struct envfs *fs, const struct inode *in);

/*
 * fileversion_due - @in was opened for writing: its first content change
 * over a record known durable raises its version, once for the open.
 */
void fileversion_due(struct envfs *fs, struct inode *in);

/*
 * An fsync of @in: fileversion_sync_begin() before it notes which record
 * it will make durable; fileversion_sync_end() after it succeeded marks
 * that record durable (when it is still the one) and learns this daemon's
 * own version of it.
 */
struct fileversion_sync {
	uint8_t mac[16];
	uint64_t seq;
	bool known;
	/* Set by _begin: fdatasync is not enough, fsync (an xattr record
	 * not known durable is metadata, which fdatasync may leave behind). */
	bool full;
};
void fileversion_sync_begin(struct envfs *fs, struct inode *in, struct fileversion_sync *s);
void fileversion_sync_end(struct envfs *fs, struct inode *in, const struct fileversion_sync *s);

/*
 * The host's table kept tidy: an unlink of the last name of a file (or a
 * rename over it) whose record this daemon read and checked, or whose DEK
 * its cache holds (so its file ID is authentic: one taken from the backing
 * unchecked could be another file's, and dropping that would forget its
 * rollback).  fileversion_unlink_begin(), before the
 * backing unlink (or rename over) of entry @name in @dirfd, whose lstat is
 * @st, notes the file ID; fileversion_unlink_end() drops it from the table
 * when the unlink (@done) succeeded.
 */
struct fileversion_unlink {
	uint8_t file_id[RECORD_FILE_ID_LEN];
	bool known;
};
void fileversion_unlink_begin(struct envfs *fs, int dirfd, const char *name, const struct stat *st,
			      struct fileversion_unlink *u);
void fileversion_unlink_end(struct envfs *fs, const struct fileversion_unlink *u, bool done);

#endif
