/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_NAMES_H
#define ENVELOPEFS_FS_NAMES_H

/*
 * The name codec: every name the daemon hands to the backing filesystem goes
 * through names_to_backing(), and every backing name it shows comes through
 * names_from_backing().  This version is the identity, except that the
 * volume's own files in the backing root (envelopefs.conf, the re-key
 * journal directory envelopefs.rekey) can neither be
 * seen nor created through the mount.  Name encryption plugs in here.
 */

#include <stdbool.h>
#include <stddef.h>

#define NAMES_MAX 255

/*
 * names_to_backing - the backing name for @name in the directory @parent_is_root.
 * @out holds NAMES_MAX + 1 bytes.  Returns 0, -ENAMETOOLONG, or -EPERM for a
 * name reserved by the volume (lookups turn that into -ENOENT).
 */
int names_to_backing(bool parent_is_root, const char *name, char *out);

/*
 * names_from_backing - the name to show for backing entry @backing; @out holds
 * NAMES_MAX + 1 bytes.  Returns 0, or -ENOENT for entries the mount hides.
 */
int names_from_backing(bool parent_is_root, const char *backing, char *out);

#endif
