/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_ROLLBACK_H
#define ENVELOPEFS_FS_ROLLBACK_H

/*
 * Whole-file rollback (format-3 volumes; docs/THREAT-MODEL.md, "Rollback").
 * A file's key record carries its version (RECORD_TAG_VERSION): 1 when the
 * record is made, one more at the first write of each time the file is
 * open (until its last close), by the crash-safe record replacement.  This
 * host remembers, per file ID, the highest version whose record it
 * authenticated, in its state outside the backing (hoststate.h):
 *
 *   ROOT/<uuid>/versions/<first 2 hex digits of the file ID>/<other 30>
 *
 * holding the version in decimal: nothing is kept in memory, so a volume
 * of millions of files costs this host files, not RAM.  A record older
 * than what this host saw is a rollback by the storage: EIO.
 *
 * The state never runs ahead of the backing: a version is remembered only
 * from a record that is durable there (a replacement is synced before it
 * returns; a first record, version 1, is never below anything).  It may lag
 * (it is written without a sync: a host crash forgets, which only misses a
 * rollback).  Other hosts' writes only ever raise versions.
 */

#include <stdint.h>

#include "crypto/record.h"

struct rollback;

/* rollback_open - the table of volume @uuid under state root @root.  0 or -ENOMEM. */
int rollback_open(const char *root, const uint8_t uuid[16], struct rollback **out);
void rollback_close(struct rollback *rb);

/* rollback_seen - the highest version of @file_id this host saw (0: none, or unreadable). */
uint64_t rollback_seen(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN]);

/*
 * rollback_note - remember @version of @file_id, read from an authentic,
 * durable record, when it is higher than what is remembered.  0 or -errno.
 */
int rollback_note(struct rollback *rb, const uint8_t file_id[RECORD_FILE_ID_LEN],
		  uint64_t version);

struct envfs;
struct inode;

/*
 * rollback_check - @rec was just read for @in: -EIO (logged, counted) when
 * its version is below what this host saw, else 0.  Nothing is learnt
 * here: the record is not authenticated yet.
 */
int rollback_check(struct envfs *fs, struct inode *in, const struct key_record *rec);

/* rollback_adopt - @rec authenticated: remember its version. */
void rollback_adopt(struct envfs *fs, const struct key_record *rec);

#endif
