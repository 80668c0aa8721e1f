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
 * Key record, version 2 (docs/FORMAT.md, "Key record, version 2"): version
 * byte 2, then the version-1 fields up to the wrapped DEK, then
 *   29+n+w     1    extension length e (0..RECORD_V2_EXT_MAX)
 *   30+n+w     e    items, each tag (1) || length (1) || value, tags
 *                   strictly ascending; unknown tags are rejected:
 *                     RECORD_TAG_HOLES: 1..RECORD_MAX_HOLES block ranges
 *                     first (8) || end (8), first < end, ascending and
 *                     neither overlapping nor touching
 *                     RECORD_TAG_VERSION (format-3 volumes): the file's
 *                     version, 8 bytes, >= 1
 *                     RECORD_TAG_BINDINGS (format-3 volumes): 1..
 *                     RECORD_MAX_BINDINGS entry bindings of
 *                     RECORD_BINDING_LEN bytes, strictly ascending
 *   30+n+w+e   32   MAC, the same K_mac, over bytes [0, 30+n+w+e)
 * The ranges are where the file may hold holes: an all-zero stored block
 * outside them is not a hole but damage (docs/FORMAT.md, "Holes").  The
 * bindings are the directory entries the file may be reached by
 * (docs/FORMAT.md, "Entry bindings"): opened by any other, it is refused.
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

#include <stdbool.h>
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
 * Version 2 adds at most RECORD_V2_EXTRA bytes (the extension and its
 * length byte): a local-provider record still fits the 256-byte slots of a
 * 512-byte header, and so does a Vault Transit record at every key version,
 * so such a volume can still move there (rotate --to-kms).
 */
#define RECORD_V2_EXT_MAX 34
#define RECORD_V2_EXTRA (1 + RECORD_V2_EXT_MAX)
#define RECORD_TAG_HOLES 1
#define RECORD_MAX_HOLES 2
/*
 * Format-3 volumes (docs/FORMAT.md, "Format version 3") also carry the
 * file's version and its entry bindings, in slots sized for all three items:
 * holes (2 + 32), version (2 + 8), bindings (2 + 16 * 4).
 */
#define RECORD_TAG_VERSION 2
#define RECORD_TAG_BINDINGS 3
#define RECORD_BINDING_LEN 16
#define RECORD_MAX_BINDINGS 4
#define RECORD_V3_EXT_MAX (RECORD_V2_EXT_MAX + 2 + 8 + 2 + RECORD_BINDING_LEN * RECORD_MAX_BINDINGS)
#define RECORD_V3_EXTRA (1 + RECORD_V3_EXT_MAX)
#define RECORD_MAX_LEN (RECORD_FIXED_LEN + RECORD_MAX_KEY_REF + RECORD_MAX_WRAPPED + RECORD_V3_EXTRA)

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

/* Block ranges [first, end) where a version-2 record's file may hold holes. */
struct record_holes {
	uint8_t n;
	struct {
		uint64_t first, end;
	} range[RECORD_MAX_HOLES];
};

/*
 * The directory entries a version-2 record's file may be reached by, each
 * record_binding_of() its parent directory's ID and its name, ascending;
 * n == 0: bound to none (any entry).
 */
struct record_bindings {
	uint8_t n;
	uint8_t id[RECORD_MAX_BINDINGS][RECORD_BINDING_LEN];
};

struct key_record {
	uint8_t version; /* 1 (0 is taken as 1) or 2 */
	uint8_t flags;
	uint8_t file_id[RECORD_FILE_ID_LEN];
	uint32_t key_version;
	char key_ref[RECORD_MAX_KEY_REF + 1]; /* NUL-terminated */
	uint16_t wrapped_len;
	uint8_t wrapped[RECORD_MAX_WRAPPED];
	uint8_t mac[RECORD_MAC_LEN];
	struct record_holes holes; /* version 2 only */
	/* Version 2 on format-3 volumes only (no room in older slots): */
	uint64_t file_version; /* 0: no version item */
	struct record_bindings bindings;
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

/*
 * slot_size_for_version - slot_size_for() for the records of a volume of
 * format @version (1, 2, or 3: version-2 records with room for every item).
 */
size_t slot_size_for_version(unsigned version, size_t key_ref_len, size_t max_wrapped);

/* record_holes_cover - do @h's ranges cover every block of [@first, @end)? */
bool record_holes_cover(const struct record_holes *h, uint64_t first, uint64_t end);

/*
 * record_holes_add - add [@first, @end) to @h, merging ranges that overlap
 * or touch; when more than RECORD_MAX_HOLES would remain, the two closest
 * are merged (the cover only grows).  @first < @end.
 */
void record_holes_add(struct record_holes *h, uint64_t first, uint64_t end);

/*
 * record_binding_of - the binding of the entry @name (NUL-terminated, 1..255
 * bytes) in the directory of ID @dirid (RECORD_BINDING_LEN bytes; all zero
 * on volumes without directory IDs): the first RECORD_BINDING_LEN bytes of
 * SHA-256("envelopefs v3 entry binding" || dirid || name).  0, -EINVAL
 * (an empty or longer name) or -EIO.
 */
int record_binding_of(const uint8_t dirid[RECORD_BINDING_LEN], const char *name,
		      uint8_t out[RECORD_BINDING_LEN]);

/* record_bindings_has - is @id one of @b's bindings? */
bool record_bindings_has(const struct record_bindings *b, const uint8_t id[RECORD_BINDING_LEN]);

/*
 * record_bindings_add - add @id to @b, keeping it ascending.  Returns 0
 * (also when @id was there), or -ENOSPC when @b is full: the caller then
 * binds the file to no entry (n = 0), which every entry passes.
 */
int record_bindings_add(struct record_bindings *b, const uint8_t id[RECORD_BINDING_LEN]);

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
