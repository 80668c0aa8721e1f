/* SPDX-License-Identifier: MIT */
/*
 * Attributes: getattr, setattr (mode, owner, size, times) and statfs.  The
 * size and times a regular file shows are the plaintext ones (to_plain_attr).
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
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "filekey.h"
#include "killpriv.h"
#include "mtime.h"
#include "shared.h"
#include "symlink.h"

/*
 * own_subdirs - how many of the daemon's own directories (the probe's home, the
 * re-key journals, the long symlink targets) the backing root @root_fd holds.  Each adds one to the
 * backing root's link count; the mount does not show them, so its root must
 * not count them either (the namespace explorer, seed 2470328417: a root with
 * no subdirectory showed st_nlink 3).
 */
static nlink_t own_subdirs(int root_fd)
{
	static const char *const own[] = { VOLUME_PROBE_DIR, VOLUME_REKEY_DIR, NAMES_LINK_STORE };
	nlink_t n = 0;
	struct stat st;

	for (size_t i = 0; i < sizeof(own) / sizeof(own[0]); i++)
		if (fstatat(root_fd, own[i], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
			n++;
	return n;
}

/*
 * Backing attributes of @in as the mount shows them: the plaintext size and
 * the modification time the kernel sent last (mtime.h); the root's link
 * count without the daemon's own directories.
 */
void to_plain_attr(struct envfs *fs, struct inode *in, struct stat *st)
{
	if (S_ISDIR(st->st_mode) && is_root(fs, in)) {
		nlink_t own = own_subdirs(inode_fd(in));

		/* A directory counts itself and its "." (2) and each subdirectory's "..". */
		st->st_nlink = st->st_nlink >= 2 + own ? st->st_nlink - own : st->st_nlink;
	} else if (S_ISREG(st->st_mode)) {
		st->st_size = (off_t)layout_plain_size(&fs->layout, (uint64_t)st->st_size);
		mtime_overlay(in, st);
	} else if (S_ISLNK(st->st_mode)) {
		st->st_size = symlink_plain_size(fs, in, st->st_size);
	}
}

/* @stx as a struct stat: the fields it was asked for. */
static void statx_to_stat(const struct statx *stx, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(stx->stx_dev_major, stx->stx_dev_minor);
	st->st_ino = (ino_t)stx->stx_ino;
	st->st_mode = stx->stx_mode;
	st->st_nlink = stx->stx_nlink;
	st->st_uid = stx->stx_uid;
	st->st_gid = stx->stx_gid;
	st->st_rdev = makedev(stx->stx_rdev_major, stx->stx_rdev_minor);
	st->st_size = (off_t)stx->stx_size;
	st->st_blksize = (blksize_t)stx->stx_blksize;
	st->st_blocks = (blkcnt_t)stx->stx_blocks;
	st->st_atim = (struct timespec){stx->stx_atime.tv_sec, stx->stx_atime.tv_nsec};
	st->st_mtim = (struct timespec){stx->stx_mtime.tv_sec, stx->stx_mtime.tv_nsec};
	st->st_ctim = (struct timespec){stx->stx_ctime.tv_sec, stx->stx_ctime.tv_nsec};
}

/*
 * stat_backing - the backing attributes of @in; @fresh asks a shared
 * backing for them now: its client's cached attributes would add their
 * own timeout to the kernel's attr_timeout (shared.h) -- unless an open
 * has just had them refreshed.
 */
static int stat_backing(struct envfs *fs, struct inode *in, struct stat *st, bool fresh)
{
	struct statx stx;

	if (!fresh || !fs->shared || shared_recently_fresh(in))
		return fstatat(inode_fd(in), "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0
			       ? -errno
			       : 0;
	if (statx(inode_fd(in), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC,
		  STATX_BASIC_STATS, &stx) < 0)
		return -errno;
	statx_to_stat(&stx, st);
	return 0;
}

int stat_inode(struct envfs *fs, struct inode *in, struct stat *st)
{
	int ret = stat_backing(fs, in, st, false);

	if (ret == 0)
		to_plain_attr(fs, in, st);
	return ret;
}

/*
 * stat_inode_but_cmtime - @in's attributes but its ctime and mtime, which
 * the caller fills.  Asking a multigrain-timestamp filesystem (ext4, xfs,
 * btrfs) for them makes the file's next write stamp a fine-grained time,
 * which dirties the backing inode, and the next fdatasync writes it.
 */
static int stat_inode_but_cmtime(struct envfs *fs, struct inode *in, struct stat *st)
{
	struct statx stx;

	if (statx(inode_fd(in), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
		  STATX_BASIC_STATS & ~(STATX_CTIME | STATX_MTIME), &stx) < 0)
		return -errno;
	statx_to_stat(&stx, st);
	st->st_mtim = st->st_ctim = (struct timespec){0};
	to_plain_attr(fs, in, st);
	return 0;
}

static void getattr_pinned(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	struct stat st;
	int ret;

	(void)fi;
	/* What the kernel asks for once its attr_timeout ran out: another
	 * host's changes show now (shared.h).  A setattr's reply needs no
	 * fresh copy: it follows this daemon's own change. */
	ret = inode_gone(fs, in, stat_backing(fs, in, &st, true));
	if (ret == 0)
		to_plain_attr(fs, in, &st);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, fs->settings.attr_timeout);
}

void envfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	getattr_pinned(req, ino, fi);
	unpin(fs, in);
}

static int setattr_size(struct envfs *fs, struct inode *in, struct fuse_file_info *fi,
			uint64_t size)
{
	int fd, ret;

	if (in->type == S_IFDIR)
		return -EISDIR;
	if (in->type != S_IFREG)
		return -EINVAL;
	if (fi)
		return truncate_file(fs, in, ((struct open_file *)(uintptr_t)fi->fh)->fd, size);
	fd = reopen(fs, in, O_RDWR);
	if (fd < 0)
		return fd;
	ret = filekey_attach(fs, in, fd);
	if (ret == 0) {
		ret = truncate_file(fs, in, fd, size);
		filekey_detach(fs, in);
	}
	close(fd);
	return ret;
}

static int setattr_times(struct inode *in, const struct stat *attr, int valid,
			 struct fuse_file_info *fi)
{
	struct timespec tv[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_OMIT}};
	char path[64];
	int ret;

	if (valid & FUSE_SET_ATTR_ATIME_NOW)
		tv[0].tv_nsec = UTIME_NOW;
	else if (valid & FUSE_SET_ATTR_ATIME)
		tv[0] = attr->st_atim;
	if (valid & FUSE_SET_ATTR_MTIME_NOW)
		tv[1].tv_nsec = UTIME_NOW;
	else if (valid & FUSE_SET_ATTR_MTIME)
		tv[1] = attr->st_mtim;

	if (fi) {
		ret = futimens(((struct open_file *)(uintptr_t)fi->fh)->fd, tv);
	} else if (in->type == S_IFLNK) {
		/* No race-free way to reach a symlink's own times but this. */
		ret = utimensat(inode_fd(in), "", tv, AT_EMPTY_PATH);
		if (ret < 0 && errno == EINVAL)
			errno = EPERM;
	} else {
		proc_path(inode_fd(in), path);
		ret = utimensat(AT_FDCWD, path, tv, 0);
	}
	return ret < 0 ? -errno : 0;
}

/*
 * defer_mtime - take a SETATTR that only sets a regular file's mtime (and
 * the ctime, which no call can set) through an open file, as the writeback
 * cache sends before an fsync or close: keep the mtime in the inode
 * (mtime.h) and fill the reply.  The kernel holds that open file until the
 * reply, so the file's RELEASE, which sets the mtime, comes after.
 * 1 when taken, 0 when the SETATTR is another kind or the daemon could not
 * set this file's times itself later (it does not own it): then it is set
 * at once, so a refusal reaches the caller.  Or -errno.
 */
static int defer_mtime(struct envfs *fs, struct inode *in, const struct stat *attr, int valid,
		       const struct fuse_file_info *fi, struct stat *st)
{
	int ret;

	if (!fs->settings.writeback_cache || in->type != S_IFREG || !fi ||
	    !(valid & FUSE_SET_ATTR_MTIME) || (valid & ~(FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_CTIME)))
		return 0;
	ret = stat_inode_but_cmtime(fs, in, st);
	if (ret < 0)
		return ret;
	if (geteuid() != 0 && st->st_uid != geteuid())
		return 0;
	mtime_defer(in, &attr->st_mtim);
	st->st_mtim = attr->st_mtim;
	st->st_ctim = (valid & FUSE_SET_ATTR_CTIME) ? attr->st_ctim : attr->st_mtim;
	return 1;
}

/*
 * times_of_nameless - take a SETATTR of the mtime alone (and the ctime, which
 * no call sets) with no open file, as the writeback cache sends when the
 * kernel lets go of a file rm has just removed, if the regular file has no
 * name left and no open file: nothing can read its times again, so they are
 * not written to the backing (in non-shared mode the daemon is its only
 * user; a nameless inode is reached only through an open file, which would
 * count in opens).  The reply carries them.  1 when taken, 0 when the
 * SETATTR is another kind or the file is still reachable, or -errno.
 */
static int times_of_nameless(struct envfs *fs, struct inode *in, const struct stat *attr,
			     int valid, const struct fuse_file_info *fi, struct stat *st)
{
	bool open;
	int ret;

	/* `touch -m` sends this kind too: only it pays the extra fstatat. */
	if (fs->shared || fi || in->type != S_IFREG ||
	    valid != (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_CTIME))
		return 0;
	pthread_mutex_lock(&in->key_lock);
	open = in->opens > 0;
	pthread_mutex_unlock(&in->key_lock);
	if (open)
		return 0;
	ret = stat_inode(fs, in, st);
	if (ret < 0 || st->st_nlink != 0)
		return ret;
	st->st_mtim = attr->st_mtim;
	st->st_ctim = attr->st_ctim;
	return 1;
}

static void setattr_pinned(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
			   struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64];
	struct stat st;
	int ret = 0;

	/* The reply's attributes tell the kernel of the new mode. */
	if (killpriv_take(ino)) {
		ret = clear_suid_sgid(req, in, fi ? ((struct open_file *)(uintptr_t)fi->fh)->fd : -1,
				      true);
		if (ret < 0)
			goto out;
	} else {
		ret = defer_mtime(fs, in, attr, valid, fi, &st);
		if (ret == 0)
			ret = times_of_nameless(fs, in, attr, valid, fi, &st);
		if (ret != 0)
			goto out;
	}
	/* A deferred mtime first: this SETATTR may set another. */
	ret = mtime_flush(in);
	if (ret < 0)
		goto out;
	if (valid & FUSE_SET_ATTR_MODE) {
		proc_path(inode_fd(in), path);
		if ((fi ? fchmod(((struct open_file *)(uintptr_t)fi->fh)->fd, attr->st_mode)
			: chmod(path, attr->st_mode)) < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(inode_fd(in), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (valid & FUSE_SET_ATTR_SIZE) {
		ret = setattr_size(fs, in, fi, (uint64_t)attr->st_size);
		if (ret < 0)
			goto out;
	}
	if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
		     FUSE_SET_ATTR_MTIME_NOW)) {
		ret = setattr_times(in, attr, valid, fi);
		if (ret < 0)
			goto out;
	}
	ret = stat_inode(fs, in, &st);
out:
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, fs->settings.attr_timeout);
}

void envfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		   struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	setattr_pinned(req, ino, attr, valid, fi);
	unpin(fs, in);
}

static void statfs_pinned(fuse_req_t req, fuse_ino_t ino)
{
	struct envfs *fs = fs_of(req);
	struct statvfs sv;

	if (fstatvfs(inode_fd(inode_of(fs, ino)), &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

void envfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	statfs_pinned(req, ino);
	unpin(fs, in);
}
