/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TOOLS_CTL_SCOPE_H
#define ENVELOPEFS_TOOLS_CTL_SCOPE_H

/*
 * What `envelopefsctl rotate --scope DIR` (ctl_rotate.c) asks of a key
 * scope (fs/scope_ops.h), kept here with the rest of the scope commands.
 */

#include <stdint.h>

struct scope_create_arg;

/*
 * ctl_scope_target - for the scope whose root is @dir in a mounted volume:
 * its KMS's current master-key version (*@version), the master key its
 * scope key is wrapped by (@key_ref, @ref_cap bytes) and the volume's UUID
 * (@uuid, as text).  A CTL_* code, reported.
 */
int ctl_scope_target(const char *dir, uint32_t *version, char *key_ref, size_t ref_cap,
		     char uuid[37]);

/*
 * ctl_scope_move_start - start (or resume) moving the scope whose root is
 * @dir to the KMS that the INI file @config describes (one [kms] section,
 * no secret), through the daemon.  A CTL_* code, reported.
 */
int ctl_scope_move_start(const char *dir, const char *config);

/* ctl_scope_move_end - end the move of the scope whose root is @dir.  A CTL_* code. */
int ctl_scope_move_end(const char *dir);

/*
 * ctl_scope_convert - make the non-empty directory @dir (open as @fd) a key
 * scope with the settings in @arg, converting what it holds, or resume
 * that (ctl_scope_convert.c).  A CTL_* code, reported.
 */
int ctl_scope_convert(const char *dir, int fd, const struct scope_create_arg *arg);

/* ctl_scope_error - report the daemon's answer @err to a scope request on @path.  A CTL_* code. */
int ctl_scope_error(const char *path, int err);

#endif
