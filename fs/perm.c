/* SPDX-License-Identifier: MIT */
/*
 * Permissions and ownership where the daemon, running as root, must do
 * what the kernel would: access(), handing new entries to their creator, and
 * clearing setuid/setgid on a write or truncate (killpriv.h).
 */
#include "ops_i.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


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
int clear_suid_sgid(fuse_req_t req, struct inode *in, int fd, bool flagged)
{
	struct statx st;
	char path[64];
	mode_t mode;
	int ret;

	/* Not the times: asking for them would cost the next fdatasync (mtime.h). */
	if (statx(inode_fd(in), "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_MODE | STATX_GID,
		  &st) < 0)
		return -errno;
	mode = st.stx_mode & 07777 & ~S_ISUID;
	if ((mode & S_ISGID) && ((mode & S_IXGRP) || (!caller_in_group(req, st.stx_gid) &&
						      !caller_has_fsetid(req))))
		mode &= ~S_ISGID;
	if (mode == (st.stx_mode & 07777u) || (!flagged && caller_has_fsetid(req)))
		return 0;
	if (fd < 0) {
		proc_path(inode_fd(in), path);
		ret = chmod(path, mode);
	} else {
		ret = fchmod(fd, mode);
	}
	return ret < 0 ? -errno : 1;
}

/*
 * A root daemon creates as root: hand the new entry to the caller, as the
 * kernel would have (the group of a setgid parent is inherited by the
 * backing filesystem itself, so only the owner is set then).  @name is
 * empty when @dirfd is the new file itself.
 */
int give_to_caller(fuse_req_t req, struct inode *parent, int dirfd, const char *name,
		   mode_t asked)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	int at = AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH);
	/* Only a new file asked to be setuid/setgid needs its mode read. */
	bool special = (asked & (S_ISUID | S_ISGID)) && !S_ISDIR(asked);
	struct stat pst, made;

	if (geteuid() != 0)
		return 0;
	/* Made by a caller with the daemon's own ids: the backing already gave
	 * it the owner and group the kernel would have (a setgid parent's
	 * group included), so there is nothing to change, and on a network
	 * backing a round trip to save. */
	if (ctx->uid == geteuid() && ctx->gid == getegid() && !special)
		return 0;
	if (fstat(inode_fd(parent), &pst) < 0 || (special && fstatat(dirfd, name, &made, at) < 0))
		return -errno;
	gid_t gid = (pst.st_mode & S_ISGID) ? (gid_t)-1 : ctx->gid;
	if (fchownat(dirfd, name, ctx->uid, gid, at) < 0)
		return -errno;
	/*
	 * chown clears set-user-ID and set-group-ID on a non-directory, and
	 * some backings (GlusterFS) never set them on a create, even for
	 * root; the caller asked for them, and the kernel already took away
	 * what the caller may not set, so they go (back) on.
	 */
	if (!special || S_ISDIR(made.st_mode) || S_ISLNK(made.st_mode))
		return 0;
	mode_t mode = (made.st_mode & 07777) | (asked & (S_ISUID | S_ISGID));
	if ((*name ? fchmodat(dirfd, name, mode, 0) : fchmod(dirfd, mode)) < 0)
		return -errno;
	return 0;
}

/* Permission check for mounts without default_permissions, as the kernel would do it. */
static void access_pinned(fuse_req_t req, fuse_ino_t ino, int mask)
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

void envfs_access(fuse_req_t req, fuse_ino_t ino, int mask)
{
	struct envfs *fs = fs_of(req);
	struct inode *in = inode_of(fs, ino);

	if (!pin_or_reply(req, fs, in))
		return;
	access_pinned(req, ino, mask);
	unpin(fs, in);
}
