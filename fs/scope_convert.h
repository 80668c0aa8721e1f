/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_SCOPE_CONVERT_H
#define ENVELOPEFS_FS_SCOPE_CONVERT_H

/*
 * Converting a non-empty directory into a key scope, online (docs/FORMAT.md,
 * "Converting a directory into a scope").  The daemon's part; envelopefsctl
 * (tools/ctl_scope_convert.c) drives it, directory by directory, top down:
 *
 *   ENVELOPEFS_IOC_SCOPE_CONVERT  (ioctl on the directory, root only, the
 *                      argument as for ENVELOPEFS_IOC_SCOPE_CREATE) make it
 *                      the root of a scope with SCOPE_FLAG_CONVERTING, the
 *                      volume's KMS settings as the previous ones: 0, or 1
 *                      when it is converting to these settings already
 *                      (resume); EBUSY (converting to others, or the volume
 *                      moves), EEXIST (a settled scope), and the errors of
 *                      _CREATE but ENOTEMPTY.
 *   setxattr SCOPE_CONVERT_XATTR  (root only) on a directory of a
 *                      converting scope whose parent was converted (or the
 *                      root): every entry gets its scope-sealed name (a long
 *                      one its side record), every symlink its target sealed
 *                      under the scope key, the directory its own user
 *                      xattrs, and the daemon's inodes of its entries learn
 *                      their scope.  A setxattr because the kernel holds the
 *                      directory's lock through it, so no lookup, create,
 *                      rename or listing in it runs meanwhile: none sees a
 *                      name between its two forms.  Idempotent.  With the
 *                      value SCOPE_CONVERT_CHECK (the checking walk) it
 *                      fails with EINPROGRESS when it found anything to
 *                      convert (and converted it): something moved in
 *                      after the walk had passed, and another walk is due.
 *                      (Not EAGAIN: the VFS turns a setxattr's EAGAIN into
 *                      EOPNOTSUPP.)
 *   (each regular file is then re-keyed with ENVELOPEFS_IOC_REKEY through
 *    the mount: its new DEK is wrapped by the scope's KMS, its user xattrs
 *    sealed under the scope key)
 *   ENVELOPEFS_IOC_SCOPE_CONVERT_END  (on the root; the caller checked that
 *                      no record under it names the volume's KMS) store the
 *                      definition without the flag: 0, or 1 when it was not
 *                      converting; EAGAIN when an entry was renamed or
 *                      linked inside the scope since the checking walk set
 *                      SCOPE_CONVERT_CHECK on the root (or while one is),
 *                      or no checking walk did since mount: what it passed
 *                      may hide what it did not see, and another is due;
 *                      EBUSY while a re-key journal is left.
 *
 * Until the end, what the conversion has not reached still reads: the
 * scope's codec falls back to the volume's (names.h), its provider set
 * holds the volume's KMS as the previous one, and scope_to_backing() finds
 * a name under whichever of its two forms exists.
 *
 * Invariant: every step replaces one whole thing atomically (a rename, a
 * store file renamed over, a re-key's journal), so a crash anywhere leaves
 * each name, target, xattr and file readable under one of the two keys,
 * and running the same steps again finishes it.
 */

#include <linux/ioctl.h>

#include "scope_ops.h"

#define ENVELOPEFS_IOC_SCOPE_CONVERT _IOW(0xef, 22, struct scope_create_arg)
#define ENVELOPEFS_IOC_SCOPE_CONVERT_END _IO(0xef, 23)
#define SCOPE_CONVERT_XATTR "trusted.envelopefs.convert"
#define SCOPE_CONVERT_CHECK "check"

#ifndef ENVELOPEFS_SCOPE_OPS_TOOL_ONLY
#include "ops_i.h"

/*
 * scope_convert_adopt - right after ENVELOPEFS_IOC_SCOPE_CONVERT made @root a
 * converting scope's root (or found it one): every inode below it that the
 * kernel knows, looked up while it was the volume's, is in the scope from
 * now on, so that its keys, names and boundary are the scope's before the
 * walk reaches it (a lookup after this inherits the scope anyway), and the
 * DEKs cached for its files as the volume's are dropped.  0 or -errno
 * (logged).
 */
int scope_convert_adopt(struct envfs *fs, struct inode *root);

/*
 * scope_convert_dir - SCOPE_CONVERT_XATTR set on directory @dir (@check: to
 * SCOPE_CONVERT_CHECK): 0, -EINPROGRESS (@check, and something was converted),
 * or -errno (logged).
 */
int scope_convert_dir(struct envfs *fs, struct inode *dir, bool check);

/* scope_convert_finish - ENVELOPEFS_IOC_SCOPE_CONVERT_END on @dir: 0, 1, or -errno. */
int scope_convert_finish(struct envfs *fs, struct inode *dir);

/*
 * scope_to_backing - the backing form of @name in @dir, whose names @codec
 * (its scope's) seals under directory ID @id: the scope's form, unless the
 * scope is converting and only the volume's form of @name exists.
 */
int scope_to_backing(struct envfs *fs, struct inode *dir, const struct names *codec,
		     const uint8_t *id, const char *name, struct backing_name *b);

/*
 * scope_dir_converting - whether names in directory @dir may still change
 * from the volume's form to the scope's.  A lookup that found neither form
 * looks once more when it is: a revalidating lookup does not wait for the
 * directory's lock, and may have chosen the volume's form just before
 * scope_convert_dir renamed it.  Conversion goes one way, so the second
 * look finds the name if it exists.
 */
bool scope_dir_converting(struct envfs *fs, struct inode *dir);

/*
 * scope_xattr_name - the stored name of user xattr @name of the file at
 * @path (owner ID @owner) under @codec: its own seal, unless the codec falls
 * back (a converting scope) and only the fallback's seal exists there.
 * 0 or -errno (-ERANGE: too long).
 */
int scope_xattr_name(const struct names *codec, const char *path, const uint8_t *owner,
		     const char *name, char *stored);

/*
 * scope_finish_rekeys - at mount, before the volume's: finish the re-keys a
 * crash interrupted in converting scopes, whose new records only the
 * scope's KMS opens and whose new xattrs only its codec (which falls back
 * to the volume's) recognises.  What it cannot finish is left to the
 * volume's recovery.
 */
void scope_finish_rekeys(struct envfs *fs);
#endif

#endif
