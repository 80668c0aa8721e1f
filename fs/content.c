/* SPDX-License-Identifier: MIT */
/*
 * File content I/O: plaintext ranges <-> sealed blocks.  See content.h.
 *
 * Notation: B = block size, S = sealed block size (B + BLOCK_OVERHEAD),
 * P = current plaintext size.  Block i holds plaintext [i*B, i*B + B) and is
 * stored at layout_block_offset(i); every block but the last is full.
 */
#include "content.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* Per-thread buffers: the sealed form of a whole request plus one block of
 * plaintext for read-modify-write.  Sized for the largest block size. */
struct scratch {
	uint8_t *sealed; /* SCRATCH_SEALED bytes */
	uint8_t *plain;	 /* VOLUME_MAX_BLOCK bytes */
	uint8_t *out;	 /* CONTENT_MAX_IO bytes, content_thread_buffer() */
	/* VOLUME_MAX_BLOCK + BLOCK_OVERHEAD bytes: the stored form of the
	 * last block a write extends, to put back if the write fails. */
	uint8_t *old_tail;
};
#define SCRATCH_SEALED                                                                     \
	((CONTENT_MAX_IO / VOLUME_MIN_BLOCK + 2) * (VOLUME_MIN_BLOCK + BLOCK_OVERHEAD) +   \
	 VOLUME_MAX_BLOCK + BLOCK_OVERHEAD)

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *p)
{
	struct scratch *s = p;

	free(s->sealed);
	free(s->plain);
	free(s->out);
	free(s->old_tail);
	free(s);
}

static void scratch_key_init(void)
{
	pthread_key_create(&scratch_key, scratch_free);
}

static struct scratch *scratch_get(void)
{
	struct scratch *s;

	pthread_once(&scratch_once, scratch_key_init);
	s = pthread_getspecific(scratch_key);
	if (s)
		return s;
	s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->sealed = malloc(SCRATCH_SEALED);
	s->plain = malloc(VOLUME_MAX_BLOCK);
	s->out = malloc(CONTENT_MAX_IO);
	s->old_tail = malloc(VOLUME_MAX_BLOCK + BLOCK_OVERHEAD);
	if (!s->sealed || !s->plain || !s->out || !s->old_tail ||
	    pthread_setspecific(scratch_key, s) != 0) {
		scratch_free(s);
		return NULL;
	}
	return s;
}

void *content_thread_buffer(void)
{
	struct scratch *s = scratch_get();

	return s ? s->out : NULL;
}

/*
 * The size and allocated blocks of backing @fd, and nothing else: asking a
 * multigrain-timestamp filesystem (ext4, xfs, btrfs) for the ctime makes its
 * next write stamp a fine-grained time, so every write would dirty the inode
 * and every fdatasync would write it as well as the data.
 */
static int backing_extent(int fd, struct stat *st)
{
	struct statx stx;

	memset(st, 0, sizeof(*st));
	if (statx(fd, "", AT_EMPTY_PATH, STATX_SIZE | STATX_BLOCKS, &stx) < 0)
		return -errno;
	st->st_size = (off_t)stx.stx_size;
	st->st_blocks = (blkcnt_t)stx.stx_blocks;
	return 0;
}

int content_size(int fd, const struct layout *l, uint64_t *size)
{
	struct stat st;

	int ret = backing_extent(fd, &st);

	if (ret < 0)
		return ret;
	*size = layout_plain_size(l, (uint64_t)st.st_size);
	return 0;
}

/*
 * -EFBIG when plaintext up to @plain_end needs backing offsets past what an
 * off_t holds (sealed blocks are longer than plaintext ones, so this comes
 * before the 2^63 the kernel allows), as a local file system answers past
 * its largest file; else 0.
 */
static int backing_fits(const struct layout *l, uint64_t plain_end)
{
	uint64_t blocks = plain_end / l->block_size + (plain_end % l->block_size != 0);

	return layout_block_offset(l, blocks) > (uint64_t)INT64_MAX ? -EFBIG : 0;
}

/* Backing bytes [*start, *end) holding the blocks of plaintext [off, off + len). */
static void backing_range(const struct layout *l, uint64_t off, uint64_t len, uint64_t *start,
			  uint64_t *end)
{
	uint64_t first = off / l->block_size;
	uint64_t last = (off + len - 1) / l->block_size;

	*start = layout_block_offset(l, first);
	*end = layout_block_offset(l, last + 1);
}

/* Plaintext length of block @index in a file of @size bytes (0 if beyond). */
static size_t block_len(const struct layout *l, uint64_t size, uint64_t index)
{
	uint64_t start = index * l->block_size;

	if (size <= start)
		return 0;
	return size - start >= l->block_size ? l->block_size : (size_t)(size - start);
}

static int declare_holes(const struct content_file *f, uint64_t first, uint64_t end);

/* pending_cover - is block @index in one of @p's ranges? */
static bool pending_cover(const struct pending_holes *p, uint64_t index)
{
	for (unsigned i = 0; p && i < p->n; i++)
		if (p->range[i].first <= index && index < p->range[i].end)
			return true;
	return false;
}

/* pending_add - add [@first, @end) to @p, merging the closest ranges when full. */
static void pending_add(struct pending_holes *p, uint64_t first, uint64_t end)
{
	unsigned i, closest = 0;

	for (i = 0; i < p->n; i++)
		if (p->range[i].first <= end && first <= p->range[i].end) {
			/* Overlapping or touching: one range. */
			p->range[i].first = p->range[i].first < first ? p->range[i].first : first;
			p->range[i].end = p->range[i].end > end ? p->range[i].end : end;
			return;
		}
	if (p->n == CONTENT_PENDING_MAX) {
		/* Full: widen the range nearest to the new one over it. */
		for (i = 1; i < p->n; i++)
			if ((p->range[i].first > end ? p->range[i].first - end : first - p->range[i].end) <
			    (p->range[closest].first > end ? p->range[closest].first - end
							   : first - p->range[closest].end))
				closest = i;
		if (first < p->range[closest].first)
			p->range[closest].first = first;
		if (end > p->range[closest].end)
			p->range[closest].end = end;
		return;
	}
	p->range[p->n].first = first;
	p->range[p->n++].end = end;
}

/*
 * pending_remove - blocks [@first, @end) now hold data.  A range cut in two
 * when @p is full keeps its middle: the cover may only be too wide.
 */
static void pending_remove(struct pending_holes *p, uint64_t first, uint64_t end)
{
	for (unsigned i = 0; p && i < p->n;) {
		uint64_t a = p->range[i].first, b = p->range[i].end;

		if (end <= a || b <= first) {
			i++;
		} else if (first <= a && b <= end) {
			p->range[i] = p->range[--p->n]; /* wholly written */
		} else if (first <= a) {
			p->range[i++].first = end;
		} else if (b <= end) {
			p->range[i++].end = first;
		} else if (p->n < CONTENT_PENDING_MAX) {
			p->range[i].end = first;
			p->range[p->n].first = end;
			p->range[p->n++].end = b;
			i++;
		} else {
			i++;
		}
	}
}

int content_settle_holes(const struct content_file *f)
{
	int ret = 0;

	while (ret == 0 && f->holes && f->pending && f->pending->n > 0) {
		unsigned last = f->pending->n - 1;

		ret = declare_holes(f, f->pending->range[last].first, f->pending->range[last].end);
		if (ret == 0)
			f->pending->n = (uint8_t)last;
	}
	return ret;
}

/*
 * is_hole - is stored block @index (@sealed_len bytes at @sealed) a hole?
 * All zeros, and where the record says the file may hold one: elsewhere an
 * all-zero block is a block someone zeroed (-EIO, named in *@bad_block).
 * Returns 1, 0 (not all zeros) or -EIO.
 */
static int is_hole(const struct content_file *f, uint64_t index, const uint8_t *sealed,
		   size_t sealed_len, uint64_t *bad_block)
{
	if (!layout_is_hole(sealed, sealed_len))
		return 0;
	if (f->holes && !record_holes_cover(f->holes, index, index + 1) &&
	    !pending_cover(f->pending, index)) {
		*bad_block = index;
		return -EIO;
	}
	return 1;
}

/*
 * declare_holes - blocks [@first, @end) are about to become holes: a file
 * whose record binds its holes records them first (content.h).
 */
static int declare_holes(const struct content_file *f, uint64_t first, uint64_t end)
{
	if (!f->holes || first >= end || record_holes_cover(f->holes, first, end))
		return 0;
	return f->declare_holes(f, first, end);
}

/* Open one stored block into @plain; a hole (all zeros) reads as zeros. */
static int open_block(const struct content_file *f, uint64_t index, const uint8_t *sealed,
		      size_t sealed_len, uint8_t *plain, uint64_t *bad_block)
{
	int hole;

	if (sealed_len <= BLOCK_OVERHEAD) {
		*bad_block = index;
		return -EIO;
	}
	hole = is_hole(f, index, sealed, sealed_len, bad_block);
	if (hole < 0)
		return hole;
	if (hole) {
		memset(plain, 0, sealed_len - BLOCK_OVERHEAD);
		return 0;
	}
	if (block_open(&f->owner, index, sealed, sealed_len, plain) != 0) {
		*bad_block = index;
		return -EIO;
	}
	return 0;
}

/* Read and open the existing block @index (@len plaintext bytes) into @plain. */
static int load_block(const struct content_file *f, uint64_t index, size_t len, uint8_t *plain,
		      uint8_t *sealed_tmp, uint64_t *bad_block)
{
	size_t got;
	int ret;

	if (len == 0)
		return 0;
	ret = layout_pread_upto(f->fd, sealed_tmp, len + BLOCK_OVERHEAD,
				layout_block_offset(f->layout, index), &got);
	if (ret < 0)
		return ret;
	if (got != len + BLOCK_OVERHEAD) {
		*bad_block = index;
		return -EIO;
	}
	return open_block(f, index, sealed_tmp, got, plain, bad_block);
}

int content_read(const struct content_file *f, void *out, size_t len, uint64_t off, size_t *done,
		 uint64_t *bad_block)
{
	const struct layout *l = f->layout;
	struct scratch *s = scratch_get();
	uint64_t size, first, last, start;
	size_t got;
	size_t pos = 0;
	int ret;

	*done = 0;
	if (!s)
		return -ENOMEM;
	if (len > CONTENT_MAX_IO)
		len = CONTENT_MAX_IO;
	if (len == 0)
		return 0;

	/*
	 * The size comes from the read itself, not from a stat of the backing
	 * file: the stored bytes of every block the range touches are asked
	 * for in one pread, and a short read is the end of the file (a regular
	 * file reads short only there).  A read that gets all it asked for
	 * lies wholly inside the file.  Past a short read, the size is what
	 * the backing holds up to where it stopped, as content_size() would
	 * say of a file of that length.
	 */
	first = off / l->block_size;
	last = (off + len - 1) / l->block_size;
	start = layout_block_offset(l, first);
	size_t want = (size_t)(last - first + 1) * l->sealed_size;

	ret = layout_pread_upto(f->fd, s->sealed, want, start, &got);
	if (ret < 0)
		return ret;
	size = got < want ? layout_plain_size(l, start + got) : UINT64_MAX;
	if (off >= size)
		return 0;
	if (len > size - off) {
		len = (size_t)(size - off);
		last = (off + len - 1) / l->block_size;
	}

	for (uint64_t i = first; i <= last; i++) {
		const uint8_t *sealed = s->sealed + (size_t)(i - first) * l->sealed_size;
		size_t blen = block_len(l, size, i);
		uint64_t bstart = i * l->block_size;
		size_t skip = off > bstart ? (size_t)(off - bstart) : 0;
		size_t take = blen - skip;

		if (take > len - pos)
			take = len - pos;
		if (skip == 0 && take == blen) {
			/* The whole block is wanted: open it in place. */
			ret = open_block(f, i, sealed, blen + BLOCK_OVERHEAD, (uint8_t *)out + pos,
					 bad_block);
		} else {
			ret = open_block(f, i, sealed, blen + BLOCK_OVERHEAD, s->plain, bad_block);
			if (ret == 0)
				memcpy((uint8_t *)out + pos, s->plain + skip, take);
		}
		if (ret < 0)
			return ret;
		pos += take;
	}
	*done = pos;
	return 0;
}

/*
 * Reserve backing space for [start, end) before writing it, so that a full
 * disk fails the request up front instead of leaving a torn block.  Only
 * needed where blocks may not be allocated yet: past the end of the backing
 * file, or in a hole.  A file whose st_blocks covers its size may still
 * have holes (blocks reserved past its end count too), so holes are looked
 * for, not guessed; a range without one needs no fallocate, which would
 * also stamp the file's times and dirty its inode.
 */
static int reserve(const struct content_file *f, uint64_t start, uint64_t end,
		   const struct stat *st)
{
	int fd = f->fd;

	if (end <= (uint64_t)st->st_size && f->holes_trusted) {
		off_t hole = lseek(fd, (off_t)start, SEEK_HOLE);

		if (hole < 0)
			return -errno;
		if ((uint64_t)hole >= end)
			return 0;
	}
	if (fallocate(fd, FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start)) < 0) {
		if (errno == EOPNOTSUPP)
			return 0; /* the backing fs cannot promise: write and see */
		return -errno;
	}
	return 0;
}

/*
 * A new file's first header and first blocks, [0, data_offset + @len), in
 * one pwritev: a network backing pays one round trip, not two.
 */
static int write_first(const struct content_file *f, const uint8_t *sealed, size_t len)
{
	struct iovec iov[2] = {
		{.iov_base = (void *)f->first_header, .iov_len = f->layout->data_offset},
		{.iov_base = (void *)sealed, .iov_len = len},
	};
	size_t total = f->layout->data_offset + len, done = 0;

	while (done < total) {
		ssize_t n = pwritev(f->fd, iov, 2, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
		/* Short: go on from where it stopped. */
		for (int i = 0; i < 2; i++) {
			size_t take = (size_t)n < iov[i].iov_len ? (size_t)n : iov[i].iov_len;

			iov[i].iov_base = (uint8_t *)iov[i].iov_base + take;
			iov[i].iov_len -= take;
			n -= (ssize_t)take;
		}
	}
	return 0;
}

/*
 * Write @len sealed bytes at @start, at or past the backing file's end
 * @backing_end, with no reservation first: nothing stored before
 * @backing_end is touched, so a full disk (a failed or short write) is
 * undone by cutting the file back, which needs no space.  This spares an
 * append -- every write of a file being copied in -- the fallocate, which
 * a network backing pays as one more round trip.
 */
static int append(const struct content_file *f, const uint8_t *sealed, size_t len,
		  uint64_t start, uint64_t backing_end)
{
	int ret = f->first_header ? write_first(f, sealed, len)
				  : layout_pwrite_full(f->fd, sealed, len, start);

	/* A cut that fails as well leaves a tail that reads as damage, never
	 * as data: EIO then says so rather than the write's own error. */
	if (ret < 0 && ftruncate(f->fd, (off_t)backing_end) < 0)
		return -EIO;
	return ret;
}

/*
 * Write @len sealed bytes at @start, the stored last block of the file
 * (@old_len bytes at @start, up to the backing file's end, kept in @old)
 * rewritten longer and more blocks after it, with no reservation first: the
 * bytes before the end are stored already, so a full disk (a failed or short
 * write) is undone by putting the old block back in place and cutting the
 * file back, neither of which needs space (as shrink() relies on).  This
 * spares the writes that continue a file in the middle of a block (tar
 * writes a file in pieces cut at its 10 KiB record boundaries: each next
 * piece continues the block the previous one ended in) the fallocate, which
 * a network backing pays as one more round trip.
 */
static int extend_tail(const struct content_file *f, const uint8_t *sealed, size_t len,
		       uint64_t start, const uint8_t *old, size_t old_len)
{
	int ret = layout_pwrite_full(f->fd, sealed, len, start);

	/* An undo that fails as well leaves a block that reads as damage:
	 * EIO then says so rather than the write's own error. */
	if (ret < 0 && (layout_pwrite_full(f->fd, old, old_len, start) < 0 ||
			ftruncate(f->fd, (off_t)(start + old_len)) < 0))
		return -EIO;
	return ret;
}

/*
 * Read stored block @index (@len plaintext bytes) into @s->sealed: 1 when it
 * is a hole (nothing opened), 0 when opened into @s->plain, or -errno.
 */
static int open_stored_block(const struct content_file *f, struct scratch *s, uint64_t index,
			     size_t len, uint64_t *bad_block)
{
	size_t got;
	int ret = layout_pread_upto(f->fd, s->sealed, len + BLOCK_OVERHEAD,
				    layout_block_offset(f->layout, index), &got);

	if (ret < 0)
		return ret;
	if (got != len + BLOCK_OVERHEAD) {
		*bad_block = index;
		return -EIO;
	}
	ret = is_hole(f, index, s->sealed, got, bad_block);
	if (ret != 0)
		return ret;
	return open_block(f, index, s->sealed, got, s->plain, bad_block);
}

/*
 * Re-seal block @index, holding @old_len plaintext bytes, as @new_len bytes
 * (zero-extended or cut) with plaintext [@zero_from, @zero_to) zeroed, at
 * its place.  A hole stays a hole: zeros need no key.  Used to pad the old
 * last block before the file grows past it, and to zero part of a block.
 */
static int reseal_block(const struct content_file *f, uint64_t index, size_t old_len,
			size_t new_len, size_t zero_from, size_t zero_to, uint64_t *bad_block)
{
	struct scratch *s = scratch_get();
	uint64_t boff = layout_block_offset(f->layout, index);
	int ret;

	if (!s)
		return -ENOMEM;
	/* 1 for a hole tells the caller there was nothing to write. */
	ret = open_stored_block(f, s, index, old_len, bad_block);
	if (ret != 0)
		return ret;
	if (new_len > old_len)
		memset(s->plain + old_len, 0, new_len - old_len);
	if (zero_to > zero_from)
		memset(s->plain + zero_from, 0, zero_to - zero_from);
	ret = block_seal(&f->owner, index, s->plain, new_len, s->sealed);
	if (ret < 0)
		return ret;
	if (new_len > old_len) {
		struct stat st;
		ret = backing_extent(f->fd, &st);
		if (ret < 0)
			return ret;
		ret = reserve(f, boff, boff + new_len + BLOCK_OVERHEAD, &st);
		if (ret < 0)
			return ret;
	}
	return layout_pwrite_full(f->fd, s->sealed, new_len + BLOCK_OVERHEAD, boff);
}

static int set_backing_size(const struct content_file *f, uint64_t plain_size)
{
	if (ftruncate(f->fd, (off_t)layout_backing_size(f->layout, plain_size)) < 0)
		return -errno;
	return 0;
}

/*
 * Shrink from @size to @new_size < @size: re-seal a new partial last block
 * in place (shorter than the old one, so it needs no space), then cut the
 * backing file.  If the backing refuses the cut (EIO, a quota), the block is
 * sealed again at its old length from the plaintext still at hand: the old
 * size with the shorter block sealed would read as a torn block (found by
 * tests/integration/test_backing_faults.py).
 */
static int shrink(const struct content_file *f, uint64_t size, uint64_t new_size,
		  uint64_t *bad_block)
{
	const struct layout *l = f->layout;
	uint64_t last = new_size / l->block_size, boff = layout_block_offset(l, last);
	size_t cut_len = block_len(l, new_size, last);
	size_t old_len = block_len(l, size, last);
	struct scratch *s = scratch_get();
	bool resealed = false;
	int ret;

	if (!s)
		return -ENOMEM;
	if (cut_len > 0 && cut_len < old_len) {
		/* 1 for a hole: nothing stored, nothing to re-seal. */
		ret = open_stored_block(f, s, last, old_len, bad_block);
		if (ret == 0)
			ret = block_seal(&f->owner, last, s->plain, cut_len, s->sealed);
		if (ret == 0)
			ret = layout_pwrite_full(f->fd, s->sealed, cut_len + BLOCK_OVERHEAD, boff);
		if (ret < 0)
			return ret;
		resealed = ret == 0;
	}
	ret = set_backing_size(f, new_size);
	/* Rewriting bytes already stored needs no space; as for grow()'s
	 * undo, the cut's own error is the one the caller gets. */
	if (ret < 0 && resealed &&
	    block_seal(&f->owner, last, s->plain, old_len, s->sealed) == 0)
		layout_pwrite_full(f->fd, s->sealed, old_len + BLOCK_OVERHEAD, boff);
	return ret;
}

/*
 * Grow from @size to @new_size > @size: pad the old last block, then extend.
 * @for_write: the gap before a write past the end, whose holes stay pending
 * (content.h); any other growth records them first.
 */
static int grow(const struct content_file *f, uint64_t size, uint64_t new_size, bool for_write,
		uint64_t *bad_block)
{
	uint64_t gap_first = (size + f->layout->block_size - 1) / f->layout->block_size;
	uint64_t gap_end = (new_size + f->layout->block_size - 1) / f->layout->block_size;
	const struct layout *l = f->layout;
	uint64_t last = size / l->block_size;
	size_t old_len = block_len(l, size, last);
	size_t new_len = block_len(l, new_size, last);
	bool padded = false;
	int ret = 0;

	/* Whether the backing file system takes the new size, before padding
	 * anything: a punch past the end changes nothing but fails with
	 * EFBIG where the ftruncate would.  Where punching is not supported
	 * the ftruncate answers, and a refusal is undone below. */
	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)layout_backing_size(l, new_size) - 1, 1) < 0 &&
	    errno == EFBIG)
		return -EFBIG;
	/* Every block after the old last one starts as a hole. */
	if (for_write && f->pending && gap_first < gap_end)
		pending_add(f->pending, gap_first, gap_end);
	else
		ret = declare_holes(f, gap_first, gap_end);
	if (ret < 0)
		return ret;
	if (old_len > 0 && old_len < l->block_size) {
		ret = reseal_block(f, last, old_len, new_len, 0, 0, bad_block);
		if (ret < 0)
			return ret;
		padded = ret == 0; /* 1: a hole, nothing written */
	}
	ret = set_backing_size(f, new_size);
	if (ret < 0 && padded) {
		/* The backing file system refused the size: cut the padded
		 * block back, which needs no space, so that the failed call
		 * leaves the size as it was. */
		uint64_t ignored;

		shrink(f, last * l->block_size + new_len, size, &ignored);
	}
	return ret;
}

int content_truncate(const struct content_file *f, uint64_t new_size, uint64_t *bad_block)
{
	const struct layout *l = f->layout;
	uint64_t size;
	int ret = content_size(f->fd, l, &size);

	if (ret < 0 || new_size == size)
		return ret;
	if (new_size > size) {
		ret = backing_fits(l, new_size);
		return ret < 0 ? ret : grow(f, size, new_size, false, bad_block);
	}
	return shrink(f, size, new_size, bad_block);
}

int content_write(const struct content_file *f, const void *buf, size_t len, uint64_t off,
		  uint64_t *bad_block)
{
	const struct layout *l = f->layout;
	struct scratch *s = scratch_get();
	uint64_t size, first, last, end = off + len;
	bool grown = false, tail_kept = false;
	struct stat st;
	uint8_t *out;
	int ret;

	if (!s)
		return -ENOMEM;
	if (len == 0)
		return 0;
	if (len > CONTENT_MAX_IO)
		return -EINVAL;
	ret = backing_fits(l, end);
	if (ret < 0)
		return ret;
	/* One look serves both the size and the space check below: growing
	 * first only moves the write further past the old end. */
	ret = backing_extent(f->fd, &st);
	if (ret < 0)
		return ret;
	if (f->first_header && (off != 0 || st.st_size != 0))
		return -EAGAIN;
	size = layout_plain_size(l, (uint64_t)st.st_size);
	if (off > size) {
		/* Only the final block may be short: pad the old last one and
		 * leave a hole up to the write. */
		ret = grow(f, size, off, true, bad_block);
		if (ret < 0)
			return ret;
		size = off;
		grown = true;
	}

	first = off / l->block_size;
	last = (end - 1) / l->block_size;
	out = s->sealed;
	for (uint64_t i = first; i <= last; i++) {
		uint64_t bstart = i * l->block_size;
		size_t from = off > bstart ? (size_t)(off - bstart) : 0;
		size_t to = end - bstart < l->block_size ? (size_t)(end - bstart) : l->block_size;
		size_t old_len = block_len(l, size, i);
		size_t new_len = to > old_len ? to : old_len;
		const uint8_t *src = (const uint8_t *)buf + (bstart + from - off);

		if (from > 0 || to < old_len) {
			/* Partial block over existing data: read-modify-write. */
			ret = load_block(f, i, old_len, s->plain, out, bad_block);
			if (ret < 0)
				return ret;
			/* The file's stored last block (its bytes end the backing
			 * file), which this write makes longer: kept for
			 * extend_tail()'s undo, which puts back exactly the
			 * bytes from @start to the old end. */
			if (i == first && old_len > 0 && !grown &&
			    layout_block_offset(l, i) + old_len + BLOCK_OVERHEAD ==
				    (uint64_t)st.st_size &&
			    end > size) {
				memcpy(s->old_tail, out, old_len + BLOCK_OVERHEAD);
				tail_kept = true;
			}
			memcpy(s->plain + from, src, to - from);
			src = s->plain;
		}
		ret = block_seal(&f->owner, i, src, new_len, out);
		if (ret < 0)
			return ret;
		out += new_len + BLOCK_OVERHEAD;
	}

	uint64_t start = layout_block_offset(l, first);
	size_t total = (size_t)(out - s->sealed);
	if (!grown && start >= (uint64_t)st.st_size)
		return append(f, s->sealed, total, start, (uint64_t)st.st_size);
	if (tail_kept) {
		ret = extend_tail(f, s->sealed, total, start, s->old_tail,
				  (size_t)((uint64_t)st.st_size - start));
	} else {
		ret = reserve(f, start, start + total, &st);
		if (ret == 0)
			ret = layout_pwrite_full(f->fd, s->sealed, total, start);
	}
	if (ret == 0)
		pending_remove(f->pending, first, last + 1);
	return ret;
}

int content_allocate(const struct content_file *f, uint64_t off, uint64_t len, int keep_size,
		     uint64_t *bad_block)
{
	const struct layout *l = f->layout;
	uint64_t size, start, end;
	int ret;

	if (len == 0)
		return -EINVAL;
	ret = backing_fits(l, off + len);
	if (ret == 0)
		ret = content_size(f->fd, l, &size);
	if (ret < 0)
		return ret;
	backing_range(l, off, len, &start, &end);
	if (fallocate(f->fd, FALLOC_FL_KEEP_SIZE, (off_t)start, (off_t)(end - start)) < 0)
		return -errno;
	if (!keep_size && off + len > size)
		return grow(f, size, off + len, false, bad_block);
	return 0;
}

/*
 * zero_stored - fallocate @mode (PUNCH_HOLE or ZERO_RANGE, KEEP_SIZE added) over
 * stored bytes.  A backing without ZERO_RANGE (tmpfs) gets a punch and the
 * space reserved again: the same zeros and the same allocation, in two steps
 * (found by tests/integration/test_other_backings.py).
 */
static int zero_stored(int fd, int mode, off_t start, off_t len)
{
	if (fallocate(fd, mode | FALLOC_FL_KEEP_SIZE, start, len) == 0)
		return 0;
	if (errno != EOPNOTSUPP || mode != FALLOC_FL_ZERO_RANGE)
		return -errno;
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, start, len) < 0 ||
	    fallocate(fd, FALLOC_FL_KEEP_SIZE, start, len) < 0)
		return -errno;
	return 0;
}

int content_zero(const struct content_file *f, uint64_t off, uint64_t len, int backing_mode,
		 uint64_t *bad_block)
{
	const struct layout *l = f->layout;
	uint64_t size, end, first, last, whole_first, whole_end;
	int ret = content_size(f->fd, l, &size);

	if (ret < 0)
		return ret;
	if (len == 0)
		return -EINVAL;
	if (off >= size)
		return 0;
	end = len > size - off ? size : off + len;
	first = off / l->block_size;
	last = (end - 1) / l->block_size;
	/* Blocks [whole_first, whole_end) lie wholly inside the range; the
	 * short last block does when the range reaches the end of file. */
	whole_first = (off + l->block_size - 1) / l->block_size;
	whole_end = end == size ? last + 1 : end / l->block_size;

	if (whole_first < whole_end) {
		uint64_t start = layout_block_offset(l, whole_first);
		uint64_t stop = layout_block_offset(l, whole_end - 1) +
				block_len(l, size, whole_end - 1) + BLOCK_OVERHEAD;

		/* Zeroed stored bytes are holes: the blocks read as zeros. */
		ret = declare_holes(f, whole_first, whole_end);
		if (ret < 0)
			return ret;
		ret = zero_stored(f->fd, backing_mode, (off_t)start, (off_t)(stop - start));
		if (ret < 0)
			return ret;
	}
	if (first < whole_first || whole_end <= first) {
		size_t blen = block_len(l, size, first);
		uint64_t bstart = first * l->block_size;
		size_t to = end - bstart < blen ? (size_t)(end - bstart) : blen;

		/* 1 for a hole: it reads as zeros already. */
		ret = reseal_block(f, first, blen, blen, (size_t)(off - bstart), to, bad_block);
		if (ret < 0)
			return ret;
	}
	if (last != first && last >= whole_end) {
		size_t blen = block_len(l, size, last);

		ret = reseal_block(f, last, blen, blen, 0, (size_t)(end - last * l->block_size),
				   bad_block);
	}
	return ret < 0 ? ret : 0;
}

/* Holes found among allocated blocks before SEEK_DATA settles for "data". */
#define SEEK_MAX_HOLE_PROBES 1024

int content_seek(const struct content_file *f, uint64_t off, int whence, uint64_t *result)
{
	const struct layout *l = f->layout;
	struct scratch *s = scratch_get();
	uint64_t size, index = 0;
	off_t found;
	int ret;

	if (!s)
		return -ENOMEM;
	ret = content_size(f->fd, l, &size);
	if (ret < 0)
		return ret;
	if (off >= size)
		return -ENXIO;
	if (!f->holes_trusted) {
		/* All data, and the end the one hole: never hides data. */
		*result = whence == SEEK_HOLE ? size : off;
		return 0;
	}
	if (whence == SEEK_HOLE) {
		off_t from = (off_t)layout_block_offset(l, off / l->block_size);

		/* A backing hole lies in a plaintext hole block when that block
		 * holds only zeros; a page-sized backing hole may sit inside a
		 * hole block whose ends share pages with data, so the block it
		 * starts in is the one to check, never the next (which may be
		 * data).  The end of the file counts as a hole. */
		for (int probe = 0; probe < SEEK_MAX_HOLE_PROBES; probe++) {
			size_t got;

			found = lseek(f->fd, from, SEEK_HOLE);
			if (found < 0)
				return -errno;
			index = ((uint64_t)found - l->data_offset) / l->sealed_size;
			if (index * l->block_size >= size)
				break;
			ret = layout_pread_upto(f->fd, s->sealed,
						block_len(l, size, index) + BLOCK_OVERHEAD,
						layout_block_offset(l, index), &got);
			if (ret < 0)
				return ret;
			if (layout_is_hole(s->sealed, got)) {
				*result = index * l->block_size < off ? off : index * l->block_size;
				return 0;
			}
			/* Data around the backing hole: go on after it. */
			from = lseek(f->fd, found, SEEK_DATA);
			if (from < 0 && errno == ENXIO)
				break;
			if (from < 0)
				return -errno;
		}
		/* No hole before the end (or too many to look at): the end is one. */
		*result = size;
		return 0;
	}

	/* SEEK_DATA: the block where backing data starts, unless that block
	 * is all zeros (the header's page, or an allocated hole): then on. */
	index = off / l->block_size;
	for (int probe = 0; probe < SEEK_MAX_HOLE_PROBES; probe++) {
		size_t got;

		found = lseek(f->fd, (off_t)layout_block_offset(l, index), SEEK_DATA);
		if (found < 0)
			return -errno;
		index = ((uint64_t)found - l->data_offset) / l->sealed_size;
		if (index * l->block_size >= size)
			return -ENXIO;
		ret = layout_pread_upto(f->fd, s->sealed, l->sealed_size,
					layout_block_offset(l, index), &got);
		if (ret < 0)
			return ret;
		if (!layout_is_hole(s->sealed, got))
			break;
		index++;
		if (index * l->block_size >= size)
			return -ENXIO;
	}
	*result = index * l->block_size;
	if (*result < off)
		*result = off;
	return 0;
}
