// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for kms/ttlv.c, which parses whatever a KMIP server (or
 * anything posing as one) answers.
 *
 * Any input goes through ttlv_parse() as it is.  An accepted message must
 * survive every lookup without reading outside the input (ASan is the
 * oracle), and must encode back byte for byte: walking it and writing each
 * item again through the writer gives the input, so the reader accepts
 * exactly the canonical encoding the writer makes.
 */

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/bigendian.h"
#include "kms/ttlv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* rewrite - write @it (and everything inside it) again through @w. */
static void rewrite(struct ttlv_writer *w, const struct ttlv_item *it)
{
	struct ttlv_item child;
	size_t off = 0;

	switch (it->type) {
	case TTLV_STRUCTURE:
		ttlv_begin(w, it->tag);
		/* Children in order: the nth of each tag would reorder; walk offsets instead. */
		while (off < it->len) {
			child.tag = (uint32_t)it->value[off] << 16 | (uint32_t)it->value[off + 1] << 8 |
				    it->value[off + 2];
			child.type = it->value[off + 3];
			child.len = get_be32(it->value + off + 4);
			child.value = it->value + off + TTLV_HEADER;
			rewrite(w, &child);
			off += TTLV_HEADER + ((child.len + 7u) & ~7u);
		}
		ttlv_end(w);
		break;
	case TTLV_INTEGER:
		ttlv_put_int(w, it->tag, (int32_t)get_be32(it->value));
		break;
	case TTLV_ENUM:
		ttlv_put_enum(w, it->tag, get_be32(it->value));
		break;
	case TTLV_LONG:
		ttlv_put_long(w, it->tag, (int64_t)get_be64(it->value));
		break;
	case TTLV_BOOLEAN:
		ttlv_put_bool(w, it->tag, get_be64(it->value) != 0);
		break;
	case TTLV_BYTES:
		ttlv_put_bytes(w, it->tag, it->value, it->len);
		break;
	default: {
		/* Text and the types the writer has no call for: same bytes as a byte string, type patched. */
		size_t at = w->len;

		ttlv_put_bytes(w, it->tag, it->value, it->len);
		if (!w->err)
			w->buf[at + 3] = it->type;
	}
	}
}

static void lookups(const struct ttlv_item *root)
{
	static const uint32_t tags[] = { 0x42007A, 0x42000F, 0x42007C, 0x420094, 0x42000D };
	struct ttlv_item it;
	const uint8_t *p;
	char text[64];
	size_t i, n, len;
	int32_t i32;
	uint32_t u32;

	for (i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		n = ttlv_count(root, tags[i]);
		if (n)
			assert(ttlv_child(root, tags[i], n - 1, &it) == 0);
		assert(ttlv_child(root, tags[i], n, &it) == -ENOENT);
		ttlv_get_int(root, tags[i], &i32);
		ttlv_get_enum(root, tags[i], &u32);
		ttlv_get_text(root, tags[i], text, sizeof(text));
		if (ttlv_get_bytes(root, tags[i], &p, &len) == 0)
			assert(p >= root->value && p + len <= root->value + root->len);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ttlv_item root;
	struct ttlv_writer w;
	uint8_t *copy, *out;
	size_t len;

	/* A private copy, so ASan sees any read past the input's end. */
	copy = malloc(size ? size : 1);
	assert(copy);
	memcpy(copy, data, size);
	if (ttlv_parse(copy, size, &root) == 0) {
		lookups(&root);
		out = malloc(size);
		assert(out);
		ttlv_writer_init(&w, out, size);
		rewrite(&w, &root);
		assert(ttlv_finish(&w, &len) == 0 && len == size && memcmp(out, copy, size) == 0);
		free(out);
	}
	free(copy);
	return 0;
}
