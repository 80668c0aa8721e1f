/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_FILEKEY_H
#define ENVELOPEFS_FS_FILEKEY_H

/*
 * Per-file key set-up: the path from an open backing file to its DEK.
 *
 *   open    -> filekey_attach: parse the key record (no KMS), take the DEK
 *              from the cache if the cached entry has the record's file ID
 *   1st I/O -> filekey_load: on a miss, wait for the prefetch batch that is
 *              unwrapping the DEK (prefetch.h) if there is one, else
 *              unwrap through the KMS once, check
 *              the record's MAC, insert into the cache; for a file without a
 *              record yet (empty), create one when asked to
 *   release -> filekey_detach: the last close unpins the DEK, which stays in
 *              the cache's LRU until evicted
 *
 * Errors: -EIO for a corrupt or unauthentic record or a KMS refusal (the
 * cause is logged here, once, with the inode number); -ENODATA when the file
 * has no record and none was to be created; other -errno from I/O.
 */

#include <stdbool.h>

#include "envfs.h"
#include "rekey.h"
#include "rewrap.h"

/* filekey_attach - count an open of @in through the readable fd @fd. */
int filekey_attach(struct envfs *fs, struct inode *in, int fd);

/*
 * filekey_load - make in->dek valid.  @create: give a record-less file its
 * record and a fresh DEK.  Call with the content lock held (shared is
 * enough unless @create), so that the record cannot change underneath.
 */
int filekey_load(struct envfs *fs, struct inode *in, int fd, bool create);

/*
 * A new file's first key record, made by filekey_load_for_write() but not
 * yet stored: the header that a write stores together with the file's first
 * blocks (content.h), one backing write instead of two.  Holds the KMS set
 * of the record's provider until it is stored, as a record written at once
 * does, so that a migration's reload (kmsset.h) cannot finish meanwhile.
 */
struct filekey_first {
	uint8_t *header; /* layout.data_offset bytes; NULL: nothing pending */
	const struct kms_set *set;
	struct scope *scope; /* whose set it is (scopes.h), NULL: the volume's */
	/* The record's, for its tracking once stored (fileversion.h). */
	uint8_t file_id[RECORD_FILE_ID_LEN];
	uint8_t mac[RECORD_MAC_LEN];
	uint64_t file_version;
};

/*
 * filekey_load_for_write - filekey_load(@create) for a write, which with
 * header placement leaves a new record's header in @first for the write to
 * store; call filekey_first_done() after the write, with the content lock
 * still held exclusively.
 */
int filekey_load_for_write(struct envfs *fs, struct inode *in, int fd,
			   struct filekey_first *first);

/*
 * filekey_first_done - after the write that carried @first's header:
 * @stored is its result (0, or -errno: the DEK of the record that never
 * reached the file is dropped).  No-op when nothing was pending.
 */
void filekey_first_done(struct envfs *fs, struct inode *in, struct filekey_first *first,
			int stored);

/*
 * filekey_revalidate - shared mode: I/O on @in (open as @fd) failed to
 * authenticate, perhaps because another host re-keyed or replaced the file
 * meanwhile.  Wait out a re-key in progress (shared.h), read the record
 * again and drop the DEK if the record is another file ID's; the caller
 * then retries once.  Takes the content lock exclusively: call without it.
 * 0 or -errno.
 */
int filekey_revalidate(struct envfs *fs, struct inode *in, int fd);

/*
 * filekey_declare_holes - blocks [@first, @end) of @in are about to become
 * holes (a grow, a punched range): a file with a version-2 record records
 * them in it first (docs/FORMAT.md, "Holes"), by the crash-safe record
 * replacement, so that a power loss never leaves a hole the record does not
 * cover.  The stored record must still be the one in->dek opened.  Content
 * lock held exclusively, in->dek valid, @fd read-write.  0 or -errno.
 */
int filekey_declare_holes(struct envfs *fs, struct inode *in, int fd, uint64_t first,
			  uint64_t end);

/*
 * filekey_edit_record - change @in's stored record (backing fd @fd,
 * read-write) by the crash-safe replacement: read and authenticate it with
 * its DEK (from the cache, else unwrapped once), let @edit change it (0:
 * write it, > 0: nothing changed, < 0: an error to return), seal and write
 * it.  A file without a record has nothing to change: 0.  Takes the content
 * lock exclusively: call without it.  Shared mode: holds the key lock shared
 * through @fd, which the caller then closes.  0 or -errno (-EIO logged).
 */
int filekey_edit_record(struct envfs *fs, struct inode *in, int fd,
			int (*edit)(struct key_record *rec, void *arg), void *arg);

/*
 * filekey_bump - after a content change of @in succeeded: when its version
 * is due (fileversion.h: the first change since an open for writing or an
 * fsync) and its record is known durable, raise the version by one in a
 * single unsynced record write (layout_bump_record()); due or not, skipped
 * or done, it is not due again until the next open for writing or fsync.
 * After, not before: a change the file system refuses (EFBIG, ENOSPC)
 * leaves the file as it was, its times included, as on ext4; and a raise
 * that cannot be written fails nothing (logged, due again).
 * No-op before format 3.  Content lock held exclusively, in->dek valid,
 * @fd read-write.  0, or -EIO (logged) for a record failing authentication.
 */
int filekey_bump(struct envfs *fs, struct inode *in, int fd);

/* filekey_detach - undo one filekey_attach. */
void filekey_detach(struct envfs *fs, struct inode *in);

/*
 * filekey_rewrap - move the record of @in (backing fd @fd, read-write) onto
 * the current KMS's current master-key version (rewrap.h) — from the
 * previous KMS, mid-migration — with the DEK from the cache when it is there.  Call with the content lock held exclusively.
 * Returns rewrap_file()'s codes, KMS and record failures logged here.
 */
int filekey_rewrap(struct envfs *fs, struct inode *in, int fd, struct rewrap_result *res);

/*
 * filekey_rekey - give @in (backing fd @fd, read-write) a fresh DEK and
 * re-encrypt its content (rekey.h); the cache and an open file's pin move to
 * the new DEK and the old one is wiped.  Call with the content lock held
 * exclusively.  Returns rekey_file()'s codes, failures logged here.
 */
int filekey_rekey(struct envfs *fs, struct inode *in, int fd, struct rekey_result *res);

/* filekey_rekey_env - the daemon's rekey_env, with the providers of @set (held by the caller). */
void filekey_rekey_env(struct envfs *fs, const struct kms_set *set, struct rekey_env *env);

#endif
