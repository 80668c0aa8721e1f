/* SPDX-License-Identifier: MIT */
/*
 * Backing-file layout: size arithmetic and key-record placement.
 * See layout.h and docs/FORMAT.md, "Backing files".
 */
#include "layout.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "crypto/block.h"
#include "crypto/secmem.h"

void layout_init(struct layout *l, const struct volume_config *cfg)
{
	l->block_size = cfg->block_size;
	l->sealed_size = cfg->block_size + BLOCK_OVERHEAD;
	l->placement = cfg->placement;
	l->data_offset = cfg->placement == PLACEMENT_HEADER ? cfg->header_size : 0;
	l->slot_size = cfg->placement == PLACEMENT_HEADER ? cfg->header_size / 2 : 0;
	l->record_version = cfg->format_version >= 2 ? 2 : 1;
	l->format_version = (uint8_t)cfg->format_version;
}

uint64_t layout_plain_size(const struct layout *l, uint64_t backing_size)
{
	/* A header-only or shorter file holds no content. */
	if (backing_size <= l->data_offset)
		return 0;
	uint64_t data = backing_size - l->data_offset;
	uint64_t full = data / l->sealed_size;
	uint64_t rest = data % l->sealed_size;

	/* A tail of BLOCK_OVERHEAD bytes or fewer cannot be a block: it is
	 * damage, and reading it fails; it adds nothing to the size. */
	return full * l->block_size + (rest > BLOCK_OVERHEAD ? rest - BLOCK_OVERHEAD : 0);
}

uint64_t layout_backing_size(const struct layout *l, uint64_t plain_size)
{
	uint64_t full = plain_size / l->block_size;
	uint64_t rest = plain_size % l->block_size;

	return l->data_offset + full * l->sealed_size + (rest ? rest + BLOCK_OVERHEAD : 0);
}

uint64_t layout_block_offset(const struct layout *l, uint64_t index)
{
	return l->data_offset + index * l->sealed_size;
}

bool layout_is_hole(const uint8_t *sealed, size_t len)
{
	/* Word-at-a-time zero test; this runs for every block read. */
	size_t i = 0;
	uint64_t acc = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, sealed + i, 8);
		acc |= w;
		if (acc)
			return false;
	}
	for (; i < len; i++)
		acc |= sealed[i];
	return acc == 0;
}

int layout_pread_upto(int fd, void *buf, size_t len, uint64_t off, size_t *got)
{
	*got = 0;
	while (*got < len) {
		ssize_t n = pread(fd, (char *)buf + *got, len - *got, (off_t)(off + *got));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		*got += (size_t)n;
	}
	return 0;
}

int layout_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got;
	int ret = layout_pread_upto(fd, buf, len, off, &got);

	if (ret < 0)
		return ret;
	return got == len ? 0 : -ENODATA;
}

int layout_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pwrite(fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return 0;
}

static int read_header_record(const struct layout *l, int fd, struct key_record *r,
			      struct record_pos *pos)
{
	uint8_t *header = malloc(l->data_offset);
	uint64_t seq;
	int slot, ret;

	if (!header)
		return -ENOMEM;
	ret = layout_pread_full(fd, header, l->data_offset, 0);
	if (ret == -ENODATA) {
		/* An empty file has no record yet; a non-empty file shorter
		 * than its header was truncated: that is damage. */
		off_t end = lseek(fd, 0, SEEK_END);
		ret = end == 0 ? -ENODATA : -EBADMSG;
		goto out;
	}
	if (ret < 0)
		goto out;
	ret = header_pick(header, l->slot_size, r, &seq, &slot);
	if (ret == -ENODATA)
		ret = -EBADMSG; /* a full-length header with two empty slots */
	if (ret == 0 && pos) {
		pos->seq = seq;
		pos->slot = slot;
	}
out:
	free(header);
	return ret;
}

static int read_xattr_record(int fd, struct key_record *r, struct record_pos *pos)
{
	uint8_t *buf = malloc(RECORD_MAX_LEN);
	ssize_t n;
	int ret;

	if (!buf)
		return -ENOMEM;
	n = fgetxattr(fd, VOLUME_XATTR_NAME, buf, RECORD_MAX_LEN);
	if (n < 0 && errno == ENODATA) {
		/* Only an empty file may lack its record: content without one
		 * (say, a restore that dropped xattrs) is damage, not emptiness. */
		struct stat st;
		ret = fstat(fd, &st) < 0 ? -errno : st.st_size == 0 ? -ENODATA : -EBADMSG;
	} else if (n < 0)
		ret = errno == ERANGE ? -EBADMSG : -errno;
	else
		ret = record_decode(buf, (size_t)n, r);
	if (ret == 0 && pos) {
		pos->seq = 1;
		pos->slot = 0;
	}
	free(buf);
	return ret;
}

int layout_read_record(const struct layout *l, int fd, struct key_record *r,
		       struct record_pos *pos)
{
	if (l->placement == PLACEMENT_HEADER)
		return read_header_record(l, fd, r, pos);
	return read_xattr_record(fd, r, pos);
}

int layout_first_header(const struct layout *l, const struct key_record *r, uint8_t **out)
{
	uint8_t *buf;
	int ret;

	if (l->placement != PLACEMENT_HEADER)
		return -EINVAL;
	buf = calloc(1, l->data_offset);
	if (!buf)
		return -ENOMEM;
	ret = slot_encode(r, 1, buf, l->slot_size);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	*out = buf;
	return 0;
}

/*
 * put_record - write @r as the record after *@pos's: a first record with
 * its whole header, a replacement into the other slot (or the xattr), in
 * one write, nothing synced.  On success *@pos describes it.
 */
static int put_record(const struct layout *l, int fd, const struct key_record *r,
		      struct record_pos *pos)
{
	bool replacing = pos->seq != 0;
	size_t len;
	uint8_t *buf;
	int ret;

	if (l->placement == PLACEMENT_HEADER) {
		int target = pos->slot == 0 ? 1 : 0;
		/* A first record is written with its empty partner slot, so
		 * the header is full length from the start. */
		size_t span = replacing ? l->slot_size : l->data_offset;

		buf = NULL;
		if (replacing) {
			buf = calloc(1, span);
			ret = buf ? slot_encode(r, pos->seq + 1, buf, l->slot_size) : -ENOMEM;
		} else {
			ret = layout_first_header(l, r, &buf);
		}
		if (ret == 0)
			ret = layout_pwrite_full(fd, buf, span,
						 replacing ? (uint64_t)target * l->slot_size : 0);
		free(buf);
		if (ret == 0) {
			pos->seq++;
			pos->slot = target;
		}
	} else {
		buf = malloc(RECORD_MAX_LEN);
		if (!buf)
			return -ENOMEM;
		ret = record_encode(r, buf, RECORD_MAX_LEN, &len);
		if (ret == 0 && fsetxattr(fd, VOLUME_XATTR_NAME, buf, len, 0) < 0)
			ret = -errno;
		free(buf);
		if (ret == 0) {
			pos->seq++;
			pos->slot = 0;
		}
	}
	return ret;
}

int layout_write_record(const struct layout *l, int fd, const struct key_record *r,
			struct record_pos *pos)
{
	bool replacing = pos->seq != 0;
	struct stat before;
	int ret;

	if (replacing && (fstat(fd, &before) < 0 || fdatasync(fd) < 0))
		return -errno;
	ret = put_record(l, fd, r, pos);
	if (ret == 0 && replacing) {
		/* A record is not content: the file keeps its mtime, which backups
		 * and build tools compare.  fsync, not fdatasync: an xattr record
		 * and that mtime are metadata, which fdatasync may leave behind. */
		struct timespec keep[2] = {{.tv_nsec = UTIME_OMIT}, before.st_mtim};
		if (futimens(fd, keep) < 0 || fsync(fd) < 0)
			ret = -errno;
	}
	return ret;
}

int layout_bump_record(const struct layout *l, int fd, const struct key_record *r,
		       struct record_pos *pos)
{
	return pos->seq == 0 ? -EINVAL : put_record(l, fd, r, pos);
}
