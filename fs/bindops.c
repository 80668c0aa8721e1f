/* SPDX-License-Identifier: MIT */
/* The FUSE operations' side of entry bindings: see bindops.h. */
#include "bindops.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "ofdlock.h"
#include "shared.h"

/* A rename whose source keeps changing under it gives up after this many looks. */
#define SOURCE_TRIES 3
/* An exchange's second lock is polled, this often, for at most this long. */
#define SECOND_POLL_MS 20
#define SECOND_WAIT_MS 2000

static bool bound_volume(const struct envfs *fs)
{
	return record_tags_v3(&fs->cfg);
}

void binding_looked_up(struct envfs *fs, struct inode *dir, struct inode *in, const char *name)
{
	const uint8_t *id;

	if (bound_volume(fs) && in->type == S_IFREG && dir_id(fs, dir, &id) == 0)
		binding_note_entry(fs, in, id, name);
}

/* entry_of - the binding of @name in @dir into @out.  0 or -errno. */
static int entry_of(struct envfs *fs, struct inode *dir, const char *name,
		    uint8_t out[RECORD_BINDING_LEN])
{
	const uint8_t *id;
	int ret = dir_id(fs, dir, &id);

	return ret < 0 ? ret : binding_entry(id, name, out);
}

/*
 * lock_and_count - shared mode: take the binding lock through c->fd (other
 * hosts' renames and links of the file finish first), then read the link
 * count afresh; c->move.sole from it.  0 or -errno.
 */
static int lock_and_count(struct envfs *fs, struct binding_change *c, struct stat *st)
{
	int ret = 0, waited;

	if (fs->shared_locks && !c->second)
		ret = ofd_lock(c->fd, F_WRLCK, BINDLOCK_OFFSET, 1, true);
	/* Holding the first file's lock: waiting for the second could wait
	 * for a host that holds it and waits for the first (an exchange of
	 * the same two files the other way round). */
	for (waited = 0; fs->shared_locks && c->second; waited += SECOND_POLL_MS) {
		struct timespec pause = {.tv_nsec = SECOND_POLL_MS * 1000000L};

		ret = ofd_lock(c->fd, F_WRLCK, BINDLOCK_OFFSET, 1, false);
		if (ret != -EAGAIN)
			break;
		if (waited >= SECOND_WAIT_MS) {
			ret = -EBUSY;
			break;
		}
		nanosleep(&pause, NULL);
	}
	if (ret == 0 && fs->shared_locks)
		shared_backing_fresh(c->fd);
	if (ret == 0 && fstat(c->fd, st) < 0)
		ret = -errno;
	c->move.sole = ret == 0 && st->st_nlink == 1;
	return ret;
}

/*
 * open_rw - @name in @dirfd (a /proc/self/fd path with @dirfd AT_FDCWD),
 * described by @st, open read-write with @flags added.  A daemon that owns a
 * file it may not write (mode 0444, as git makes its objects) still renames
 * it as ext4 does: write permission is lent to the owner for the open alone
 * (a rename changes the ctime anyway).  The fd or -errno.
 */
static int open_rw(int dirfd, const char *name, int flags, const struct stat *st)
{
	int fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | flags);
	int err = errno;

	if (fd >= 0 || err != EACCES || st->st_uid != geteuid() || (st->st_mode & S_IWUSR))
		return fd >= 0 ? fd : -err;
	if (fchmodat(dirfd, name, (st->st_mode & 07777) | S_IWUSR, 0) < 0)
		return -err;
	fd = openat(dirfd, name, O_RDWR | O_CLOEXEC | flags);
	err = errno;
	fchmodat(dirfd, name, st->st_mode & 07777, 0);
	return fd >= 0 ? fd : -err;
}

/* same_file - do @a and @b describe one backing inode? */
static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_ino == b->st_ino && a->st_dev == b->st_dev;
}

/*
 * open_source - the regular file @bname in @dir, open read-write into
 * c->fd and locked (lock_and_count()), still named @bname then, its inode
 * (one more reference) into c->in.  1 when @bname is no regular file
 * (nothing to bind: the rename tells what it is), 0, or -errno.
 */
static int open_source(struct envfs *fs, struct inode *dir, const char *bname,
		       struct binding_change *c)
{
	struct stat st, named;
	int tries, pfd, ret;

	for (tries = 0; tries < SOURCE_TRIES; tries++) {
		/* Never open a device or a FIFO: only a regular file has a record. */
		if (fstatat(inode_fd(dir), bname, &named, AT_SYMLINK_NOFOLLOW) < 0)
			return -errno;
		if (!S_ISREG(named.st_mode))
			return 1;
		c->fd = open_rw(inode_fd(dir), bname, O_NOFOLLOW | O_NONBLOCK, &named);
		if (c->fd < 0)
			return c->fd == -ELOOP || c->fd == -ENXIO ? 1 : c->fd;
		ret = lock_and_count(fs, c, &st);
		/* Under the lock, the name must still be this file's: another
		 * host's rename of it may have come first. */
		if (ret == 0 && fs->shared && fstatat_fresh(inode_fd(dir), bname, &named) < 0)
			ret = -errno;
		if (ret == 0 && S_ISREG(st.st_mode) && same_file(&st, &named))
			break;
		close(c->fd);
		c->fd = -1;
		if (ret < 0)
			return ret;
	}
	if (c->fd < 0)
		return -EAGAIN;
	c->in = inode_lookup_known(fs->inodes, &st, inode_fd(dir), bname);
	if (c->in)
		return 0;
	pfd = openat(inode_fd(dir), bname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (pfd >= 0 && (fstat(pfd, &named) < 0 || !same_file(&st, &named))) {
		close(pfd);
		return -EAGAIN;
	}
	if (pfd >= 0)
		c->in = inode_lookup_or_add(fs->inodes, pfd, &st);
	return c->in ? 0 : pfd < 0 ? -errno : -ENOMEM;
}

int binding_before_rename(struct envfs *fs, struct inode *from, const char *bname,
			  const char *name, struct inode *to, const char *newname, bool second,
			  struct binding_change *c)
{
	int ret;

	*c = (struct binding_change){ .fd = -1, .second = second, .move.renamed = true };
	if (!bound_volume(fs))
		return 0;
	ret = entry_of(fs, from, name, c->move.old);
	if (ret == 0)
		ret = entry_of(fs, to, newname, c->move.new);
	if (ret == 0)
		ret = open_source(fs, from, bname, c);
	if (ret != 0)
		return ret > 0 ? 0 : ret;
	return binding_add_entry(fs, c->in, c->fd, &c->move);
}

int binding_before_link(struct envfs *fs, struct inode *in, struct inode *dir,
			const char *newname, struct binding_change *c)
{
	char path[64];
	struct stat st;
	int ret;

	*c = (struct binding_change){ .fd = -1, .move.renamed = false };
	if (!bound_volume(fs) || in->type != S_IFREG)
		return 0;
	ret = entry_of(fs, dir, newname, c->move.new);
	if (ret < 0)
		return ret;
	proc_path(inode_fd(in), path);
	if (stat(path, &st) < 0)
		return -errno;
	c->fd = open_rw(AT_FDCWD, path, 0, &st);
	if (c->fd < 0)
		return c->fd;
	inode_ref(fs->inodes, in);
	c->in = in;
	ret = lock_and_count(fs, c, &st);
	return ret < 0 ? ret : binding_add_entry(fs, in, c->fd, &c->move);
}

void binding_after(struct envfs *fs, struct binding_change *c, bool done)
{
	/* A link to a file that had no record changed no record: if the file
	 * got its first record meanwhile (a write racing the link, here or on
	 * another host), that record may list the old name only. */
	if (c->in && done && !c->move.renamed && !c->move.changed)
		binding_add_entry(fs, c->in, c->fd, &c->move);
	if (c->in && done)
		binding_moved(fs, c->in, &c->move);
	else if (c->in)
		binding_undo(fs, c->in, c->fd, &c->move);
	if (c->in)
		inode_forget(fs->inodes, c->in, 1);
	/* Closing the fd lets go of the binding lock (and the key lock). */
	if (c->fd >= 0)
		close(c->fd);
	*c = (struct binding_change){ .fd = -1 };
}
