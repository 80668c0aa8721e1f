/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_SCOPE_OPS_H
#define ENVELOPEFS_FS_SCOPE_OPS_H

/*
 * Key scopes in the daemon's operations (docs/FORMAT.md, "Key scopes";
 * scopes.h holds the scopes themselves).
 *
 * Every inode knows its scope (in->scope, NULL for the volume's): the scope
 * of the directory holding its name, set by scope_inherit() wherever a name
 * becomes an inode.  A directory that is a scope's root is in its own scope
 * (inode_scope()), so its entries' names, and everything below it, use the
 * scope's codec and KMS, while its own name stays in its parent's.
 *
 * Interface to envelopefsctl (root only, as the rotation ioctls, status.h),
 * on an open directory of the mount:
 *
 *   ENVELOPEFS_IOC_SCOPE_CREATE  make the (empty) directory a scope's root
 *                                with the provider settings in the argument
 *                                (canonical KEY=VALUE lines, scopedef.h).
 *                                ENOTEMPTY, EEXIST (a root already), EINVAL
 *                                (nested, a key reference in use, bad
 *                                settings, a volume without encrypted names,
 *                                shared mode),
 *                                EACCES/EIO (the KMS refused or failed).
 *   ENVELOPEFS_IOC_SCOPE_LOCK    the directory is a scope's root: drop its
 *                                cached DEKs, name keys and provider now
 *                                (EINVAL for any other directory).
 *
 * and the virtual xattr SCOPE_XATTR on a directory: the base64url scope ID
 * of the scope it is the root of (ENODATA for any other).
 */

#include <linux/ioctl.h>

#include "scopedef.h"

struct scope_create_arg {
	char settings[SCOPE_SETTINGS_MAX + 1]; /* NUL-terminated */
};

#define ENVELOPEFS_IOC_SCOPE_CREATE _IOW(0xef, 16, struct scope_create_arg)
#define ENVELOPEFS_IOC_SCOPE_LOCK _IO(0xef, 17)
#define SCOPE_XATTR "trusted.envelopefs.scope"

#ifndef ENVELOPEFS_SCOPE_OPS_TOOL_ONLY
#include "ops_i.h"

/* scopes_mount - read the volume's scopes (fs->scopes), given its volume key (may be NULL). */
int scopes_mount(struct envfs *fs, int root_fd, const uint8_t *volume_key);

/* inode_scope - the scope @in is in: its own for a scope's root, else in->scope. */
struct scope *inode_scope(struct envfs *fs, struct inode *in);

/*
 * inode_names - the codec for the names in directory @in, or for the
 * xattrs and symlink target of @in: its scope's (unlocked first if need
 * be), else the volume's.  0 or -EACCES (a scope its KMS keeps locked).
 */
int inode_names(struct envfs *fs, struct inode *in, struct names **out);

/* scope_inherit - @child, named in directory @parent, is in @parent's scope. */
void scope_inherit(struct envfs *fs, struct inode *parent, struct inode *child);

/* scope_cross - -EXDEV when directories @a and @b are in different scopes, else 0. */
int scope_cross(struct envfs *fs, struct inode *a, struct inode *b);

/* scope_removed - directory @dirid was removed: if a scope's root, drop its definition. */
void scope_removed(struct envfs *fs, const uint8_t *dirid);

/* scope_ioctl - ENVELOPEFS_IOC_SCOPE_CREATE / _LOCK on directory @dir (root caller checked). */
int scope_ioctl(struct envfs *fs, struct inode *dir, unsigned int cmd, const void *in_buf,
		size_t in_bufsz);

/* scope_xattr - SCOPE_XATTR of @in into @out (@cap bytes): its length, or -ENODATA. */
int scope_xattr(struct envfs *fs, struct inode *in, char *out, size_t cap);
#endif

#endif
