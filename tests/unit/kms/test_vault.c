// SPDX-License-Identifier: MIT
/*
 * Unit tests for the parts of the vault provider that need no server:
 * crypto/base64.c (RFC 4648 vectors, strictness) and kms/vault.c's blob-version
 * parser and error mapping.  The provider against a Transit server is tested
 * by tests/integration/test_vault.py.
 */

#include <errno.h>
#include <string.h>

#include "check.h"
#include "crypto/base64.h"
#include "kms/vault.h"

static void test_base64_rfc4648_vectors(void)
{
	static const char *const plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	static const char *const enc[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=",
					   "Zm9vYmFy" };
	char out[16];
	uint8_t back[16];
	size_t i, n;

	for (i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		CHECK(base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out, sizeof(out)) == 0);
		CHECK(strcmp(out, enc[i]) == 0);
		CHECK(base64_decode(enc[i], strlen(enc[i]), back, sizeof(back), &n) == 0);
		CHECK(n == strlen(plain[i]) && memcmp(back, plain[i], n) == 0);
	}
	/* All 256 byte values survive, including the '+' and '/' symbols. */
	uint8_t all[256], again[256];
	char text[BASE64_ENCODED_LEN(256) + 1];

	for (i = 0; i < 256; i++)
		all[i] = (uint8_t)i;
	CHECK(base64_encode(all, sizeof(all), text, sizeof(text)) == 0);
	CHECK(strchr(text, '+') && strchr(text, '/'));
	CHECK(base64_decode(text, strlen(text), again, sizeof(again), &n) == 0);
	CHECK(n == 256 && memcmp(all, again, 256) == 0);
}

static void test_base64_strict(void)
{
	static const char *const bad[] = { "Zg=", "Zg", "Zh==", "Zm9=", "Z===", "Zg==Zg==",
					   "Zm 9v", "Zm9v\n", "Zm-v", "=Zg=", "Zm=v" };
	uint8_t out[16];
	size_t i, n;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ_INT(base64_decode(bad[i], strlen(bad[i]), out, sizeof(out), &n), -EBADMSG);
	CHECK_EQ_INT(base64_decode("Zm9vYmFy", 8, out, 5, &n), -ENOSPC);
	CHECK_EQ_INT(base64_encode((const uint8_t *)"foo", 3, (char *)out, 4), -ENOSPC);
}

static int parse(const char *s, uint32_t *v)
{
	return vault_blob_parse_version((const uint8_t *)s, strlen(s), v);
}

static void test_blob_version(void)
{
	uint32_t v = 0;

	CHECK(parse("vault:v1:AAAA", &v) == 0 && v == 1);
	CHECK(parse("vault:v4294967295:AA==", &v) == 0 && v == 4294967295u);
	CHECK(parse("vault:v42:ab+/", &v) == 0 && v == 42);
	CHECK_EQ_INT(parse("vault:v4294967296:AAAA", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:v0:AAAA", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:v01:AAAA", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:v:AAAA", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:v1:", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:v1", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:1:AAAA", &v), -EBADMSG);
	CHECK_EQ_INT(parse("vault:v1:AA\"A", &v), -EBADMSG);
	CHECK_EQ_INT(parse("local:v1:AAAA", &v), -EBADMSG);
}

static void test_error_mapping(void)
{
	CHECK_EQ_INT(vault_map_error(403, "permission denied"), -EACCES);
	CHECK_EQ_INT(vault_map_error(401, NULL), -EACCES);
	CHECK_EQ_INT(vault_map_error(400, "ciphertext or signature version is disallowed by policy "
					  "(too old)"),
		     -ENOENT);
	CHECK_EQ_INT(vault_map_error(400, "encryption key not found"), -ENOENT);
	CHECK_EQ_INT(vault_map_error(400, "invalid ciphertext: version is too new"), -ENOENT);
	CHECK_EQ_INT(vault_map_error(400, "cipher: message authentication failed"), -EBADMSG);
	CHECK_EQ_INT(vault_map_error(400, "invalid ciphertext: no prefix"), -EBADMSG);
	CHECK_EQ_INT(vault_map_error(404, ""), -ENOENT);
	CHECK_EQ_INT(vault_map_error(429, "rate limit quota exceeded"), -EAGAIN);
	CHECK_EQ_INT(vault_map_error(503, "Vault is sealed"), -EAGAIN);
	CHECK_EQ_INT(vault_map_error(412, NULL), -EAGAIN);
	CHECK_EQ_INT(vault_map_error(400, "something else"), -EIO);
	CHECK_EQ_INT(vault_map_error(405, "unsupported operation"), -EIO);
}

int main(void)
{
	RUN(test_base64_rfc4648_vectors);
	RUN(test_base64_strict);
	RUN(test_blob_version);
	RUN(test_error_mapping);
	return check_summary();
}
