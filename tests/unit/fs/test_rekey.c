// SPDX-License-Identifier: MIT
/*
 * The re-key journal header (fs/rekey.c): docs/FORMAT.md's rekey_journal
 * vector, computed independently (Python hashlib), and the strict decoder.
 */

#include "vector.h"

#include <errno.h>

#include "check.h"
#include "fs/rekey.h"

static int n_vectors;

static void check_journal(const struct vector *v, const char *type)
{
	static uint8_t buf[REKEY_JOURNAL_HEADER];
	struct rekey_journal_header h = { 0 }, back;
	uint8_t head[56 + REKEY_MAX_HANDLE], sum[32];
	const char *size = vector_field(v, "plain_size"), *htype = vector_field(v, "handle_type");
	size_t head_len, handle_len;
	size_t i;

	(void)type;
	n_vectors++;
	if (!size || !htype || vector_hex(v, "old_file_id", h.old_file_id, 16, 16, NULL) ||
	    vector_hex(v, "new_file_id", h.new_file_id, 16, 16, NULL) ||
	    vector_hex(v, "handle", h.handle, sizeof(h.handle), 0, &handle_len) ||
	    vector_hex(v, "head", head, sizeof(head), 0, &head_len) ||
	    vector_hex(v, "checksum", sum, 32, 32, NULL)) {
		fprintf(stderr, "%s:%d: malformed rekey_journal vector\n", v->doc, v->line);
		CHECK(0);
		return;
	}
	h.plain_size = strtoull(size, NULL, 10);
	h.handle_type = (int32_t)strtol(htype, NULL, 10);
	h.handle_len = (uint32_t)handle_len;

	REQUIRE(rekey_journal_encode(&h, buf) == 0);
	CHECK(head_len == 56 + handle_len && memcmp(buf, head, head_len) == 0);
	for (i = head_len; i < REKEY_JOURNAL_HEADER - 32; i++)
		if (buf[i]) {
			CHECK(0);
			break;
		}
	CHECK(memcmp(buf + REKEY_JOURNAL_HEADER - 32, sum, 32) == 0);

	REQUIRE(rekey_journal_decode(buf, &back) == 0);
	CHECK(memcmp(back.old_file_id, h.old_file_id, 16) == 0 &&
	      memcmp(back.new_file_id, h.new_file_id, 16) == 0 && back.plain_size == h.plain_size &&
	      back.handle_type == h.handle_type && back.handle_len == h.handle_len &&
	      memcmp(back.handle, h.handle, handle_len) == 0);

	/* Any changed byte, padding and checksum included, makes it no journal. */
	for (i = 0; i < REKEY_JOURNAL_HEADER; i += 7) {
		buf[i] ^= 0x20;
		CHECK_EQ_INT(rekey_journal_decode(buf, &back), -EBADMSG);
		buf[i] ^= 0x20;
	}
	h.handle_len = 0;
	CHECK_EQ_INT(rekey_journal_encode(&h, buf), -EINVAL);
	h.handle_len = REKEY_MAX_HANDLE + 1;
	CHECK_EQ_INT(rekey_journal_encode(&h, buf), -EINVAL);
}

static void test_format_md_vector(void)
{
	static const char *const types[] = { "rekey_journal", NULL };

	vector_scan("FORMAT.md", types, check_journal);
	CHECK(n_vectors >= 1);
}

int main(void)
{
	RUN(test_format_md_vector);
	return check_summary();
}
