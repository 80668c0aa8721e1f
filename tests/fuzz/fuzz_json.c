// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for kms/json.c, which parses whatever a KMS (or anything
 * posing as one) answers.
 *
 * Any input goes through json_parse() as it is.  An accepted document must
 * answer lookups without crashing, and its root, if a string, must read back
 * in full.  Independently, the input taken as a string value must survive
 * the writer and the reader unchanged (when it is UTF-8 without NUL), and be
 * refused by the writer otherwise.
 */

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kms/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const paths[] = { "", "[0]", "[1][0]", "a", "a.b", "data.plaintext",
				     "data.batch_results[3].ciphertext", "errors[0]", "__type" };

static void lookups(const struct json_doc *doc, size_t size)
{
	char buf[256];
	size_t i, n;
	enum json_type t;
	int64_t v;
	bool b;

	assert(json_type_at(doc, "", &t) == 0);
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		int rc = json_get_string(doc, paths[i], buf, sizeof(buf), &n);

		assert(rc == 0 || rc == -ENOENT || rc == -EPROTO || rc == -ENOSPC);
		if (rc == 0)
			assert(n < sizeof(buf) && buf[n] == '\0' && strlen(buf) == n);
		rc = json_get_int(doc, paths[i], &v);
		assert(rc == 0 || rc == -ENOENT || rc == -EPROTO || rc == -ERANGE);
		json_get_bool(doc, paths[i], &b);
		json_array_len(doc, paths[i], &n);
	}
	if (t == JSON_STRING) {
		/* The decoded string is never longer than the text: it always fits in size + 1. */
		char *big = malloc(size + 1);
		int rc;

		assert(big);
		rc = json_get_string(doc, "", big, size + 1, &n);
		assert(rc == 0 || rc == -EPROTO);
		free(big);
	}
}

static void roundtrip(const uint8_t *data, size_t size)
{
	size_t cap = 6 * size + 3, len, n;
	char *out = malloc(cap), *back = malloc(size + 1);
	struct json_writer w;
	struct json_doc *doc = NULL;
	int rc;

	assert(out && back);
	json_writer_init(&w, out, cap);
	json_write_string_n(&w, (const char *)data, size);
	rc = json_writer_finish(&w, &len);
	if (rc == 0) {
		assert(json_parse(out, len, &doc) == 0);
		rc = json_get_string(doc, "", back, size + 1, &n);
		if (memchr(data, 0, size)) {
			assert(rc == -EPROTO);
		} else {
			assert(rc == 0 && n == size && memcmp(back, data, size) == 0);
		}
		json_free(doc);
	} else {
		assert(rc == -EINVAL); /* not UTF-8 */
	}
	free(out);
	free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct json_doc *doc = NULL;
	int rc = json_parse((const char *)data, size, &doc);

	assert(rc == 0 || rc == -EBADMSG || rc == -E2BIG);
	if (rc == 0) {
		lookups(doc, size);
		json_free(doc);
	} else {
		assert(doc == NULL);
	}
	roundtrip(data, size);
	return 0;
}
