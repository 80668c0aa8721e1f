/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_LAYOUT_H
#define ENVELOPEFS_FS_LAYOUT_H

/*
 * Where things sit inside a backing file (docs/FORMAT.md, "Backing files").
 *
 *   header placement:  [slot 0][slot 1][block 0][block 1]...[last block]
 *   xattr placement:   [block 0][block 1]...[last block], record in the
 *                      xattr VOLUME_XATTR_NAME
 *
 * Every block but the last is stored full (block_size + BLOCK_OVERHEAD); the
 * last holds 1..block_size plaintext bytes.  So the plaintext size follows
 * from the backing size alone, without a key:
 *
 *   data = backing size - data_offset
 *   size = (data / sealed) * block_size + max(data % sealed - OVERHEAD, 0)
 *
 * A backing file of size 0 has no record and no content yet: the record (and
 * the DEK, and the KMS call) is created by the first write, so `touch` never
 * reaches the KMS.  A stored block that is entirely zero bytes is a hole and
 * reads as zeros (see docs/THREAT-MODEL.md for what that concedes).
 *
 * Nothing here knows about FUSE; the daemon and envelopefsctl share it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "crypto/record.h"
#include "volume.h"

struct layout {
	uint32_t block_size;
	uint32_t sealed_size; /* block_size + BLOCK_OVERHEAD */
	uint32_t data_offset; /* header_size, or 0 for xattr placement */
	uint32_t slot_size;   /* header_size / 2, or 0 */
	enum record_placement placement;
	uint8_t record_version; /* records new keys get: 2 on a format-2 or -3 volume, else 1 */
	uint8_t format_version; /* the volume's: what its header slots were sized for */
};

/*
 * record_v2 - does this volume write version-2 key records (docs/FORMAT.md,
 * "Key record, version 2")?  A version-1 volume keeps writing version 1, so
 * the previous release still reads it; both versions are read everywhere.
 */
static inline bool record_v2(const struct layout *l)
{
	return l->record_version == 2;
}

/* Where the current record was found, so the next write goes elsewhere. */
struct record_pos {
	uint64_t seq; /* header: sequence of the current slot (0: none yet) */
	int slot;     /* header: slot holding the current record (-1: none) */
};

void layout_init(struct layout *l, const struct volume_config *cfg);

/* layout_plain_size - plaintext size of a backing file of @backing_size bytes. */
uint64_t layout_plain_size(const struct layout *l, uint64_t backing_size);

/*
 * layout_backing_size - backing size for @plain_size bytes of content in a
 * file that has a record (header placement counts the header).
 */
uint64_t layout_backing_size(const struct layout *l, uint64_t plain_size);

/* layout_block_offset - backing offset of block @index. */
uint64_t layout_block_offset(const struct layout *l, uint64_t index);

/*
 * layout_pread_full / layout_pwrite_full - all @len bytes at @off, across
 * short transfers and EINTR.  0 or -errno; a read that meets the end of the
 * file first is -ENODATA (the file is shorter than its layout says).
 */
int layout_pread_full(int fd, void *buf, size_t len, uint64_t off);
int layout_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/*
 * layout_pread_upto - up to @len bytes at @off, across short reads and
 * EINTR; *@got is what was read, short only at the end of the file.
 * 0 or -errno.
 */
int layout_pread_upto(int fd, void *buf, size_t len, uint64_t off, size_t *got);

/* layout_is_hole - true when all @len bytes of a stored block are zero. */
bool layout_is_hole(const uint8_t *sealed, size_t len);

/*
 * layout_read_record - read the current key record of the backing file @fd
 * (a readable fd, not O_PATH).  Returns 0, -ENODATA when the file has no
 * record yet (empty file / no xattr), -EBADMSG when the record is corrupt,
 * or -errno from the I/O.  @pos may be NULL.
 */
int layout_read_record(const struct layout *l, int fd, struct key_record *r,
		       struct record_pos *pos);

/*
 * layout_write_record - make @r the current record of @fd, crash-safely:
 * header placement writes the slot that does not hold *@pos's record, with
 * sequence pos->seq + 1; xattr placement replaces the xattr in one
 * fsetxattr() (atomic in the backing filesystem's journal).
 * A first record (pos->seq == 0, pos->slot == -1) is written like file data,
 * without a sync.  Replacing a record fdatasync()s before (the old record is
 * durable before anything else is touched) and fsync()s after (the new one is
 * durable before the caller reports success, and before a later replacement
 * may overwrite the old slot), and keeps the file's mtime: a record is not
 * content.  On success *@pos describes the new record.
 * Returns 0 or -errno.
 */
int layout_write_record(const struct layout *l, int fd, const struct key_record *r,
			struct record_pos *pos);

/*
 * layout_bump_record - replace *@pos's record (it must have one) by @r in
 * one write of the other slot, or one fsetxattr(), with no sync at all:
 * safe only when the current record is durable (docs/FORMAT.md, "Crash-safe
 * replacement": a torn write loses to it).  For the version bump
 * (fileversion.h), which a content change follows at once, so the file's
 * mtime is not kept.  On success *@pos describes @r.  0 or -errno.
 */
int layout_bump_record(const struct layout *l, int fd, const struct key_record *r,
		       struct record_pos *pos);

/*
 * layout_first_header - with header placement, the first @l->data_offset
 * bytes of a file whose first record is @r (slot 0 holding it at sequence 1,
 * slot 1 empty): what layout_write_record() writes for a first record, for a
 * caller that stores it together with the file's first blocks.  Returns a
 * malloc'd buffer in *@out, or -EINVAL for xattr placement, -ENOMEM.
 */
int layout_first_header(const struct layout *l, const struct key_record *r, uint8_t **out);

#endif
