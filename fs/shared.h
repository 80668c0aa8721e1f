/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_SHARED_H
#define ENVELOPEFS_FS_SHARED_H

/*
 * Shared mode: several daemons, one per host, serving one volume whose
 * backing is a network or FUSE file system that all of them mount.
 *
 * Off, the daemon is the only writer of its backing tree and lets the
 * kernel cache freely (writeback cache, pages kept across opens, locks
 * kept in the kernel).  On, it assumes another host may change any file
 * at any time, and gives what NFS gives (close-to-open):
 *
 *  - no writeback cache: sizes and mtimes come from the backing;
 *  - no page cache across opens, and the kernel drops cached pages when
 *    the attributes it refreshes (attr_timeout) show the file changed;
 *    every open of a backing file also drops the backing client's own
 *    cached pages and attributes (shared_backing_fresh()), and every close
 *    pushes what it wrote out of the backing client (shared_flush_backing());
 *  - every open reads the key record again, so a DEK cached for a file
 *    another host re-keyed, replaced or deleted (backing inode numbers are
 *    reused) is never used: the record's file ID must match (filekey.c);
 *  - POSIX, OFD and flock locks are taken on the backing file as OFD
 *    locks (locks.c), which the backing makes exclude across hosts;
 *  - temporary names carry random bytes, not only the PID;
 *  - a re-key excludes writers and readers on every host through a lock on
 *    the backing file (the key lock, below).
 *
 * The key lock: an OFD byte-range lock on the backing file at
 * KEYLOCK_OFFSET (ofdlock.h), past any offset a user lock can reach.  While a daemon has a file open for writing, it holds
 * the key lock shared through one fd per inode (in->keylock_fd: a writer's
 * own, or a copy of it that outlives that writer's close).
 * A re-key takes it exclusively (waiting at most SHARED_REKEY_WAIT_MS for
 * writers on other hosts to close, else -EBUSY); the re-keying daemon first
 * lets go of its own shared hold, under the inode's exclusive content lock,
 * which keeps its own writers out.  A reader that finds a record mid
 * re-key, or a block or record it cannot authenticate, waits for the lock
 * shared, reads the record again and retries once: a file in the middle of
 * a re-key on another host makes readers wait, not fail.
 */

#include <stdbool.h>
#include <stdint.h>

#include "ofdlock.h"

/* The [daemon] shared setting, and -o shared / -o noshared. */
enum shared_setting { SHARED_AUTO = -1, SHARED_OFF = 0, SHARED_ON = 1 };

/* How long a re-key waits for writers on other hosts to close the file. */
#define SHARED_REKEY_WAIT_MS 10000

/* shared_mode_on - resolve @setting against what the backing is (backing.h). */
bool shared_mode_on(enum shared_setting setting, bool backing_is_shared);

/*
 * shared_temp_name - a name for an entry being made or removed, hidden from
 * listings (NAMES_TEMP_PREFIX), unique across hosts: PID, a counter and 64
 * random bits.
 */
void shared_temp_name(char out[64]);

struct inode;

/*
 * shared_flush_backing - make what was written through @fd reach the
 * backing's servers, as the backing does on close(2) (a network client's
 * write-behind), without closing @fd.  0, or the error the backing's
 * close reports (a write it could not complete).
 */
int shared_flush_backing(int fd);

/*
 * shared_backing_fresh - make the backing show what other hosts wrote to
 * the file open as @fd: its attributes asked for anew, its cached pages
 * dropped.  A network or FUSE backing is only as coherent as its client
 * caches; this gives close-to-open over them.  Best effort.
 */
void shared_backing_fresh(int fd);

/*
 * shared_backing_drop_pages - the cheaper half of shared_backing_fresh(),
 * for an open that only reads: the backing client's cached pages dropped,
 * its attributes left to the kernel's GETATTR, which the open's
 * invalidation brings before the first read (auto_inval_data) and which asks
 * the backing afresh (shared_mark_stale()).  A read's size comes from the
 * backing client's attributes that GETATTR has just refreshed.
 */
void shared_backing_drop_pages(int fd);

/*
 * How long after an open made the backing refresh a file's attributes
 * (shared_backing_fresh()) a GETATTR takes the backing client's copy
 * instead of asking its servers again.  The kernel asks right after every
 * open (envfs_open invalidates its attributes for close-to-open), and a copy
 * this young is as fresh as the open: well inside attr_timeout.
 */
#define SHARED_FRESH_REUSE_MS 100

/* shared_mark_fresh - @in's backing attributes were refreshed just now. */
void shared_mark_fresh(struct inode *in);

/* shared_mark_stale - the next GETATTR of @in must ask the backing afresh. */
void shared_mark_stale(struct inode *in);

/* shared_recently_fresh - whether they were, less than SHARED_FRESH_REUSE_MS ago. */
bool shared_recently_fresh(const struct inode *in);

/*
 * keylock_writer_open / keylock_writer_close - count an open for writing of
 * @in (a regular file) through @fd.  The first takes the key lock shared
 * through @fd itself: an OFD lock lives as long as its open file
 * description, so the caller's close of the last writer's fd releases it,
 * with no descriptor of ours to open or close (each a network round trip
 * on a shared backing).  When the fd holding the lock closes while other
 * writers remain, keylock_writer_close() keeps a copy of it, which the last
 * writer's close then closes.  Call keylock_writer_close() before closing
 * @fd.  0 or -errno.
 */
int keylock_writer_open(struct inode *in, int fd);
void keylock_writer_close(struct inode *in, int fd);

/*
 * keylock_rekey - take the key lock of @in exclusively through @fd (the
 * re-key's own), having let go of this daemon's shared hold, waiting up to
 * SHARED_REKEY_WAIT_MS for other hosts' writers: 0, -EBUSY, or -errno.
 * Call with @in's content lock held exclusively; keylock_rekey_done()
 * follows, whatever it returned, before the content lock is released.
 */
int keylock_rekey(struct inode *in, int fd);
void keylock_rekey_done(struct inode *in, int fd);

/*
 * keylock_share - hold the key lock shared through @fd (a re-wrap: it
 * rewrites the record, which a re-key elsewhere must not see change) until
 * @fd is closed; waits for a re-key.  0 or -errno.
 */
int keylock_share(int fd);

/* keylock_wait - wait, through @fd, until no re-key holds the key lock. 0 or -errno. */
int keylock_wait(int fd);

#endif
