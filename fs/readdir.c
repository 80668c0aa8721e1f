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

#include "scope_convert.h"
#include "scope_ops.h"
#include "log.h"
#include "prefetch.h"
#include "prefetch_listing.h"

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

/* One entry of a listing: the stream's, or the snapshot's. */
struct dir_entry {
	ino_t ino;
	unsigned char type;
	const char *name; /* its backing name */
	off_t next;	  /* the offset that lists on past it */
};

static void drop_snapshot(struct open_dir *d)
{
	if (d->snapshot)
		listing_free(d->snapshot);
	free(d->snapshot);
	d->snapshot = NULL;
}

/*
 * start_listing - a listing from the start of @dir.  In a converting scope
 * the conversion renames entries from one form to the other while a
 * listing may run (it holds the directory's lock only for a getdents call,
 * not between two): the backing's offsets are hashes of the names, so a
 * listing going on by offset would miss or repeat them.  There the
 * entries are read whole as the listing begins, and listed from that copy
 * (entries made or removed after that may or may not show, as POSIX
 * allows after opendir).  A directory past LISTING_MAX entries, or out of
 * memory, is listed from the stream.
 */
static void start_listing(struct envfs *fs, struct inode *dir, struct open_dir *d)
{
	drop_snapshot(d);
	if (d->offset != 0 || d->entry) /* the stream moved: back to its start */
		rewinddir(d->dp);
	d->entry = NULL;
	d->offset = 0;
	d->snapshot_pos = 0;
	if (!scope_dir_converting(fs, dir))
		return;
	d->snapshot = calloc(1, sizeof(*d->snapshot));
	if (d->snapshot && listing_read(d->snapshot, d->dp) < 0)
		drop_snapshot(d);
	rewinddir(d->dp);
}

/* seek_listing - the listing @d goes on from @offset. */
static void seek_listing(struct open_dir *d, off_t offset)
{
	if (d->snapshot) {
		d->snapshot_pos = (size_t)offset;
	} else {
		seekdir(d->dp, offset);
		d->entry = NULL;
	}
	d->offset = offset;
}

/* peek_entry - the entry at @d's position (read once, kept until passed): 0, 1 at the end, or -errno. */
static int peek_entry(struct open_dir *d, struct dir_entry *out)
{
	if (d->snapshot) {
		const struct listing_entry *le;

		if (d->snapshot_pos >= d->snapshot->n)
			return 1;
		le = listing_at(d->snapshot, d->snapshot_pos, false);
		*out = (struct dir_entry){ .ino = le->ino, .type = le->type,
					   .name = listing_name(d->snapshot, le),
					   .next = (off_t)d->snapshot_pos + 1 };
		return 0;
	}
	if (!d->entry) {
		errno = 0;
		d->entry = readdir(d->dp);
		if (!d->entry)
			return errno ? -errno : 1;
	}
	*out = (struct dir_entry){ .ino = d->entry->d_ino, .type = d->entry->d_type,
				   .name = d->entry->d_name, .next = d->entry->d_off };
	return 0;
}

/* pass_entry - @d's position moves past the entry peek_entry gave. */
static void pass_entry(struct open_dir *d, off_t next)
{
	if (d->snapshot)
		d->snapshot_pos++;
	else
		d->entry = NULL;
	d->offset = next;
}

/*
 * plus_lookup - READDIRPLUS's lookup of entry @de (@name): by its backing
 * name, or in a snapshot whose entry has changed form since, by @name.
 */
static int plus_lookup(struct envfs *fs, struct inode *dir, const struct open_dir *d,
		       const struct dir_entry *de, const char *name, struct fuse_entry_param *e)
{
	int ret = lookup_backing(fs, dir, de->name, name, e);

	return ret == -ENOENT && d->snapshot ? lookup_name(fs, dir, name, e) : ret;
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
	if (offset == 0)
		start_listing(fs, dir, d);
	else if (offset != d->offset)
		seek_listing(d, offset);
	for (;;) {
		char name[NAMES_MAX + 1];
		struct fuse_entry_param e;
		struct dir_entry de;
		size_t n;
		int got = peek_entry(d, &de);

		if (got != 0) {
			err = got < 0 ? -got : 0;
			break;
		}
		bool dots = strcmp(de.name, ".") == 0 || strcmp(de.name, "..") == 0;

		if (dots)
			snprintf(name, sizeof(name), "%s", de.name);
		else if (entry_name(fs, codec, dir, id, de.name, name) < 0)
			goto skip;
		if (plus && !dots) {
			int ret = plus_lookup(fs, dir, d, &de, name, &e);
			if (ret == -ENOENT)
				goto skip; /* gone since readdir saw it */
			if (ret < 0) {
				err = -ret;
				break;
			}
		} else {
			memset(&e, 0, sizeof(e));
			e.attr.st_ino = de.ino;
			e.attr.st_mode = (mode_t)de.type << 12;
		}
		n = plus ? fuse_add_direntry_plus(req, p, rem, name, &e, de.next)
			 : fuse_add_direntry(req, p, rem, name, &e.attr, de.next);
		if (n > rem) {
			/* Full: undo the lookup; the entry is returned next time. */
			if (plus && !dots)
				inode_forget(fs->inodes, inode_of(fs, e.ino), 1);
			break;
		}
		p += n;
		rem -= n;
skip:
		pass_entry(d, de.next);
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
	drop_snapshot(d);
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
