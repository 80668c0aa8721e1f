// SPDX-License-Identifier: MIT
/*
 * The cloud providers' vectors of docs/FORMAT.md: `azure_wrap` against
 * kms/azure.c (inner value, AES key wrap, blob framing, context refusal).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "check.h"
#include "crypto/secmem.h"
#include "kms/azure.h"
#include "vector.h"

static int n_azure;

/* aes_key_unwrap - RFC 3394 unwrap of @in under the 256-bit @kek, by OpenSSL. */
static int aes_key_unwrap(const uint8_t *kek, const uint8_t *in, size_t len, uint8_t *out,
			  size_t *out_len)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n = 0, fin = 0, ok;

	ok = c && EVP_DecryptInit_ex2(c, EVP_aes_256_wrap(), kek, NULL, NULL) == 1 &&
	     EVP_DecryptUpdate(c, out, &n, in, (int)len) == 1 &&
	     EVP_DecryptFinal_ex(c, out + n, &fin) == 1;
	EVP_CIPHER_CTX_free(c);
	*out_len = (size_t)(n + fin);
	return ok ? 0 : -1;
}

static void check_azure_wrap(const struct vector *v)
{
	uint8_t inner[AZURE_INNER_LEN], got_inner[AZURE_INNER_LEN], kek[32], wrapped[AZURE_MAX_WRAPPED],
		unwrapped[AZURE_MAX_WRAPPED], want_blob[AZURE_MAX_BLOB], blob[AZURE_MAX_BLOB];
	const char *ver = vector_field(v, "version"), *vid = vector_field(v, "version_id");
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *opened = secmem_alloc(KMS_DEK_LEN);
	char got_id[AZURE_MAX_VERSION_ID + 1];
	size_t wrapped_len, blob_len, len, unwrapped_len, got_wrapped_len;
	const uint8_t *got_wrapped;
	struct kms_context ctx;
	uint32_t version;

	n_azure++;
	REQUIRE(dek && opened && ver && vid);
	REQUIRE(vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "dek", dek, KMS_DEK_LEN, KMS_DEK_LEN, NULL) == 0);
	REQUIRE(vector_hex(v, "inner", inner, sizeof(inner), sizeof(inner), NULL) == 0);
	REQUIRE(vector_hex(v, "kek", kek, sizeof(kek), sizeof(kek), NULL) == 0);
	REQUIRE(vector_hex(v, "wrapped", wrapped, sizeof(wrapped), 0, &wrapped_len) == 0);
	REQUIRE(vector_hex(v, "blob", want_blob, sizeof(want_blob), 0, &blob_len) == 0);

	REQUIRE(azure_inner_make(&ctx, dek, got_inner) == 0);
	CHECK(memcmp(got_inner, inner, sizeof(inner)) == 0);
	REQUIRE(aes_key_unwrap(kek, wrapped, wrapped_len, unwrapped, &unwrapped_len) == 0);
	CHECK(unwrapped_len == sizeof(inner) && memcmp(unwrapped, inner, sizeof(inner)) == 0);
	CHECK_EQ_INT(azure_inner_open(&ctx, unwrapped, unwrapped_len, opened), 0);
	CHECK(memcmp(opened, dek, KMS_DEK_LEN) == 0);

	REQUIRE(azure_blob_frame((uint32_t)strtoul(ver, NULL, 10), vid, wrapped, wrapped_len, blob,
				 sizeof(blob), &len) == 0);
	CHECK(len == blob_len && memcmp(blob, want_blob, len) == 0);
	REQUIRE(azure_blob_parse(want_blob, blob_len, &version, got_id, &got_wrapped,
				 &got_wrapped_len) == 0);
	CHECK_EQ_INT(version, strtoul(ver, NULL, 10));
	CHECK(strcmp(got_id, vid) == 0);
	CHECK(got_wrapped_len == wrapped_len && memcmp(got_wrapped, wrapped, wrapped_len) == 0);

	/* Another file, another volume, a flipped tag bit, a short value: all refused. */
	ctx.file_id[15] ^= 1;
	CHECK_EQ_INT(azure_inner_open(&ctx, inner, sizeof(inner), opened), -EBADMSG);
	ctx.file_id[15] ^= 1;
	ctx.volume_uuid[0] ^= 0x80;
	CHECK_EQ_INT(azure_inner_open(&ctx, inner, sizeof(inner), opened), -EBADMSG);
	ctx.volume_uuid[0] ^= 0x80;
	inner[AZURE_INNER_LEN - 1] ^= 1;
	CHECK_EQ_INT(azure_inner_open(&ctx, inner, sizeof(inner), opened), -EBADMSG);
	CHECK_EQ_INT(azure_inner_open(&ctx, inner, KMS_DEK_LEN, opened), -EBADMSG);
	/* A blob with a zero version, an empty ID or a non-alphanumeric ID is not ours. */
	want_blob[4] = 0;
	want_blob[1] = want_blob[2] = want_blob[3] = 0;
	CHECK_EQ_INT(azure_blob_parse(want_blob, blob_len, &version, got_id, &got_wrapped,
				      &got_wrapped_len),
		     -EBADMSG);
	want_blob[4] = 2;
	want_blob[6] = '/';
	CHECK_EQ_INT(azure_blob_parse(want_blob, blob_len, &version, got_id, &got_wrapped,
				      &got_wrapped_len),
		     -EBADMSG);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(opened, KMS_DEK_LEN);
}

static void check_vector(const struct vector *v, const char *type)
{
	if (strcmp(type, "azure_wrap") == 0)
		check_azure_wrap(v);
}

static void test_vectors(void)
{
	static const char *const types[] = { "azure_wrap", NULL };

	vector_scan("FORMAT.md", types, check_vector);
	CHECK(n_azure >= 1);
	printf("checked %d azure_wrap vectors\n", n_azure);
}

int main(void)
{
	RUN(test_vectors);
	return check_summary();
}
