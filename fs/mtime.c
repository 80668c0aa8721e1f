/* SPDX-License-Identifier: MIT */
#include "mtime.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include "inode.h"

void mtime_defer(struct inode *in, const struct timespec *mtime)
{
	pthread_mutex_lock(&in->mtime_lock);
	in->pending_mtime = *mtime;
	in->mtime_pending = true;
	pthread_mutex_unlock(&in->mtime_lock);
}

int mtime_hold(struct inode *in, int fd)
{
	struct statx stx;
	int ret = 0;

	pthread_mutex_lock(&in->mtime_lock);
	if (!in->mtime_pending) {
		/* Asks for the mtime (the next write stamps a fine-grained time,
		 * dirtying the inode once), but only before a first write. */
		if (statx(fd, "", AT_EMPTY_PATH, STATX_MTIME, &stx) < 0) {
			ret = -errno;
		} else {
			in->pending_mtime.tv_sec = stx.stx_mtime.tv_sec;
			in->pending_mtime.tv_nsec = stx.stx_mtime.tv_nsec;
			in->mtime_pending = true;
		}
	}
	pthread_mutex_unlock(&in->mtime_lock);
	return ret;
}

int mtime_flush(struct inode *in)
{
	struct timespec tv[2] = {{.tv_nsec = UTIME_OMIT}};
	char path[64];
	int ret = 0;

	/* Held across the utimensat: a newer mtime deferred meanwhile must not
	 * be overtaken by this older one. */
	pthread_mutex_lock(&in->mtime_lock);
	if (in->mtime_pending) {
		tv[1] = in->pending_mtime;
		/* The inode's fd is O_PATH, which futimens refuses. */
		snprintf(path, sizeof(path), "/proc/self/fd/%d", inode_fd(in));
		if (utimensat(AT_FDCWD, path, tv, 0) < 0)
			ret = -errno;
		else
			in->mtime_pending = false;
	}
	pthread_mutex_unlock(&in->mtime_lock);
	return ret;
}

void mtime_overlay(struct inode *in, struct stat *st)
{
	pthread_mutex_lock(&in->mtime_lock);
	if (in->mtime_pending)
		st->st_mtim = in->pending_mtime;
	pthread_mutex_unlock(&in->mtime_lock);
}
