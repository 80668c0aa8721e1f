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
 *   ENVELOPEFS_IOC_SCOPE_VERSION the directory is a scope's root: ioctl(2)
 *                                returns its KMS's current master-key
 *                                version (unlocking the scope if need be;
 *                                EACCES when its KMS refuses; EBUSY, as
 *                                for _REWRAP, while it is being converted:
 *                                scope_convert.h).
 *   ENVELOPEFS_IOC_REWRAP        (status.h) on a scope's root: move the
 *                                scope key's record onto that version (the
 *                                definition replaced crash-safely,
 *                                scopedef.h); 1 when it was current already.
 *                                The scope's files are re-wrapped one by one
 *                                as any file: by their scope's KMS.
 *
 *   ENVELOPEFS_IOC_SCOPE_SHRED   the directory is a scope's root: destroy its
 *                                master key in its KMS (kms_destroy(): a local
 *                                keyring shredded, a Vault key deleted, an AWS
 *                                key disabled and its deletion scheduled, a
 *                                PKCS#11 token's objects destroyed) and lock it.  EOPNOTSUPP (the provider cannot),
 *                                EPERM (the KMS refuses: the log says what to
 *                                do), EACCES (its KMS refuses already).
 *
 *   ENVELOPEFS_IOC_SCOPE_MOVE    the directory is a scope's root: start moving
 *                                the scope to the KMS of the settings in the
 *                                argument (as for _CREATE): ioctl(2) returns
 *                                0, or 1 when it is moving there already
 *                                (resume).  EBUSY (moving elsewhere), EINVAL
 *                                (the key in use, records too large, the
 *                                same KMS), EACCES.  Its files then move one
 *                                by one with ENVELOPEFS_IOC_REWRAP.
 *   ENVELOPEFS_IOC_SCOPE_MOVE_END  end the move (the caller checked that no
 *                                record is left under the old KMS): 0, or 1
 *                                when it was not moving.
 *
 * Converting a non-empty directory into a scope has its own ioctls and
 * virtual xattr: scope_convert.h.
 *
 * KEY_XATTR (status.h) on a scope's root describes the scope key's record,
 * as on the mount root it describes the volume key's; and
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
#define ENVELOPEFS_IOC_SCOPE_VERSION _IO(0xef, 18)
#define ENVELOPEFS_IOC_SCOPE_SHRED _IO(0xef, 19)
#define ENVELOPEFS_IOC_SCOPE_MOVE _IOW(0xef, 20, struct scope_create_arg)
#define ENVELOPEFS_IOC_SCOPE_MOVE_END _IO(0xef, 21)
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

/*
 * scope_entry_moving - a rename or a link into directory @dir (past
 * scope_cross) begins: the scope it lands in, which counts it (NULL: none;
 * scopes.h, scope_moves_begin).  scope_entry_moved - it ended (@done: it
 * changed the tree); @s may be NULL.
 */
struct scope *scope_entry_moving(struct envfs *fs, struct inode *dir);
void scope_entry_moved(struct scope *s, bool done);

/* scope_removed - directory @dirid was removed: if a scope's root, drop its definition. */
void scope_removed(struct envfs *fs, const uint8_t *dirid);

/*
 * scope_ioctl_cmd - whether ioctl @cmd on @in is scope_ioctl()'s: an
 * ENVELOPEFS_IOC_SCOPE_* one, or ENVELOPEFS_IOC_REWRAP on a scope's root.
 */
bool scope_ioctl_cmd(struct envfs *fs, struct inode *in, unsigned int cmd);

/*
 * scope_ioctl - an ENVELOPEFS_IOC_SCOPE_* ioctl on directory @dir (root
 * caller checked): what ioctl(2) returns (>= 0) or -errno.
 */
int scope_ioctl(struct envfs *fs, struct inode *dir, unsigned int cmd, const void *in_buf,
		size_t in_bufsz);

/*
 * scope_key_description - KEY_XATTR of directory @in into @out (@cap bytes),
 * "VERSION KEY_REF SCOPE_ID_HEX\n" of its scope key's record if it is a
 * scope's root: its length, or -ENODATA for any other directory.
 */
int scope_key_description(struct envfs *fs, struct inode *in, char *out, size_t cap);

/* scope_xattr - SCOPE_XATTR of @in into @out (@cap bytes): its length, or -ENODATA. */
int scope_xattr(struct envfs *fs, struct inode *in, char *out, size_t cap);
#endif

#endif
