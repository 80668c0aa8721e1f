/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_HOSTSTATE_H
#define ENVELOPEFS_FS_HOSTSTATE_H

/*
 * Per-host state kept outside the backing directory (docs/THREAT-MODEL.md,
 * "B. ... a hostile storage host"): what this host has seen of a volume,
 * which the storage host can neither read nor rewind.  Layout under the
 * state root:
 *
 *   ROOT/<volume uuid>/          one directory per volume (mode 0700)
 *   ROOT/by-path/<sha256 hex>    which volume UUID was last at a backing
 *                                path (the hash of its real path)
 *
 * The root is, first match wins: the daemon's -o state_dir=DIR or the
 * tools' --state-dir, $ENVELOPEFS_STATE_DIR, /var/lib/envelopefs for root,
 * else $XDG_STATE_HOME/envelopefs, else $HOME/.local/state/envelopefs.
 *
 * Every file is replaced atomically (written beside itself, fsynced,
 * renamed, directory fsynced): a crash leaves the old or the new content.
 */

#include <stddef.h>
#include <stdint.h>

#define HOSTSTATE_SYSTEM_ROOT "/var/lib/envelopefs"
#define HOSTSTATE_ENV "ENVELOPEFS_STATE_DIR"
#define HOSTSTATE_BY_PATH "by-path"

/*
 * hoststate_root - resolve the state root into @out (see above); @option
 * (may be NULL) is the command-line choice.  0, or -ENAMETOOLONG / -ENOENT
 * (no root can be named: no $HOME for a non-root user).
 */
int hoststate_root(const char *option, char *out, size_t out_len);

/*
 * hoststate_volume_file - @out = ROOT/<uuid>/@name, creating ROOT and
 * ROOT/<uuid> (0700) when @create.  0 or -errno.
 */
int hoststate_volume_file(const char *root, const uint8_t uuid[16], const char *name,
			  int create, char *out, size_t out_len);

/*
 * hoststate_path_file - @out = ROOT/by-path/<sha256 hex of @backing>,
 * creating the directories when @create.  0 or -errno.
 */
int hoststate_path_file(const char *root, const char *backing, int create, char *out,
			size_t out_len);

/*
 * hoststate_read - the whole of @path (at most @cap - 1 bytes) into @buf,
 * NUL-terminated.  Returns its length, -ENOENT when there is none, -EFBIG
 * when it is longer, or -errno.
 */
long hoststate_read(const char *path, char *buf, size_t cap);

/* hoststate_write - replace @path atomically with @len bytes of @data (0600).  0 or -errno. */
int hoststate_write(const char *path, const void *data, size_t len);

#endif
