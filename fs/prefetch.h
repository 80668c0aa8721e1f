/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_PREFETCH_H
#define ENVELOPEFS_FS_PREFETCH_H

/*
 * Prefetch: when a directory is listed, the DEKs of its regular files are
 * unwrapped ahead, many per KMS round trip (kms_unwrap_many), so that
 * reading the files back does not pay one sequential KMS call per cold open.
 *
 * Contract:
 *  - prefetch_file() never blocks a FUSE request on I/O or on the KMS: it
 *    takes a reference on the inode and appends it to a bounded queue (no
 *    bigger than the DEK cache), or drops it when the queue is full.
 *  - Background workers read each queued file's key record, unwrap the
 *    DEKs of those not cached in one batch, check every DEK exactly as a
 *    cold open does (the record MAC with the DEK; the cache keyed by the
 *    record's file ID) and insert it into the DEK cache (filekey.h).
 *  - Any failure drops that file quietly (counted in the stats): an open
 *    then takes the normal cold path and reports the normal error.  While
 *    a worker holds a file's key lock, an open of that file waits for the
 *    worker's KMS call (bounded by the KMS deadline) instead of making its
 *    own, so a file costs one unwrap in total.
 *  - prefetch_destroy() stops the workers and releases every queued
 *    reference; call it before the inode table and the cache go away.
 */

#include <stdint.h>

/* The longest queue: files listed ahead of the workers beyond this are not prefetched. */
#define PREFETCH_QUEUE_MAX 4096

struct envfs;
struct inode;
struct prefetch;

struct prefetch_stats {
	uint64_t queued;    /* files queued by listings */
	uint64_t unwrapped; /* DEKs unwrapped and cached ahead */
	uint64_t skipped;   /* already cached or open, no record, key lock busy */
	uint64_t failed;    /* KMS or record MAC failures, dropped */
	uint64_t overflow;  /* not queued: the queue was full */
	uint64_t batches;   /* kms_unwrap_many calls */
};

/*
 * prefetch_create - workers for @fs, with a queue of @capacity files.
 * Returns 0 or -ENOMEM / -errno of pthread_create.
 */
int prefetch_create(struct envfs *fs, unsigned capacity, struct prefetch **out);

/* prefetch_destroy - stop the workers, drop the queue (NULL is a no-op). */
void prefetch_destroy(struct prefetch *p);

/* prefetch_file - queue @in (a regular file just listed); @p may be NULL (prefetch off). */
void prefetch_file(struct prefetch *p, struct inode *in);

/* prefetch_get_stats - the counters; all zero for NULL. */
void prefetch_get_stats(struct prefetch *p, struct prefetch_stats *out);

#endif
