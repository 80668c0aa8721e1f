/* SPDX-License-Identifier: MIT */
/* Renames with renameat2's guarantees on any backing: see backing_rename.h. */
#include "backing_rename.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

int backing_rename_noreplace(const struct backing_caps *caps, int olddir, const char *old,
			     int newdir, const char *new, bool is_dir, bool dir_never_empty)
{
	if (caps->rename_noreplace)
		return renameat2(olddir, old, newdir, new, RENAME_NOREPLACE) < 0 ? -errno : 0;
	if (is_dir) {
		/* An empty placeholder claims the name (mkdir never replaces);
		 * rename(2) then replaces only that empty directory. */
		if (!dir_never_empty && mkdirat(newdir, new, 0700) < 0)
			return -errno;
		if (renameat(olddir, old, newdir, new) == 0)
			return 0;
		int err = errno;
		if (!dir_never_empty)
			unlinkat(newdir, new, AT_REMOVEDIR);
		return err == ENOTEMPTY || err == ENOTDIR ? -EEXIST : -err;
	}
	if (linkat(olddir, old, newdir, new, 0) < 0) {
		/* A backing without hard links has no way to refuse a target. */
		return errno == EEXIST || errno == ENOENT || errno == ENOSPC || errno == EDQUOT ||
				       errno == EACCES || errno == EROFS || errno == ENAMETOOLONG
			       ? -errno
			       : -EINVAL;
	}
	if (unlinkat(olddir, old, 0) < 0) {
		int err = errno;

		unlinkat(newdir, new, 0);
		return -err;
	}
	return 0;
}

int backing_rename_exchange(const struct backing_caps *caps, int adir, const char *a, int bdir,
			    const char *b)
{
	if (!caps->rename_exchange)
		return -EINVAL;
	return renameat2(adir, a, bdir, b, RENAME_EXCHANGE) < 0 ? -errno : 0;
}
