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

#include <stdbool.h>
#include <stdint.h>

#include "kms/kms.h"
#include "layout.h"

/*
 * The providers a volume's records may be under: the current one, and while
 * the volume moves to it from another KMS (envelopefsctl rotate --to-kms),
 * the previous one.  A record is opened by the provider whose key reference
 * it names; a reference that is neither's is an error.
 */
struct kms_pair {
	struct kms *current;
	struct kms *previous; /* NULL unless a migration is under way */
};

/* kms_pair_for - the provider of @p whose key reference is @key_ref, or NULL. */
struct kms *kms_pair_for(const struct kms_pair *p, const char *key_ref);

struct rewrap_result {
	uint32_t old_version;
	uint32_t new_version;
	uint8_t file_id[16];
	bool moved; /* the record came from the previous provider */
};

/*
 * rewrap_file - see above.  @fd: the backing file, open read-write.
 * @dek: the file's DEK (for the record's file ID) or NULL.
 * A record under @keys->current moves onto its current version through the
 * KMS's own re-wrap; a record under @keys->previous is unwrapped there and
 * wrapped by the current provider (kms_wrap): the DEK passes through this
 * process, in locked memory, as it must between two services.
 * Returns 0 (re-wrapped), 1 (already on the current version of the current
 * provider: nothing written), -ENODATA (no record yet: an empty file),
 * -EBADMSG (corrupt or unauthentic record), -ENOKEY (the record names a
 * master key that is neither provider's), -EOVERFLOW (the new record does
 * not fit the volume's header slot), a KMS error (kms.h), or -errno from I/O.
 */
int rewrap_file(const struct layout *l, const struct kms_pair *keys,
		const uint8_t volume_uuid[16], int fd, const uint8_t *dek,
		struct rewrap_result *res);

#endif
