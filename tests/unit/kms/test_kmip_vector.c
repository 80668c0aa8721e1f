// SPDX-License-Identifier: MIT
/*
 * The pure pieces of the kmip provider against docs/FORMAT.md: every
 * `kmip_wrap` vector's AAD is what kmip_wrap_aad() builds, its blob names
 * its version, and it opens to the DEK with plain AES-256-GCM under `kek`
 * (what the KMIP server's Decrypt does) and not under another context.
 * Also the "L.N" version names.
 */

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crypto/aead.h"
#include "kms/kmip.h"
#include "vector.h"

static int n_vectors;

static void check_kmip_wrap(const struct vector *v, const char *type)
{
	uint8_t kek[32], iv[12], dek[32], aad[KMIP_AAD_LEN], want_aad[KMIP_AAD_LEN],
		blob[KMIP_BLOB_LEN], out[32];
	const char *ver = vector_field(v, "version");
	struct kms_context ctx;
	uint32_t version = 0;

	(void)type;
	n_vectors++;
	if (!ver || vector_hex(v, "kek", kek, 32, 32, NULL) || vector_hex(v, "iv", iv, 12, 12, NULL) ||
	    vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) ||
	    vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) ||
	    vector_hex(v, "dek", dek, 32, 32, NULL) ||
	    vector_hex(v, "aad", want_aad, KMIP_AAD_LEN, KMIP_AAD_LEN, NULL) ||
	    vector_hex(v, "blob", blob, KMIP_BLOB_LEN, KMIP_BLOB_LEN, NULL)) {
		fprintf(stderr, "%s:%d: malformed kmip_wrap vector\n", v->doc, v->line);
		CHECK(0);
		return;
	}
	kmip_wrap_aad(aad, (uint32_t)strtoul(ver, NULL, 10), &ctx);
	CHECK(memcmp(aad, want_aad, KMIP_AAD_LEN) == 0);
	REQUIRE(kmip_blob_version(blob, sizeof(blob), &version) == 0);
	CHECK_EQ_INT(version, strtoul(ver, NULL, 10));
	CHECK(memcmp(blob + KMIP_BLOB_IV, iv, KMIP_IV_LEN) == 0);
	CHECK_EQ_INT(aead_open(kek, blob + KMIP_BLOB_IV, aad, KMIP_AAD_LEN, blob + KMIP_BLOB_CIPHER,
			       KMS_DEK_LEN, blob + KMIP_BLOB_TAG, out),
		     0);
	CHECK(memcmp(out, dek, 32) == 0);
	ctx.file_id[0] ^= 1; /* another file: the tag fails */
	kmip_wrap_aad(aad, version, &ctx);
	CHECK_EQ_INT(aead_open(kek, blob + KMIP_BLOB_IV, aad, KMIP_AAD_LEN, blob + KMIP_BLOB_CIPHER,
			       KMS_DEK_LEN, blob + KMIP_BLOB_TAG, out),
		     -EBADMSG);
}

static void test_vectors(void)
{
	static const char *const types[] = { "kmip_wrap", NULL };

	vector_scan("FORMAT.md", types, check_kmip_wrap);
	CHECK(n_vectors >= 1);
}

static void test_blob_version(void)
{
	uint8_t blob[KMIP_BLOB_LEN] = { 0 };
	uint32_t v;

	CHECK_EQ_INT(kmip_blob_version(blob, sizeof(blob), &v), -EBADMSG); /* version 0 */
	blob[3] = 7;
	CHECK(kmip_blob_version(blob, sizeof(blob), &v) == 0 && v == 7);
	CHECK_EQ_INT(kmip_blob_version(blob, sizeof(blob) - 1, &v), -EBADMSG);
}

static void test_names(void)
{
	CHECK_EQ_INT(kmip_name_version("kek", "kek.1"), 1);
	CHECK_EQ_INT(kmip_name_version("kek", "kek.4294967295"), 4294967295u);
	CHECK_EQ_INT(kmip_name_version("kek", "kek.4294967296"), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "kek.01"), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "kek.0"), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "kek."), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "kek.1a"), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "kek"), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "kek2.1"), 0);
	CHECK_EQ_INT(kmip_name_version("kek", "ke.1"), 0);
	CHECK_EQ_INT(kmip_name_version("a.b", "a.b.12"), 12);
}

int main(void)
{
	RUN(test_vectors);
	RUN(test_blob_version);
	RUN(test_names);
	return check_summary();
}
