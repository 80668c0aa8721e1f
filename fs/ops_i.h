/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_OPS_I_H
#define ENVELOPEFS_FS_OPS_I_H

/*
 * What the files of the FUSE operations share (ops.c, attr.c, perm.c,
 * lookup.c, dir.c, file.c, readdir.c, xattr.c, status.c, ioctl.c): open
 * handles, the node-id and name helpers, and each file's operations for the
 * table in ops.c.  Not a public interface: the daemon's entry is ops.h.
 *
 * Backing access: every inode names its backing inode by an O_PATH fd,
 * usable while pinned (inode.h): each handler pins the inodes it works on
 * (pin_or_reply) and unpins them when done; name operations use the *at()
 * calls on the parent's fd, and operations that need a real fd reopen the
 * inode through /proc/self/fd/N.
 */

#include "ops.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <dirent.h>
#include <sys/stat.h>

#include "envfs.h"
#include "names.h"


/* An open regular file: the backing fd, opened for reading and writing
 * whatever the caller asked, so that partial blocks can be re-sealed. */
struct open_file {
	struct handle h; /* first: a struct handle * is a struct open_file * */
	int fd;
	bool append;
	bool writable;
	struct inode *inode;
};

struct listing;

struct open_dir {
	struct handle h; /* first, as above */
	DIR *dp;
	off_t offset;
	struct dirent *entry; /* read but not yet returned */
	/* In a converting scope, the entries as the listing began (readdir.c);
	 * offsets are then positions in it, not the stream's. */
	struct listing *snapshot;
	size_t snapshot_pos;
};

static inline struct envfs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static inline struct inode *inode_of(struct envfs *fs, fuse_ino_t ino)
{
	if (ino == FUSE_ROOT_ID)
		return inode_table_root(fs->inodes);
	return (struct inode *)(uintptr_t)ino;
}

static inline bool is_root(struct envfs *fs, const struct inode *in)
{
	return in == inode_table_root(fs->inodes);
}

static inline void proc_path(int fd, char out[64])
{
	snprintf(out, 64, "/proc/self/fd/%d", fd);
}

static inline bool encrypted_names(struct envfs *fs)
{
	return names_encrypted(fs->names);
}

/* ops.c */
void handle_add(struct envfs *fs, struct handle *h, bool is_dir);
void handle_remove(struct envfs *fs, struct handle *h);

/* attr.c */
void to_plain_attr(struct envfs *fs, struct inode *in, struct stat *st);
int stat_inode(struct envfs *fs, struct inode *in, struct stat *st);
void envfs_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void envfs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int valid,
		   struct fuse_file_info *fi);
void envfs_statfs(fuse_req_t req, fuse_ino_t ino);

/* perm.c */
int clear_suid_sgid(fuse_req_t req, struct inode *in, int fd, bool flagged);
int give_to_caller(fuse_req_t req, struct inode *parent, int dirfd, const char *name,
		   mode_t asked);
void envfs_access(fuse_req_t req, fuse_ino_t ino, int mask);

/* lookup.c */
void log_bad_name(struct envfs *fs, struct inode *dir, const char *entry,
		  const char *what);
int dir_id(struct envfs *fs, struct inode *dir, const uint8_t **out);
int to_backing(struct envfs *fs, struct inode *dir, const char *name,
	       struct backing_name *b);
int prepare_entry(struct inode *dir, const struct backing_name *b);
void abandon_entry(struct inode *dir, const struct backing_name *b);
int lookup_backing(struct envfs *fs, struct inode *parent, const char *bname,
		   const char *name, struct fuse_entry_param *e);
/* lookup_name - LOOKUP of @name in @parent: fill @e, taking a kernel reference.  0 or -errno. */
int lookup_name(struct envfs *fs, struct inode *parent, const char *name,
		struct fuse_entry_param *e);
int entry_for_fd(struct envfs *fs, int fd, struct fuse_entry_param *e);
/* fstatat_fresh - fstatat of @name in @dirfd, asking the backing now, not its caches. */
int fstatat_fresh(int dirfd, const char *name, struct stat *st);
/*
 * inode_gone - pass on @err from a backing call on @in; in shared mode an
 * ESTALE or ENOENT (another host replaced or removed the file) marks @in
 * stale and becomes ESTALE, so that the kernel retries the lookup
 * (LOOKUP_REVAL), which finds the name's new inode past the backing's own
 * name cache.
 */
int inode_gone(struct envfs *fs, struct inode *in, int err);

/*
 * pin_or_reply - pin @in for this request (inode_pin()), or answer the
 * request with the error (ESTALE when its backing inode is gone, passed
 * through inode_gone()) and return false.  unpin() follows, before or after
 * the reply.
 */
static inline bool pin_or_reply(fuse_req_t req, struct envfs *fs, struct inode *in)
{
	int ret = inode_gone(fs, in, inode_pin(fs->inodes, in));

	if (ret < 0)
		fuse_reply_err(req, -ret);
	return ret == 0;
}

static inline void unpin(struct envfs *fs, struct inode *in)
{
	inode_unpin(fs->inodes, in);
}
void reply_entry_or_err(fuse_req_t req, int ret, const struct fuse_entry_param *e);
void envfs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void envfs_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup);
void envfs_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets);
void envfs_readlink(fuse_req_t req, fuse_ino_t ino);

/* dir.c */
void envfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		 dev_t rdev);
void envfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void envfs_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name);
void envfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void envfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void envfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void envfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags);

/* file.c */
int truncate_file(struct envfs *fs, struct inode *in, int fd, uint64_t size);
/* reopen - a new fd on @in's backing inode, with @flags; fresh from the
 * backing in shared mode (shared_backing_fresh()).  The fd, or -errno. */
int reopen(struct envfs *fs, struct inode *in, int flags);
void envfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void envfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi);
void envfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi);
void envfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		 struct fuse_file_info *fi);
void envfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void open_file_close(struct envfs *fs, struct open_file *of);
void envfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void envfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void envfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		     struct fuse_file_info *fi);
void envfs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		 struct fuse_file_info *fi);

/* readdir.c */
void envfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void envfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		   struct fuse_file_info *fi);
void envfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi);
void open_dir_close(struct envfs *fs, struct open_dir *d);
void envfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void envfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi);

/* xattr.c */
void envfs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void envfs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void envfs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		    size_t size, int flags);
void envfs_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);

/* locks.c */
void envfs_getlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock);
void envfs_setlk(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, struct flock *lock,
		 int sleep);
void envfs_flock(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi, int op);
/* locks_owner_closed - @owner closed the file: its POSIX locks go (FLUSH). */
void locks_owner_closed(struct inode *in, uint64_t owner);
/* locks_open_released - the open @of is gone: the locks first taken through it go. */
void locks_open_released(struct inode *in, const struct open_file *of);

/* status.c */
int status_json(struct envfs *fs, char *out, size_t cap);

/* ioctl.c */
void envfs_ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void *arg,
		 struct fuse_file_info *fi, unsigned flags, const void *in_buf,
		 size_t in_bufsz, size_t out_bufsz);

#endif
