/* SPDX-License-Identifier: MIT */
/*
 * Names to inodes: translating a plaintext name to its backing entry
 * (and its side record for long names), lookup, forget and readlink
 * (whose targets symlink.h decrypts).
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

#include "bindops.h"
#include "scope_convert.h"
#include "scope_ops.h"
#include "log.h"
#include "prefetch.h"
#include "symlink.h"

void log_bad_name(struct envfs *fs, struct inode *dir, const char *entry,
		  const char *what)
{
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	log_ratelimited(LOG_ERR, "directory inode %llu: %s of entry %s is damaged or forged",
			(unsigned long long)dir->ino, what, entry);
}

/*
 * dir_id - the ID of directory @dir (encrypted names; *@out is NULL with
 * plain names), read from the backing directory once and kept in the
 * inode: it never changes and moves with the directory.
 */
int dir_id(struct envfs *fs, struct inode *dir, const uint8_t **out)
{
	int ret = 0;

	*out = NULL;
	if (!encrypted_names(fs))
		return 0;
	pthread_mutex_lock(&dir->key_lock);
	if (!dir->dirid_known) {
		ret = names_dirid_read(inode_fd(dir), dir->dirid);
		dir->dirid_known = ret == 0;
	}
	pthread_mutex_unlock(&dir->key_lock);
	if (ret < 0) {
		atomic_fetch_add(&fs->counters.integrity_errors, 1);
		log_ratelimited(LOG_ERR, "directory inode %llu: its directory ID (%s) is missing "
					 "or damaged; returning EIO",
				(unsigned long long)dir->ino, NAMES_DIRID_ENTRY);
		return -EIO;
	}
	*out = dir->dirid;
	return 0;
}

/* The backing form of @name in @dir. */
int to_backing(struct envfs *fs, struct inode *dir, const char *name,
	       struct backing_name *b)
{
	struct names *codec;
	const uint8_t *id;
	int ret = dir_id(fs, dir, &id);

	if (ret == 0)
		ret = inode_names(fs, dir, &codec);
	/* A converting scope's names may still have the volume's form. */
	return ret < 0 ? ret : scope_to_backing(fs, dir, codec, id, name, b);
}

/*
 * A long name's entry may be used only with its side record: -ENOENT when
 * neither the entry nor a matching record exists, -EIO when the entry
 * exists but its record is missing or not the one its name was made from.
 */
static int check_side(struct envfs *fs, struct inode *dir, const struct backing_name *b)
{
	char have[NAMES_FULL_MAX + 1];
	struct stat st;

	if (names_side_read(inode_fd(dir), b->entry, have) == 0 && strcmp(have, b->full) == 0)
		return 0;
	if (fstatat(inode_fd(dir), b->entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	log_bad_name(fs, dir, b->entry, "the side record");
	return -EIO;
}

/* Before an entry for @b is made: a long name's side record comes first. */
int prepare_entry(struct inode *dir, const struct backing_name *b)
{
	return backing_name_is_long(b) ? names_side_write(inode_fd(dir), b) : 0;
}

/*
 * After an entry for @b failed to appear, or after it was removed: drop
 * its side record, unless the name has an entry again (made meanwhile by
 * another request, or by another host in shared mode, which found the
 * record there and kept it).
 */
void abandon_entry(struct inode *dir, const struct backing_name *b)
{
	struct stat st;

	if (backing_name_is_long(b) &&
	    fstatat(inode_fd(dir), b->entry, &st, AT_SYMLINK_NOFOLLOW) < 0 &&
	    errno == ENOENT)
		names_side_remove(inode_fd(dir), b->entry);
}

int inode_gone(struct envfs *fs, struct inode *in, int err)
{
	/* A call on an inode, not a name, cannot find "no such entry": the
	 * GlusterFS client answers ENOENT for some reads of a file another host
	 * just removed, where the kernel answers ESTALE. */
	if ((err == -ESTALE || err == -ENOENT) && fs->shared) {
		/* An ESTALE of the entry binding (binding_check()) is about a
		 * name, not the inode: the inode lives on. */
		bool gone = !binding_retrying(in, NULL);

		pthread_mutex_lock(&in->key_lock);
		in->stale |= gone;
		pthread_mutex_unlock(&in->key_lock);
		return -ESTALE;
	}
	return err;
}

/* inode_is_stale - whether opening @in found its backing inode gone (shared mode). */
static bool inode_is_stale(struct inode *in)
{
	bool stale;

	pthread_mutex_lock(&in->key_lock);
	stale = in->stale;
	pthread_mutex_unlock(&in->key_lock);
	return stale;
}

int fstatat_fresh(int dirfd, const char *name, struct stat *st)
{
	struct statx stx;

	if (statx(dirfd, name, AT_SYMLINK_NOFOLLOW | AT_STATX_FORCE_SYNC,
		  STATX_TYPE | STATX_INO, &stx) < 0)
		return -1;
	return fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW);
}

/* name_listed - whether a fresh listing of the directory @dirfd holds @bname. */
static bool name_listed(int dirfd, const char *bname)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	DIR *dp = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;
	bool listed = dp == NULL; /* cannot tell: the stat's answer stands */

	if (!dp && fd >= 0)
		close(fd);
	while (dp && !listed && (de = readdir(dp)))
		listed = strcmp(de->d_name, bname) == 0;
	if (dp)
		closedir(dp);
	return listed;
}

/*
 * Fill @e for backing entry @bname (plaintext @name) in @parent and take a
 * kernel reference on its inode.
 */
int lookup_backing(struct envfs *fs, struct inode *parent, const char *bname,
		   const char *name, struct fuse_entry_param *e)
{
	struct stat st;
	struct inode *in;
	bool renamed_on;
	int fd, ret;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->settings.attr_timeout;
	e->entry_timeout = fs->settings.entry_timeout;

	/* A known inode needs no new fd: one fstatat answers the lookup. */
	if (fstatat(inode_fd(parent), bname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	in = inode_lookup_known(fs->inodes, &st, inode_fd(parent), bname);
	/* Only shared mode answers ESTALE for a name (binding_check()). */
	renamed_on = fs->shared && binding_retrying(in, &st);
	if (renamed_on || (in && inode_is_stale(in))) {
		/* Shared mode: another host replaced the file, or renamed it on
		 * (its record no longer lists this name), and the backing's name
		 * cache does not know yet.  Asking the backing for the attributes
		 * now makes it look the name up again (the kernel retries a stale
		 * handle with LOOKUP_REVAL). */
		if (in)
			inode_forget(fs->inodes, in, 1);
		if (fstatat_fresh(inode_fd(parent), bname, &st) < 0)
			return -errno;
		/* A file renamed on still lives, so the backing's cached name
		 * for it stats fine (GlusterFS keeps names for its entry
		 * timeout): only a listing asks the servers whether it is gone. */
		if (renamed_on && !name_listed(inode_fd(parent), bname))
			return -ENOENT;
		in = inode_lookup_known(fs->inodes, &st, inode_fd(parent), bname);
		if (in && inode_is_stale(in)) {
			inode_forget(fs->inodes, in, 1);
			return -ESTALE;
		}
	}
	if (!in) {
		fd = openat(inode_fd(parent), bname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return -errno;
		/* The name may have moved on since the fstatat: trust the fd. */
		if (fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
			ret = -errno;
			close(fd);
			return ret;
		}
		in = inode_lookup_or_add(fs->inodes, fd, &st);
		if (!in)
			return -ENOMEM;
	}
	scope_inherit(fs, parent, in);
	symlink_looked_up(fs, parent, in, bname, name);
	binding_looked_up(fs, parent, in, name);
	inode_evict_note_name(fs->evictor, parent, in, name);
	to_plain_attr(fs, in, &st);
	e->ino = (fuse_ino_t)(uintptr_t)in;
	if (in == inode_table_root(fs->inodes))
		e->ino = FUSE_ROOT_ID;
	e->attr = st;
	return 0;
}

/* Fill @e for @name in @parent and take a kernel reference on its inode. */
static int lookup_once(struct envfs *fs, struct inode *parent, const char *name,
		       struct fuse_entry_param *e)
{
	struct backing_name b;
	int ret = to_backing(fs, parent, name, &b);

	if (ret < 0)
		return ret == -EPERM ? -ENOENT : ret;
	if (backing_name_is_long(&b)) {
		ret = check_side(fs, parent, &b);
		if (ret < 0)
			return ret;
	}
	return lookup_backing(fs, parent, b.entry, name, e);
}

int lookup_name(struct envfs *fs, struct inode *parent, const char *name,
		struct fuse_entry_param *e)
{
	int ret = lookup_once(fs, parent, name, e);

	/* The name may have just changed form (scope_convert.h). */
	if (ret == -ENOENT && scope_dir_converting(fs, parent))
		ret = lookup_once(fs, parent, name, e);
	return ret;
}

/* Fill @e for the file open as @fd (just created), taking a kernel reference. */
int entry_for_fd(struct envfs *fs, int fd, struct fuse_entry_param *e)
{
	char path[64];
	struct stat st;
	struct inode *in;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->settings.attr_timeout;
	e->entry_timeout = fs->settings.entry_timeout;
	if (fstat(fd, &st) < 0)
		return -errno;
	in = inode_lookup_known(fs->inodes, &st, fd, "");
	if (!in) {
		int pfd;
		proc_path(fd, path);
		pfd = open(path, O_PATH | O_CLOEXEC);
		if (pfd < 0)
			return -errno;
		in = inode_lookup_or_add(fs->inodes, pfd, &st);
		if (!in)
			return -ENOMEM;
	}
	to_plain_attr(fs, in, &st);
	e->ino = (fuse_ino_t)(uintptr_t)in;
	e->attr = st;
	return 0;
}

void reply_entry_or_err(fuse_req_t req, int ret, const struct fuse_entry_param *e)
{
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, e);
}

/*
 * may_list - whether the requester may read (list) directory @dir, so that a
 * lookup in it may make the daemon read all its files' keys ahead
 * (THREAT-MODEL "Prefetch"): the kernel checked search permission only.
 */
static bool may_list(fuse_req_t req, struct inode *dir)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;

	return ctx->uid == 0 || (fstatat(inode_fd(dir), "", &st, AT_EMPTY_PATH) == 0 &&
				 prefetch_may_list(ctx->uid, ctx->gid, &st));
}

static void lookup_pinned(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct fuse_entry_param e;
	int ret = lookup_name(fs, dir, name, &e);

	/* Tools that look each file up just before reading it (cp -r, rsync,
	 * tar) read its directory's other files next. */
	if (ret == 0 && S_ISREG(e.attr.st_mode) && fs->prefetch && may_list(req, dir))
		prefetch_dir(fs->prefetch, dir, is_root(fs, dir), fuse_req_ctx(req)->uid,
			     fuse_req_ctx(req)->gid);
	if (ret == -ENOENT) {
		/* Negative entry: the kernel may cache the absence. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs->settings.entry_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	reply_entry_or_err(req, ret, &e);
}

void envfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	lookup_pinned(req, parent, name);
	unpin(fs, in);
}

void envfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct envfs *fs = fs_of(req);

	inode_forget(fs->inodes, inode_of(fs, ino), nlookup);
	fuse_reply_none(req);
}

void envfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct envfs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++)
		inode_forget(fs->inodes, inode_of(fs, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void readlink_pinned(fuse_req_t req, fuse_ino_t ino)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char buf[PATH_MAX + 1];
	ssize_t n;
	int ret;

	if (encrypted_names(fs)) {
		ret = symlink_target(fs, in, buf);
		if (ret < 0)
			fuse_reply_err(req, -ret);
		else
			fuse_reply_readlink(req, buf);
		return;
	}
	n = readlinkat(inode_fd(in), "", buf, sizeof(buf));

	if (n < 0)
		fuse_reply_err(req, errno);
	else if ((size_t)n >= sizeof(buf))
		fuse_reply_err(req, ENAMETOOLONG);
	else {
		buf[n] = '\0';
		fuse_reply_readlink(req, buf);
	}
}

void envfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	readlink_pinned(req, ino);
	unpin(fs, in);
}
