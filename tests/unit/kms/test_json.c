// SPDX-License-Identifier: MIT
/* Unit tests for kms/json.c: strict parsing, path lookups, the writer. */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kms/json.h"

static int parse_str(const char *s)
{
	struct json_doc *doc = NULL;
	int rc = json_parse(s, strlen(s), &doc);

	json_free(doc);
	return rc;
}

static void test_accepts_valid_documents(void)
{
	static const char *const ok[] = {
		"{}", "[]", "0", "-0", "1.5e10", "-12.25E-3", "\"\"", "true", "false", "null",
		" \t\r\n{\"a\" : [1, 2, {\"b\": null}] }\n", "[[[[[]]]]]",
		"\"\\u00e9\\ud83d\\ude00\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"caf\xc3\xa9 \xf0\x9f\x98\x80\"",
		"{\"a\":1,\"b\":2}", "{\"\\u0061\":1,\"b\":2}",
	};
	size_t i;

	for (i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		int rc = parse_str(ok[i]);

		if (rc != 0)
			fprintf(stderr, "refused valid #%zu: %s (%d)\n", i, ok[i], rc);
		CHECK_EQ_INT(rc, 0);
	}
}

static void test_refuses_malformed_documents(void)
{
	static const char *const bad[] = {
		"", " ", "{", "}", "[1,]", "{\"a\":1,}", "[1 2]", "{\"a\" 1}", "{a:1}", "{'a':1}",
		"01", "-", "1.", ".5", "1e", "+1", "0x10", "NaN", "Infinity", "tru", "nul", "truex",
		"\"abc", "\"a\tb\"", "\"\\x\"", "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"",
		"\"\\ud800\\u0041\"", "\"\xc3\"", "\"\xc0\xaf\"", "\"\xed\xa0\x80\"", "\"\xf5\x80\x80\x80\"",
		"\"\xff\"", "{} {}", "[] x", "{\"a\":1,\"a\":2}", "{\"a\":1,\"\\u0061\":2}", "[1]]",
		"{\"a\":1}}", "{\"a\":}", "[,]", "{,}", "[\"a\":1]", "{\"a\",1}",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = parse_str(bad[i]);

		if (rc != -EBADMSG)
			fprintf(stderr, "accepted or wrong error for #%zu: %s (%d)\n", i, bad[i], rc);
		CHECK_EQ_INT(rc, -EBADMSG);
	}
	/* A NUL byte inside the given length is a control character, not an end. */
	{
		struct json_doc *doc = NULL;

		CHECK_EQ_INT(json_parse("\"a\0b\"", 5, &doc), -EBADMSG);
		CHECK_EQ_INT(json_parse("{}\0", 3, &doc), -EBADMSG);
		CHECK(doc == NULL);
	}
}

static void test_limits(void)
{
	char deep[2 * (JSON_MAX_DEPTH + 1) + 1];
	size_t i;
	char *big;
	size_t n;

	for (i = 0; i < JSON_MAX_DEPTH; i++) {
		deep[i] = '[';
		deep[JSON_MAX_DEPTH + i] = ']';
	}
	deep[2 * JSON_MAX_DEPTH] = '\0';
	CHECK_EQ_INT(parse_str(deep), 0);
	for (i = 0; i <= JSON_MAX_DEPTH; i++) {
		deep[i] = '[';
		deep[JSON_MAX_DEPTH + 1 + i] = ']';
	}
	deep[2 * (JSON_MAX_DEPTH + 1)] = '\0';
	CHECK_EQ_INT(parse_str(deep), -E2BIG);

	/* A million nested brackets: refused at the depth limit, no stack growth. */
	n = 1000000;
	big = malloc(n + 1);
	REQUIRE(big);
	memset(big, '[', n);
	big[n] = '\0';
	CHECK_EQ_INT(parse_str(big), -E2BIG);

	/* More values than JSON_MAX_TOKENS. */
	n = 2 * (size_t)JSON_MAX_TOKENS + 2;
	big = realloc(big, n + 1);
	REQUIRE(big);
	big[0] = '[';
	for (i = 1; i + 1 < n; i += 2) {
		big[i] = '0';
		big[i + 1] = ',';
	}
	big[n - 1] = ']';
	big[n - 2] = '0';
	big[n] = '\0';
	CHECK_EQ_INT(parse_str(big), -E2BIG);
	free(big);

	{
		struct json_doc *doc = NULL;

		CHECK_EQ_INT(json_parse("0", (size_t)JSON_MAX_LEN + 1, &doc), -E2BIG);
	}
}

static void test_lookup(void)
{
	static const char body[] =
		"{\"data\":{\"plaintext\":\"AAEC\",\"key_version\":3,\"neg\":-9223372036854775808,"
		"\"big\":9223372036854775808,\"frac\":1.5,\"ok\":true,"
		"\"batch_results\":[{\"ciphertext\":\"vault:v1:x\"},{\"error\":\"bad \\\"ct\\\"\"},"
		"{},{\"ciphertext\":\"vault:v2:\\u00e9\"}]},\"esc\\u002ename\":\"nul\\u0000in\","
		"\"list\":[[1,2],[3]]}";
	struct json_doc *doc = NULL;
	enum json_type type;
	char buf[64];
	size_t len, n;
	int64_t v;
	bool b;

	REQUIRE(json_parse(body, strlen(body), &doc) == 0);
	CHECK_EQ_INT(json_get_string(doc, "data.plaintext", buf, sizeof(buf), &len), 0);
	CHECK(strcmp(buf, "AAEC") == 0 && len == 4);
	CHECK_EQ_INT(json_get_int(doc, "data.key_version", &v), 0);
	CHECK_EQ_INT(v, 3);
	CHECK_EQ_INT(json_get_int(doc, "data.neg", &v), 0);
	CHECK(v == INT64_MIN);
	CHECK_EQ_INT(json_get_int(doc, "data.big", &v), -ERANGE);
	CHECK_EQ_INT(json_get_int(doc, "data.frac", &v), -EPROTO);
	CHECK_EQ_INT(json_get_bool(doc, "data.ok", &b), 0);
	CHECK(b);
	CHECK_EQ_INT(json_array_len(doc, "data.batch_results", &n), 0);
	CHECK_EQ_INT(n, 4);
	CHECK_EQ_INT(json_get_string(doc, "data.batch_results[0].ciphertext", buf, sizeof(buf), NULL), 0);
	CHECK(strcmp(buf, "vault:v1:x") == 0);
	CHECK_EQ_INT(json_get_string(doc, "data.batch_results[1].error", buf, sizeof(buf), NULL), 0);
	CHECK(strcmp(buf, "bad \"ct\"") == 0);
	CHECK_EQ_INT(json_get_string(doc, "data.batch_results[2].ciphertext", buf, sizeof(buf), NULL),
		     -ENOENT);
	CHECK_EQ_INT(json_get_string(doc, "data.batch_results[3].ciphertext", buf, sizeof(buf), &len), 0);
	CHECK(strcmp(buf, "vault:v2:\xc3\xa9") == 0 && len == 11);
	CHECK_EQ_INT(json_get_string(doc, "data.batch_results[4].ciphertext", buf, sizeof(buf), NULL),
		     -ENOENT);
	CHECK_EQ_INT(json_get_string(doc, "list[1][0]", buf, sizeof(buf), NULL), -EPROTO);
	CHECK_EQ_INT(json_get_int(doc, "list[1][0]", &v), 0);
	CHECK_EQ_INT(v, 3);
	CHECK_EQ_INT(json_get_int(doc, "list[0][1]", &v), 0);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(json_type_at(doc, "", &type), 0);
	CHECK_EQ_INT(type, JSON_OBJECT);
	CHECK_EQ_INT(json_type_at(doc, "data.plaintext.x", &type), -ENOENT);
	CHECK_EQ_INT(json_type_at(doc, "data.batch_results", &type), 0);
	CHECK_EQ_INT(type, JSON_ARRAY);
	/* A name holding '.' cannot be addressed: the path means esc -> name. */
	CHECK_EQ_INT(json_type_at(doc, "esc.name", &type), -ENOENT);
	/* Too small a buffer is -ENOSPC, never a truncated value. */
	CHECK_EQ_INT(json_get_string(doc, "data.plaintext", buf, 4, NULL), -ENOSPC);
	CHECK_EQ_INT(json_get_string(doc, "data.plaintext", buf, 5, NULL), 0);
	CHECK_EQ_INT(json_get_string(doc, "data.batch_results[1].error", buf, 8, NULL), -ENOSPC);
	/* Bad path syntax. */
	CHECK_EQ_INT(json_type_at(doc, "data..plaintext", &type), -EINVAL);
	CHECK_EQ_INT(json_type_at(doc, "list[x]", &type), -EINVAL);
	CHECK_EQ_INT(json_type_at(doc, "list[1", &type), -EINVAL);
	CHECK_EQ_INT(json_type_at(doc, "data.", &type), -EINVAL);
	json_free(doc);

	/* A string that carries U+0000 cannot become a C string. */
	REQUIRE(json_parse("{\"a\":\"x\\u0000y\"}", 16, &doc) == 0);
	CHECK_EQ_INT(json_get_string(doc, "a", buf, sizeof(buf), NULL), -EPROTO);
	json_free(doc);

	REQUIRE(json_parse("[\"a\",[\"b\"]]", 11, &doc) == 0);
	CHECK_EQ_INT(json_get_string(doc, "[1][0]", buf, sizeof(buf), NULL), 0);
	CHECK(strcmp(buf, "b") == 0);
	json_free(doc);
}

static void test_writer(void)
{
	struct json_writer w;
	char buf[256];
	size_t len;
	struct json_doc *doc = NULL;

	json_writer_init(&w, buf, sizeof(buf));
	json_write_object_begin(&w);
	json_write_key(&w, "KeyId");
	json_write_string(&w, "alias/x\"y\\z");
	json_write_key(&w, "EncryptionContext");
	json_write_object_begin(&w);
	json_write_key(&w, "vol");
	json_write_string(&w, "ab\n\x01");
	json_write_object_end(&w);
	json_write_key(&w, "n");
	json_write_int(&w, -42);
	json_write_key(&w, "list");
	json_write_array_begin(&w);
	json_write_bool(&w, true);
	json_write_string(&w, "\xc3\xa9");
	json_write_array_end(&w);
	json_write_object_end(&w);
	REQUIRE(json_writer_finish(&w, &len) == 0);
	CHECK(strcmp(buf, "{\"KeyId\":\"alias/x\\\"y\\\\z\",\"EncryptionContext\":{\"vol\":\"ab\\u000a\\u0001\"},"
			  "\"n\":-42,\"list\":[true,\"\xc3\xa9\"]}") == 0);
	CHECK_EQ_INT(len, strlen(buf));
	/* What the writer makes, the reader reads back. */
	REQUIRE(json_parse(buf, len, &doc) == 0);
	{
		char v[32];

		CHECK_EQ_INT(json_get_string(doc, "EncryptionContext.vol", v, sizeof(v), NULL), 0);
		CHECK(strcmp(v, "ab\n\x01") == 0);
	}
	json_free(doc);

	/* Misuse and overflow are reported, never a malformed body. */
	json_writer_init(&w, buf, sizeof(buf));
	json_write_object_begin(&w);
	json_write_string(&w, "no key");
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -EINVAL);

	json_writer_init(&w, buf, sizeof(buf));
	json_write_array_begin(&w);
	json_write_key(&w, "k");
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -EINVAL);

	json_writer_init(&w, buf, sizeof(buf));
	json_write_object_begin(&w);
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -EINVAL);

	json_writer_init(&w, buf, sizeof(buf));
	json_write_object_begin(&w);
	json_write_key(&w, "k");
	json_write_object_end(&w);
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -EINVAL);

	json_writer_init(&w, buf, sizeof(buf));
	json_write_string(&w, "\xff");
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -EINVAL);

	json_writer_init(&w, buf, sizeof(buf));
	json_write_int(&w, 1);
	json_write_int(&w, 2);
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -EINVAL);

	json_writer_init(&w, buf, 8);
	json_write_string(&w, "too long for eight");
	CHECK_EQ_INT(json_writer_finish(&w, NULL), -ENOSPC);
}

int main(void)
{
	RUN(test_accepts_valid_documents);
	RUN(test_refuses_malformed_documents);
	RUN(test_limits);
	RUN(test_lookup);
	RUN(test_writer);
	return check_summary();
}
