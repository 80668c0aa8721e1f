/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_ROLLBACK_H
#define ENVELOPEFS_FS_ROLLBACK_H

/*
 * Whole-file rollback (format-3 volumes; docs/THREAT-MODEL.md, "Rollback";
 * docs/FORMAT.md, tag 2 of "Key record, version 2").
 *
 * A file's key record carries its version: 1 when the record is made, one
 * more at most once per open for writing, at its first content change over
 * a record known durable (filekey_bump()).  So:
 *
 *   (R) a record of version V is only ever written over a durable record
 *       of version V - 1: whoever reads V may remember V - 1, which no
 *       power loss can take away.
 *
 * This host remembers, per file ID, the highest version it may (its
 * table, outside the backing, hoststate.h):
 *
 *   ROOT/<uuid>/versions/<first 2 hex digits of the file ID>/<other 30>
 *
 * holding the version in decimal, written without a sync: a host crash
 * only forgets (lags), which misses a rollback and never invents one.
 * It learns V - 1 from every authentic record of version V it reads (by
 * (R): other hosts' writes in shared mode need no coordination), and its
 * own bump V once that is durable (the next fsync of the file, or a
 * periodic syncfs of the backing).  A record whose version is below what
 * the table holds is a rollback by the storage: EIO.
 *
 * Durability of a bump is tracked by generations: each bump (and each
 * first record) takes the next generation; the sync thread, when a
 * generation is pending, every sync_interval seconds captures the last
 * one, syncfs()es the backing, and then every record of a generation up to
 * it is durable.  The bumps waiting for that are kept in a bounded queue
 * (ROLLBACK_QUEUE_MAX; the oldest is dropped when full: lag only).
 *
 * Nothing here knows FUSE.  Thread-safe.
 */

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "crypto/record.h"

#define ROLLBACK_VERSIONS_DIR "versions"
#define ROLLBACK_QUEUE_MAX 1024
#define ROLLBACK_LEARN_MAX 256
#define ROLLBACK_DROP_MAX 1024
/* A generation every record reaches at once: "durable now". */
#define ROLLBACK_GEN_DURABLE 1

struct rollback;

/*
 * rollback_open - the table of volume @uuid under state root @root.
 * @sync_fd: an fd on the backing root for the periodic syncfs (adopted,
 * closed by rollback_close), or -1 for none; @interval seconds between
 * them (0: none, the bumps are learnt at fsync and unmount only).  The
 * sync thread also writes what was learnt (rollback_learn()).  0 or -errno.
 */
int rollback_open(const char *root, const uint8_t uuid[16], int sync_fd, unsigned interval,
		  struct rollback **out);

/*
 * rollback_close - stop the sync thread; with @clean (an unmount, not a
 * failed mount), syncfs the backing once more and learn every queued bump;
 * write every version learnt.
 * NULL is a no-op.
 */
void rollback_close(struct rollback *rb, bool clean);

/*
 * rollback_forget - -o accept_rollback: drop every version this host
 * learnt of volume @uuid.  0 or -errno.
 */
int rollback_forget(const char *root, const uint8_t uuid[16]);

/* rollback_seen - the highest version of @file_id learnt (0: none, or unreadable). */
uint64_t rollback_seen(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN]);

/*
 * rollback_learn - remember @version of @file_id when higher: at once in
 * memory (rollback_seen() answers it), in the table by the sync thread
 * within a second or at rollback_close() (at once when ROLLBACK_LEARN_MAX
 * file IDs already wait), so a loop of fsyncs of one file writes it once
 * a second, not once per fsync.  Failures are logged (a lag only).
 */
void rollback_learn(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN],
		    uint64_t version);

/*
 * rollback_drop - the file @file_id lost its last name on this host:
 * forget what was learnt of it, in memory at once and in the table by the
 * sync thread within a second (at once when ROLLBACK_DROP_MAX wait
 * already), so the table does not keep every file that ever was and an
 * unlink costs no write of it.  (A deleted file put back by the storage is
 * then not refused: a missing file was never a rollback.)  Failures are
 * logged (the entry stays: fsck --repair removes it).
 */
void rollback_drop(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN]);

/*
 * rollback_bumped - this daemon wrote @file_id's record of @version
 * without a sync: its generation (durable once rollback_synced() reaches
 * it), queued to be learnt then.
 */
uint64_t rollback_bumped(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN],
			 uint64_t version);

/*
 * rollback_read_gen - the generation of a record read from the backing
 * now: a syncfs started after this call makes it durable.
 */
uint64_t rollback_read_gen(struct rollback *rb);

/* rollback_synced - every record of a generation up to this one is durable. */
uint64_t rollback_synced(struct rollback *rb);

/*
 * The table alone, without a daemon (envelopefsctl fsck and decrypt, and
 * the daemon's own struct rollback): where it is, what it holds for a file
 * ID.  Reading it never creates anything.
 */
struct rollback_table {
	char dir[PATH_MAX - 64]; /* ROOT/<uuid>/versions, with room for an entry below */
};

/* rollback_table_at - the table of volume @uuid under state root @root.  0 or -ENAMETOOLONG. */
int rollback_table_at(const char *root, const uint8_t uuid[16], struct rollback_table *t);

/* rollback_table_version - the version of @file_id in @t (0: none, or unreadable). */
uint64_t rollback_table_version(const struct rollback_table *t,
				const uint8_t file_id[RECORD_FILE_ID_LEN]);

/* rollback_table_remove - @file_id's entry out of @t.  0 (also when none) or -errno. */
int rollback_table_remove(const struct rollback_table *t,
			  const uint8_t file_id[RECORD_FILE_ID_LEN]);

/*
 * rollback_table_each - call @fn with every file ID @t holds an entry for
 * (names that are not an entry's, such as a crashed write's temporary
 * file, are skipped); a non-zero return stops the walk and is returned.
 * 0 (also when the table does not exist) or -errno.
 */
int rollback_table_each(const struct rollback_table *t,
			int (*fn)(void *arg, const uint8_t file_id[RECORD_FILE_ID_LEN]),
			void *arg);

/*
 * rollback_table_rolled_back - is the authentic record @rec older than
 * what @t holds for its file ID?  @seen gets what @t holds.  A record
 * without a version (older formats, tag 2 absent) counts as version 0.
 */
bool rollback_table_rolled_back(const struct rollback_table *t, const struct key_record *rec,
				uint64_t *seen);

#endif
