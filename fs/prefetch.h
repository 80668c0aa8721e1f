/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_PREFETCH_H
#define ENVELOPEFS_FS_PREFETCH_H

/*
 * Prefetch: when a directory is read (READDIR or READDIRPLUS) or a regular
 * file in it is looked up, the DEKs of that directory's regular files are
 * unwrapped ahead, many per KMS round trip (kms_unwrap_many), so that
 * reading the files back does not pay one KMS call per cold open, whatever
 * way a tool walks the tree (find, cp -r, rsync, tar).
 *
 * Contract:
 *  - prefetch_dir() never blocks a FUSE request on the KMS: it notes the
 *    directory (one open of its backing directory when it is new) and wakes
 *    a worker.  The workers read the directory's stream once, whole, into a
 *    listing (prefetch_listing.h), and read ahead from it: in directory
 *    order, or past 10,000 entries first in inode-number order (find's and
 *    cp -r's there), then in whichever of the two orders the opens of its
 *    files go, from just past the last one once the opens have shown that
 *    order (prefetch_order.h).  The listings alive at once hold
 *    at most four times LISTING_MAX entries, so memory stays bounded: a
 *    directory past that is read from its stream again, in directory order.  They open each regular file by its backing name
 *    (no inode is needed: READDIR makes none), read its key record, and
 *    unwrap the DEKs the cache does not hold in batches (8 files first,
 *    then up to 64: the reader's first file comes back soon).  Subdirectories found on the
 *    way are read next (when a slot is free and the requester may list
 *    them), so that a tree walk finds each directory's DEKs ready; nobody
 *    reads them yet, so their batches are of 64 from the first (one KMS
 *    request for a directory of up to 64 files).  While one batch runs,
 *    another starts only for 16 files of room or more (a reader frees the
 *    window one file at a time: not one KMS request per file).
 *  - A sliding window: at most `ahead` files (a quarter of the DEK cache, at
 *    most PREFETCH_AHEAD_MAX) are unwrapped and not yet opened, over all
 *    directories; a file's first open takes it off the window (and an unused
 *    one leaves it after PREFETCH_READY_TTL_MS).  A directory nobody reads or
 *    opens files in for PREFETCH_IDLE_MS is not read further, so listing a
 *    huge directory unwraps one window of it, not all of it; nor is one
 *    whose DEKs unwrapped ahead mostly expired unopened (a reader going
 *    another order than the one chosen).
 *  - In flight: a file of a batch waiting for the KMS is keyed by its
 *    backing (dev, ino); an open that misses the cache waits for that batch
 *    (prefetch_wait) instead of unwrapping the DEK itself, so a file costs
 *    one unwrap in total.
 *  - Every DEK is checked exactly as a cold open checks it (the record MAC
 *    with the DEK; cached under the record's file ID).  Any failure drops
 *    the file quietly (counted in the stats): its open takes the normal
 *    cold path and reports the normal error.
 *  - prefetch_destroy() stops the workers and closes every stream; call it
 *    before the inode table and the cache go away.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* The widest window (files unwrapped ahead and not opened yet). */
#define PREFETCH_AHEAD_MAX 2048
/* Directories followed at once: a trigger beyond that is dropped (overflow). */
#define PREFETCH_DIRS 64
/* An unwrapped DEK not opened within this long leaves the window (it stays cached). */
#define PREFETCH_READY_TTL_MS 10000
/* A directory neither read, nor looked up in, nor opened from for this long is not read further. */
#define PREFETCH_IDLE_MS 5000
/* A directory read to its end is read again by a trigger after this long (DEKs may be evicted). */
#define PREFETCH_DONE_TTL_MS 30000

struct envfs;
struct inode;
struct prefetch;

struct prefetch_stats {
	uint64_t queued;    /* files taken into a batch */
	uint64_t unwrapped; /* DEKs unwrapped and cached ahead */
	uint64_t skipped;   /* files not taken: cached, in flight, no record, another provider's */
	uint64_t failed;    /* KMS or record MAC failures, dropped */
	uint64_t overflow;  /* triggers dropped: PREFETCH_DIRS directories busy */
	uint64_t batches;   /* kms_unwrap_many calls */
	uint64_t waited;    /* opens that waited for a batch instead of calling the KMS */
};

/*
 * prefetch_create - workers for @fs, with a window of @ahead files (0 < @ahead
 * <= PREFETCH_AHEAD_MAX).  Returns 0 or -ENOMEM / -errno of pthread_create.
 */
int prefetch_create(struct envfs *fs, unsigned ahead, struct prefetch **out);

/* prefetch_destroy - stop the workers, close the streams (NULL is a no-op). */
void prefetch_destroy(struct prefetch *p);

/*
 * prefetch_dir - directory @dir (@in_root: the volume's root) was read, or a
 * regular file in it looked up, by the requester @uid / @gid: read its files'
 * DEKs ahead, then those of its subdirectories that prefetch_may_list() lets
 * @uid / @gid list.  @p may be NULL (prefetch off).  The caller checked that
 * the requester may list @dir.
 */
void prefetch_dir(struct prefetch *p, struct inode *dir, bool in_root, uid_t uid, gid_t gid);

/*
 * prefetch_may_list - whether @uid / @gid may read (list) the directory of
 * attributes @st, by its mode bits.  Supplementary groups are not known:
 * outside the owner and the group, the group and the others both must be
 * allowed to read.  Never true where the kernel would refuse the listing.
 */
bool prefetch_may_list(uid_t uid, gid_t gid, const struct stat *st);

/*
 * prefetch_opened - the file (@dev, @ino) is being opened: it leaves the
 * window (its directory counts as being read).  @p may be NULL.
 */
void prefetch_opened(struct prefetch *p, dev_t dev, ino_t ino);

/*
 * prefetch_wait - an open missed the cache for (@dev, @ino): if a batch is
 * unwrapping that file's DEK, wait for it (bounded by the KMS deadline) and
 * return true with the batch's result in *@rc (0: the DEK is in the cache
 * now; -EAGAIN: the KMS was unavailable).  False when no batch has it (or
 * @p is NULL): the caller unwraps.
 */
bool prefetch_wait(struct prefetch *p, dev_t dev, ino_t ino, int *rc);

/* prefetch_get_stats - the counters; all zero for NULL. */
void prefetch_get_stats(struct prefetch *p, struct prefetch_stats *out);

#endif
