/* SPDX-License-Identifier: MIT */
/*
 * The FUSE low-level operation table, the connection set-up (init) and the
 * list of open handles that teardown closes.
 */
#include "ops_i.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "content.h"
#include "killpriv.h"

void envfs_handles_init(struct envfs *fs)
{
	pthread_mutex_init(&fs->handles_lock, NULL);
	fs->handles.prev = fs->handles.next = &fs->handles;
}

void handle_add(struct envfs *fs, struct handle *h, bool is_dir)
{
	h->is_dir = is_dir;
	pthread_mutex_lock(&fs->handles_lock);
	h->next = fs->handles.next;
	h->prev = &fs->handles;
	h->next->prev = h;
	fs->handles.next = h;
	pthread_mutex_unlock(&fs->handles_lock);
}

void handle_remove(struct envfs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->handles_lock);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
}

void envfs_close_handles(struct envfs *fs)
{
	while (fs->handles.next != &fs->handles) {
		struct handle *h = fs->handles.next;
		if (h->is_dir)
			open_dir_close(fs, (struct open_dir *)h);
		else
			open_file_close(fs, (struct open_file *)h);
	}
}

static void envfs_init(void *userdata, struct fuse_conn_info *conn)
{
	struct envfs *fs = userdata;

	conn->max_write = CONTENT_MAX_IO;
	/* The kernel's 128 KiB default window keeps neither the backing
	 * disk nor the decryption busy on a sequential read. */
	if (fs->settings.read_ahead_kb)
		conn->max_readahead = fs->settings.read_ahead_kb * 1024;
	/* The kernel sends truncation as setattr(size), which keeps the
	 * file's key record and needs no KMS call. */
	conn->want &= ~FUSE_CAP_ATOMIC_O_TRUNC;
	/* The daemon writes as root, which keeps setuid bits: clearing them
	 * on a write by anyone else is never left to the backing file.  The
	 * kernel does it itself, or (killpriv.h) flags the request for
	 * clear_suid_sgid().  Those flags are seen only by killpriv's read,
	 * which splice reading would bypass. */
	conn->want &= ~FUSE_CAP_HANDLE_KILLPRIV;
	conn->want &= ~FUSE_CAP_SPLICE_READ;
	/* A symlink's target never changes (a renamed encrypted link is a
	 * new backing inode): the kernel may cache it, shared or not. */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	/* Only this daemon changes the backing tree unless shared (shared.h):
	 * then (by default) the kernel buffers and merges writes, so small and
	 * random writes reach us as whole pages, and keeps locks itself. */
	if (fs->settings.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		fs->settings.writeback_cache = false;
	/* Pages go stale when a refreshed size or mtime says so. */
	if (fs->shared && (conn->capable & FUSE_CAP_AUTO_INVAL_DATA))
		conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
	if (fs->shared_locks) {
		conn->want |= conn->capable & (FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
	} else {
		conn->want &= ~(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
	}
}

const struct fuse_lowlevel_ops envfs_ops = {
	.init = envfs_init,
	.lookup = envfs_lookup,
	.forget = envfs_forget,
	.forget_multi = envfs_forget_multi,
	.getattr = envfs_getattr,
	.setattr = envfs_setattr,
	.readlink = envfs_readlink,
	.mknod = envfs_mknod,
	.mkdir = envfs_mkdir,
	.symlink = envfs_symlink,
	.link = envfs_link,
	.unlink = envfs_unlink,
	.rmdir = envfs_rmdir,
	.rename = envfs_rename,
	.open = envfs_open,
	.create = envfs_create,
	.read = envfs_read,
	.write = envfs_write,
	.flush = envfs_flush,
	.release = envfs_release,
	.fsync = envfs_fsync,
	.opendir = envfs_opendir,
	.readdir = envfs_readdir,
	.readdirplus = envfs_readdirplus,
	.releasedir = envfs_releasedir,
	.fsyncdir = envfs_fsyncdir,
	.statfs = envfs_statfs,
	.setxattr = envfs_setxattr,
	.getxattr = envfs_getxattr,
	.listxattr = envfs_listxattr,
	.removexattr = envfs_removexattr,
	.access = envfs_access,
	.fallocate = envfs_fallocate,
	.lseek = envfs_lseek,
	.ioctl = envfs_ioctl,
	.getlk = envfs_getlk,
	.setlk = envfs_setlk,
	.flock = envfs_flock,
};
