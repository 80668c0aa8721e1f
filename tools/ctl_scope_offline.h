/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_SCOPE_OFFLINE_H
#define ENVELOPEFS_TOOLS_CTL_SCOPE_OFFLINE_H

/*
 * Offline tools inside key scopes (docs/FORMAT.md, "Key scopes"): a file in
 * a scope has its key wrapped by the scope's KMS, which the volume's
 * configuration does not name; the scope's definition, authenticated under
 * the volume key, does.
 */

#include <stddef.h>

#include "kms/kms.h"
#include "tools/ctl.h"

/*
 * ctl_scope_kms - the provider of the key scope of the opened volume @v
 * (with its KMS) whose master key is @key_ref: the registry is read and
 * authenticated under the volume key, unwrapped through @v's KMS, and the
 * scope's provider opened from its definition's settings (secrets from the
 * files they name or this process's environment, as for the daemon).  0
 * with *@out (kms_close() it), -ESRCH when no scope uses @key_ref, or
 * -errno with a message in @err (the scope's KMS cannot be opened: revoked,
 * shredded; a definition that does not authenticate: -EBADMSG).
 */
int ctl_scope_kms(struct ctl_volume *v, const char *key_ref, struct kms **out, char *err,
		  size_t err_len);

/*
 * ctl_scope_enter - the walk of a plaintext path (ctl_resolve) entered the
 * backing directory @dirfd (plaintext @path): if it is a key scope's root,
 * the names in it are sealed under the scope key, so *@names becomes the
 * scope's codec (the scope key unwrapped through the scope's KMS; the old
 * codec destroyed).  A CTL_* code, reported (CTL_KEY: the scope's KMS
 * refuses, its key shredded).
 */
struct names;
int ctl_scope_enter(struct ctl_volume *v, int dirfd, const char *path, struct names **names);

#endif
