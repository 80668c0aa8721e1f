/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_OPS_H
#define ENVELOPEFS_FS_OPS_H

/*
 * The FUSE low-level operations.  Each op reads top-down: find the inode
 * from the node id, translate the name through the codec, do one syscall on
 * the inode's fd (or the content engine for file data), reply.
 */

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

extern const struct fuse_lowlevel_ops envfs_ops;

struct envfs;

/* envfs_handles_init / envfs_close_handles - the open-handle list: set up
 * before serving; after the session ends, close what was never released. */
void envfs_handles_init(struct envfs *fs);
void envfs_close_handles(struct envfs *fs);

#endif
