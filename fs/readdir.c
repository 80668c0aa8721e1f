/* SPDX-License-Identifier: MIT */
/*
 * Directory listing: opendir, readdir, readdirplus, releasedir, fsyncdir.
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

#include "scope_ops.h"
#include "log.h"
#include "prefetch.h"

static void opendir_pinned(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_dir *d = calloc(1, sizeof(*d));
	int fd;

	if (!d) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	fd = openat(inode_fd(inode_of(fs, ino)), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || !(d->dp = fdopendir(fd))) {
		int err = errno;
		if (fd >= 0)
			close(fd);
		free(d);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	/* A key scope's listing is not kept: a lock takes effect at the next
	 * listing (docs/THREAT-MODEL.md, "Key scopes"). */
	fi->keep_cache = !inode_scope(fs, inode_of(fs, ino));
	fi->cache_readdir = fi->keep_cache;
	handle_add(fs, &d->h, true);
	fuse_reply_open(req, fi);
}

void envfs_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	opendir_pinned(req, ino, fi);
	unpin(fs, in);
}

/*
 * entry_name - the name to show for backing entry @entry of @dir (ID @id):
 * 0, or -ENOENT for the volume's own entries and, logged, for entries whose
 * name or side record is not authentic: a listing skips them.
 */
static int entry_name(struct envfs *fs, struct names *codec, struct inode *dir,
		      const uint8_t *id, const char *entry, char *name)
{
	char full[NAMES_FULL_MAX + 1];
	bool is_long = names_classify(fs->names, is_root(fs, dir), entry) == NAMES_ENTRY_LONG;
	int ret = 0;

	if (is_long && names_side_read(inode_fd(dir), entry, full) < 0)
		ret = -EBADMSG;
	if (ret == 0)
		ret = names_decode(codec, id, is_root(fs, dir), entry, is_long ? full : NULL,
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
	struct names *codec;
	const uint8_t *id;
	int err = -dir_id(fs, dir, &id);

	if (!err)
		err = -inode_names(fs, dir, &codec); /* a locked scope: EACCES */
	if (err) {
		fuse_reply_err(req, err);
		return;
	}
	/* Whoever lists a directory is likely to read its files next. */
	prefetch_dir(fs->prefetch, dir, is_root(fs, dir), fuse_req_ctx(req)->uid,
		     fuse_req_ctx(req)->gid);
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
		else if (entry_name(fs, codec, dir, id, d->entry->d_name, name) < 0)
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

/* do_readdir with the directory's fd pinned (inode.h). */
static void readdir_pinned(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
			   struct fuse_file_info *fi, bool plus)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	do_readdir(req, ino, size, offset, fi, plus);
	unpin(fs, in);
}

void envfs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		   struct fuse_file_info *fi)
{
	readdir_pinned(req, ino, size, offset, fi, false);
}

void envfs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t offset,
		       struct fuse_file_info *fi)
{
	readdir_pinned(req, ino, size, offset, fi, true);
}

void open_dir_close(struct envfs *fs, struct open_dir *d)
{
	handle_remove(fs, &d->h);
	closedir(d->dp);
	free(d);
}

void envfs_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	open_dir_close(fs_of(req), (struct open_dir *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

void envfs_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
		    struct fuse_file_info *fi)
{
	struct open_dir *d = (struct open_dir *)(uintptr_t)fi->fh;
	int fd = dirfd(d->dp);
	int ret = datasync ? fdatasync(fd) : fsync(fd);

	(void)ino;
	fuse_reply_err(req, ret < 0 ? errno : 0);
}
