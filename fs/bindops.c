/* SPDX-License-Identifier: MIT */
/* The FUSE operations' side of entry bindings: see bindops.h. */
#include "bindops.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

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
 * open_entry - the regular file @bname in @dir, open read-write into *@fd,
 * its inode (one more reference) into r->in.  1 when @bname is no regular
 * file (nothing to bind), 0, or -errno.
 */
static int open_entry(struct envfs *fs, struct inode *dir, const char *bname,
		      struct binding_rename *r, int *fd)
{
	struct stat st, path_st;
	int pfd;

	/* Never open a device or a FIFO: only a regular file has a record. */
	if (fstatat(inode_fd(dir), bname, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return 1;
	*fd = openat(inode_fd(dir), bname, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (*fd < 0)
		return errno == ELOOP || errno == EISDIR || errno == ENXIO ? 1 : -errno;
	if (fstat(*fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(*fd);
		return 1;
	}
	r->move.sole = st.st_nlink == 1;
	r->in = inode_lookup_known(fs->inodes, &st, inode_fd(dir), bname);
	if (r->in)
		return 0;
	pfd = openat(inode_fd(dir), bname, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	/* The name must still lead to the file opened above. */
	if (pfd >= 0 && (fstat(pfd, &path_st) < 0 || path_st.st_ino != st.st_ino ||
			 path_st.st_dev != st.st_dev)) {
		close(pfd);
		pfd = -1;
		errno = EAGAIN;
	}
	if (pfd >= 0)
		r->in = inode_lookup_or_add(fs->inodes, pfd, &st);
	if (!r->in) {
		int err = pfd < 0 ? -errno : -ENOMEM;

		close(*fd);
		return err;
	}
	return 0;
}

int binding_before_rename(struct envfs *fs, struct inode *from, const char *bname,
			  const char *name, struct inode *to, const char *newname,
			  struct binding_rename *r)
{
	int fd, ret;

	*r = (struct binding_rename){ .move.renamed = true };
	if (!bound_volume(fs))
		return 0;
	ret = entry_of(fs, from, name, r->move.old);
	if (ret == 0)
		ret = entry_of(fs, to, newname, r->move.new);
	if (ret == 0)
		ret = open_entry(fs, from, bname, r, &fd);
	if (ret != 0)
		return ret > 0 ? 0 : ret; /* no regular file: the rename tells */
	ret = binding_add_entry(fs, r->in, fd, &r->move);
	close(fd);
	return ret;
}

void binding_after_rename(struct envfs *fs, struct binding_rename *r, bool done)
{
	if (!r->in)
		return;
	if (done)
		binding_moved(fs, r->in, &r->move);
	inode_forget(fs->inodes, r->in, 1);
	r->in = NULL;
}

int binding_before_link(struct envfs *fs, struct inode *in, struct inode *dir,
			const char *newname)
{
	struct binding_move move = { .renamed = false };
	int fd, ret;

	if (!bound_volume(fs) || in->type != S_IFREG)
		return 0;
	ret = entry_of(fs, dir, newname, move.new);
	if (ret < 0)
		return ret;
	fd = reopen(fs, in, O_RDWR);
	if (fd < 0)
		return fd;
	ret = binding_add_entry(fs, in, fd, &move);
	close(fd);
	return ret;
}
