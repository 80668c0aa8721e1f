/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_CONFPIN_H
#define ENVELOPEFS_FS_CONFPIN_H

/*
 * The host's pin of a volume configuration (docs/THREAT-MODEL.md, "The
 * configuration"), kept in the per-host state (hoststate.h) as SSH keeps
 * known_hosts:
 *
 *   ROOT/<uuid>/config           the canonical configuration (confmac.h)
 *                                this host last accepted
 *   ROOT/by-path/<hash of path>  "<uuid>\n<backing path>\n": the volume
 *                                last accepted at that backing path
 *
 * The daemon checks both before it opens the configuration's KMS, so a
 * storage host that rewrites envelopefs.conf (another KMS, its endpoint,
 * plain names, another block size or format version) or puts another
 * volume in its place is refused on every host that mounted the volume
 * before.  The first mount of a volume at a path pins what it finds.
 * `envelopefsctl init`, `rotate --to-kms` and `pin` write the pin.
 */

#include <stddef.h>

#include "volume.h"

#define CONFPIN_FILE "config"

/*
 * confpin_check - compare @cfg (loaded from @backing, a real path) with the
 * pin under state root @root.  Returns 0 (it matches), 1 (nothing pinned
 * for this volume and path: a first mount), -ESTALE with the changed
 * setting named in @err (or the volume UUID at the path), or -errno with
 * @err saying what could not be read.
 */
int confpin_check(const char *root, const char *backing, const struct volume_config *cfg,
		  char *err, size_t err_len);

/* confpin_record - pin @cfg for @backing under @root.  0 or -errno. */
int confpin_record(const char *root, const char *backing, const struct volume_config *cfg);

#endif
