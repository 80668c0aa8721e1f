/* SPDX-License-Identifier: MIT */
/*
 * FUSE low-level operations over the backing tree.  See ops.h.
 *
 * Backing access: every inode holds an O_PATH fd; name operations use the
 * *at() calls on the parent's fd, and operations that need a real fd reopen
 * the inode through /proc/self/fd/N.  Content goes through content.c with
 * the file's DEK from filekey.c.
 */
#include "ops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "content.h"
#include "crypto/hex.h"
#include "envfs.h"
#include "filekey.h"
#include "killpriv.h"
#include "mtime.h"
#include "log.h"
#include "names.h"
#include "status.h"
#include "volkey.h"
#include "crypto/secmem.h"

/* An open regular file: the backing fd, opened for reading and writing
 * whatever the caller asked, so that partial blocks can be re-sealed. */
struct open_file {
	struct handle h; /* first: a struct handle * is a struct open_file * */
	int fd;
	bool append;
	struct inode *inode;
};

struct open_dir {
	struct handle h; /* first, as above */
	DIR *dp;
	off_t offset;
	struct dirent *entry; /* read but not yet returned */
};

void envfs_handles_init(struct envfs *fs)
{
	pthread_mutex_init(&fs->handles_lock, NULL);
	fs->handles.prev = fs->handles.next = &fs->handles;
}

static void handle_add(struct envfs *fs, struct handle *h, bool is_dir)
{
	h->is_dir = is_dir;
	pthread_mutex_lock(&fs->handles_lock);
	h->next = fs->handles.next;
	h->prev = &fs->handles;
	h->next->prev = h;
	fs->handles.next = h;
	pthread_mutex_unlock(&fs->handles_lock);
}

static void handle_remove(struct envfs *fs, struct handle *h)
{
	pthread_mutex_lock(&fs->handles_lock);
	h->prev->next = h->next;
	h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->handles_lock);
}

static void open_file_close(struct envfs *fs, struct open_file *of);
static void open_dir_close(struct envfs *fs, struct open_dir *d);

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

static struct envfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct inode *inode_of(struct envfs *fs, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return inode_table_root(fs->inodes);
	return (struct inode *)(uintptr_t)ino;
}

static bool is_root(struct envfs *fs, const struct inode *in)
{
	return in == inode_table_root(fs->inodes);
}

static void proc_path(int fd, char out[64])
{
	snprintf(out, 64, "/proc/self/fd/%d", fd);
}

/*
 * Backing attributes of @in as the mount shows them: the plaintext size and
 * the modification time the kernel sent last (mtime.h).
 */
static void to_plain_attr(struct envfs *fs, struct inode *in, struct stat *st)
{
	if (S_ISREG(st->st_mode)) {
		st->st_size = (off_t)layout_plain_size(&fs->layout, (uint64_t)st->st_size);
		mtime_overlay(in, st);
	} else if (S_ISLNK(st->st_mode)) {
		st->st_size = (off_t)names_link_size(fs->names, (size_t)st->st_size);
	}
}

static int stat_inode(struct envfs *fs, struct inode *in, struct stat *st)
{
	if (fstatat(in->fd, "", st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	to_plain_attr(fs, in, st);
	return 0;
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

	if (statx(in->fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW,
		  STATX_BASIC_STATS & ~(STATX_CTIME | STATX_MTIME), &stx) < 0)
		return -errno;
	memset(st, 0, sizeof(*st));
	st->st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
	st->st_ino = (ino_t)stx.stx_ino;
	st->st_mode = stx.stx_mode;
	st->st_nlink = stx.stx_nlink;
	st->st_uid = stx.stx_uid;
	st->st_gid = stx.stx_gid;
	st->st_rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
	st->st_size = (off_t)stx.stx_size;
	st->st_blksize = (blksize_t)stx.stx_blksize;
	st->st_blocks = (blkcnt_t)stx.stx_blocks;
	st->st_atim.tv_sec = stx.stx_atime.tv_sec;
	st->st_atim.tv_nsec = stx.stx_atime.tv_nsec;
	to_plain_attr(fs, in, st);
	return 0;
}

static bool encrypted_names(struct envfs *fs)
{
	return names_encrypted(fs->names);
}

static void log_bad_name(struct envfs *fs, struct inode *dir, const char *entry,
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
static int dir_id(struct envfs *fs, struct inode *dir, const uint8_t **out)
{
	int ret = 0;

	*out = NULL;
	if (!encrypted_names(fs))
		return 0;
	pthread_mutex_lock(&dir->key_lock);
	if (!dir->dirid_known) {
		ret = names_dirid_read(dir->fd, dir->dirid);
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
static int to_backing(struct envfs *fs, struct inode *dir, const char *name,
		      struct backing_name *b)
{
	const uint8_t *id;
	int ret = dir_id(fs, dir, &id);

	return ret < 0 ? ret : names_encode(fs->names, id, is_root(fs, dir), name, b);
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

	if (names_side_read(dir->fd, b->entry, have) == 0 && strcmp(have, b->full) == 0)
		return 0;
	if (fstatat(dir->fd, b->entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return errno == ENOENT ? -ENOENT : -errno;
	log_bad_name(fs, dir, b->entry, "the side record");
	return -EIO;
}

/* Before an entry for @b is made: a long name's side record comes first. */
static int prepare_entry(struct inode *dir, const struct backing_name *b)
{
	return backing_name_is_long(b) ? names_side_write(dir->fd, b) : 0;
}

/* After an entry for @b failed to appear: drop a side record nobody uses. */
static void abandon_entry(struct inode *dir, const struct backing_name *b)
{
	struct stat st;

	if (backing_name_is_long(b) && fstatat(dir->fd, b->entry, &st, AT_SYMLINK_NOFOLLOW) < 0 &&
	    errno == ENOENT)
		names_side_remove(dir->fd, b->entry);
}

/* After the entry @b is gone: its side record goes too. */
static void entry_removed(struct inode *dir, const struct backing_name *b)
{
	if (backing_name_is_long(b))
		names_side_remove(dir->fd, b->entry);
}

/*
 * remember_link - decrypt the target of symlink @in, found as @bname
 * (plaintext @name) in @dir, and keep it in the inode for readlink.  A
 * target that does not decrypt is logged and left unset: readlink is EIO.
 */
static void remember_link(struct envfs *fs, struct inode *dir, struct inode *in,
			  const char *bname, const char *name)
{
	char stored[NAMES_TARGET_MAX + 1], *target;
	const uint8_t *id;
	ssize_t n;
	bool known;

	if (!encrypted_names(fs) || in->type != S_IFLNK)
		return;
	pthread_mutex_lock(&in->key_lock);
	known = in->link_target != NULL;
	pthread_mutex_unlock(&in->key_lock);
	if (known || dir_id(fs, dir, &id) < 0)
		return;
	n = readlinkat(dir->fd, bname, stored, sizeof(stored) - 1);
	target = malloc(NAMES_TARGET_MAX + 1);
	if (n < 0 || !target) {
		free(target);
		return;
	}
	stored[n] = '\0';
	if (names_link_open(fs->names, id, name, stored, target) < 0) {
		log_bad_name(fs, dir, bname, "the symlink target");
		free(target);
		return;
	}
	pthread_mutex_lock(&in->key_lock);
	if (!in->link_target) {
		in->link_target = target;
		target = NULL;
	}
	pthread_mutex_unlock(&in->key_lock);
	free(target);
}

/*
 * Fill @e for backing entry @bname (plaintext @name) in @parent and take a
 * kernel reference on its inode.
 */
static int lookup_backing(struct envfs *fs, struct inode *parent, const char *bname,
			  const char *name, struct fuse_entry_param *e)
{
	struct stat st;
	struct inode *in;
	int fd, ret;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->settings.attr_timeout;
	e->entry_timeout = fs->settings.entry_timeout;

	/* A known inode needs no new fd: one fstatat answers the lookup. */
	if (fstatat(parent->fd, bname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	in = inode_lookup_known(fs->inodes, &st);
	if (!in) {
		fd = openat(parent->fd, bname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
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
	remember_link(fs, parent, in, bname, name);
	to_plain_attr(fs, in, &st);
	e->ino = (fuse_ino_t)(uintptr_t)in;
	if (in == inode_table_root(fs->inodes))
		e->ino = FUSE_ROOT_ID;
	e->attr = st;
	return 0;
}

/* Fill @e for @name in @parent and take a kernel reference on its inode. */
static int do_lookup(struct envfs *fs, struct inode *parent, const char *name,
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

/* Fill @e for the file open as @fd (just created), taking a kernel reference. */
static int entry_for_fd(struct envfs *fs, int fd, struct fuse_entry_param *e)
{
	char path[64];
	struct stat st;
	struct inode *in;

	memset(e, 0, sizeof(*e));
	e->attr_timeout = fs->settings.attr_timeout;
	e->entry_timeout = fs->settings.entry_timeout;
	if (fstat(fd, &st) < 0)
		return -errno;
	in = inode_lookup_known(fs->inodes, &st);
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

static void reply_entry_or_err(fuse_req_t req, int ret, const struct fuse_entry_param *e)
{
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_entry(req, e);
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
	/* Only this daemon changes the backing tree, so the kernel may
	 * cache symlink targets, and (by default) buffer and merge writes:
	 * small and random writes then reach us as whole pages. */
	if (conn->capable & FUSE_CAP_CACHE_SYMLINKS)
		conn->want |= FUSE_CAP_CACHE_SYMLINKS;
	if (fs->settings.writeback_cache && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		fs->settings.writeback_cache = false;
}

static void envfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct fuse_entry_param e;
	int ret = do_lookup(fs, inode_of(fs, parent), name, &e);

	if (ret == 0 && S_ISREG(e.attr.st_mode))
		prefetch_file(fs->prefetch, inode_of(fs, e.ino));
	if (ret == -ENOENT) {
		/* Negative entry: the kernel may cache the absence. */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs->settings.entry_timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	reply_entry_or_err(req, ret, &e);
}

static void envfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct envfs *fs = fs_of(req);

	inode_forget(fs->inodes, inode_of(fs, ino), nlookup);
	fuse_reply_none(req);
}

static void envfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct envfs *fs = fs_of(req);

	for (size_t i = 0; i < count; i++)
		inode_forget(fs->inodes, inode_of(fs, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static void envfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct stat st;
	int ret;

	(void)fi;
	ret = stat_inode(fs, inode_of(fs, ino), &st);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_attr(req, &st, fs->settings.attr_timeout);
}

static void log_integrity(struct envfs *fs, struct inode *in, uint64_t block)
{
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	log_ratelimited(LOG_ERR, "inode %llu: block %llu fails authentication (tampered or "
				 "truncated); returning EIO",
			(unsigned long long)in->ino, (unsigned long long)block);
}

static struct content_file content_of(struct envfs *fs, struct inode *in, int fd)
{
	struct content_file f = {
		.fd = fd,
		.layout = &fs->layout,
		.owner = {.volume_uuid = fs->cfg.uuid},
	};
	if (in->dek) {
		f.owner.key = in->dek->key;
		f.owner.file_id = in->dek->file_id;
	}
	return f;
}

/*
 * stamp_mtime - mark the content of backing @fd changed now (mtime and
 * ctime), as a local file system does on every truncate and fallocate, even
 * one that changes no stored byte (same size, a hole zeroed).  The kernel
 * sends those with no time and leaves the stamp to us; with the writeback
 * cache it keeps the mtime itself (mtime.h), so the daemon does not.
 */
static int stamp_mtime(struct envfs *fs, int fd)
{
	const struct timespec now[2] = {{.tv_nsec = UTIME_OMIT}, {.tv_nsec = UTIME_NOW}};

	if (fs->settings.writeback_cache)
		return 0;
	return futimens(fd, now) < 0 ? -errno : 0;
}

/*
 * Change the size of @in through @fd (open read-write, attached).  Shrinking
 * to zero keeps the key record and needs no key; any other size needs the
 * DEK, and a record-less file gets its record first.
 */
static int truncate_file(struct envfs *fs, struct inode *in, int fd, uint64_t size)
{
	uint64_t bad_block = 0;
	int ret = 0;

	pthread_rwlock_wrlock(&in->content_lock);
	if (size > 0)
		ret = filekey_load(fs, in, fd, true);
	if (ret == 0) {
		struct content_file f = content_of(fs, in, fd);
		ret = content_truncate(&f, size, &bad_block);
		if (ret == -EIO)
			log_integrity(fs, in, bad_block);
		if (ret == 0)
			ret = stamp_mtime(fs, fd);
	}
	pthread_rwlock_unlock(&in->content_lock);
	return ret;
}

static int reopen(struct inode *in, int flags)
{
	char path[64];
	int fd;

	proc_path(in->fd, path);
	fd = open(path, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
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
	fd = reopen(in, O_RDWR);
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
		ret = utimensat(in->fd, "", tv, AT_EMPTY_PATH);
		if (ret < 0 && errno == EINVAL)
			errno = EPERM;
	} else {
		proc_path(in->fd, path);
		ret = utimensat(AT_FDCWD, path, tv, 0);
	}
	return ret < 0 ? -errno : 0;
}

/* Whether the caller of @req is a member of group @gid. */
static bool caller_in_group(fuse_req_t req, gid_t gid)
{
	gid_t few[64], *groups = few;
	int n, cap = 64;
	bool in = false;

	if (fuse_req_ctx(req)->gid == gid)
		return true;
	n = fuse_req_getgroups(req, cap, groups);
	if (n > cap) {
		/* More than fit: asked again with room for all (the list is sorted,
		 * so a group past the first 64 is no rarer than any other). */
		cap = n;
		groups = malloc((size_t)cap * sizeof(*groups));
		n = groups ? fuse_req_getgroups(req, cap, groups) : -ENOMEM;
	}
	for (int i = 0; i < n && i < cap && !in; i++)
		in = groups[i] == gid;
	if (groups != few)
		free(groups);
	return in;
}

/*
 * caller_has_fsetid - whether the caller of @req holds CAP_FSETID: the
 * kernel passes no capabilities, so its effective set is read from
 * /proc/PID/status (the caller is blocked in its system call meanwhile, so
 * the PID is still its).  Only in the daemon's user namespace: the root of
 * a namespace any user can make holds every capability there, none over
 * our files.  Unreadable, the caller counts as capable if root.
 */
static bool caller_has_fsetid(fuse_req_t req)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char path[64], line[256], ns[64] = "", own_ns[64] = "";
	unsigned long long caps = 0;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/ns/user", (int)ctx->pid);
	if (ctx->pid > 0 && readlink(path, ns, sizeof(ns) - 1) > 0 &&
	    readlink("/proc/self/ns/user", own_ns, sizeof(own_ns) - 1) > 0 && strcmp(ns, own_ns) != 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
	f = ctx->pid > 0 ? fopen(path, "re") : NULL;
	while (f && !found && fgets(line, sizeof(line), f))
		found = sscanf(line, "CapEff: %llx", &caps) == 1;
	if (f)
		fclose(f);
	return found ? (caps & (1ULL << CAP_FSETID)) != 0 : ctx->uid == 0;
}

/*
 * clear_suid_sgid - what a local filesystem does to a file written,
 * truncated, allocated or given away, when the kernel leaves it to us
 * (killpriv.h): setuid goes; setgid goes when group-executable (without
 * that it marks mandatory locking, not privilege) or when the caller is
 * neither in the file's group nor holds CAP_FSETID.  @flagged: the kernel
 * asked, having judged the caller (a write or truncate without CAP_FSETID,
 * or any chown); false for fallocate, which carries no flag: a caller with
 * CAP_FSETID then keeps both bits.  Through the open @fd, or the inode when
 * -1.  1 when the mode changed, 0 when it had nothing to clear, or -errno.
 */
static int clear_suid_sgid(fuse_req_t req, struct inode *in, int fd, bool flagged)
{
	struct statx st;
	char path[64];
	mode_t mode;
	int ret;

	/* Not the times: asking for them would cost the next fdatasync (mtime.h). */
	if (statx(in->fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MODE | STATX_GID, &st) < 0)
		return -errno;
	mode = st.stx_mode & 07777 & ~S_ISUID;
	if ((mode & S_ISGID) && ((mode & S_IXGRP) || (!caller_in_group(req, st.stx_gid) &&
						      !caller_has_fsetid(req))))
		mode &= ~S_ISGID;
	if (mode == (st.stx_mode & 07777u) || (!flagged && caller_has_fsetid(req)))
		return 0;
	if (fd < 0) {
		proc_path(in->fd, path);
		ret = chmod(path, mode);
	} else {
		ret = fchmod(fd, mode);
	}
	return ret < 0 ? -errno : 1;
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

static void envfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
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
		if (ret != 0)
			goto out;
	}
	/* A deferred mtime first: this SETATTR may set another. */
	ret = mtime_flush(in);
	if (ret < 0)
		goto out;
	if (valid & FUSE_SET_ATTR_MODE) {
		proc_path(in->fd, path);
		if ((fi ? fchmod(((struct open_file *)(uintptr_t)fi->fh)->fd, attr->st_mode)
			: chmod(path, attr->st_mode)) < 0) {
			ret = -errno;
			goto out;
		}
	}
	if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;
		if (fchownat(in->fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
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

static void envfs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char buf[PATH_MAX + 1];
	ssize_t n;

	if (encrypted_names(fs)) {
		/* Decrypted when its name was looked up (remember_link). */
		pthread_mutex_lock(&in->key_lock);
		if (in->link_target)
			snprintf(buf, sizeof(buf), "%s", in->link_target);
		pthread_mutex_unlock(&in->key_lock);
		if (in->link_target)
			fuse_reply_readlink(req, buf);
		else
			fuse_reply_err(req, EIO);
		return;
	}
	n = readlinkat(in->fd, "", buf, sizeof(buf));

	if (n < 0)
		fuse_reply_err(req, errno);
	else if ((size_t)n >= sizeof(buf))
		fuse_reply_err(req, ENAMETOOLONG);
	else {
		buf[n] = '\0';
		fuse_reply_readlink(req, buf);
	}
}

/*
 * A root daemon creates as root: hand the new entry to the caller, as the
 * kernel would have (the group of a setgid parent is inherited by the
 * backing filesystem itself, so only the owner is set then).  @name is
 * empty when @dirfd is the new file itself.
 */
static int give_to_caller(fuse_req_t req, struct inode *parent, int dirfd, const char *name,
			  mode_t asked)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int at = AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH);
	/* Only a new file asked to be setuid/setgid needs its mode read. */
	bool special = (asked & (S_ISUID | S_ISGID)) && !S_ISDIR(asked);
	struct stat pst, made;

	if (geteuid() != 0)
		return 0;
	if (fstat(parent->fd, &pst) < 0 || (special && fstatat(dirfd, name, &made, at) < 0))
		return -errno;
	gid_t gid = (pst.st_mode & S_ISGID) ? (gid_t)-1 : ctx->gid;
	if (fchownat(dirfd, name, ctx->uid, gid, at) < 0)
		return -errno;
	/*
	 * chown clears set-user-ID and set-group-ID on a non-directory; the
	 * mode is the one the caller created it with (the kernel already took
	 * away what the caller may not set), so they go back.
	 */
	if (!special || !(made.st_mode & (S_ISUID | S_ISGID)) || S_ISDIR(made.st_mode) ||
	    S_ISLNK(made.st_mode))
		return 0;
	mode_t mode = made.st_mode & 07777;
	if ((*name ? fchmodat(dirfd, name, mode, 0) : fchmod(dirfd, mode)) < 0)
		return -errno;
	return 0;
}

/* The common tail of mknod, mkdir and symlink: own it, look it up, reply. */
static void finish_new_entry(fuse_req_t req, struct envfs *fs, struct inode *parent,
			     const char *name, const struct backing_name *b, mode_t mode, int ret)
{
	struct fuse_entry_param e;

	if (ret < 0) {
		abandon_entry(parent, b);
		fuse_reply_err(req, -ret);
		return;
	}
	ret = give_to_caller(req, parent, parent->fd, b->entry, mode);
	if (ret == 0)
		ret = lookup_backing(fs, parent, b->entry, name, &e);
	reply_entry_or_err(req, ret, &e);
}

/*
 * start_new_entry - the common head of mknod and mkdir: @b gets the backing
 * name of @name in @dir and *@ret the result of placing its side record,
 * for finish_new_entry().  False when @name has no backing name: the
 * request is answered then.
 */
static bool start_new_entry(fuse_req_t req, struct envfs *fs, struct inode *dir, const char *name,
			    struct backing_name *b, int *ret)
{
	*ret = to_backing(fs, dir, name, b);
	if (*ret < 0) {
		fuse_reply_err(req, -*ret);
		return false;
	}
	*ret = prepare_entry(dir, b);
	return true;
}

static void envfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			dev_t rdev)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	int ret;

	if (!start_new_entry(req, fs, dir, name, &b, &ret))
		return;
	if (ret == 0 && mknodat(dir->fd, b.entry, mode, rdev) < 0)
		ret = -errno;
	finish_new_entry(req, fs, dir, name, &b, mode, ret);
}

/* A unique name for a directory being made or removed, hidden from listings. */
static void temp_name(char out[64])
{
	static atomic_uint_fast64_t counter;

	snprintf(out, 64, NAMES_TEMP_PREFIX "%ld.%llu", (long)getpid(),
		 (unsigned long long)atomic_fetch_add(&counter, 1));
}

/*
 * make_dir - with encrypted names a directory is made under a hidden
 * temporary name, given its ID, and only then renamed into place: a crash
 * never leaves a visible directory without an ID.
 */
static int make_dir(struct envfs *fs, struct inode *dir, const struct backing_name *b,
		    mode_t mode)
{
	char tmp[64];
	struct stat st;
	int fd, ret;

	if (!encrypted_names(fs))
		return mkdirat(dir->fd, b->entry, mode) < 0 ? -errno : 0;
	temp_name(tmp);
	/* Owner write and search, to place the ID; the mode is set after. */
	if (mkdirat(dir->fd, tmp, mode | S_IRWXU) < 0)
		return -errno;
	fd = openat(dir->fd, tmp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	ret = fd < 0 ? -errno : names_dirid_make(fd);
	if (ret == 0 && fstat(fd, &st) < 0)
		ret = -errno;
	if (ret == 0 && (st.st_mode & S_IRWXU) != (mode & S_IRWXU) &&
	    fchmodat(dir->fd, tmp, st.st_mode & ~(S_IRWXU & ~mode) & 07777, 0) < 0)
		ret = -errno;
	if (ret == 0 && renameat2(dir->fd, tmp, dir->fd, b->entry, RENAME_NOREPLACE) < 0)
		ret = -errno;
	if (ret < 0) {
		if (fd >= 0)
			unlinkat(fd, NAMES_DIRID_ENTRY, 0);
		unlinkat(dir->fd, tmp, AT_REMOVEDIR);
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

static void envfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	int ret;

	if (!start_new_entry(req, fs, dir, name, &b, &ret))
		return;
	if (ret == 0)
		ret = make_dir(fs, dir, &b, mode);
	finish_new_entry(req, fs, dir, name, &b, mode, ret);
}

static void envfs_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	char stored[NAMES_TARGET_MAX + 1];
	struct backing_name b;
	const uint8_t *id;
	int ret = to_backing(fs, dir, name, &b);

	if (ret == 0)
		ret = dir_id(fs, dir, &id);
	if (ret == 0)
		ret = names_link_seal(fs->names, id, name, target, stored);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = prepare_entry(dir, &b);
	if (ret == 0 && symlinkat(stored, dir->fd, b.entry) < 0)
		ret = -errno;
	finish_new_entry(req, fs, dir, name, &b, 0, ret);
}

static void envfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino), *dir = inode_of(fs, newparent);
	char path[64];
	struct backing_name b;
	struct fuse_entry_param e;
	int ret = to_backing(fs, dir, newname, &b);

	/* An encrypted symlink target is bound to its one name. */
	if (ret == 0 && encrypted_names(fs) && in->type == S_IFLNK)
		ret = -EPERM;
	if (ret == 0)
		ret = prepare_entry(dir, &b);
	if (ret == 0 && linkat(in->fd, "", dir->fd, b.entry, AT_EMPTY_PATH) < 0) {
		/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; go through /proc. */
		proc_path(in->fd, path);
		if (linkat(AT_FDCWD, path, dir->fd, b.entry, AT_SYMLINK_FOLLOW) < 0)
			ret = -errno;
	}
	if (ret == 0)
		ret = lookup_backing(fs, dir, b.entry, newname, &e);
	else
		abandon_entry(dir, &b);
	reply_entry_or_err(req, ret, &e);
}

static void envfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	struct stat st;
	int ret = to_backing(fs, dir, name, &b);

	if (ret == 0 && fstatat(dir->fd, b.entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (ret == 0 && unlinkat(dir->fd, b.entry, 0) < 0)
		ret = -errno;
	if (ret == 0)
		entry_removed(dir, &b);
	/* The last name of a file is gone: so is any reason to keep its key. */
	if (ret == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1)
		dekcache_forget(fs->cache, st.st_dev, st.st_ino);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

/*
 * only_volume_entries - 0 when the backing directory @fd holds nothing a
 * listing would show, else -ENOTEMPTY.  With @remove, also delete what it
 * does hold (its ID, orphan side records, a crashed mkdir's temporary
 * directory), the ID last.
 */
static int only_volume_entries(struct envfs *fs, int fd, bool remove)
{
	int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;
	struct dirent *de;
	DIR *dp;

	if (dfd < 0)
		return -errno;
	dp = fdopendir(dfd);
	if (!dp) {
		close(dfd);
		return -ENOMEM;
	}
	while (ret == 0 && (de = readdir(dp))) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (names_classify(fs->names, false, de->d_name) != NAMES_ENTRY_HIDDEN)
			ret = -ENOTEMPTY;
		else if (remove && strcmp(de->d_name, NAMES_DIRID_ENTRY) != 0 &&
			 unlinkat(dfd, de->d_name, 0) < 0 && errno == EISDIR) {
			int sub = openat(dfd, de->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub >= 0) {
				unlinkat(sub, NAMES_DIRID_ENTRY, 0);
				close(sub);
			}
			unlinkat(dfd, de->d_name, AT_REMOVEDIR);
		}
	}
	if (ret == 0 && remove && unlinkat(dfd, NAMES_DIRID_ENTRY, 0) < 0 && errno != ENOENT)
		ret = -errno;
	closedir(dp);
	return ret;
}

/*
 * remove_dir - with encrypted names a directory holds its ID: it is checked
 * to hold nothing else, moved to a hidden temporary name (so a crash never
 * leaves a visible directory without an ID), emptied and removed.
 */
static int remove_dir(struct envfs *fs, struct inode *dir, const struct backing_name *b)
{
	char tmp[64];
	int fd, ret;

	if (!encrypted_names(fs))
		return unlinkat(dir->fd, b->entry, AT_REMOVEDIR) < 0 ? -errno : 0;
	fd = openat(dir->fd, b->entry, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -ENOTDIR : -errno;
	ret = only_volume_entries(fs, fd, false);
	temp_name(tmp);
	if (ret == 0 && renameat2(dir->fd, b->entry, dir->fd, tmp, RENAME_NOREPLACE) < 0)
		ret = -errno;
	if (ret == 0)
		ret = only_volume_entries(fs, fd, true);
	if (ret == 0 && unlinkat(dir->fd, tmp, AT_REMOVEDIR) < 0) {
		ret = -errno;
		/* Put it back, empty: a fresh ID is as good as the old one. */
		names_dirid_make(fd);
		renameat2(dir->fd, tmp, dir->fd, b->entry, RENAME_NOREPLACE);
	}
	close(fd);
	if (ret == 0)
		entry_removed(dir, b);
	return ret;
}

static void envfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	int ret = to_backing(fs, dir, name, &b);

	if (ret == 0)
		ret = remove_dir(fs, dir, &b);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

/*
 * move_symlink - rename an encrypted symlink: its target is sealed anew for
 * the new name into a hidden temporary link, which is renamed into place
 * (honouring RENAME_NOREPLACE), and the old link is removed.  The link keeps
 * its owner and times.  A crash in between leaves the old and the new name,
 * never neither.
 */
static int move_symlink(struct envfs *fs, struct inode *from, const struct backing_name *b,
			const char *name, struct inode *to, const struct backing_name *bnew,
			const char *newname, unsigned int flags, const struct stat *st)
{
	char stored[NAMES_TARGET_MAX + 1], target[NAMES_TARGET_MAX + 1], tmp[64];
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	const uint8_t *from_id, *to_id;
	ssize_t n;
	int ret = dir_id(fs, from, &from_id);

	if (ret == 0)
		ret = dir_id(fs, to, &to_id);
	if (ret < 0)
		return ret;
	n = readlinkat(from->fd, b->entry, stored, sizeof(stored) - 1);
	if (n < 0)
		return -errno;
	stored[n] = '\0';
	if (names_link_open(fs->names, from_id, name, stored, target) < 0) {
		log_bad_name(fs, from, b->entry, "the symlink target");
		return -EIO;
	}
	ret = names_link_seal(fs->names, to_id, newname, target, stored);
	secmem_wipe(target, sizeof(target));
	if (ret < 0)
		return ret;
	temp_name(tmp);
	if (symlinkat(stored, to->fd, tmp) < 0)
		return -errno;
	if (fchownat(to->fd, tmp, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    utimensat(to->fd, tmp, times, AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (ret == 0)
		ret = prepare_entry(to, bnew);
	if (ret == 0 &&
	    renameat2(to->fd, tmp, to->fd, bnew->entry, flags & RENAME_NOREPLACE) < 0)
		ret = -errno;
	if (ret < 0) {
		unlinkat(to->fd, tmp, 0);
		abandon_entry(to, bnew);
		return ret;
	}
	if (unlinkat(from->fd, b->entry, 0) == 0)
		entry_removed(from, b);
	/* The kernel keeps its inode for the link: point it at the new one. */
	int fd = openat(to->fd, bnew->entry, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	struct stat made;
	if (fd >= 0 && fstat(fd, &made) == 0 && S_ISLNK(made.st_mode))
		inode_rebind(fs->inodes, st, fd, &made);
	else if (fd >= 0)
		close(fd);
	return 0;
}

/*
 * replace_dir - rename directory @b in @from over directory @bnew in @to
 * (encrypted names).  The target holds its ID, so the backing rename would
 * find it not empty: when it holds nothing else, the two are exchanged
 * (the target name never goes missing, and each directory keeps its ID) and
 * the replaced one, now under the old name, is removed as by rmdir.  A crash
 * in between leaves that empty directory under the old name, never a
 * directory without an ID.
 */
static int replace_dir(struct envfs *fs, struct inode *from, const struct backing_name *b,
		       struct inode *to, const struct backing_name *bnew)
{
	int fd = openat(to->fd, bnew->entry, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), ret;

	if (fd < 0)
		return -errno;
	ret = only_volume_entries(fs, fd, false);
	close(fd);
	if (ret == 0 && renameat2(from->fd, b->entry, to->fd, bnew->entry, RENAME_EXCHANGE) < 0)
		ret = -errno;
	if (ret < 0)
		return ret;
	ret = remove_dir(fs, from, b);
	/* Filled behind our back in between: undo the exchange. */
	if (ret < 0)
		renameat2(from->fd, b->entry, to->fd, bnew->entry, RENAME_EXCHANGE);
	return ret;
}

static void envfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			 const char *newname, unsigned int flags)
{
	struct envfs *fs = fs_of(req);
	struct inode *from = inode_of(fs, parent), *to = inode_of(fs, newparent);
	struct backing_name b, bnew;
	struct stat moved, target;
	bool replacing, have_target = false, exchange = flags & RENAME_EXCHANGE;
	bool encrypted = encrypted_names(fs);
	int ret = to_backing(fs, from, name, &b);

	if (ret == 0)
		ret = to_backing(fs, to, newname, &bnew);
	if (ret == 0 && from == to && strcmp(b.entry, bnew.entry) == 0) {
		/* Renaming an entry onto itself changes nothing. */
		fuse_reply_err(req, 0);
		return;
	}
	if (ret == 0 && (encrypted || !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE))))
		have_target = fstatat(to->fd, bnew.entry, &target, AT_SYMLINK_NOFOLLOW) == 0;
	replacing = have_target && !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)) &&
		    S_ISREG(target.st_mode) && target.st_nlink == 1;
	/* With encrypted names a symlink or a directory ID takes special care. */
	mode_t moved_type = 0, target_type = encrypted && have_target ? target.st_mode & S_IFMT : 0;
	if (ret == 0 && encrypted && fstatat(from->fd, b.entry, &moved, AT_SYMLINK_NOFOLLOW) == 0)
		moved_type = moved.st_mode & S_IFMT;
	if (exchange && (moved_type == S_IFLNK || target_type == S_IFLNK)) {
		/* Either link would land under a name its target is not sealed for. */
		ret = -EINVAL;
		goto done;
	}
	if (moved_type == S_IFLNK) {
		/* Its target is bound to its name: the link is made anew. */
		ret = move_symlink(fs, from, &b, name, to, &bnew, newname, flags, &moved);
		goto done;
	}
	if (!flags && moved_type == S_IFDIR && target_type == S_IFDIR) {
		ret = replace_dir(fs, from, &b, to, &bnew);
		goto done;
	}
	/* An exchange keeps both names, so both side records stay right. */
	if (ret == 0 && !exchange)
		ret = prepare_entry(to, &bnew);
	if (ret == 0 && renameat2(from->fd, b.entry, to->fd, bnew.entry, flags) < 0) {
		ret = -errno;
		if (!exchange)
			abandon_entry(to, &bnew);
	}
	if (ret == 0 && !exchange)
		entry_removed(from, &b);
done:
	/* A file replaced by a rename lost its last name, as by unlink. */
	if (ret == 0 && replacing)
		dekcache_forget(fs->cache, target.st_dev, target.st_ino);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

/* Backing open flags: always readable and writable where the request
 * writes (partial blocks are read back), never O_APPEND (offsets are
 * plaintext offsets, placed by us) nor O_TRUNC (setattr does it). */
static int backing_flags(int flags)
{
	int keep = flags & (O_SYNC | O_DSYNC | O_NOATIME);

	return keep | ((flags & O_ACCMODE) == O_RDONLY ? O_RDONLY : O_RDWR) | O_CLOEXEC;
}

static int attach_open_file(struct envfs *fs, struct inode *in, int fd, int flags,
			    struct fuse_file_info *fi)
{
	struct open_file *of = malloc(sizeof(*of));
	int ret;

	if (!of)
		return -ENOMEM;
	ret = filekey_attach(fs, in, fd);
	if (ret < 0) {
		free(of);
		return ret;
	}
	of->fd = fd;
	/* With the writeback cache the kernel places appends itself. */
	of->append = (flags & O_APPEND) && !fs->settings.writeback_cache;
	of->inode = in;
	handle_add(fs, &of->h, false);
	fi->fh = (uint64_t)(uintptr_t)of;
	/* Only this daemon changes the backing files: cached pages stay valid. */
	fi->keep_cache = 1;
	return 0;
}

static void envfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	int fd = reopen(in, backing_flags(fi->flags));
	int ret;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	ret = attach_open_file(fs, in, fd, fi->flags, fi);
	if (ret < 0) {
		close(fd);
		fuse_reply_err(req, -ret);
		return;
	}
	fuse_reply_open(req, fi);
}

static void envfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	struct fuse_entry_param e;
	int fd = -1;
	int ret = to_backing(fs, dir, name, &b);

	if (ret < 0)
		goto fail;
	ret = prepare_entry(dir, &b);
	if (ret < 0)
		goto fail;
	fd = openat(dir->fd, b.entry,
		    backing_flags(fi->flags) | O_CREAT | O_NOFOLLOW | (fi->flags & O_EXCL), mode);
	if (fd < 0) {
		ret = -errno;
		abandon_entry(dir, &b);
		goto fail;
	}
	ret = give_to_caller(req, dir, fd, "", mode);
	/* The entry is the file we opened, whatever the name holds by now. */
	if (ret == 0)
		ret = entry_for_fd(fs, fd, &e);
	if (ret < 0)
		goto fail;
	ret = attach_open_file(fs, inode_of(fs, e.ino), fd, fi->flags, fi);
	if (ret < 0) {
		inode_forget(fs->inodes, inode_of(fs, e.ino), 1);
		goto fail;
	}
	fuse_reply_create(req, &e, fi);
	return;
fail:
	if (fd >= 0)
		close(fd);
	fuse_reply_err(req, -ret);
}

static void envfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs, ino);
	uint64_t bad_block = 0;
	size_t done = 0;
	void *buf = content_thread_buffer();
	int ret;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_rwlock_rdlock(&in->content_lock);
	ret = filekey_load(fs, in, of->fd, false);
	if (ret == 0) {
		struct content_file f = content_of(fs, in, of->fd);
		ret = content_read(&f, buf, size, (uint64_t)off, &done, &bad_block);
		if (ret == -EIO)
			log_integrity(fs, in, bad_block);
	} else if (ret == -ENODATA) {
		ret = 0; /* no record: an empty file */
	}
	pthread_rwlock_unlock(&in->content_lock);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, done);
}

static void envfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
			struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs, ino);
	uint64_t bad_block = 0, pos = (uint64_t)off;
	int ret = 0;

	if (killpriv_take(ino)) {
		ret = clear_suid_sgid(req, in, of->fd, true);
		if (ret == 1)
			ret = killpriv_cleared(ino);
		if (ret < 0) {
			fuse_reply_err(req, -ret);
			return;
		}
	}
	pthread_rwlock_wrlock(&in->content_lock);
	/* The kernel keeps the mtime of a cached file itself (mtime.h); taken
	 * before the key record, whose first write moves it too. */
	if (fs->settings.writeback_cache)
		ret = mtime_hold(in, of->fd);
	if (ret == 0)
		ret = filekey_load(fs, in, of->fd, true);
	if (ret == 0 && of->append)
		ret = content_size(of->fd, &fs->layout, &pos);
	if (ret == 0) {
		struct content_file f = content_of(fs, in, of->fd);
		ret = content_write(&f, buf, size, pos, &bad_block);
		if (ret == -EIO)
			log_integrity(fs, in, bad_block);
	}
	pthread_rwlock_unlock(&in->content_lock);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_write(req, size);
}

static void envfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)fi;
	/* Only a deferred mtime waits in the daemon; locks are the kernel's. */
	fuse_reply_err(req, -mtime_flush(inode_of(fs_of(req), ino)));
}

static void open_file_close(struct envfs *fs, struct open_file *of)
{
	handle_remove(fs, &of->h);
	filekey_detach(fs, of->inode);
	close(of->fd);
	free(of);
}

static void envfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	int ret = mtime_flush(inode_of(fs, ino)); /* sent after the close's FLUSH */

	if (ret < 0)
		log_ratelimited(LOG_WARNING, "inode %llu: cannot set its modification time: %s",
				(unsigned long long)inode_of(fs, ino)->ino, strerror(-ret));
	open_file_close(fs, (struct open_file *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* fdatasync leaves a deferred mtime deferred: it promises none (mtime.h). */
static void envfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	int ret = datasync ? 0 : mtime_flush(inode_of(fs_of(req), ino));

	if (ret == 0 && (datasync ? fdatasync(of->fd) : fsync(of->fd)) < 0)
		ret = -errno;
	fuse_reply_err(req, -ret);
}

static void envfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_dir *d = calloc(1, sizeof(*d));
	int fd;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = openat(inode_of(fs, ino)->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d->dp = fdopendir(fd))) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	fi->keep_cache = 1;
	fi->cache_readdir = 1;
	handle_add(fs, &d->h, true);
	fuse_reply_open(req, fi);
}

/*
 * entry_name - the name to show for backing entry @entry of @dir (ID @id):
 * 0, or -ENOENT for the volume's own entries and, logged, for entries whose
 * name or side record is not authentic: a listing skips them.
 */
static int entry_name(struct envfs *fs, struct inode *dir, const uint8_t *id,
		      const char *entry, char *name)
{
	char full[NAMES_FULL_MAX + 1];
	bool is_long = names_classify(fs->names, is_root(fs, dir), entry) == NAMES_ENTRY_LONG;
	int ret = 0;

	if (is_long && names_side_read(dir->fd, entry, full) < 0)
		ret = -EBADMSG;
	if (ret == 0)
		ret = names_decode(fs->names, id, is_root(fs, dir), entry, is_long ? full : NULL,
				   name);
	if (ret == -EBADMSG) {
		log_bad_name(fs, dir, entry, is_long ? "the name or side record" : "the name");
		ret = -ENOENT;
	}
	return ret;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi, bool plus)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, ino);
	struct open_dir *d = (struct open_dir *)(uintptr_t)fi->fh;
	char *buf, *p;
	size_t rem = size;
	const uint8_t *id;
	int err = -dir_id(fs, dir, &id);

	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	buf = p = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (offset != d->offset) {
		seekdir(d->dp, offset);
		d->entry = NULL;
		d->offset = offset;
	}
	for (;;) {
		char name[NAMES_MAX + 1];
		struct fuse_entry_param e;
		size_t n;

		if (!d->entry) {
			errno = 0;
			d->entry = readdir(d->dp);
			if (!d->entry) {
				err = errno;
				break;
			}
		}
		off_t next = d->entry->d_off;
		bool dots = strcmp(d->entry->d_name, ".") == 0 ||
			    strcmp(d->entry->d_name, "..") == 0;

		if (dots)
			snprintf(name, sizeof(name), "%s", d->entry->d_name);
		else if (entry_name(fs, dir, id, d->entry->d_name, name) < 0)
			goto skip;
		if (plus && !dots) {
			int ret = lookup_backing(fs, dir, d->entry->d_name, name, &e);
			if (ret == -ENOENT)
				goto skip; /* gone since readdir saw it */
			if (ret < 0) {
				err = -ret;
				break;
			}
		} else {
			memset(&e, 0, sizeof(e));
			e.attr.st_ino = d->entry->d_ino;
			e.attr.st_mode = (mode_t)d->entry->d_type << 12;
		}
		n = plus ? fuse_add_direntry_plus(req, p, rem, name, &e, next)
			 : fuse_add_direntry(req, p, rem, name, &e.attr, next);
		if (n > rem) {
			/* Full: undo the lookup; the entry is returned next time. */
			if (plus && !dots)
				inode_forget(fs->inodes, inode_of(fs, e.ino), 1);
			break;
		}
		p += n;
		rem -= n;
		if (plus && !dots && S_ISREG(e.attr.st_mode))
			prefetch_file(fs->prefetch, inode_of(fs, e.ino));
skip:
		d->entry = NULL;
		d->offset = next;
	}
	if (err && p == buf)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, size - rem);
	free(buf);
}

static void envfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			  struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, false);
}

static void envfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			      struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, offset, fi, true);
}

static void open_dir_close(struct envfs *fs, struct open_dir *d)
{
	handle_remove(fs, &d->h);
	closedir(d->dp);
	free(d);
}

static void envfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	open_dir_close(fs_of(req), (struct open_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void envfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			   struct fuse_file_info *fi)
{
	struct open_dir *d = (struct open_dir *)(uintptr_t)fi->fh;
	int fd = dirfd(d->dp);
	int ret = datasync ? fdatasync(fd) : fsync(fd);

	(void)ino;
	fuse_reply_err(req, ret < 0 ? errno : 0);
}

static void envfs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct envfs *fs = fs_of(req);
	struct statvfs sv;

	if (fstatvfs(inode_of(fs, ino)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

/* The key record's xattr and the daemon's virtual names are not the user's. */
static bool volume_xattr(const char *name)
{
	return strcmp(name, VOLUME_XATTR_NAME) == 0 ||
	       strncmp(name, VIRTUAL_XATTR_PREFIX, strlen(VIRTUAL_XATTR_PREFIX)) == 0;
}

/* @in as a JSON string body: quotes, backslashes and control bytes escaped. */
static void json_escape(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	for (; *in && n + 7 < cap; in++) {
		unsigned char c = (unsigned char)*in;
		if (c == '"' || c == '\\')
			n += (size_t)snprintf(out + n, cap - n, "\\%c", c);
		else if (c < 0x20)
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", c);
		else
			out[n++] = (char)c;
	}
	out[n] = '\0';
}

static int status_json(struct envfs *fs, char *out, size_t cap)
{
	struct dekcache_stats cs;
	struct dek_pool_stats ps;
	struct prefetch_stats pf;
	char uuid[37], backing[3 * PATH_MAX];
	struct kms_remote_stats rs;
	char service[256] = "", previous[6 * KMS_MAX_REF + 32] = "", ref[6 * KMS_MAX_REF + 1];
	const struct kms_set *set = kms_keeper_get(fs->keys);
	struct kms *kms = set->keys.current;
	uint32_t current = 0;
	int n;

	dekcache_get_stats(fs->cache, &cs);
	dek_pool_get_stats(set->pool, &ps);
	prefetch_get_stats(fs->prefetch, &pf);
	kms_remote_stats(kms, &rs);
	if (set->keys.previous) {
		json_escape(set->keys.previous->key_ref, ref, sizeof(ref));
		snprintf(previous, sizeof(previous), ",\"previous_key_ref\":\"%s\"", ref);
	}
	if (rs.remote)
		snprintf(service, sizeof(service),
			 ",\"service\":{\"calls\":%" PRIu64 ",\"retries\":%" PRIu64
			 ",\"failures\":%" PRIu64 ",\"throttled\":%" PRIu64
			 ",\"latency_us\":%" PRIu64 ",\"breaker\":\"%s\",\"breaker_opens\":%" PRIu64
			 "}",
			 rs.calls, rs.retries, rs.failures, rs.throttled, rs.latency_us, rs.breaker,
			 rs.breaker_opens);
	json_escape(fs->backing, backing, sizeof(backing));
	if (kms_current_version(kms, &current) < 0)
		current = 0;
	else
		dek_pool_note_version(set->pool, current); /* rotate reads this first */
	uuid_format(fs->cfg.uuid, uuid);
	n = snprintf(out, cap,
		     "{\"volume\":\"%s\",\"backing\":\"%s\",\"kms\":{\"provider\":\"%s\","
		     "\"key_ref\":\"%s\"%s,\"current_version\":%u,\"generate\":%" PRIu64 ",\"unwrap\":%" PRIu64
		     ",\"rewrap\":%" PRIu64 ",\"wrap\":%" PRIu64 ",\"failures\":%" PRIu64 "%s},"
		     "\"cache\":{\"entries\":%" PRIu64 ",\"pinned\":%" PRIu64 ",\"hits\":%" PRIu64
		     ",\"misses\":%" PRIu64 ",\"evictions\":%" PRIu64 ",\"max_entries\":%u,"
		     "\"max_age\":%u},"
		     "\"pool\":{\"capacity\":%" PRIu64 ",\"entries\":%" PRIu64 ",\"hits\":%" PRIu64
		     ",\"misses\":%" PRIu64 ",\"dropped\":%" PRIu64 "},"
		     "\"prefetch\":{\"enabled\":%s,\"queued\":%" PRIu64 ",\"unwrapped\":%" PRIu64
		     ",\"skipped\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"overflow\":%" PRIu64
		     ",\"batches\":%" PRIu64 "},"
		     "\"errors\":{\"integrity\":%" PRIu64 ",\"key\":%" PRIu64 "},"
		     "\"inodes\":%" PRIu64 ",\"uptime\":%lld,"
		     "\"daemon\":{\"pid\":%d,\"version\":\"%s\",\"writeback_cache\":%s,"
		     "\"handle_killpriv_v2\":%s}}\n",
		     uuid, backing, kms->ops->name, kms->key_ref, previous, current,
		     (uint64_t)kms->counters.generate, (uint64_t)kms->counters.unwrap,
		     (uint64_t)kms->counters.rewrap, (uint64_t)kms->counters.wrap,
		     (uint64_t)kms->counters.failures, service,
		     cs.entries, cs.pinned, cs.hits, cs.misses, cs.evictions,
		     fs->settings.cache_entries, fs->settings.cache_max_age,
		     ps.capacity, ps.entries, ps.hits, ps.misses, ps.dropped,
		     fs->prefetch ? "true" : "false", pf.queued, pf.unwrapped, pf.skipped, pf.failed,
		     pf.overflow, pf.batches,
		     (uint64_t)atomic_load(&fs->counters.integrity_errors),
		     (uint64_t)atomic_load(&fs->counters.key_errors), inode_count(fs->inodes),
		     (long long)(time(NULL) - fs->started), (int)getpid(), ENVELOPEFS_VERSION,
		     fs->settings.writeback_cache ? "true" : "false",
		     killpriv_negotiated() ? "true" : "false");
	kms_keeper_put(fs->keys, set);
	return n < 0 || (size_t)n >= cap ? -ERANGE : n;
}

static void reply_xattr_value(fuse_req_t req, const char *value, ssize_t len, size_t size)
{
	if (len < 0)
		fuse_reply_err(req, (int)-len);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)len);
	else if ((size_t)len > size)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, (size_t)len);
}

/* "VERSION KEY_REF FILE_ID\n" of a regular file's key record. */
static int key_description(struct envfs *fs, struct inode *in, char *out, size_t cap)
{
	struct key_record *rec;
	char id[33];
	int fd, n, ret;

	struct layout volkey_layout;
	bool volume_key = is_root(fs, in) && encrypted_names(fs);

	/* The root of a volume with encrypted names describes the volume key. */
	if (in->type != S_IFREG && !volume_key)
		return -ENODATA;
	fd = volume_key ? volkey_open(in->fd, O_RDONLY, &volkey_layout) : reopen(in, O_RDONLY);
	if (fd < 0)
		return fd == -EBADMSG ? -EIO : fd;
	rec = malloc(sizeof(*rec));
	if (!rec) {
		close(fd);
		return -ENOMEM;
	}
	pthread_rwlock_rdlock(&in->content_lock);
	ret = layout_read_record(volume_key ? &volkey_layout : &fs->layout, fd, rec, NULL);
	pthread_rwlock_unlock(&in->content_lock);
	close(fd);
	if (ret == 0) {
		hex_encode(rec->file_id, 16, id);
		n = snprintf(out, cap, "%u %s %s\n", rec->key_version, rec->key_ref, id);
		ret = n < 0 || (size_t)n >= cap ? -ERANGE : n;
	} else if (ret == -EBADMSG) {
		ret = -EIO;
	}
	free(rec);
	return ret;
}

/*
 * xattr_owner - the ID user xattrs of @in are bound to: a directory's ID, or
 * a regular file's key-record file ID.  @create gives a record-less (empty)
 * file its record, so that it has an ID; otherwise such a file has no user
 * xattr (-ENODATA).  Other file types hold no user xattrs.
 */
static int xattr_owner(struct envfs *fs, struct inode *in, bool create, uint8_t owner[16])
{
	struct key_record *rec;
	const uint8_t *id;
	int fd, ret;

	if (in->type == S_IFDIR) {
		ret = dir_id(fs, in, &id);
		if (ret == 0)
			memcpy(owner, id, NAMES_DIRID_LEN);
		return ret;
	}
	if (in->type != S_IFREG)
		return create ? -EPERM : -ENODATA;
	fd = reopen(in, create ? O_RDWR : O_RDONLY);
	if (fd < 0)
		return fd;
	if (create) {
		ret = filekey_attach(fs, in, fd);
		if (ret == 0) {
			pthread_rwlock_wrlock(&in->content_lock);
			ret = filekey_load(fs, in, fd, true);
			if (ret == 0)
				memcpy(owner, in->dek->file_id, RECORD_FILE_ID_LEN);
			pthread_rwlock_unlock(&in->content_lock);
			filekey_detach(fs, in);
		}
		close(fd);
		return ret;
	}
	rec = malloc(sizeof(*rec));
	if (!rec) {
		close(fd);
		return -ENOMEM;
	}
	pthread_rwlock_rdlock(&in->content_lock);
	ret = layout_read_record(&fs->layout, fd, rec, NULL);
	pthread_rwlock_unlock(&in->content_lock);
	close(fd);
	if (ret == 0)
		memcpy(owner, rec->file_id, RECORD_FILE_ID_LEN);
	free(rec);
	return ret == -EBADMSG ? -EIO : ret;
}

static void log_bad_xattr(struct envfs *fs, struct inode *in, const char *stored)
{
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	log_ratelimited(LOG_ERR, "inode %llu: xattr %s is damaged or forged (or copied from "
				 "another file)",
			(unsigned long long)in->ino, stored);
}

/* getxattr of an encrypted user xattr: the value is read and opened here. */
static ssize_t get_user_xattr(struct envfs *fs, struct inode *in, const char *name,
			      char *value, size_t size)
{
	char stored_name[NAMES_XATTR_NAME_MAX + 1], path[64];
	uint8_t owner[16], *stored;
	ssize_t len;
	int ret = xattr_owner(fs, in, false, owner);

	if (ret == 0)
		ret = names_xattr_name_seal(fs->names, owner, name, stored_name);
	if (ret < 0)
		return ret == -ERANGE ? -ENODATA : ret;
	proc_path(in->fd, path);
	len = getxattr(path, stored_name, NULL, 0);
	if (len < 0)
		return -errno;
	if (len < NAMES_XATTR_OVERHEAD) {
		log_bad_xattr(fs, in, stored_name);
		return -EIO;
	}
	if (size == 0)
		return len - NAMES_XATTR_OVERHEAD;
	stored = malloc((size_t)len);
	if (!stored)
		return -ENOMEM;
	len = getxattr(path, stored_name, stored, (size_t)len);
	if (len < 0)
		ret = -errno; /* ERANGE if it grew meanwhile: the caller retries */
	else if (len < NAMES_XATTR_OVERHEAD || (size_t)len - NAMES_XATTR_OVERHEAD > size)
		ret = len < NAMES_XATTR_OVERHEAD ? -EIO : -ERANGE;
	else if (names_xattr_value_open(fs->names, owner, name, stored, (size_t)len, value) < 0)
		ret = -EIO;
	if (ret == -EIO)
		log_bad_xattr(fs, in, stored_name);
	free(stored);
	return ret < 0 ? ret : len - NAMES_XATTR_OVERHEAD;
}

static void envfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64], *value = NULL;
	ssize_t len;

	if (volume_xattr(name)) {
		char text[4 * PATH_MAX];

		if (strcmp(name, STATUS_XATTR) == 0 && is_root(fs, in))
			len = status_json(fs, text, sizeof(text));
		else if (strcmp(name, KEY_XATTR) == 0)
			len = key_description(fs, in, text, sizeof(text));
		else
			len = -ENODATA;
		if (len != -ENODATA && fuse_req_ctx(req)->uid != 0)
			len = -EPERM;
		reply_xattr_value(req, text, len, size);
		return;
	}
	if (size > 0 && !(value = malloc(size))) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (names_xattr_is_user(fs->names, name)) {
		len = get_user_xattr(fs, in, name, value, size);
	} else {
		proc_path(in->fd, path);
		len = getxattr(path, name, value, size);
		if (len < 0)
			len = -errno;
	}
	reply_xattr_value(req, value, len, size);
	free(value);
}

static void envfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64], *list;
	ssize_t len, out = 0;
	uint8_t owner[16];
	int owner_ret = -ENODATA;

	proc_path(in->fd, path);
	/* Ask the backing file with room to spare: the hidden name is removed.
	 * A decrypted name is never longer than its sealed form. */
	len = listxattr(path, NULL, 0);
	if (len < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	list = malloc((size_t)len + 1);
	if (!list) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	len = listxattr(path, list, (size_t)len);
	if (len < 0) {
		free(list);
		fuse_reply_err(req, errno); /* ERANGE if it grew meanwhile: the caller retries */
		return;
	}
	for (ssize_t i = 0; i < len;) {
		size_t stored_n = strlen(list + i) + 1;
		char plain[NAMES_XATTR_NAME_MAX + 1];
		const char *show = list + i;

		if (names_xattr_is_user(fs->names, show) && !volume_xattr(show)) {
			if (owner_ret == -ENODATA)
				owner_ret = xattr_owner(fs, in, false, owner);
			if (owner_ret < 0 ||
			    names_xattr_name_open(fs->names, owner, show, plain) < 0) {
				/* Not this file's: skipped, like a forged file name. */
				log_bad_xattr(fs, in, show);
				show = NULL;
			} else {
				show = plain;
			}
		}
		/* A shown name is never longer than its stored form, so it
		 * never overtakes the entries still to be read. */
		if (show && !volume_xattr(show)) {
			size_t n = strlen(show) + 1;
			memmove(list + out, show, n);
			out += (ssize_t)n;
		}
		i += (ssize_t)stored_n;
	}
	reply_xattr_value(req, list, out, size);
	free(list);
}

/*
 * rotate_inode - re-wrap (ENVELOPEFS_IOC_REWRAP) or re-key
 * (ENVELOPEFS_IOC_REKEY) a regular file, under its exclusive content lock.
 * 0 when done, 1 when a re-wrap found the record already current (another
 * name of the file got there first), or -errno.
 */
static int rotate_inode(struct envfs *fs, struct inode *in, bool rekey)
{
	struct rewrap_result wrapped;
	struct rekey_result keyed;
	int fd, ret;

	if (in->type != S_IFREG)
		return -EINVAL;
	fd = reopen(in, O_RDWR);
	if (fd < 0)
		return fd;
	pthread_rwlock_wrlock(&in->content_lock);
	ret = rekey ? filekey_rekey(fs, in, fd, &keyed) : filekey_rewrap(fs, in, fd, &wrapped);
	pthread_rwlock_unlock(&in->content_lock);
	close(fd);
	if (ret == 0 && rekey)
		log_msg(LOG_DEBUG, "inode %llu: re-keyed (master-key version %u)",
			(unsigned long long)in->ino, keyed.new_version);
	else if (ret == 0)
		log_msg(LOG_DEBUG, "inode %llu: key re-wrapped from version %u to %u",
			(unsigned long long)in->ino, wrapped.old_version, wrapped.new_version);
	return ret;
}

/* Re-wrap the volume key: rotation asks for it through the mount root. */
static int rewrap_volume_key(struct envfs *fs)
{
	const struct kms_set *set = kms_keeper_get(fs->keys);
	struct rewrap_result res;
	int ret = volkey_rewrap(inode_table_root(fs->inodes)->fd, &fs->cfg, &set->keys, &res);

	kms_keeper_put(fs->keys, set);
	if (ret < 0)
		log_msg(LOG_ERR, "cannot re-wrap the volume key %s: %s", VOLKEY_NAME,
			ret == -EBADMSG	   ? "its record is corrupt"
			: ret == -ENOKEY    ? "it names a master key that is not this volume's"
			: ret == -EOVERFLOW ? "the new record does not fit its slot"
					    : kms_strerror(ret));
	else if (ret == 0)
		log_msg(LOG_INFO, "volume key %s from version %u to %u",
			res.moved ? "moved to the new KMS" : "re-wrapped", res.old_version,
			res.new_version);
	return ret < 0 ? (ret == -EBADMSG || ret == -ENOKEY || ret == -EOVERFLOW ? -EIO : ret) : 0;
}

/*
 * reload_kms - ENVELOPEFS_IOC_RELOAD_KMS: re-read the volume configuration
 * and make its providers the volume's (kmsset.h).  Its [volume] part must
 * be the mounted one's: the data depends on it.
 */
static int reload_kms(struct envfs *fs)
{
	struct volume_config cfg;
	char path[PATH_MAX], err[512];
	int ret;

	snprintf(path, sizeof(path), "%s/%s", fs->backing, VOLUME_CONFIG_NAME);
	ret = volume_config_load(path, &cfg, err, sizeof(err));
	if (ret == 0 && (memcmp(cfg.uuid, fs->cfg.uuid, 16) != 0 ||
			 cfg.block_size != fs->cfg.block_size || cfg.placement != fs->cfg.placement ||
			 cfg.header_size != fs->cfg.header_size ||
			 cfg.names_encrypted != fs->cfg.names_encrypted)) {
		ret = -EINVAL;
		snprintf(err, sizeof(err), "its [volume] section differs from the mounted volume's");
	}
	if (ret == 0)
		ret = kms_keeper_reload(fs->keys, cfg.ini, err, sizeof(err));
	volume_config_free(&cfg);
	if (ret < 0) {
		log_msg(LOG_ERR, "cannot reload the KMS settings of %s: %s", path, err);
		return ret == -ENOMEM ? ret : ret == -EINVAL ? -EINVAL : -EIO;
	}
	log_msg(LOG_NOTICE, "KMS settings of %s reloaded", fs->backing);
	return 0;
}

static int set_user_xattr(struct envfs *fs, struct inode *in, const char *path, const char *name,
			  const char *value, size_t size, int flags)
{
	char stored_name[NAMES_XATTR_NAME_MAX + 1];
	uint8_t owner[16], *stored;
	int ret = xattr_owner(fs, in, true, owner);

	if (ret == 0)
		ret = names_xattr_name_seal(fs->names, owner, name, stored_name);
	if (ret < 0)
		return ret;
	if (size > NAMES_XATTR_VALUE_MAX - NAMES_XATTR_OVERHEAD)
		return -E2BIG;
	stored = malloc(size + NAMES_XATTR_OVERHEAD);
	if (!stored)
		return -ENOMEM;
	ret = names_xattr_value_seal(fs->names, owner, name, value, size, stored);
	if (ret == 0 && setxattr(path, stored_name, stored, size + NAMES_XATTR_OVERHEAD, flags) < 0)
		ret = -errno;
	free(stored);
	return ret;
}

static void envfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
			   size_t size, int flags)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64];

	if (volume_xattr(name)) {
		fuse_reply_err(req, EPERM); /* the daemon's names are read-only */
		return;
	}
	proc_path(in->fd, path);
	if (names_xattr_is_user(fs->names, name)) {
		fuse_reply_err(req, -set_user_xattr(fs, in, path, name, value, size, flags));
		return;
	}
	fuse_reply_err(req, setxattr(path, name, value, size, flags) < 0 ? errno : 0);
}

/* The rotation ioctls (fs/status.h); every other ioctl is not ours. */
static void envfs_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
			struct fuse_file_info *fi, unsigned flags, const void *in_buf,
			size_t in_bufsz, size_t out_bufsz)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	int ret;

	(void)arg;
	(void)fi;
	(void)in_buf;
	(void)in_bufsz;
	(void)out_bufsz;
	if (flags & FUSE_IOCTL_COMPAT || (cmd != ENVELOPEFS_IOC_REWRAP && cmd != ENVELOPEFS_IOC_REKEY &&
					  cmd != ENVELOPEFS_IOC_RELOAD_KMS))
		ret = -ENOTTY;
	else if (fuse_req_ctx(req)->uid != 0)
		ret = -EPERM;
	else if (cmd == ENVELOPEFS_IOC_RELOAD_KMS)
		ret = is_root(fs, in) ? reload_kms(fs) : -EINVAL;
	else if (cmd == ENVELOPEFS_IOC_REWRAP && is_root(fs, in) && encrypted_names(fs))
		ret = rewrap_volume_key(fs);
	else
		ret = rotate_inode(fs, in, cmd == ENVELOPEFS_IOC_REKEY);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_ioctl(req, ret, NULL, 0); /* ioctl(2) returns it */
}

static void envfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	char path[64], stored_name[NAMES_XATTR_NAME_MAX + 1];
	uint8_t owner[16];
	int ret;

	if (volume_xattr(name)) {
		fuse_reply_err(req, strcmp(name, VOLUME_XATTR_NAME) == 0 ? ENODATA : EPERM);
		return;
	}

	proc_path(in->fd, path);
	if (names_xattr_is_user(fs->names, name)) {
		ret = xattr_owner(fs, in, false, owner);
		if (ret == 0)
			ret = names_xattr_name_seal(fs->names, owner, name, stored_name);
		if (ret < 0) {
			fuse_reply_err(req, ret == -ERANGE ? ENODATA : -ret);
			return;
		}
		name = stored_name;
	}
	fuse_reply_err(req, removexattr(path, name) < 0 ? errno : 0);
}

/* Permission check for mounts without default_permissions, as the kernel would do it. */
static void envfs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct envfs *fs = fs_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct stat st;
	int ret = stat_inode(fs, inode_of(fs, ino), &st);

	if (ret < 0 || mask == F_OK) {
		fuse_reply_err(req, ret < 0 ? -ret : 0);
		return;
	}
	if (ctx->uid == 0) {
		/* Root may do anything but execute a file nobody may execute. */
		bool denied = (mask & X_OK) && !S_ISDIR(st.st_mode) && !(st.st_mode & 0111);
		fuse_reply_err(req, denied ? EACCES : 0);
		return;
	}
	mode_t bits;
	if (ctx->uid == st.st_uid) {
		bits = (st.st_mode >> 6) & 7;
	} else {
		bits = caller_in_group(req, st.st_gid) ? (st.st_mode >> 3) & 7 : st.st_mode & 7;
	}
	fuse_reply_err(req, ((mode_t)mask & ~bits) ? EACCES : 0);
}

static void envfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
			    struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs, ino);
	uint64_t bad_block = 0;
	int ret;

	/* The kernel refuses PUNCH_HOLE without KEEP_SIZE and with ZERO_RANGE;
	 * shifting content (COLLAPSE/INSERT_RANGE) would re-seal everything
	 * after the range under new block indices: not offered (README.md). */
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	/* A local filesystem clears setuid/setgid here as on a write (file_modified);
	 * with KILLPRIV_V2 the kernel leaves it to us, unflagged (killpriv.h). */
	ret = killpriv_negotiated() ? clear_suid_sgid(req, in, of->fd, false) : 0;
	if (ret == 1)
		ret = killpriv_cleared(ino);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	pthread_rwlock_wrlock(&in->content_lock);
	ret = filekey_load(fs, in, of->fd, true);
	if (ret == 0) {
		struct content_file f = content_of(fs, in, of->fd);
		if (mode & FALLOC_FL_PUNCH_HOLE) {
			ret = content_zero(&f, (uint64_t)offset, (uint64_t)length,
					   FALLOC_FL_PUNCH_HOLE, &bad_block);
		} else {
			/* ZERO_RANGE reserves its space first, as ext4 does: a
			 * full disk fails it before any byte is zeroed. */
			ret = content_allocate(&f, (uint64_t)offset, (uint64_t)length,
					       mode & FALLOC_FL_KEEP_SIZE, &bad_block);
			if (ret == 0 && (mode & FALLOC_FL_ZERO_RANGE))
				ret = content_zero(&f, (uint64_t)offset, (uint64_t)length,
						   FALLOC_FL_ZERO_RANGE, &bad_block);
		}
		if (ret == -EIO)
			log_integrity(fs, in, bad_block);
		if (ret == 0)
			ret = stamp_mtime(fs, of->fd);
	}
	pthread_rwlock_unlock(&in->content_lock);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

static void envfs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
			struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs, ino);
	/* Finding holes needs no key. */
	struct content_file f = {.fd = of->fd, .layout = &fs->layout};
	uint64_t result = 0;
	int ret;

	if (fs->settings.writeback_cache) {
		/* The kernel does not write back dirty pages before asking, so the
		 * backing file may not yet hold data the caller wrote: ENOSYS makes
		 * the kernel answer itself (all data up to its own EOF), which
		 * never hides data. */
		fuse_reply_err(req, ENOSYS);
		return;
	}
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	pthread_rwlock_rdlock(&in->content_lock);
	ret = content_seek(&f, (uint64_t)off, whence, &result);
	pthread_rwlock_unlock(&in->content_lock);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_lseek(req, (off_t)result);
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
};
