// SPDX-License-Identifier: MIT
/*
 * The cloud providers' vectors of docs/FORMAT.md: `azure_wrap` against
 * kms/azure.c (inner value, AES key wrap, blob framing, context refusal);
 * `crc32c` against kms/crc32c.c; `gcp_wrap` against kms/gcp.c (the encrypt
 * request as sent, the CRC32Cs, blob framing).
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "check.h"
#include "crypto/secmem.h"
#include "kms/azure.h"
#include "kms/crc32c.h"
#include "kms/gcp.h"
#include "vector.h"

static int n_azure, n_crc, n_gcp;

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
	/* The error mapping of Key Vault's answers (docs/FORMAT.md). */
	CHECK_EQ_INT(azure_map_error(400, "BadParameter", 1), -EBADMSG);
	CHECK_EQ_INT(azure_map_error(400, "BadParameter", 0), -EINVAL);
	CHECK_EQ_INT(azure_map_error(401, "Unauthorized", 1), -EACCES);
	CHECK_EQ_INT(azure_map_error(403, "Forbidden", 1), -EACCES);
	CHECK_EQ_INT(azure_map_error(404, "KeyNotFound", 1), -ENOENT);
	CHECK_EQ_INT(azure_map_error(429, "Throttled", 1), -EAGAIN);
	CHECK_EQ_INT(azure_map_error(503, "", 0), -EAGAIN);
	CHECK_EQ_INT(azure_map_error(409, "Conflict", 0), -EIO);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(opened, KMS_DEK_LEN);
}

static void check_crc32c(const struct vector *v)
{
	uint8_t data[VECTOR_MAX_VALUE / 2];
	const char *want = vector_field(v, "crc32c");
	size_t len;

	n_crc++;
	REQUIRE(want && vector_hex(v, "data", data, sizeof(data), 0, &len) == 0);
	CHECK_EQ_INT(crc32c(data, len), strtoul(want, NULL, 10));
}

static void check_gcp_wrap(const struct vector *v)
{
	uint8_t ct[GCP_MAX_CIPHERTEXT], aad[32], want_blob[GCP_MAX_BLOB], blob[GCP_MAX_BLOB];
	const char *ver = vector_field(v, "version"), *want_req = vector_field(v, "encrypt_request");
	const char *plain_crc = vector_field(v, "plaintext_crc32c"), *aad_crc = vector_field(v, "aad_crc32c");
	const char *ct_crc = vector_field(v, "ciphertext_crc32c");
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	char *req = secmem_alloc(GCP_MAX_REQUEST);
	size_t ct_len, blob_len, len, got_ct_len;
	const uint8_t *got_ct;
	struct kms_context ctx;
	uint32_t version;

	n_gcp++;
	REQUIRE(dek && req && ver && want_req && plain_crc && aad_crc && ct_crc);
	REQUIRE(vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "dek", dek, KMS_DEK_LEN, KMS_DEK_LEN, NULL) == 0);
	REQUIRE(vector_hex(v, "aad", aad, sizeof(aad), sizeof(aad), NULL) == 0);
	REQUIRE(vector_hex(v, "ciphertext", ct, sizeof(ct), 0, &ct_len) == 0);
	REQUIRE(vector_hex(v, "blob", want_blob, sizeof(want_blob), 0, &blob_len) == 0);
	CHECK(memcmp(aad, ctx.volume_uuid, 16) == 0 && memcmp(aad + 16, ctx.file_id, 16) == 0);
	CHECK_EQ_INT(crc32c(dek, KMS_DEK_LEN), strtoul(plain_crc, NULL, 10));
	CHECK_EQ_INT(crc32c(aad, sizeof(aad)), strtoul(aad_crc, NULL, 10));
	CHECK_EQ_INT(crc32c(ct, ct_len), strtoul(ct_crc, NULL, 10));
	REQUIRE(gcp_encrypt_request(&ctx, dek, req, GCP_MAX_REQUEST, &len) == 0);
	CHECK(len == strlen(want_req) && strcmp(req, want_req) == 0);
	REQUIRE(gcp_blob_frame((uint32_t)strtoul(ver, NULL, 10), ct, ct_len, blob, sizeof(blob),
			       &len) == 0);
	CHECK(len == blob_len && memcmp(blob, want_blob, len) == 0);
	REQUIRE(gcp_blob_parse(want_blob, blob_len, &version, &got_ct, &got_ct_len) == 0);
	CHECK_EQ_INT(version, strtoul(ver, NULL, 10));
	CHECK(got_ct_len == ct_len && memcmp(got_ct, ct, ct_len) == 0);
	/* Another format byte, version 0, no ciphertext: not ours. */
	want_blob[0] ^= 1;
	CHECK_EQ_INT(gcp_blob_parse(want_blob, blob_len, &version, &got_ct, &got_ct_len), -EBADMSG);
	want_blob[0] ^= 1;
	CHECK_EQ_INT(gcp_blob_parse(want_blob, GCP_BLOB_HEADER, &version, &got_ct, &got_ct_len),
		     -EBADMSG);
	want_blob[4] = 0;
	CHECK_EQ_INT(gcp_blob_parse(want_blob, blob_len, &version, &got_ct, &got_ct_len), -EBADMSG);
	/* The error mapping of the API's statuses (docs/FORMAT.md). */
	CHECK_EQ_INT(gcp_map_error(400, "INVALID_ARGUMENT", "Decryption failed", 1), -EBADMSG);
	CHECK_EQ_INT(gcp_map_error(400, "INVALID_ARGUMENT", "", 0), -EINVAL);
	CHECK_EQ_INT(gcp_map_error(400, "FAILED_PRECONDITION", "state is: DISABLED.", 1), -EACCES);
	CHECK_EQ_INT(gcp_map_error(400, "FAILED_PRECONDITION", "state is: DESTROYED.", 1), -ENOENT);
	CHECK_EQ_INT(gcp_map_error(403, "PERMISSION_DENIED", "", 1), -EACCES);
	CHECK_EQ_INT(gcp_map_error(404, "NOT_FOUND", "", 1), -ENOENT);
	CHECK_EQ_INT(gcp_map_error(429, "RESOURCE_EXHAUSTED", "", 1), -EAGAIN);
	CHECK_EQ_INT(gcp_map_error(503, "UNAVAILABLE", "", 1), -EAGAIN);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(req, GCP_MAX_REQUEST);
}

static void check_vector(const struct vector *v, const char *type)
{
	if (strcmp(type, "azure_wrap") == 0)
		check_azure_wrap(v);
	else if (strcmp(type, "crc32c") == 0)
		check_crc32c(v);
	else
		check_gcp_wrap(v);
}

static void test_vectors(void)
{
	static const char *const types[] = { "azure_wrap", "crc32c", "gcp_wrap", NULL };

	vector_scan("FORMAT.md", types, check_vector);
	CHECK(n_azure >= 1);
	CHECK(n_crc >= 1);
	CHECK(n_gcp >= 1);
	printf("checked %d azure_wrap, %d crc32c and %d gcp_wrap vectors\n", n_azure, n_crc, n_gcp);
}

int main(void)
{
	RUN(test_vectors);
	return check_summary();
}
