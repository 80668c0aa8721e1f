// SPDX-License-Identifier: MIT
/*
 * TTLV writer and strict reader (contract in kms/ttlv.h).
 */

#include <errno.h>
#include <string.h>

#include "crypto/bigendian.h"
#include "kms/ttlv.h"

#define TAG_MAX 0xFFFFFFu

static size_t padded(size_t len)
{
	return (len + 7) & ~(size_t)7;
}

/* ---- writer ---- */

void ttlv_writer_init(struct ttlv_writer *w, uint8_t *buf, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->buf = buf;
	w->cap = cap;
}

static void fail(struct ttlv_writer *w, int err)
{
	if (!w->err)
		w->err = err;
}

/*
 * put_header - write an item header for @len value bytes and reserve the
 * padded value; returns where the value goes, or NULL after recording why.
 */
static uint8_t *put_header(struct ttlv_writer *w, uint32_t tag, uint8_t type, size_t len)
{
	uint8_t *p;

	if (w->err)
		return NULL;
	if (tag > TAG_MAX || len > UINT32_MAX) {
		fail(w, -EINVAL);
		return NULL;
	}
	if (w->cap - w->len < TTLV_HEADER || w->cap - w->len - TTLV_HEADER < padded(len)) {
		fail(w, -ENOSPC);
		return NULL;
	}
	p = w->buf + w->len;
	p[0] = (uint8_t)(tag >> 16);
	p[1] = (uint8_t)(tag >> 8);
	p[2] = (uint8_t)tag;
	p[3] = type;
	put_be32(p + 4, (uint32_t)len);
	/* The padding must be zero (the reader insists): clear it before the value goes in. */
	memset(p + TTLV_HEADER, 0, padded(len));
	w->len += TTLV_HEADER + padded(len);
	return p + TTLV_HEADER;
}

void ttlv_begin(struct ttlv_writer *w, uint32_t tag)
{
	size_t at = w->len;

	if (!w->err && w->depth == TTLV_MAX_DEPTH) {
		fail(w, -EINVAL);
		return;
	}
	if (put_header(w, tag, TTLV_STRUCTURE, 0))
		w->open[w->depth++] = at;
}

void ttlv_end(struct ttlv_writer *w)
{
	size_t at, len;

	if (w->err)
		return;
	if (!w->depth) {
		fail(w, -EINVAL);
		return;
	}
	at = w->open[--w->depth];
	len = w->len - at - TTLV_HEADER;
	if (len > UINT32_MAX) {
		fail(w, -EINVAL);
		return;
	}
	put_be32(w->buf + at + 4, (uint32_t)len);
}

void ttlv_put_int(struct ttlv_writer *w, uint32_t tag, int32_t v)
{
	uint8_t *p = put_header(w, tag, TTLV_INTEGER, 4);

	if (p)
		put_be32(p, (uint32_t)v);
}

void ttlv_put_enum(struct ttlv_writer *w, uint32_t tag, uint32_t v)
{
	uint8_t *p = put_header(w, tag, TTLV_ENUM, 4);

	if (p)
		put_be32(p, v);
}

void ttlv_put_long(struct ttlv_writer *w, uint32_t tag, int64_t v)
{
	uint8_t *p = put_header(w, tag, TTLV_LONG, 8);

	if (p)
		put_be64(p, (uint64_t)v);
}

void ttlv_put_bool(struct ttlv_writer *w, uint32_t tag, bool v)
{
	uint8_t *p = put_header(w, tag, TTLV_BOOLEAN, 8);

	if (p)
		put_be64(p, v ? 1 : 0);
}

void ttlv_put_text(struct ttlv_writer *w, uint32_t tag, const char *s)
{
	size_t len = strlen(s);
	uint8_t *p = put_header(w, tag, TTLV_TEXT, len);

	if (p)
		memcpy(p, s, len);
}

void ttlv_put_bytes(struct ttlv_writer *w, uint32_t tag, const void *data, size_t len)
{
	uint8_t *p = put_header(w, tag, TTLV_BYTES, len);

	if (p && len)
		memcpy(p, data, len);
}

int ttlv_finish(struct ttlv_writer *w, size_t *len)
{
	if (!w->err && w->depth)
		w->err = -EINVAL;
	if (w->err)
		return w->err;
	if (len)
		*len = w->len;
	return 0;
}

/* ---- reader ---- */

static void read_header(const uint8_t *p, struct ttlv_item *it)
{
	it->tag = (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
	it->type = p[3];
	it->len = get_be32(p + 4);
	it->value = p + TTLV_HEADER;
}

/* fixed_len - the value length a fixed-size type must have; 0 for variable-length types. */
static uint32_t fixed_len(uint8_t type)
{
	switch (type) {
	case TTLV_INTEGER:
	case TTLV_ENUM:
	case TTLV_INTERVAL:
		return 4;
	case TTLV_LONG:
	case TTLV_BOOLEAN:
	case TTLV_DATE_TIME:
		return 8;
	default:
		return 0;
	}
}

static bool known_type(uint8_t type)
{
	return type >= TTLV_STRUCTURE && type <= TTLV_INTERVAL;
}

static bool zeros(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/*
 * check_item - the item at @p, with @avail bytes left in its container, is
 * well formed; *@used is its size with padding.  Recursion is bounded by
 * @depth.
 */
static int check_item(const uint8_t *p, size_t avail, unsigned depth, size_t *used)
{
	struct ttlv_item it;
	size_t total, off;
	uint32_t fixed;

	if (avail < TTLV_HEADER || depth >= TTLV_MAX_DEPTH)
		return -EBADMSG;
	read_header(p, &it);
	if (!known_type(it.type) || (it.tag >> 16) == 0)
		return -EBADMSG;
	fixed = fixed_len(it.type);
	if (fixed && it.len != fixed)
		return -EBADMSG;
	/* Structures hold whole items, and items are multiples of 8 bytes long. */
	if (it.type == TTLV_STRUCTURE && it.len % 8)
		return -EBADMSG;
	/* Big integers are sign-extended to a multiple of 8 bytes by their encoder. */
	if (it.type == TTLV_BIG_INTEGER && (it.len == 0 || it.len % 8))
		return -EBADMSG;
	total = TTLV_HEADER + padded(it.len);
	if (total > avail)
		return -EBADMSG;
	if (!zeros(it.value + it.len, padded(it.len) - it.len))
		return -EBADMSG;
	if (it.type == TTLV_BOOLEAN && (get_be64(it.value) > 1))
		return -EBADMSG;
	if (it.type == TTLV_TEXT && memchr(it.value, 0, it.len))
		return -EBADMSG;
	if (it.type == TTLV_STRUCTURE) {
		for (off = 0; off < it.len;) {
			size_t n;

			if (check_item(it.value + off, it.len - off, depth + 1, &n) < 0)
				return -EBADMSG;
			off += n;
		}
	}
	*used = total;
	return 0;
}

int ttlv_parse(const uint8_t *buf, size_t len, struct ttlv_item *root)
{
	size_t used;

	if (!buf || check_item(buf, len, 0, &used) < 0 || used != len)
		return -EBADMSG;
	read_header(buf, root);
	return 0;
}

int ttlv_message_len(const uint8_t hdr[TTLV_HEADER], size_t max, size_t *total)
{
	struct ttlv_item it;
	size_t n;

	read_header(hdr, &it);
	if (it.type != TTLV_STRUCTURE || it.len % 8)
		return -EBADMSG;
	n = TTLV_HEADER + (size_t)it.len;
	if (n > max)
		return -EBADMSG;
	*total = n;
	return 0;
}

int ttlv_child(const struct ttlv_item *parent, uint32_t tag, size_t nth, struct ttlv_item *out)
{
	struct ttlv_item it;
	size_t off;

	if (parent->type != TTLV_STRUCTURE)
		return -ENOENT;
	/* ttlv_parse() checked every header and length below @parent: the walk stays inside. */
	for (off = 0; off < parent->len; off += TTLV_HEADER + padded(it.len)) {
		read_header(parent->value + off, &it);
		if (it.tag == tag && nth-- == 0) {
			*out = it;
			return 0;
		}
	}
	return -ENOENT;
}

size_t ttlv_count(const struct ttlv_item *parent, uint32_t tag)
{
	struct ttlv_item it;
	size_t n = 0;

	while (ttlv_child(parent, tag, n, &it) == 0)
		n++;
	return n;
}

static int typed(const struct ttlv_item *parent, uint32_t tag, uint8_t type, struct ttlv_item *it)
{
	int rc = ttlv_child(parent, tag, 0, it);

	if (rc < 0)
		return rc;
	return it->type == type ? 0 : -EPROTO;
}

int ttlv_get_int(const struct ttlv_item *parent, uint32_t tag, int32_t *v)
{
	struct ttlv_item it;
	int rc = typed(parent, tag, TTLV_INTEGER, &it);

	if (rc == 0)
		*v = (int32_t)get_be32(it.value);
	return rc;
}

int ttlv_get_enum(const struct ttlv_item *parent, uint32_t tag, uint32_t *v)
{
	struct ttlv_item it;
	int rc = typed(parent, tag, TTLV_ENUM, &it);

	if (rc == 0)
		*v = get_be32(it.value);
	return rc;
}

int ttlv_item_text(const struct ttlv_item *item, char *out, size_t cap)
{
	if (item->type != TTLV_TEXT)
		return -EPROTO;
	if ((size_t)item->len >= cap)
		return -ENOSPC;
	memcpy(out, item->value, item->len);
	out[item->len] = '\0';
	return 0;
}

int ttlv_get_text(const struct ttlv_item *parent, uint32_t tag, char *out, size_t cap)
{
	struct ttlv_item it;
	int rc = ttlv_child(parent, tag, 0, &it);

	return rc < 0 ? rc : ttlv_item_text(&it, out, cap);
}

int ttlv_get_bytes(const struct ttlv_item *parent, uint32_t tag, const uint8_t **p, size_t *len)
{
	struct ttlv_item it;
	int rc = typed(parent, tag, TTLV_BYTES, &it);

	if (rc == 0) {
		*p = it.value;
		*len = it.len;
	}
	return rc;
}
