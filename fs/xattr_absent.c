/* SPDX-License-Identifier: MIT */
/*
 * Security and ACL xattrs known absent per inode (xattr_absent.h).
 */
#include "xattr_absent.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>

#include "ops_i.h"

/* A listxattr longer than this (many user xattrs) leaves the inode unknown. */
#define LIST_CAP 4096

/* The learned errno of @name's kind, or NULL when @name is not one of them. */
static _Atomic int *kind_errno(struct envfs *fs, const char *name)
{
	if (strncmp(name, "security.", strlen("security.")) == 0)
		return &fs->xattr_absent.security_errno;
	if (strcmp(name, "system.posix_acl_access") == 0 ||
	    strcmp(name, "system.posix_acl_default") == 0)
		return &fs->xattr_absent.acl_errno;
	return NULL;
}

/* A backing mounted inside the backing root may answer otherwise: the root's device only. */
static bool applies(struct envfs *fs, const struct inode *in)
{
	return !fs->shared && (in->type == S_IFREG || in->type == S_IFDIR) &&
	       in->dev == inode_table_root(fs->inodes)->dev;
}

/* Whether the backing list of @in holds no security.* or system.* name; false when unsure. */
static bool backing_has_none(struct inode *in)
{
	char path[64], list[LIST_CAP];
	ssize_t len;

	proc_path(inode_fd(in), path);
	len = listxattr(path, list, sizeof(list));
	if (len < 0)
		return false;
	for (ssize_t i = 0; i < len; i += (ssize_t)strlen(list + i) + 1)
		if (strncmp(list + i, "security.", strlen("security.")) == 0 ||
		    strncmp(list + i, "system.", strlen("system.")) == 0)
			return false;
	return true;
}

int xattr_absent_answer(struct envfs *fs, struct inode *in, const char *name)
{
	_Atomic int *absent = kind_errno(fs, name);
	int err = absent ? atomic_load(absent) : 0;
	uint32_t v;

	if (err == 0 || !applies(fs, in))
		return 0;
	v = atomic_load(&in->xattr_absent);
	if (!(v & XATTR_ABSENT_NONE)) {
		if (!backing_has_none(in))
			return 0;
		/* Fails when a change came meanwhile: then this answer is not known. */
		if (!atomic_compare_exchange_strong(&in->xattr_absent, &v, v | XATTR_ABSENT_NONE))
			return 0;
	}
	return -err;
}

void xattr_absent_note(struct envfs *fs, const struct inode *in, const char *name, ssize_t ret)
{
	_Atomic int *absent = kind_errno(fs, name);

	if (absent && applies(fs, in) && (ret == -ENODATA || ret == -EOPNOTSUPP))
		atomic_store(absent, (int)-ret);
}
