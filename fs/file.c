/* SPDX-License-Identifier: MIT */
/*
 * Regular-file operations: open, create, read, write, flush, release,
 * fsync, fallocate and lseek, with content from content.c and the DEK from
 * filekey.c.
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
#include "scope_ops.h"
#include "content.h"
#include "filekey.h"
#include "fileversion.h"
#include "killpriv.h"
#include "log.h"
#include "mtime.h"
#include "prefetch.h"
#include "shared.h"

static void log_integrity(struct envfs *fs, struct inode *in, uint64_t block)
{
	atomic_fetch_add(&fs->counters.integrity_errors, 1);
	log_ratelimited(LOG_ERR, "inode %llu: block %llu fails authentication (tampered or "
				 "truncated); returning EIO",
			(unsigned long long)in->ino, (unsigned long long)block);
}

/* A file's content (content.h) with what its hole bookkeeping needs. */
struct file_content {
	struct content_file f;
	struct envfs *fs;
	struct inode *in;
};

/* content.h's declare_holes: record them in the key record (filekey.h). */
static int declare_holes(const struct content_file *f, uint64_t first, uint64_t end)
{
	const struct file_content *c = (const struct file_content *)f; /* f is its first member */

	return filekey_declare_holes(c->fs, c->in, f->fd, first, end);
}

static struct file_content content_of(struct envfs *fs, struct inode *in, int fd)
{
	struct file_content c = {
		.f = {
			.fd = fd,
			.layout = &fs->layout,
			.owner = {.volume_uuid = fs->cfg.uuid},
			.holes_trusted = fs->caps.holes_trusted,
			.declare_holes = declare_holes,
		},
		.fs = fs,
		.in = in,
	};
	if (in->dek) {
		c.f.owner.key = in->dek->key;
		c.f.owner.file_id = in->dek->file_id;
		c.f.holes = in->holes ? &in->holes->bound : NULL;
		c.f.pending = in->holes ? &in->holes->pending : NULL;
	}
	return c;
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
int truncate_file(struct envfs *fs, struct inode *in, int fd, uint64_t size)
{
	uint64_t bad_block = 0;
	int ret = 0;

	pthread_rwlock_wrlock(&in->content_lock);
	if (size > 0)
		ret = filekey_load(fs, in, fd, true);
	if (ret == 0) {
		struct file_content c = content_of(fs, in, fd);
		ret = content_truncate(&c.f, size, &bad_block);
		if (ret == -EIO)
			log_integrity(fs, in, bad_block);
	}
	/* Raised once the change is made (fileversion.h);
	 * shrinking to zero needs no key: the next write raises it. */
	if (ret == 0 && size > 0)
		ret = filekey_bump(fs, in, fd);
	if (ret == 0)
		ret = stamp_mtime(fs, fd);
	pthread_rwlock_unlock(&in->content_lock);
	return ret;
}

int reopen(struct envfs *fs, struct inode *in, int flags)
{
	char path[64];
	int fd;

	proc_path(inode_fd(in), path);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0)
		return inode_gone(fs, in, -errno);
	/* Another host may have written the file since (shared.h).  A
	 * writer needs the backing's size now (it places blocks by it); a
	 * reader gets it from the GETATTR that comes before its first read. */
	if (fs->shared && (flags & O_ACCMODE) == O_RDONLY) {
		shared_backing_drop_pages(fd);
		shared_mark_stale(in);
	} else if (fs->shared) {
		shared_backing_fresh(fd);
		shared_mark_fresh(in);
	}
	return fd;
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
	bool writable = (flags & O_ACCMODE) != O_RDONLY;
	int ret;

	if (!of)
		return -ENOMEM;
	/* An open file keeps its inode's fd (inode.h): the operations on it
	 * reach the backing inode even once it is unlinked. */
	ret = inode_pin(fs->inodes, in);
	if (ret < 0) {
		free(of);
		return ret;
	}
	/* Shared mode: a re-key on another host waits for this open to close. */
	ret = fs->shared_locks && writable ? keylock_writer_open(in, fd) : 0;
	if (ret == 0) {
		ret = filekey_attach(fs, in, fd);
		if (ret < 0 && fs->shared_locks && writable)
			keylock_writer_close(in, fd);
	}
	if (ret < 0) {
		inode_unpin(fs->inodes, in);
		free(of);
		return ret;
	}
	if (writable)
		fileversion_due(fs, in);
	of->fd = fd;
	/* With the writeback cache the kernel places appends itself. */
	of->append = (flags & O_APPEND) && !fs->settings.writeback_cache;
	of->writable = writable;
	of->inode = in;
	handle_add(fs, &of->h, false);
	fi->fh = (uint64_t)(uintptr_t)of;
	/* Cached pages stay valid unless another host may have changed the
	 * file since: shared mode reads it afresh (close-to-open); so does a
	 * key scope's file, so that a scope lock takes effect at its next
	 * open (docs/THREAT-MODEL.md, "Key scopes"). */
	fi->keep_cache = !fs->shared && !in->scope;
	return 0;
}

static void open_pinned(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);
	int fd = reopen(fs, in, backing_flags(fi->flags));
	int ret;

	if (fd < 0) {
		fuse_reply_err(req, -fd);
		return;
	}
	ret = attach_open_file(fs, in, fd, fi->flags, fi);
	if (ret < 0) {
		close(fd);
		fuse_reply_err(req, -inode_gone(fs, in, ret));
		return;
	}
	/* Shared mode: the kernel asks for the size and times again, which a
	 * read within attr_timeout would otherwise take from its cache, so
	 * this open sees what another host wrote before it (close-to-open). */
	if (fs->shared && fs->session)
		fuse_lowlevel_notify_inval_inode(fs->session, ino, -1, 0);
	fuse_reply_open(req, fi);
}

void envfs_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	open_pinned(req, ino, fi);
	unpin(fs, in);
}

static void create_pinned(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
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
	fd = openat(inode_fd(dir), b.entry,
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
	binding_looked_up(fs, dir, inode_of(fs, e.ino), name);
	inode_evict_note_name(fs->evictor, dir, inode_of(fs, e.ino), name);
	scope_inherit(fs, dir, inode_of(fs, e.ino));
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

void envfs_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		  struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	create_pinned(req, parent, name, mode, fi);
	unpin(fs, in);
}

/*
 * read_content - read through @of under the shared content lock: 0 with
 * *@done bytes, or -errno; *@bad_block is set when a block failed to
 * authenticate (-EIO from the content, not from the key).
 */
static int read_content(struct envfs *fs, struct inode *in, const struct open_file *of,
			void *buf, size_t size, off_t off, size_t *done, int64_t *bad_block)
{
	int ret;

	pthread_rwlock_rdlock(&in->content_lock);
	ret = filekey_load(fs, in, of->fd, false);
	if (ret == 0) {
		struct file_content c = content_of(fs, in, of->fd);
		uint64_t block = 0;

		ret = content_read(&c.f, buf, size, (uint64_t)off, done, &block);
		if (ret == -EIO)
			*bad_block = (int64_t)block;
	} else if (ret == -ENODATA) {
		ret = 0; /* no record: an empty file */
	}
	pthread_rwlock_unlock(&in->content_lock);
	return ret;
}

void envfs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs, ino);
	int64_t bad_block = -1;
	size_t done = 0;
	void *buf = content_thread_buffer();
	int ret;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = read_content(fs, in, of, buf, size, off, &done, &bad_block);
	/* Shared mode: another host may be re-keying or have replaced the
	 * file under the DEK this daemon holds (shared.h): once more with the
	 * record as it is now. */
	if (ret == -EIO && fs->shared && filekey_revalidate(fs, in, of->fd) == 0) {
		bad_block = -1;
		done = 0;
		ret = read_content(fs, in, of, buf, size, off, &done, &bad_block);
	}
	if (ret == -EIO && bad_block >= 0)
		log_integrity(fs, in, (uint64_t)bad_block);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, done);
}

/*
 * write_content - one write through @of at *@pos (the end, for O_APPEND),
 * loading the DEK first; a new file's first record rides with its first
 * blocks (filekey.h).  Content lock held exclusively.  -EAGAIN: try again.
 */
static int write_content(struct envfs *fs, struct inode *in, struct open_file *of,
			 const char *buf, size_t size, uint64_t *pos, uint64_t *bad_block)
{
	struct filekey_first first;
	int ret;

	if (size == 0)
		return 0; /* changes nothing, and would store no header */
	ret = filekey_load_for_write(fs, in, of->fd, &first);
	if (ret == 0 && of->append)
		ret = content_size(of->fd, &fs->layout, pos);
	if (ret == 0 && first.header && *pos != 0) {
		/* Not the file's start: the header goes first, on its own. */
		ret = layout_pwrite_full(of->fd, first.header, fs->layout.data_offset, 0);
		filekey_first_done(fs, in, &first, ret);
	}
	if (ret == 0) {
		struct file_content c = content_of(fs, in, of->fd);

		c.f.first_header = first.header;
		ret = content_write(&c.f, buf, size, *pos, bad_block);
		if (ret == -EIO)
			log_integrity(fs, in, *bad_block);
	}
	/* A record made just now is version 1: nothing to raise; else it is
	 * raised once the change is made (fileversion.h). */
	if (ret == 0 && !first.header)
		ret = filekey_bump(fs, in, of->fd);
	/* Stored with the blocks, or not at all. */
	filekey_first_done(fs, in, &first, ret);
	return ret;
}

void envfs_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
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
		ret = write_content(fs, in, of, buf, size, &pos, &bad_block);
	/* Once more when a first record this daemon made met a file that
	 * another host has just given its own (content_write()). */
	if (ret == -EAGAIN)
		ret = write_content(fs, in, of, buf, size, &pos, &bad_block);
	if (ret == -EAGAIN)
		ret = -EIO;
	pthread_rwlock_unlock(&in->content_lock);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_write(req, size);
}

void envfs_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	/* A close drops the closing process's POSIX locks on the file: the
	 * kernel's own, or in shared mode those on the backing (locks.c). */
	int ret;

	if (fs->shared_locks)
		locks_owner_closed(in, fi->lock_owner);
	ret = mtime_flush(in);
	/* Shared mode: what this open wrote reaches the backing before
	 * close(2) returns, so that another host's next open reads it (a
	 * network client may hold writes until its fd is flushed). */
	if (ret == 0 && fs->shared) {
		struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
		/* A read-only open has written nothing to flush. */
		if (of->writable)
			ret = shared_flush_backing(of->fd);
	}
	fuse_reply_err(req, -ret);
}

/*
 * settle_holes - the holes writes past the end left that are still there
 * go into the key record (content.h) before the content is synced or its
 * writer closes it: from then on a crash keeps them readable.
 */
static int settle_holes(struct envfs *fs, struct inode *in, int fd)
{
	int ret = 0;

	pthread_rwlock_wrlock(&in->content_lock);
	if (in->dek && in->holes && in->holes->pending.n > 0) {
		struct file_content c = content_of(fs, in, fd);

		ret = content_settle_holes(&c.f);
		if (ret < 0)
			log_ratelimited(LOG_ERR, "inode %llu: cannot record its holes: %s",
					(unsigned long long)in->ino, strerror(-ret));
	}
	pthread_rwlock_unlock(&in->content_lock);
	return ret;
}

void open_file_close(struct envfs *fs, struct open_file *of)
{
	if (of->writable)
		settle_holes(fs, of->inode, of->fd);
	handle_remove(fs, &of->h);
	if (fs->shared_locks) {
		locks_open_released(of->inode, of);
		if (of->writable)
			keylock_writer_close(of->inode, of->fd);
	}
	filekey_detach(fs, of->inode);
	close(of->fd);
	inode_unpin(fs->inodes, of->inode);
	free(of);
}

void envfs_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
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
void envfs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs_of(req), ino);
	struct fileversion_sync synced;
	int ret = datasync ? 0 : mtime_flush(in);

	if (ret == 0 && of->writable)
		ret = settle_holes(fs_of(req), in, of->fd);
	/* The record on the backing now is durable once the sync returns. */
	fileversion_sync_begin(fs_of(req), in, &synced);
	if (ret == 0 && (datasync && !synced.full ? fdatasync(of->fd) : fsync(of->fd)) < 0)
		ret = -errno;
	if (ret == 0)
		fileversion_sync_end(fs_of(req), in, &synced);
	fuse_reply_err(req, -ret);
}

void envfs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
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
		struct file_content c = content_of(fs, in, of->fd);
		if (mode & FALLOC_FL_PUNCH_HOLE) {
			ret = content_zero(&c.f, (uint64_t)offset, (uint64_t)length,
					   FALLOC_FL_PUNCH_HOLE, &bad_block);
		} else {
			/* ZERO_RANGE reserves its space first, as ext4 does: a
			 * full disk fails it before any byte is zeroed. */
			ret = content_allocate(&c.f, (uint64_t)offset, (uint64_t)length,
					       mode & FALLOC_FL_KEEP_SIZE, &bad_block);
			if (ret == 0 && (mode & FALLOC_FL_ZERO_RANGE))
				ret = content_zero(&c.f, (uint64_t)offset, (uint64_t)length,
						   FALLOC_FL_ZERO_RANGE, &bad_block);
		}
		if (ret == -EIO)
			log_integrity(fs, in, bad_block);
	}
	/* Raised once the change is made (fileversion.h). */
	if (ret == 0)
		ret = filekey_bump(fs, in, of->fd);
	if (ret == 0)
		ret = stamp_mtime(fs, of->fd);
	pthread_rwlock_unlock(&in->content_lock);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

void envfs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		 struct fuse_file_info *fi)
{
	struct envfs *fs = fs_of(req);
	struct open_file *of = (struct open_file *)(uintptr_t)fi->fh;
	struct inode *in = inode_of(fs, ino);
	/* Finding holes needs no key. */
	struct content_file f = {
		.fd = of->fd, .layout = &fs->layout, .holes_trusted = fs->caps.holes_trusted};
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
