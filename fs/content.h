/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_CONTENT_H
#define ENVELOPEFS_FS_CONTENT_H

/*
 * File content I/O on one backing file: the translation between plaintext
 * offsets and sealed blocks (docs/FORMAT.md, "Backing files").
 *
 * Callers hold the inode's content lock: shared for content_read() and
 * content_seek(), exclusive for everything that changes the file.  The
 * backing fd must be open for reading and writing (reading for the read-only
 * functions) and the file must already have its key record (only an empty
 * file may lack one).
 *
 * Every function returns 0 or -errno.  -EIO means an authentication failure
 * in a stored block (or an all-zero one where the record allows no hole): *@bad_block then names the block so that the caller can
 * log it once.  No unauthenticated byte is ever copied to the caller.
 * -EFBIG: the file would grow past the largest backing offset an off_t holds.
 *
 * Per-thread scratch buffers sized for the largest request (CONTENT_MAX_IO)
 * are reused, so the I/O path allocates nothing per request or block.
 */

#include <stddef.h>
#include <stdint.h>

#include "crypto/block.h"
#include "layout.h"

#define CONTENT_MAX_IO (1024 * 1024) /* FUSE max_write / max_read */

/*
 * Holes a write past the end left (the blocks between the old end and the
 * write) and no key record lists yet.  The kernel's writeback sends a
 * file's writes to several daemon threads at once, so a sequential writer's
 * writes arrive out of order and each such gap is usually filled a moment
 * later: the gaps are kept here, shrunk by every write, and only those
 * still there when the file is synced or closed go into the record
 * (content_settle_holes).  More than CONTENT_PENDING_MAX ranges merge: the
 * cover only grows.
 */
#define CONTENT_PENDING_MAX 8
struct pending_holes {
	uint8_t n;
	struct {
		uint64_t first, end;
	} range[CONTENT_PENDING_MAX];
};

struct content_file {
	int fd;
	const struct layout *layout;
	struct block_owner owner; /* key, volume UUID, file ID */
	/* The backing's SEEK_HOLE/SEEK_DATA tell the truth (backing.h); when
	 * not, every block counts as data to lseek and to a write. */
	bool holes_trusted;
	/* A new file's first record header (layout.data_offset bytes), not yet
	 * stored, that content_write() stores in the same backing write as
	 * the blocks (filekey.h: struct filekey_first); NULL when none.  Only
	 * for a write at offset 0 of a file whose backing is still empty. */
	const uint8_t *first_header;
	/* Where the file may hold holes, from its version-2 key record: an
	 * all-zero stored block outside them reads as -EIO.  NULL for a
	 * version-1 record (every all-zero block is a hole) and for lseek. */
	const struct record_holes *holes;
	/* With @holes: called before blocks [first, end) may become holes (a
	 * grow, a punch), to record them durably first.  0 or -errno. */
	int (*declare_holes)(const struct content_file *f, uint64_t first, uint64_t end);
	/* With @holes: the file's pending holes (above), changed by writes. */
	struct pending_holes *pending;
};

/*
 * content_settle_holes - put the pending holes of @f that are still there
 * into its key record (declare_holes), before a sync makes the file's
 * content durable or its last writer closes it.  0 or -errno.
 */
int content_settle_holes(const struct content_file *f);

/* content_size - plaintext size from the backing file's size (no key needed). */
int content_size(int fd, const struct layout *l, uint64_t *size);

/*
 * content_read - read up to @len bytes at @off into @out; *@done receives
 * the count (short only at end of file).  Holes read as zeros.  One pread of
 * exactly the blocks covering the range.
 */
int content_read(const struct content_file *f, void *out, size_t len, uint64_t off, size_t *done,
		 uint64_t *bad_block);

/*
 * content_write - write @len (<= CONTENT_MAX_IO) bytes at @off.  Whole blocks
 * are sealed straight from @buf; only a partial first/last block that holds
 * existing data is read, opened and re-sealed.  Writing past the end first
 * pads the old last block to full size, so only the final block is ever
 * short.  Space is preallocated before a write that may land in a hole or
 * overwrites the end; a write past the end is cut back when it fails, and
 * one that rewrites the stored last block longer puts that block back too,
 * so a full disk yields -ENOSPC and no torn block.  One backing write (with
 * @f->first_header, header and blocks together); -EAGAIN, nothing written,
 * when a first header comes for a write not at offset 0 or a backing file
 * no longer empty (another host gave it content meanwhile: its record is
 * not overwritten, and the caller loads it instead).
 */
int content_write(const struct content_file *f, const void *buf, size_t len, uint64_t off,
		  uint64_t *bad_block);

/* content_truncate - set the plaintext size to @new_size (shrink or grow with a hole). */
int content_truncate(const struct content_file *f, uint64_t new_size, uint64_t *bad_block);

/*
 * content_allocate - fallocate(2) mode 0 (@keep_size false: reserve space and
 * extend the size to @off + @len if larger) or FALLOC_FL_KEEP_SIZE.
 */
int content_allocate(const struct content_file *f, uint64_t off, uint64_t len, int keep_size,
		     uint64_t *bad_block);

/*
 * content_zero - make plaintext [@off, @off + @len) read as zeros without
 * changing the size: fallocate(2) FALLOC_FL_PUNCH_HOLE (@backing_mode
 * FALLOC_FL_PUNCH_HOLE: the whole blocks' backing space is freed) or the
 * zeroing half of FALLOC_FL_ZERO_RANGE (@backing_mode FALLOC_FL_ZERO_RANGE:
 * it stays allocated).  Whole blocks become holes, stored as zeros
 * (docs/FORMAT.md), so they need no key; a partial block holding data is
 * opened and re-sealed with its part zeroed.  Bytes past the end are left
 * alone: there are none to zero.
 */
int content_zero(const struct content_file *f, uint64_t off, uint64_t len, int backing_mode,
		 uint64_t *bad_block);

/* content_seek - SEEK_DATA / SEEK_HOLE at plaintext offset @off; -ENXIO past the end. */
int content_seek(const struct content_file *f, uint64_t off, int whence, uint64_t *result);

/*
 * content_thread_buffer - this thread's CONTENT_MAX_IO-byte buffer for read
 * replies (plaintext, never key material), or NULL if it cannot be had.
 */
void *content_thread_buffer(void);

#endif
