/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_MTIME_H
#define ENVELOPEFS_FS_MTIME_H

/*
 * Deferred modification times of regular files.
 *
 * With the writeback cache the kernel keeps a cached file's mtime itself
 * and sends it in a SETATTR before every fsync and every close.  Setting it
 * on the backing file at once would cost each database commit (a write and
 * an fdatasync) one more synchronous disk write: utimensat dirties the
 * backing inode for fdatasync, which then writes the inode as well as the
 * data.  So the daemon keeps that mtime, when it comes through an open
 * file, in its inode and sets it on the backing file when it has to be there:
 *  - a full fsync (before the backing fsync, so it is durable with it),
 *  - a close (FLUSH) or release of the file,
 *  - any other SETATTR of the file (first, so changes keep their order),
 *  - the inode's last forget, and unmount (inode_table_destroy).
 *
 * The daemon's own writes move the backing file's mtime too, to the time
 * the kernel wrote its cache back, while the kernel keeps showing the time
 * of the write(2), and sends it only if that differs from what it had (a
 * file created and written within one clock tick gets none).  So before its
 * first write since the mtime was last set, the daemon keeps the backing
 * file's mtime, which is the kernel's, as pending (mtime_hold): the backing
 * file ends with the mtime the mount showed.
 *
 * Invariants:
 *  - A pending mtime is newer knowledge than the backing file's: every
 *    attribute reply for the inode shows it (mtime_overlay).
 *  - Only the daemon dying between the SETATTR and the next fsync or close
 *    loses it; the backing file then keeps the mtime of its last write,
 *    which is later, and fdatasync promises no mtime anyway.
 */

#include <sys/stat.h>
#include <time.h>

struct inode;

/* mtime_defer - remember @mtime as @in's modification time. */
void mtime_defer(struct inode *in, const struct timespec *mtime);

/*
 * mtime_hold - before the daemon writes the backing file @fd of @in: keep
 * its mtime as pending unless one is.  0 or -errno.
 */
int mtime_hold(struct inode *in, int fd);

/*
 * mtime_flush - set @in's pending modification time on its backing file.
 * 0 when done or when none was pending, else -errno (it stays pending).
 */
int mtime_flush(struct inode *in);

/* mtime_overlay - put @in's pending modification time, if any, into @st. */
void mtime_overlay(struct inode *in, struct stat *st);

#endif
