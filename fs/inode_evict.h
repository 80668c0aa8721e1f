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
 * a prune may wait for a write-back the daemon's workers answer, and an
 * invalidation (below) takes the parent directory's lock, which a process
 * in a request to the daemon may hold.
 *
 * Kernels before 6.18 answer EINVAL to the first request (an empty one, at
 * start, which prunes nothing).  The evictor then falls back to
 * FUSE_NOTIFY_INVAL_ENTRY (Linux 2.6.36): for each victim, the entry the
 * kernel last reached it by (its parent's node id and plaintext name,
 * noted by lookup, create, mknod, mkdir, symlink, link and readdirplus,
 * moved by rename, dropped by unlink: inode_evict_note_*()) is
 * invalidated, and once the kernel's last dentry for it is gone, so is the
 * inode, and its FORGET comes.  Such an invalidation unhashes the dentry
 * even when it is in use: a working directory's would make getcwd() fail,
 * an open file's would show as deleted in /proc.  So the fallback never
 * picks a directory (none gets a name: which one is a working directory
 * or holds a mount, the daemon cannot tell), nor an inode with opens, nor
 * anything but regular files and symlinks (the daemon sees no opens of a
 * FIFO or a device), and the table is then bounded by about
 * max(max_inodes, directories + open files + special files the kernel
 * knows).  What the daemon cannot see is not spared: an O_PATH descriptor
 * (or an inotify watch, a bind mount) on a file keeps working, but its
 * /proc name shows "(deleted)"; so does a file opened in the moment
 * between its pick and the kernel's invalidation.
 *
 * The kernel also drops the directory's cached attributes and listing at
 * each invalidation (fuse_dir_changed()): its next listing is a
 * READDIRPLUS, which makes an inode for each of its entries again, so a
 * directory listed over and over while its files are evicted makes the
 * table overshoot by up to its size (bench/FINDINGS.md).
 *
 * A hard link keeps the name it was last reached by: invalidating it lets
 * go of the inode only when no other name holds it, and the next try,
 * finding the name gone (ENOENT), drops it, so such an inode stays until
 * a lookup names it again.  A stale name (the entry now another file's)
 * invalidates that entry, which costs the kernel one LOOKUP.  The name
 * costs 32 bytes per inode for names up to 11 bytes, 48 up to 27 (a
 * malloc chunk: bench/FINDINGS.md), and only in this mode: its pointer
 * fills padding in struct inode, which stays the same size.
 *
 * Test switch: ENVELOPEFS_INODE_EVICT=inval_entry in the daemon's
 * environment skips the probe and uses the fallback on any kernel (the
 * tests run both modes on 6.18); =prune (or unset) probes as above.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "inode.h"

struct inode_evictor;

/*
 * inode_evict_start - keep @t's live inodes near @max by requests written
 * to @dev_fd (the session's mounted /dev/fuse fd, which must outlive the
 * evictor).  0 or -errno (no thread); *@out NULL when @max is 0 or the
 * kernel refused both kinds of request (logged).
 */
int inode_evict_start(struct inode_table *t, int dev_fd, uint64_t max,
		      struct inode_evictor **out);

/* inode_evict_stop - no more requests once it returns; @e freed.  NULL: nothing. */
void inode_evict_stop(struct inode_evictor *e);

/* inode_evict_applied - whether the kernel takes the requests (NULL: false). */
bool inode_evict_applied(struct inode_evictor *e);

/* inode_evict_mode - "prune", "inval_entry", or "none" when not applied. */
const char *inode_evict_mode(struct inode_evictor *e);

/* inode_evict_requested - node ids (prune) or entries (fallback) sent so far (NULL: 0). */
uint64_t inode_evict_requested(struct inode_evictor *e);

/*
 * The entries the fallback invalidates; these do nothing unless @e uses it.
 * inode_evict_note_name - the kernel now knows @in as @name in @dir (an
 * entry replied to a request, whose handler holds a reference on both).
 */
void inode_evict_note_name(struct inode_evictor *e, struct inode *dir, struct inode *in,
			   const char *name);
/*
 * inode_evict_note_moved - a rename made backing entry @bname of @dir
 * (pinned) the one the kernel knows as @name: the inode the daemon has for
 * it, if any, is known by that name now.
 */
void inode_evict_note_moved(struct inode_evictor *e, struct inode *dir, const char *bname,
			    const char *name);
/* inode_evict_note_unlinked - backing inode @st lost a name: its noted one goes. */
void inode_evict_note_unlinked(struct inode_evictor *e, const struct stat *st);

#endif
