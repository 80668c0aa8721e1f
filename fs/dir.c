/* SPDX-License-Identifier: MIT */
/*
 * Directory operations that make, link, remove and rename entries: mknod,
 * mkdir, symlink, link, unlink, rmdir, rename.
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
#include "crypto/secmem.h"
#include "backing_rename.h"
#include "bindops.h"
#include "fileversion.h"
#include "log.h"
#include "shared.h"
#include "symlink.h"

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
	ret = give_to_caller(req, parent, inode_fd(parent), b->entry, mode);
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

static void mknod_pinned(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			 dev_t rdev)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	int ret;

	if (!start_new_entry(req, fs, dir, name, &b, &ret))
		return;
	if (ret == 0 && mknodat(inode_fd(dir), b.entry, mode, rdev) < 0)
		ret = -errno;
	finish_new_entry(req, fs, dir, name, &b, mode, ret);
}

void envfs_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		 dev_t rdev)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	mknod_pinned(req, parent, name, mode, rdev);
	unpin(fs, in);
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
		return mkdirat(inode_fd(dir), b->entry, mode) < 0 ? -errno : 0;
	shared_temp_name(tmp);
	/* Owner write and search, to place the ID; the mode is set after. */
	if (mkdirat(inode_fd(dir), tmp, mode | S_IRWXU) < 0)
		return -errno;
	fd = openat(inode_fd(dir), tmp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	ret = fd < 0 ? -errno : names_dirid_make(fd);
	if (ret == 0 && fstat(fd, &st) < 0)
		ret = -errno;
	if (ret == 0 && (st.st_mode & S_IRWXU) != (mode & S_IRWXU) &&
	    fchmodat(inode_fd(dir), tmp, st.st_mode & ~(S_IRWXU & ~mode) & 07777, 0) < 0)
		ret = -errno;
	if (ret == 0)
		ret = backing_rename_noreplace(&fs->caps, inode_fd(dir), tmp, inode_fd(dir),
					       b->entry, true, true);
	if (ret < 0) {
		if (fd >= 0)
			unlinkat(fd, NAMES_DIRID_ENTRY, 0);
		unlinkat(inode_fd(dir), tmp, AT_REMOVEDIR);
	}
	if (fd >= 0)
		close(fd);
	return ret;
}

static void mkdir_pinned(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
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

void envfs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	mkdir_pinned(req, parent, name, mode);
	unpin(fs, in);
}

static void symlink_pinned(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	int ret;

	if (!start_new_entry(req, fs, dir, name, &b, &ret))
		return;
	if (ret == 0)
		ret = symlink_write(fs, dir, name, target, inode_fd(dir), b.entry);
	finish_new_entry(req, fs, dir, name, &b, 0, ret);
}

void envfs_symlink(fuse_req_t req, const char *target, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	symlink_pinned(req, target, parent, name);
	unpin(fs, in);
}

static void link_pinned(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino), *dir = inode_of(fs, newparent);
	char path[64];
	struct backing_name b;
	struct fuse_entry_param e;
	struct binding_change binding = {.fd = -1};
	struct scope *scope = NULL;
	int ret = to_backing(fs, dir, newname, &b);

	/* A key stays in its scope: across a boundary, as across file systems. */
	if (ret == 0)
		ret = scope_cross(fs, in, dir);
	/* A version-1 symlink target is bound to its one name. */
	if (ret == 0 && in->type == S_IFLNK) {
		ret = symlink_bound_to_name(fs, inode_fd(in), "");
		ret = ret > 0 ? -EPERM : ret;
	}
	if (ret == 0)
		ret = binding_before_link(fs, in, dir, newname, &binding);
	if (ret == 0)
		ret = prepare_entry(dir, &b);
	if (ret == 0)
		scope = scope_entry_moving(fs, dir);
	if (ret == 0 && linkat(inode_fd(in), "", inode_fd(dir), b.entry, AT_EMPTY_PATH) < 0) {
		/* AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH; go through /proc. */
		proc_path(inode_fd(in), path);
		if (linkat(AT_FDCWD, path, inode_fd(dir), b.entry, AT_SYMLINK_FOLLOW) < 0)
			ret = -errno;
	}
	scope_entry_moved(scope, ret == 0);
	binding_after(fs, &binding, ret == 0);
	if (ret == 0)
		ret = lookup_backing(fs, dir, b.entry, newname, &e);
	else
		abandon_entry(dir, &b);
	reply_entry_or_err(req, ret, &e);
}

void envfs_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct envfs *fs = fs_of(req);
	struct inode *a = inode_of(fs, ino), *b = inode_of(fs, newparent);

	if (!pin_or_reply(req, fs, a))
		return;
	if (!pin_or_reply(req, fs, b)) {
		unpin(fs, a);
		return;
	}
	link_pinned(req, ino, newparent, newname);
	unpin(fs, b);
	unpin(fs, a);
}

static void unlink_pinned(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	struct symlink_drop drop = {.fd = -1};
	struct fileversion_unlink version = {.known = false};
	struct stat st;
	int ret = to_backing(fs, dir, name, &b);

	if (ret == 0 && fstatat(inode_fd(dir), b.entry, &st, AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (ret == 0)
		symlink_drop_begin(fs, inode_fd(dir), b.entry, &st, &drop);
	if (ret == 0)
		fileversion_unlink_begin(fs, inode_fd(dir), b.entry, &st, &version);
	if (ret == 0 && unlinkat(inode_fd(dir), b.entry, 0) < 0)
		ret = -errno;
	symlink_drop_end(fs, &drop, ret == 0);
	fileversion_unlink_end(fs, &version, ret == 0);
	if (ret == 0) {
		abandon_entry(dir, &b);
		inode_evict_note_unlinked(fs->evictor, &st);
	}
	/* The last name of a file is gone: so is any reason to keep its key. */
	if (ret == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1)
		dekcache_forget(fs->cache, st.st_dev, st.st_ino);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

void envfs_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	unlink_pinned(req, parent, name);
	unpin(fs, in);
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
	uint8_t id[NAMES_DIRID_LEN];
	bool have_id;
	char tmp[64];
	int fd, ret;

	if (!encrypted_names(fs))
		return unlinkat(inode_fd(dir), b->entry, AT_REMOVEDIR) < 0 ? -errno : 0;
	fd = openat(inode_fd(dir), b->entry, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -ENOTDIR : -errno;
	have_id = names_dirid_read(fd, id) == 0; /* a scope's root takes its definition along */
	ret = only_volume_entries(fs, fd, false);
	shared_temp_name(tmp);
	if (ret == 0)
		ret = backing_rename_noreplace(&fs->caps, inode_fd(dir), b->entry, inode_fd(dir),
					       tmp, true, true);
	if (ret == 0)
		ret = only_volume_entries(fs, fd, true);
	if (ret == 0 && unlinkat(inode_fd(dir), tmp, AT_REMOVEDIR) < 0) {
		ret = -errno;
		/* Put it back, empty: a fresh ID is as good as the old one. */
		names_dirid_make(fd);
		backing_rename_noreplace(&fs->caps, inode_fd(dir), tmp, inode_fd(dir), b->entry,
					 true, true);
	}
	close(fd);
	if (ret == 0)
		abandon_entry(dir, b);
	if (ret == 0 && have_id)
		scope_removed(fs, id);
	return ret;
}

static void rmdir_pinned(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *dir = inode_of(fs, parent);
	struct backing_name b;
	int ret = to_backing(fs, dir, name, &b);

	if (ret == 0)
		ret = remove_dir(fs, dir, &b);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

void envfs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, parent);

	if (!pin_or_reply(req, fs, in))
		return;
	rmdir_pinned(req, parent, name);
	unpin(fs, in);
}

/*
 * move_symlink - rename a version-1 symlink, bound to its name: its target
 * is sealed anew for the new name (on a version-2 volume, as a version-2
 * link) into a hidden temporary link, which is renamed into place
 * (honouring RENAME_NOREPLACE), and the old link is removed.  The link
 * keeps its owner and times.  A crash in between leaves the old and the new
 * name, never neither.
 */
static int move_symlink(struct envfs *fs, struct inode *from, const struct backing_name *b,
			const char *name, struct inode *to, const struct backing_name *bnew,
			const char *newname, unsigned int flags, const struct stat *st)
{
	char stored[NAMES_TARGET_MAX + 1], target[NAMES_TARGET_MAX + 1], tmp[64];
	struct timespec times[2] = {st->st_atim, st->st_mtim};
	struct names *codec;
	const uint8_t *from_id;
	ssize_t n;
	int ret = dir_id(fs, from, &from_id);

	if (ret == 0)
		ret = inode_names(fs, from, &codec);
	if (ret < 0)
		return ret;
	n = readlinkat(inode_fd(from), b->entry, stored, sizeof(stored) - 1);
	if (n < 0)
		return -errno;
	stored[n] = '\0';
	if (names_link_open(codec, from_id, name, stored, target) < 0) {
		log_bad_name(fs, from, b->entry, "the symlink target");
		return -EIO;
	}
	shared_temp_name(tmp);
	ret = symlink_write(fs, to, newname, target, inode_fd(to), tmp);
	secmem_wipe(target, sizeof(target));
	if (ret < 0)
		return ret;
	if (fchownat(inode_fd(to), tmp, st->st_uid, st->st_gid, AT_SYMLINK_NOFOLLOW) < 0 ||
	    utimensat(inode_fd(to), tmp, times, AT_SYMLINK_NOFOLLOW) < 0)
		ret = -errno;
	if (ret == 0)
		ret = prepare_entry(to, bnew);
	if (ret == 0 && (flags & RENAME_NOREPLACE))
		ret = backing_rename_noreplace(&fs->caps, inode_fd(to), tmp, inode_fd(to),
					       bnew->entry, false, false);
	else if (ret == 0 && renameat(inode_fd(to), tmp, inode_fd(to), bnew->entry) < 0)
		ret = -errno;
	if (ret < 0) {
		struct symlink_drop drop = {.fd = -1};
		struct stat made;

		/* The new link goes again, and with it any store file made for it. */
		if (fstatat(inode_fd(to), tmp, &made, AT_SYMLINK_NOFOLLOW) == 0)
			symlink_drop_begin(fs, inode_fd(to), tmp, &made, &drop);
		symlink_drop_end(fs, &drop, unlinkat(inode_fd(to), tmp, 0) == 0);
		abandon_entry(to, bnew);
		return ret;
	}
	if (unlinkat(inode_fd(from), b->entry, 0) == 0)
		abandon_entry(from, b);
	/* The kernel keeps its inode for the link: point it at the new one. */
	int fd = openat(inode_fd(to), bnew->entry, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	struct stat made;
	if (fd >= 0 && fstat(fd, &made) == 0 && S_ISLNK(made.st_mode))
		inode_rebind(fs->inodes, st, fd, &made);
	else if (fd >= 0)
		close(fd);
	return 0;
}

/*
 * replace_dir_unswapped - replace_dir() on a backing without
 * RENAME_EXCHANGE: the empty target (open as @target_fd) moves aside to a
 * hidden temporary name, the directory takes its name, and the target is
 * removed.  The target name is missing for that moment (another host may
 * see ENOENT); a crash leaves the emptied target under its hidden name,
 * which the next rmdir of its parent clears, never a directory without an
 * ID.
 */
static int replace_dir_unswapped(struct envfs *fs, struct inode *from,
				 const struct backing_name *b, struct inode *to,
				 const struct backing_name *bnew, int target_fd)
{
	char tmp[64];
	int ret;

	shared_temp_name(tmp);
	if (renameat(inode_fd(to), bnew->entry, inode_fd(to), tmp) < 0)
		return -errno;
	ret = backing_rename_noreplace(&fs->caps, inode_fd(from), b->entry, inode_fd(to),
				       bnew->entry, true, true);
	if (ret < 0) {
		backing_rename_noreplace(&fs->caps, inode_fd(to), tmp, inode_fd(to), bnew->entry,
					 true, true);
		return ret;
	}
	abandon_entry(from, b);
	if (only_volume_entries(fs, target_fd, true) == 0)
		unlinkat(inode_fd(to), tmp, AT_REMOVEDIR);
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
	int fd = openat(inode_fd(to), bnew->entry, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -errno;
	ret = only_volume_entries(fs, fd, false);
	if (ret == 0 && !fs->caps.rename_exchange) {
		ret = replace_dir_unswapped(fs, from, b, to, bnew, fd);
		close(fd);
		return ret;
	}
	close(fd);
	if (ret == 0)
		ret = backing_rename_exchange(&fs->caps, inode_fd(from), b->entry, inode_fd(to),
					      bnew->entry);
	if (ret < 0)
		return ret;
	ret = remove_dir(fs, from, b);
	/* Filled behind our back in between: undo the exchange. */
	if (ret < 0)
		backing_rename_exchange(&fs->caps, inode_fd(from), b->entry, inode_fd(to),
					bnew->entry);
	return ret;
}

/* One backing rename with renameat2's @flags, on any backing (backing_rename.h). */
static int rename_entry(struct envfs *fs, struct inode *from, const char *old, struct inode *to,
			const char *new, unsigned int flags)
{
	struct stat st;
	int ret;

	if (flags & RENAME_EXCHANGE)
		return backing_rename_exchange(&fs->caps, inode_fd(from), old, inode_fd(to), new);
	if (!(flags & RENAME_NOREPLACE))
		return renameat(inode_fd(from), old, inode_fd(to), new) < 0 ? -errno : 0;
	if (fs->caps.rename_noreplace)
		return backing_rename_noreplace(&fs->caps, inode_fd(from), old, inode_fd(to), new,
						false, false);
	if (fstatat(inode_fd(from), old, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return -errno;
	ret = backing_rename_noreplace(&fs->caps, inode_fd(from), old, inode_fd(to), new,
				       S_ISDIR(st.st_mode), encrypted_names(fs));
	/* Linked and unlinked: the inode's fd must reach it by its new name. */
	if (ret == 0 && !S_ISDIR(st.st_mode)) {
		int fd = openat(inode_fd(to), new, O_PATH | O_NOFOLLOW | O_CLOEXEC);
		struct stat now;

		if (fd >= 0 && fstat(fd, &now) == 0)
			inode_rebind(fs->inodes, &st, fd, &now);
		else if (fd >= 0)
			close(fd);
	}
	return ret;
}

static void rename_pinned(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
			  const char *newname, unsigned int flags)
{
	struct envfs *fs = fs_of(req);
	struct inode *from = inode_of(fs, parent), *to = inode_of(fs, newparent);
	struct backing_name b, bnew;
	struct symlink_drop drop = {.fd = -1};
	struct binding_change moved_binding = {.fd = -1}, target_binding = {.fd = -1};
	struct fileversion_unlink replaced = {.known = false};
	struct stat moved, target;
	struct scope *scope = NULL;
	bool replacing, have_target = false, exchange = flags & RENAME_EXCHANGE;
	bool encrypted = encrypted_names(fs);
	int ret = to_backing(fs, from, name, &b);

	if (ret == 0)
		ret = to_backing(fs, to, newname, &bnew);
	/* A key stays in its scope: across a boundary, as across file systems. */
	if (ret == 0)
		ret = scope_cross(fs, from, to);
	if (ret == 0 && from == to && strcmp(b.entry, bnew.entry) == 0) {
		/* Renaming an entry onto itself changes nothing. */
		fuse_reply_err(req, 0);
		return;
	}
	if (ret == 0)
		scope = scope_entry_moving(fs, to);
	if (ret == 0 && (encrypted || !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE))))
		have_target = fstatat(inode_fd(to), bnew.entry, &target, AT_SYMLINK_NOFOLLOW) == 0;
	replacing = have_target && !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)) &&
		    S_ISREG(target.st_mode) && target.st_nlink == 1;
	/* With encrypted names a symlink or a directory ID takes special care. */
	mode_t moved_type = 0, target_type = encrypted && have_target ? target.st_mode & S_IFMT : 0;
	if (ret == 0 && encrypted &&
	    fstatat(inode_fd(from), b.entry, &moved, AT_SYMLINK_NOFOLLOW) == 0)
		moved_type = moved.st_mode & S_IFMT;
	bool moved_bound = moved_type == S_IFLNK && symlink_bound_to_name(fs, inode_fd(from), b.entry) != 0;
	bool target_bound = target_type == S_IFLNK && symlink_bound_to_name(fs, inode_fd(to), bnew.entry) != 0;
	if (exchange && (moved_bound || target_bound)) {
		/* A version-1 link would land under a name its target is not sealed for. */
		ret = -EINVAL;
		goto done;
	}
	/* A link replaced by the rename may take its store file with it. */
	if (target_type == S_IFLNK && !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)))
		symlink_drop_begin(fs, inode_fd(to), bnew.entry, &target, &drop);
	if (moved_bound) {
		/* Its target is bound to its name: the link is made anew. */
		ret = move_symlink(fs, from, &b, name, to, &bnew, newname, flags, &moved);
		goto done;
	}
	if (!flags && moved_type == S_IFDIR && target_type == S_IFDIR) {
		ret = replace_dir(fs, from, &b, to, &bnew);
		goto done;
	}
	if (ret == 0 && replacing)
		fileversion_unlink_begin(fs, inode_fd(to), bnew.entry, &target, &replaced);
	/* The records list the new entries before the entries change. */
	if (ret == 0)
		ret = binding_before_rename(fs, from, b.entry, name, to, newname, false,
					    &moved_binding);
	if (ret == 0 && exchange)
		ret = binding_before_rename(fs, to, bnew.entry, newname, from, name, true,
					    &target_binding);
	/* An exchange keeps both names, so both side records stay right. */
	if (ret == 0 && !exchange)
		ret = prepare_entry(to, &bnew);
	if (ret == 0) {
		ret = rename_entry(fs, from, b.entry, to, bnew.entry, flags);
		if (ret < 0 && !exchange)
			abandon_entry(to, &bnew);
	}
	if (ret == 0 && !exchange)
		abandon_entry(from, &b);
done:
	binding_after(fs, &moved_binding, ret == 0);
	binding_after(fs, &target_binding, ret == 0);
	symlink_drop_end(fs, &drop, ret == 0);
	/* A file replaced by a rename lost its last name, as by unlink. */
	if (ret == 0 && replacing)
		dekcache_forget(fs->cache, target.st_dev, target.st_ino);
	fileversion_unlink_end(fs, &replaced, ret == 0);
	scope_entry_moved(scope, ret == 0);
	/* The names the kernel knows the moved inodes by now. */
	if (ret == 0)
		inode_evict_note_moved(fs->evictor, to, bnew.entry, newname);
	if (ret == 0 && exchange)
		inode_evict_note_moved(fs->evictor, from, b.entry, name);
	fuse_reply_err(req, ret < 0 ? -ret : 0);
}

void envfs_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		  const char *newname, unsigned int flags)
{
	struct envfs *fs = fs_of(req);
	struct inode *a = inode_of(fs, parent), *b = inode_of(fs, newparent);

	if (!pin_or_reply(req, fs, a))
		return;
	if (!pin_or_reply(req, fs, b)) {
		unpin(fs, a);
		return;
	}
	rename_pinned(req, parent, name, newparent, newname, flags);
	unpin(fs, b);
	unpin(fs, a);
}
