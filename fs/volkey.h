/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_VOLKEY_H
#define ENVELOPEFS_FS_VOLKEY_H

/*
 * The volume key (docs/FORMAT.md, "Volume key"): a random 256-bit key from
 * which the name, symlink and xattr keys are derived (names.h).  It is
 * wrapped by the volume's KMS like a DEK, with the volume UUID and the fixed
 * file ID VOLKEY_FILE_ID as context, and stored as a key record in a
 * two-slot header, alone in BACKING/VOLKEY_NAME: the file is exactly two
 * slots long, so its slot size is half its size.  Being a key record in a
 * header, it is re-wrapped by rotation exactly like a file's (rewrap.h).
 *
 * Nothing here knows about FUSE; the daemon and envelopefsctl share it.
 */

#include <stdint.h>

#include "kms/kms.h"
#include "layout.h"
#include "rewrap.h"
#include "volume.h"

#define VOLKEY_NAME "envelopefs.key"
/* The 16 ASCII bytes "envelopefs:vkey1": no random file ID is ever this. */
#define VOLKEY_FILE_ID "envelopefs:vkey1"

/*
 * volkey_create - draw a volume key, wrap it with @kms and write
 * BACKING/VOLKEY_NAME (@backing_fd: the backing root), created exclusively,
 * fsynced with its directory.  With @key_out (KMS_DEK_LEN bytes of secmem,
 * may be NULL) the key is also given back, for sealing the configuration
 * (confmac.h).  Returns 0 or -errno (KMS errors as kms.h).
 */
int volkey_create(int backing_fd, const struct volume_config *cfg, struct kms *kms,
		  uint8_t *key_out);

/*
 * volkey_load - read, unwrap (through the provider of @keys its record
 * names) and authenticate the volume key into @key (KMS_DEK_LEN bytes of
 * secmem).  Returns 0, or -errno with a message in @err: -ENOENT (no key
 * file), -EBADMSG (corrupt or not this volume's), -ENOKEY (wrapped by
 * neither provider), a KMS error.
 */
int volkey_load(int backing_fd, const struct volume_config *cfg, const struct kms_pair *keys,
		uint8_t *key, char *err, size_t err_len);

/*
 * volkey_rewrap - move the volume key's record onto the current provider's
 * current master-key version (rewrap_file()'s return codes).  When that
 * provider's records need larger slots than the file has (a volume moving
 * to another KMS), the file is first replaced by a larger one holding the
 * same record (written beside it as VOLKEY_NAME.tmp, synced, renamed).
 * The caller excludes other re-wraps of the volume key.
 */
int volkey_rewrap(int backing_fd, const struct volume_config *cfg, const struct kms_pair *keys,
		  struct rewrap_result *res);

/* volkey_open - open the key file with @flags and fill @l (volkey_layout). */
int volkey_open(int backing_fd, int flags, struct layout *l);

/*
 * volkey_layout - the layout of the open key file @fd: a header of two
 * slots and nothing else.  0, or -EBADMSG for a file of impossible size.
 */
int volkey_layout(int fd, struct layout *l);

#endif
