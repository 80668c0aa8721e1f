/* SPDX-License-Identifier: MIT */
/*
 * File locks in shared mode (shared.h): POSIX (fcntl) and OFD locks, and
 * flock, taken on the backing file, so that the backing makes them exclude
 * the same locks taken through another host's daemon.  Off shared mode the
 * kernel keeps locks itself (envfs_init does not ask for these ops).
 *
 * The kernel sends POSIX and OFD locks alike, each with its owner (a
 * process's file table, or an open file description).  Each owner gets an
 * fd of its own on the backing file, opened on its first lock, and its
 * locks are OFD locks on that fd: locks of one owner merge and split and
 * never conflict with each other, locks of two owners conflict, as POSIX
 * has it.  The owner's fd is closed, dropping its locks, when the owner
 * closes the file (FLUSH: POSIX drops a process's locks on any close) or
 * when the open it came through is released (OFD locks end with their
 * open file description).
 *
 * flock locks belong to the open file description too: each is an OFD lock
 * on FLOCK_OFFSET through an fd of the open's own, gone when it is
 * released.  Not the backing's flock(): GlusterFS, for one, makes that a
 * POSIX lock of the whole file, which would meet POSIX locks (on ext4 the
 * two kinds never conflict) and the key lock.
 *
 * User POSIX ranges end before LOCKS_RESERVED_START: the last bytes are
 * the daemons' own (ofdlock.h).
 */
#include "ops_i.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include "shared.h"

/* One lock owner's fd on an inode's backing file. */
struct lock_owner {
	uint64_t owner;
	bool flock; /* the flock locks of the open @via, owner 0 */
	int fd;
	const struct open_file *via; /* the open it was first used through */
	struct lock_owner *next;
};

/*
 * The fd of @owner's POSIX locks (@flock false) or of @of's flock locks (@flock
 * true) on @in, opened on first use.  Key lock not held.
 */
static int owner_fd(struct inode *in, uint64_t owner, bool flock, const struct open_file *of)
{
	struct lock_owner *lo;
	char path[64];
	int fd;

	pthread_mutex_lock(&in->key_lock);
	for (lo = in->lock_owners; lo; lo = lo->next)
		if (lo->flock == flock && (flock ? lo->via == of : lo->owner == owner))
			break;
	if (!lo) {
		lo = malloc(sizeof(*lo));
		proc_path(of->fd, path);
		/* Read-write where the open is, or for flock, which any open may
		 * take exclusively: an OFD write lock needs a writable fd. */
		fd = lo ? open(path, (of->writable || flock ? O_RDWR : O_RDONLY) | O_CLOEXEC) : -1;
		if (fd < 0) {
			int err = lo ? errno : ENOMEM;
			free(lo);
			pthread_mutex_unlock(&in->key_lock);
			return -err;
		}
		*lo = (struct lock_owner){
			.owner = owner, .flock = flock, .fd = fd, .via = of, .next = in->lock_owners};
		in->lock_owners = lo;
	}
	fd = lo->fd;
	pthread_mutex_unlock(&in->key_lock);
	return fd;
}

/*
 * locks_drop - close the lock fds of @in that belong to @owner (when
 * @of is NULL) or that were first used through @of, dropping their locks.
 */
static void locks_drop(struct inode *in, uint64_t owner, const struct open_file *of)
{
	struct lock_owner **p, *lo;

	pthread_mutex_lock(&in->key_lock);
	for (p = &in->lock_owners; (lo = *p);) {
		if (of ? lo->via == of : !lo->flock && lo->owner == owner) {
			*p = lo->next;
			close(lo->fd);
			free(lo);
		} else {
			p = &lo->next;
		}
	}
	pthread_mutex_unlock(&in->key_lock);
}

void locks_owner_closed(struct inode *in, uint64_t owner)
{
	locks_drop(in, owner, NULL);
}

void locks_open_released(struct inode *in, const struct open_file *of)
{
	locks_drop(in, 0, of);
}

/* A user range [l_start, l_start + l_len), l_len 0 = to the end, kept before the key lock. */
static int to_backing_range(struct flock *lock)
{
	if (lock->l_whence != SEEK_SET || lock->l_start < 0 || lock->l_len < 0)
		return -EINVAL;
	if (lock->l_start >= LOCKS_RESERVED_START)
		return -EINVAL;
	if (lock->l_len == 0 || lock->l_len > LOCKS_RESERVED_START - lock->l_start)
		lock->l_len = LOCKS_RESERVED_START - lock->l_start;
	return 0;
}

/* A backing range reaching the reserved bytes is a user range "to the end". */
static void to_user_range(struct flock *lock)
{
	if (lock->l_len > 0 && lock->l_start + lock->l_len == LOCKS_RESERVED_START)
		lock->l_len = 0;
}

static int lock_getlk(int fd, struct flock *lock)
{
	return fcntl(fd, F_OFD_GETLK, lock) < 0 ? -errno : 0;
}

void envfs_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock)
{
	struct envfs *fs = fs_of(req);
	const struct open_file *of = (const struct open_file *)(uintptr_t)fi->fh;
	int fd, ret = to_backing_range(lock);

	fd = ret < 0 ? ret : owner_fd(inode_of(fs, ino), fi->lock_owner, false, of);
	lock->l_pid = 0;
	ret = fd < 0 ? fd : lock_getlk(fd, lock);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	to_user_range(lock);
	/* An OFD lock has no process; one on another host has none here. */
	if (lock->l_type != F_UNLCK && lock->l_pid <= 0)
		lock->l_pid = -1;
	fuse_reply_lock(req, lock);
}

void envfs_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
		 int sleep)
{
	struct envfs *fs = fs_of(req);
	const struct open_file *of = (const struct open_file *)(uintptr_t)fi->fh;
	int fd, ret = to_backing_range(lock);

	fd = ret < 0 ? ret : owner_fd(inode_of(fs, ino), fi->lock_owner, false, of);
	ret = fd < 0 ? fd : ofd_lock(fd, lock->l_type, lock->l_start, lock->l_len, sleep);
	fuse_reply_err(req, -ret);
}

void envfs_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op)
{
	const struct open_file *of = (const struct open_file *)(uintptr_t)fi->fh;
	int kind = op & ~LOCK_NB, fd, ret;
	short type = kind == LOCK_SH ? F_RDLCK : kind == LOCK_EX ? F_WRLCK : F_UNLCK;

	if (kind != LOCK_SH && kind != LOCK_EX && kind != LOCK_UN) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fd = owner_fd(inode_of(fs_of(req), ino), 0, true, of);
	ret = fd < 0 ? fd
		     : ofd_lock(fd, type, FLOCK_OFFSET, 1, !(op & LOCK_NB) && kind != LOCK_UN);
	/* flock(2) says EWOULDBLOCK (EAGAIN) for a lock held elsewhere. */
	fuse_reply_err(req, -ret);
}
