/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_TTLV_H
#define ENVELOPEFS_KMS_TTLV_H

/*
 * KMIP's binary encoding, TTLV (OASIS KMIP 1.4, section 9.1): every item is
 *   tag (3 bytes, big-endian) | type (1) | length (4, big-endian) | value,
 * the value padded with zero bytes to a multiple of 8.  A Structure's value
 * is a sequence of items.  Integers, enumerations and intervals are 4 bytes
 * (padded to 8), long integers, booleans and date-times 8, text strings
 * UTF-8 without NUL, byte strings anything.
 *
 * Writer: the caller's buffer (secmem when it will carry a key), nothing
 * allocated.  An overflow or a misuse is remembered and reported once by
 * ttlv_finish(), so building a message needs no check per item.
 *
 * Reader: ttlv_parse() checks a whole message before anything reads it, and
 * is strict, as input from the network must be: a known type; the exact
 * length of each fixed-size type; zero padding; a Structure exactly filled
 * by its items; booleans 0 or 1; nesting at most TTLV_MAX_DEPTH deep; text
 * without NUL.  After it, items are looked up in place (no allocation, no
 * copy): ttlv_child() and the ttlv_get_*() accessors cannot read outside the
 * buffer, whatever it held.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ttlv_type {
	TTLV_STRUCTURE = 0x01,
	TTLV_INTEGER = 0x02,
	TTLV_LONG = 0x03,
	TTLV_BIG_INTEGER = 0x04,
	TTLV_ENUM = 0x05,
	TTLV_BOOLEAN = 0x06,
	TTLV_TEXT = 0x07,
	TTLV_BYTES = 0x08,
	TTLV_DATE_TIME = 0x09,
	TTLV_INTERVAL = 0x0A,
};

#define TTLV_HEADER 8
/* Deeper than any KMIP 1.x message (a Locate attribute is 5 levels down). */
#define TTLV_MAX_DEPTH 16

/* ---- writer ---- */

struct ttlv_writer {
	uint8_t *buf;
	size_t cap;
	size_t len;
	int err;			/* first error, 0 if none */
	size_t open[TTLV_MAX_DEPTH];	/* offsets of the structures not yet closed */
	unsigned depth;
};

void ttlv_writer_init(struct ttlv_writer *w, uint8_t *buf, size_t cap);
/* Open a Structure with @tag; items written until the matching ttlv_end() are its value. */
void ttlv_begin(struct ttlv_writer *w, uint32_t tag);
void ttlv_end(struct ttlv_writer *w);
void ttlv_put_int(struct ttlv_writer *w, uint32_t tag, int32_t v);
void ttlv_put_enum(struct ttlv_writer *w, uint32_t tag, uint32_t v);
void ttlv_put_long(struct ttlv_writer *w, uint32_t tag, int64_t v);
void ttlv_put_bool(struct ttlv_writer *w, uint32_t tag, bool v);
/* Text: @s (NUL-terminated); bytes: @len bytes of @p. */
void ttlv_put_text(struct ttlv_writer *w, uint32_t tag, const char *s);
void ttlv_put_bytes(struct ttlv_writer *w, uint32_t tag, const void *p, size_t len);
/*
 * ttlv_finish - 0 and the message length in *@len (if @len), or the first
 * error: -ENOSPC (buffer too small), -EINVAL (a tag above 24 bits, an
 * unbalanced begin/end, nesting too deep, a length above 2^32-1).
 */
int ttlv_finish(struct ttlv_writer *w, size_t *len);

/* ---- reader ---- */

/* One item inside a parsed buffer: @value points at @len value bytes (padding not counted). */
struct ttlv_item {
	uint32_t tag;
	uint8_t type;
	uint32_t len;
	const uint8_t *value;
};

/*
 * ttlv_parse - check that @buf (@len bytes) is exactly one well-formed item
 * (see the rules above) and describe it in *@root.  0, or -EBADMSG.
 */
int ttlv_parse(const uint8_t *buf, size_t len, struct ttlv_item *root);

/*
 * ttlv_message_len - from the first TTLV_HEADER bytes of a message, the
 * number of bytes of the whole message (header and padded value), so a
 * reader knows how much more to read.  -EBADMSG if the header cannot start
 * a message of at most @max bytes.
 */
int ttlv_message_len(const uint8_t hdr[TTLV_HEADER], size_t max, size_t *total);

/*
 * ttlv_child - the @nth (from 0) item tagged @tag directly inside the
 * Structure @parent.  0, or -ENOENT (none, or @parent is no Structure).
 */
int ttlv_child(const struct ttlv_item *parent, uint32_t tag, size_t nth, struct ttlv_item *out);

/* ttlv_count - how many items tagged @tag lie directly inside @parent. */
size_t ttlv_count(const struct ttlv_item *parent, uint32_t tag);

/*
 * Typed lookups of the first child @tag of @parent: 0, -ENOENT (absent) or
 * -EPROTO (present with another type).  Text is copied NUL-terminated into
 * @out (-ENOSPC if it does not fit); bytes are pointed at (@p into the
 * buffer).
 */
int ttlv_get_int(const struct ttlv_item *parent, uint32_t tag, int32_t *v);
int ttlv_get_enum(const struct ttlv_item *parent, uint32_t tag, uint32_t *v);
int ttlv_get_text(const struct ttlv_item *parent, uint32_t tag, char *out, size_t cap);
int ttlv_get_bytes(const struct ttlv_item *parent, uint32_t tag, const uint8_t **p,
		   size_t *len);

/* ttlv_item_text - @item's text copied NUL-terminated into @out; -EPROTO, -ENOSPC as above. */
int ttlv_item_text(const struct ttlv_item *item, char *out, size_t cap);

#endif
