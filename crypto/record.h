/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_RECORD_H
#define ENVELOPEFS_CRYPTO_RECORD_H

/*
 * Per-file key records and the two-slot header that holds them
 * (docs/FORMAT.md, "Key record" and "Header slots").  All integers big-endian.
 *
 * Key record, version 1:
 *   off  len  field
 *   0    4    magic "EFKR"
 *   4    1    format version (1)
 *   5    1    flags: RECORD_FLAG_REKEYING or 0; other bits are rejected
 *   6    16   file ID
 *   22   4    master-key version
 *   26   1    key reference length n (1..255)
 *   27   n    key reference (printable ASCII 0x21..0x7e)
 *   27+n 2    wrapped DEK length w (1..RECORD_MAX_WRAPPED)
 *   29+n w    wrapped DEK (opaque, provider-defined)
 *   29+n+w 32 MAC = HMAC-SHA256(K_mac, bytes [0, 29+n+w))
 *             K_mac = HKDF-SHA256(ikm = DEK, salt = volume UUID,
 *                                 info = "envelopefs v1 key-record mac")
 *
 * The MAC can only be checked after the DEK is unwrapped; it catches a
 * record whose unauthenticated fields (file ID, version, reference) were
 * changed around a valid wrapped DEK.
 *
 * Header slot (header placement), slot_size bytes:
 *   0    4    magic "EFSL"
 *   4    8    sequence number (>= 1)
 *   12   2    record length L
 *   14   L    key record
 *   14+L ...  zero padding up to slot_size - 16 (must be zero)
 *   slot_size-16  16  checksum = SHA-256(bytes [0, slot_size - 16))[0..16)
 * An all-zero slot is empty.  The header is slot 0 then slot 1.  A new record
 * always goes into the slot that does not hold the current one, with
 * sequence + 1, so a torn write only ever damages the slot being written and
 * the other still holds a complete record.
 */

#include <stddef.h>
#include <stdint.h>

#define RECORD_MAGIC "EFKR"
#define RECORD_FORMAT_VERSION 1
#define RECORD_FILE_ID_LEN 16
#define RECORD_MAC_LEN 32
#define RECORD_MAX_KEY_REF 255
#define RECORD_MAX_WRAPPED 6144
#define RECORD_FIXED_LEN (29 + RECORD_MAC_LEN) /* record length = this + n + w */

/*
 * The record belongs to a re-key in progress (fs/rekey.h): its DEK is the
 * new one, the content may still be partly under the old one, and the
 * re-key journal holds the complete new content.  Readers must not use the
 * file until the re-key is finished from the journal.
 */
#define RECORD_FLAG_REKEYING 0x01
#define RECORD_FLAGS_KNOWN RECORD_FLAG_REKEYING

#define SLOT_MAGIC "EFSL"
#define SLOT_OVERHEAD (14 + 16)
#define SLOT_ALIGN 64

struct key_record {
	uint8_t flags;
	uint8_t file_id[RECORD_FILE_ID_LEN];
	uint32_t key_version;
	char key_ref[RECORD_MAX_KEY_REF + 1]; /* NUL-terminated */
	uint16_t wrapped_len;
	uint8_t wrapped[RECORD_MAX_WRAPPED];
	uint8_t mac[RECORD_MAC_LEN];
};

/* record_encoded_len - bytes record_encode() will write for @r. */
size_t record_encoded_len(const struct key_record *r);

/*
 * record_encode - serialise @r (including r->mac as it stands) into @out.
 * Returns 0, -EINVAL if a field is out of range, -ENOSPC if @cap is short.
 * *@out_len receives the encoded length.
 */
int record_encode(const struct key_record *r, uint8_t *out, size_t cap, size_t *out_len);

/*
 * record_decode - strict parse of exactly @len bytes.  Every length is
 * checked against the buffer before it is used; unknown versions, non-zero
 * flags, bad reference characters and trailing bytes are rejected.
 * Returns 0 or -EBADMSG.  The MAC is copied, not checked (see below).
 */
int record_decode(const uint8_t *buf, size_t len, struct key_record *r);

/* record_seal_mac - compute r->mac from @dek and @volume_uuid.  0 or -EIO. */
int record_seal_mac(struct key_record *r, const uint8_t dek[32], const uint8_t volume_uuid[16]);

/* record_check_mac - 0 if r->mac verifies, else -EBADMSG (or -EIO). */
int record_check_mac(const struct key_record *r, const uint8_t dek[32],
		     const uint8_t volume_uuid[16]);

/*
 * slot_size_for - the slot size to choose at init for records carrying a key
 * reference of @key_ref_len bytes and wrapped DEKs of up to @max_wrapped
 * bytes: room for the largest record plus slot overhead, rounded up to
 * SLOT_ALIGN.  The header is twice this.
 */
size_t slot_size_for(size_t key_ref_len, size_t max_wrapped);

/* slot_encode - fill @slot (@slot_size bytes) with @r and @seq.  0, -EINVAL, -ENOSPC. */
int slot_encode(const struct key_record *r, uint64_t seq, uint8_t *slot, size_t slot_size);

/*
 * slot_decode - parse one slot.  Returns 0, -ENODATA for an all-zero (empty)
 * slot, -EBADMSG for anything else that is not a complete, checksummed slot
 * holding a well-formed record.
 */
int slot_decode(const uint8_t *slot, size_t slot_size, struct key_record *r, uint64_t *seq);

/*
 * header_pick - choose the current record of a two-slot header of
 * 2 * @slot_size bytes: the valid slot with the higher sequence number.
 * *@slot_index receives 0 or 1 (the next write goes to the other one).
 * Returns 0, -ENODATA if both slots are empty, -EBADMSG if no slot is valid.
 */
int header_pick(const uint8_t *header, size_t slot_size, struct key_record *r, uint64_t *seq,
		int *slot_index);

#endif
