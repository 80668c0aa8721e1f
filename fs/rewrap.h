/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_REWRAP_H
#define ENVELOPEFS_FS_REWRAP_H

/*
 * Re-wrapping one file's key record onto the KMS's current master-key
 * version: the heart of rotation, shared by the daemon (online, under the
 * inode's content lock) and `envelopefsctl rotate --offline`.
 *
 * The DEK does not change and no data block is rewritten.  The blob moves
 * through the KMS's own re-wrap (the plaintext DEK stays inside a KMS that
 * offers one), and the record's MAC, keyed from the DEK, is sealed anew: the
 * caller passes the DEK if it has it (the daemon's cache), otherwise it is
 * unwrapped here once.  The new record replaces the old one crash-safely
 * (layout_write_record: the other slot, fdatasync before and after), so at
 * every instant the file has a complete old or a complete new record.
 *
 * The caller excludes every other writer of the file's record.
 */

#include <stdint.h>

#include "kms/kms.h"
#include "layout.h"

struct rewrap_result {
	uint32_t old_version;
	uint32_t new_version;
	uint8_t file_id[16];
};

/*
 * rewrap_file - see above.  @fd: the backing file, open read-write.
 * @dek: the file's DEK (for the record's file ID) or NULL.
 * Returns 0 (re-wrapped), 1 (already on the current version under this
 * KMS: nothing written), -ENODATA (no record yet: an empty file), -EBADMSG
 * (corrupt or unauthentic record), a KMS error (kms.h), or -errno from I/O.
 */
int rewrap_file(const struct layout *l, struct kms *kms, const uint8_t volume_uuid[16], int fd,
		const uint8_t *dek, struct rewrap_result *res);

#endif
