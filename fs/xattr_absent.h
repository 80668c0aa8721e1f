/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_XATTR_ABSENT_H
#define ENVELOPEFS_FS_XATTR_ABSENT_H

/*
 * Security and ACL xattrs known absent, without asking the backing each
 * time.  `ls -l` asks every entry for security.selinux and
 * system.posix_acl_access (a directory for system.posix_acl_default too),
 * and the kernel asks each new file twice for security.capability (untar);
 * on most volumes no file has any of them, and each answer was a backing
 * getxattr.  Now one backing listxattr tells an inode whether it has any
 * security.* or system.* name; while it has none, a getxattr of such a name
 * is answered with the error the backing gives for an absent name of that
 * kind (ENODATA, or EOPNOTSUPP where it has no ACLs), learned from a real
 * backing getxattr once per volume.
 *
 * Invariants:
 *  - Only in non-shared mode, where the daemon is the backing's only
 *    writer: every xattr change to a backing inode is then its own
 *    setxattr or removexattr, which calls xattr_absent_changed() after the
 *    backing call.  A learning that raced with a change fails its
 *    compare-and-swap (the generation moved) and leaves the inode unknown.
 *  - The backing never adds a security.* or system.* name to an existing
 *    inode by itself (it removes security.capability on a write, which
 *    keeps "none" true).  Labels given at creation are seen by the first
 *    listxattr.  A host policy that writes such names later on its own
 *    (IMA appraisal in fix mode) is not followed; shared mode asks the
 *    backing every time.
 *  - Regular files and directories only: a symlink's answers differ.
 */

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "inode.h"

struct envfs;

/* struct inode's xattr_absent word: this bit, and a generation above it. */
#define XATTR_ABSENT_NONE 1u
#define XATTR_ABSENT_GENERATION 2u

/* Per volume: the errno of an absent name per kind; 0 not yet learned. */
struct xattr_absent_volume {
	_Atomic int security_errno; /* security.* */
	_Atomic int acl_errno;	    /* system.posix_acl_access, system.posix_acl_default */
};

/*
 * xattr_absent_answer - the answer to a getxattr of @name on pinned @in
 * without the backing: -ENODATA or -EOPNOTSUPP when @in is known to have
 * no such name, 0 when the backing must be asked.  May learn @in's state
 * (one listxattr).
 */
int xattr_absent_answer(struct envfs *fs, struct inode *in, const char *name);

/* xattr_absent_note - a backing getxattr of @name on @in returned @ret (>= 0 or -errno). */
void xattr_absent_note(struct envfs *fs, const struct inode *in, const char *name, ssize_t ret);

/*
 * xattr_absent_changed - @in's backing xattrs changed, or it stands for
 * another backing inode now: unknown again, in a new generation.
 */
static inline void xattr_absent_changed(struct inode *in)
{
	uint32_t v = atomic_load(&in->xattr_absent);

	while (!atomic_compare_exchange_weak(&in->xattr_absent, &v,
					     (v + XATTR_ABSENT_GENERATION) & ~XATTR_ABSENT_NONE))
		;
}

#endif
