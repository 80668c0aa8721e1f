/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_INODE_EVICT_H
#define ENVELOPEFS_FS_INODE_EVICT_H

/*
 * The inode table's bound (setting max_inodes, issue 16): the daemon keeps
 * one struct inode per inode the kernel holds a lookup on, and the kernel
 * keeps those until memory pressure, so a `find` over a million files
 * would make the daemon hold a million.  Past the bound, a thread of its
 * own asks the kernel to let go of inodes the daemon has not seen used
 * lately (inode_victims(), a CLOCK over the table); the kernel sends
 * FORGET for each it lets go of, and the FORGET frees the daemon's inode
 * as always.
 *
 * The request is FUSE_NOTIFY_PRUNE (Linux 6.18, FUSE 7.45), a list of node
 * ids written to /dev/fuse: for each, the kernel drops the inode's unused
 * dentries (d_prune_aliases) and so the inode itself, whose last reference
 * then goes (FUSE inodes are not kept once unreferenced: drop_inode), which
 * queues its FORGET.  An inode in use is skipped: an open file or
 * directory, a process's working directory, a directory with cached
 * entries below it, an O_PATH descriptor.  So the table holds at most about
 * max(max_inodes, what the kernel has in use), plus the inodes made while
 * the kernel's forgets are on their way.  Unlike invalidating entries by
 * parent and name (FUSE_NOTIFY_INVAL_ENTRY), it needs no name kept per
 * inode, follows hard links and renames by itself, and never unhashes a
 * dentry in use (a working directory's would make getcwd() fail).
 *
 * The requests are written from this thread, never from a request handler:
 * a prune may wait for a write-back the daemon's workers answer.  An older
 * kernel answers EINVAL to the first request (an empty one, at start, which
 * prunes nothing): the bound is then not applied, which the log says once
 * and the status shows.
 */

#include <stdbool.h>
#include <stdint.h>

#include "inode.h"

struct inode_evictor;

/*
 * inode_evict_start - keep @t's live inodes near @max by prune requests
 * written to @dev_fd (the session's mounted /dev/fuse fd, which must
 * outlive the evictor).  0 or -errno (no thread); *@out NULL when @max is 0
 * or the kernel refused the first request (logged).
 */
int inode_evict_start(struct inode_table *t, int dev_fd, uint64_t max,
		      struct inode_evictor **out);

/* inode_evict_stop - no more requests once it returns; @e freed.  NULL: nothing. */
void inode_evict_stop(struct inode_evictor *e);

/* inode_evict_applied - whether the kernel takes the requests (NULL: false). */
bool inode_evict_applied(struct inode_evictor *e);

/* inode_evict_requested - node ids sent to the kernel so far (NULL: 0). */
uint64_t inode_evict_requested(struct inode_evictor *e);

#endif
