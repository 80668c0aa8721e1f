// SPDX-License-Identifier: MIT
/*
 * kms/ttlv.c: the writer against the encoding examples of the KMIP 1.4
 * specification (section 9.1.2), and the reader's strictness: every rule of
 * kms/ttlv.h broken once must be refused, and what it accepts must be found
 * by the accessors.
 */

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "kms/ttlv.h"

#define TAG 0x420020

static int hexval(char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* from_hex - @hex (spaces ignored) into @out; the byte count. */
static size_t from_hex(const char *hex, uint8_t *out)
{
	size_t n = 0;

	for (; *hex; hex++) {
		if (*hex == ' ')
			continue;
		out[n++] = (uint8_t)(hexval(hex[0]) << 4 | hexval(hex[1]));
		hex++;
	}
	return n;
}

static void check_encoding(void (*put)(struct ttlv_writer *w), const char *want_hex)
{
	uint8_t buf[128], want[128];
	size_t want_len = from_hex(want_hex, want), len = 0;
	struct ttlv_writer w;
	struct ttlv_item root;

	memset(buf, 0xAA, sizeof(buf)); /* padding must be written, not left */
	ttlv_writer_init(&w, buf, sizeof(buf));
	put(&w);
	CHECK_EQ_INT(ttlv_finish(&w, &len), 0);
	CHECK_EQ_INT(len, want_len);
	CHECK(memcmp(buf, want, want_len) == 0);
	CHECK_EQ_INT(ttlv_parse(buf, len, &root), 0);
	CHECK_EQ_INT(root.tag, TAG);
}

static void put_int(struct ttlv_writer *w)
{
	ttlv_put_int(w, TAG, 8);
}

static void put_long(struct ttlv_writer *w)
{
	ttlv_put_long(w, TAG, 123456789000000000LL);
}

static void put_enum(struct ttlv_writer *w)
{
	ttlv_put_enum(w, TAG, 255);
}

static void put_bool(struct ttlv_writer *w)
{
	ttlv_put_bool(w, TAG, true);
}

static void put_text(struct ttlv_writer *w)
{
	ttlv_put_text(w, TAG, "Hello World");
}

static void put_bytes(struct ttlv_writer *w)
{
	ttlv_put_bytes(w, TAG, "\x01\x02\x03", 3);
}

static void put_struct(struct ttlv_writer *w)
{
	ttlv_begin(w, TAG);
	ttlv_put_enum(w, 0x420004, 254);
	ttlv_put_int(w, 0x420005, 255);
	ttlv_end(w);
}

/* The examples of KMIP 1.4 section 9.1.2, byte for byte. */
static void test_spec_examples(void)
{
	check_encoding(put_int, "420020 02 00000004 00000008 00000000");
	check_encoding(put_long, "420020 03 00000008 01B69B4BA5749200");
	check_encoding(put_enum, "420020 05 00000004 000000FF 00000000");
	check_encoding(put_bool, "420020 06 00000008 0000000000000001");
	check_encoding(put_text, "420020 07 0000000B 48656C6C6F20576F726C64 0000000000");
	check_encoding(put_bytes, "420020 08 00000003 010203 0000000000");
	check_encoding(put_struct, "420020 01 00000020 420004 05 00000004 000000FE 00000000 "
				   "420005 02 00000004 000000FF 00000000");
}

static void test_writer_errors(void)
{
	uint8_t buf[64];
	struct ttlv_writer w;
	unsigned i;

	ttlv_writer_init(&w, buf, 16);
	ttlv_put_text(&w, TAG, "more than eight");
	CHECK_EQ_INT(ttlv_finish(&w, NULL), -ENOSPC);
	ttlv_writer_init(&w, buf, sizeof(buf));
	ttlv_begin(&w, TAG);
	CHECK_EQ_INT(ttlv_finish(&w, NULL), -EINVAL); /* left open */
	ttlv_writer_init(&w, buf, sizeof(buf));
	ttlv_end(&w);
	CHECK_EQ_INT(ttlv_finish(&w, NULL), -EINVAL); /* closed nothing */
	ttlv_writer_init(&w, buf, sizeof(buf));
	ttlv_put_int(&w, 0x1000000, 1);
	CHECK_EQ_INT(ttlv_finish(&w, NULL), -EINVAL); /* tag above 24 bits */
	ttlv_writer_init(&w, buf, sizeof(buf));
	for (i = 0; i <= TTLV_MAX_DEPTH; i++)
		ttlv_begin(&w, TAG);
	CHECK(ttlv_finish(&w, NULL) < 0);
	/* The first error sticks: later items that would fit change nothing. */
	ttlv_writer_init(&w, buf, 8);
	ttlv_put_int(&w, TAG, 1);
	ttlv_writer_init(&w, buf, 8);
	ttlv_put_int(&w, TAG, 1);
	ttlv_put_int(&w, 0x1000000, 1);
	CHECK_EQ_INT(ttlv_finish(&w, NULL), -ENOSPC);
}

/* refused - @hex must not parse. */
static void refused(const char *hex)
{
	uint8_t buf[256];
	size_t n = from_hex(hex, buf);
	struct ttlv_item root;

	if (ttlv_parse(buf, n, &root) != -EBADMSG) {
		fprintf(stderr, "accepted: %s\n", hex);
		CHECK(0);
	}
}

static void test_reader_strict(void)
{
	refused("");
	refused("420020 02 00000004 00000008");			  /* truncated padding */
	refused("420020 02 00000004 00000008 00000001");	  /* nonzero padding */
	refused("420020 02 00000008 0000000000000008");		  /* integer of 8 bytes */
	refused("420020 03 00000004 00000008 00000000");	  /* long of 4 bytes */
	refused("420020 06 00000008 0000000000000002");		  /* boolean 2 */
	refused("420020 0B 00000004 00000008 00000000");	  /* unknown type */
	refused("420020 00 00000004 00000008 00000000");	  /* type 0 */
	refused("000020 02 00000004 00000008 00000000");	  /* tag 0x0000xx */
	refused("420020 07 00000003 410042 0000000000");	  /* NUL in text */
	refused("420020 07 00000003 414243 0000000000 00");	  /* trailing byte */
	refused("420020 04 00000004 00000001 00000000");	  /* big integer not 8n */
	refused("420020 01 00000008 420004 02 00000004");	  /* structure cut short */
	refused("420020 01 00000004 00000000");			  /* structure not 8n */
	refused("420020 01 00000010 420004 02 00000004 00000001 00000000 00"); /* overfull */
	refused("420020 01 00000018 420004 02 00000004 00000001 00000000 "
		"420005 02 00000004");				  /* inner item past the end */
	refused("420020 08 FFFFFFF8 00");			  /* length beyond the buffer */
}

static void test_depth_limit(void)
{
	uint8_t buf[TTLV_HEADER * (TTLV_MAX_DEPTH + 2)];
	struct ttlv_item root;
	unsigned i, levels;

	/* Nested empty structures: TTLV_MAX_DEPTH levels parse, one more does not. */
	for (levels = TTLV_MAX_DEPTH; levels <= TTLV_MAX_DEPTH + 1; levels++) {
		for (i = 0; i < levels; i++) {
			uint8_t *p = buf + i * TTLV_HEADER;
			uint32_t len = (levels - 1 - i) * TTLV_HEADER;

			p[0] = 0x42, p[1] = 0x00, p[2] = 0x20, p[3] = TTLV_STRUCTURE;
			p[4] = (uint8_t)(len >> 24), p[5] = (uint8_t)(len >> 16);
			p[6] = (uint8_t)(len >> 8), p[7] = (uint8_t)len;
		}
		CHECK_EQ_INT(ttlv_parse(buf, levels * TTLV_HEADER, &root),
			     levels <= TTLV_MAX_DEPTH ? 0 : -EBADMSG);
	}
}

static void test_accessors(void)
{
	uint8_t buf[256], small_text[4];
	struct ttlv_writer w;
	struct ttlv_item root, it;
	char text[16];
	const uint8_t *p;
	size_t len, n;
	int32_t i32;
	uint32_t u32;

	ttlv_writer_init(&w, buf, sizeof(buf));
	ttlv_begin(&w, 0x420001);
	ttlv_put_text(&w, 0x420094, "uid-1");
	ttlv_put_int(&w, 0x42000D, -3);
	ttlv_put_text(&w, 0x420094, "uid-2");
	ttlv_put_enum(&w, 0x42005C, 0x1F);
	ttlv_put_bytes(&w, 0x4200C2, "\x09\x08", 2);
	ttlv_end(&w);
	REQUIRE(ttlv_finish(&w, &len) == 0);
	REQUIRE(ttlv_parse(buf, len, &root) == 0);
	CHECK_EQ_INT(ttlv_count(&root, 0x420094), 2);
	CHECK_EQ_INT(ttlv_child(&root, 0x420094, 1, &it), 0);
	CHECK(ttlv_item_text(&it, text, sizeof(text)) == 0 && strcmp(text, "uid-2") == 0);
	CHECK_EQ_INT(ttlv_child(&root, 0x420094, 2, &it), -ENOENT);
	CHECK(ttlv_get_int(&root, 0x42000D, &i32) == 0 && i32 == -3);
	CHECK(ttlv_get_enum(&root, 0x42005C, &u32) == 0 && u32 == 0x1F);
	CHECK(ttlv_get_bytes(&root, 0x4200C2, &p, &n) == 0 && n == 2 && p[0] == 9 && p[1] == 8);
	CHECK_EQ_INT(ttlv_get_int(&root, 0x42005C, &i32), -EPROTO); /* an enum, not an integer */
	CHECK_EQ_INT(ttlv_get_enum(&root, 0x420099, &u32), -ENOENT);
	CHECK_EQ_INT(ttlv_get_text(&root, 0x420094, (char *)small_text, sizeof(small_text)),
		     -ENOSPC);
	CHECK_EQ_INT(ttlv_get_text(&root, 0x42000D, text, sizeof(text)), -EPROTO);
	/* A leaf has no children. */
	CHECK_EQ_INT(ttlv_child(&it, 0x420094, 0, &it), -ENOENT);
}

static void test_message_len(void)
{
	uint8_t hdr[TTLV_HEADER];
	size_t total;

	from_hex("42007B 01 00000100", hdr);
	CHECK(ttlv_message_len(hdr, 4096, &total) == 0 && total == 0x108);
	CHECK_EQ_INT(ttlv_message_len(hdr, 0x107, &total), -EBADMSG);
	from_hex("42007B 02 00000004", hdr);
	CHECK_EQ_INT(ttlv_message_len(hdr, 4096, &total), -EBADMSG); /* not a structure */
	from_hex("42007B 01 00000104", hdr);
	CHECK_EQ_INT(ttlv_message_len(hdr, 4096, &total), -EBADMSG); /* not 8n */
}

int main(void)
{
	RUN(test_spec_examples);
	RUN(test_writer_errors);
	RUN(test_reader_strict);
	RUN(test_depth_limit);
	RUN(test_accessors);
	RUN(test_message_len);
	return check_summary();
}
