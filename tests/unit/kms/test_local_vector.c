// SPDX-License-Identifier: MIT
/*
 * Checks the `local_wrap`, `keyring_file`, `aws_blob` and `vault_wrap` ```vector
 * blocks of docs/FORMAT.md against kms/local.c, kms/keyring.c, kms/aws.c
 * and kms/vault.c (with crypto/ standing in for Transit's side of
 * vault_wrap).  The vectors were computed independently (Python
 * `cryptography`); other vector types are left to their own tests.
 */

#include "kms_test_util.h"
#include "vector.h"

#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "crypto/aead.h"
#include "crypto/base64.h"
#include "crypto/kdf.h"
#include "crypto/secmem.h"
#include "kms/aws.h"
#include "kms/keyring.h"
#include "kms/vault.h"

static int n_wrap, n_keyring, n_aws, n_vault;

static void check_local_wrap(const struct vector *v)
{
	uint8_t kek[32], id[16], nonce[12], dek[32], blob[64], want[64], *out;
	struct kms_context ctx;
	const char *ver = vector_field(v, "version");
	uint32_t version;

	n_wrap++;
	if (!ver || vector_hex(v, "kek", kek, 32, 32, NULL) ||
	    vector_hex(v, "keyring_id", id, 16, 16, NULL) ||
	    vector_hex(v, "nonce", nonce, 12, 12, NULL) ||
	    vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) ||
	    vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) ||
	    vector_hex(v, "dek", dek, 32, 32, NULL) || vector_hex(v, "blob", want, 64, 64, NULL)) {
		fprintf(stderr, "%s:%d: malformed local_wrap vector\n", v->doc, v->line);
		CHECK(0);
		return;
	}
	version = (uint32_t)strtoul(ver, NULL, 10);
	REQUIRE(local_wrap_with_nonce(kek, id, version, nonce, &ctx, dek, blob) == 0);
	if (memcmp(blob, want, 64) != 0) {
		fprintf(stderr, "%s:%d: local_wrap vector wraps differently\n", v->doc, v->line);
		CHECK(0);
	}
	out = secmem_alloc(32);
	REQUIRE(out);
	CHECK_EQ_INT(local_unwrap_with_key(kek, id, &ctx, want, 64, out), 0);
	CHECK(memcmp(out, dek, 32) == 0);
	want[20] ^= 1;
	CHECK_EQ_INT(local_unwrap_with_key(kek, id, &ctx, want, 64, out), -EBADMSG);
	secmem_free(out, 32);
}

static void check_keyring_file(const struct vector *v)
{
	static uint8_t image[8192];
	uint8_t id[16], key[32], pass[256];
	const char *cur = vector_field(v, "current");
	size_t len = 0, pass_len = 0;
	char path[512], err[512];
	struct keyring *kr = NULL;
	int i, keys = 0;

	n_keyring++;
	if (!cur || vector_hex(v, "file", image, sizeof(image), 0, &len) ||
	    vector_hex(v, "keyring_id", id, 16, 16, NULL) ||
	    (vector_field(v, "passphrase") &&
	     vector_hex(v, "passphrase", pass, sizeof(pass), 0, &pass_len))) {
		fprintf(stderr, "%s:%d: malformed keyring_file vector\n", v->doc, v->line);
		CHECK(0);
		return;
	}
	test_path(path, sizeof(path), "vector.keyring");
	REQUIRE(write_all(path, image, len, 0600) == 0);
	if (keyring_load(path, pass_len ? (const char *)pass : NULL, pass_len, &kr, err,
			 sizeof(err)) < 0) {
		fprintf(stderr, "%s:%d: keyring_file vector does not load: %s\n", v->doc, v->line,
			err);
		CHECK(0);
		return;
	}
	CHECK(memcmp(keyring_id(kr), id, 16) == 0);
	CHECK_EQ_INT(keyring_current(kr), strtoul(cur, NULL, 10));
	CHECK_EQ_INT(keyring_has_passphrase(kr), pass_len > 0);
	for (i = 0; i < v->n; i++) {
		const uint8_t *got;

		if (strncmp(v->name[i], "key_", 4) != 0)
			continue;
		keys++;
		REQUIRE(vector_hex(v, v->name[i], key, 32, 32, NULL) == 0);
		got = keyring_key(kr, (uint32_t)strtoul(v->name[i] + 4, NULL, 10));
		CHECK(got && memcmp(got, key, 32) == 0);
	}
	CHECK_EQ_INT(keyring_versions(kr, NULL, 0), keys);
	keyring_free(kr);
}

/*
 * A Transit blob: the documented context goes on the wire as
 * vault_context_b64(); the key is HKDF-SHA256(transit_key, info = context);
 * the blob's body is nonce || AES-256-GCM(DEK) || tag with no AAD.
 */
static void check_vault_wrap(const struct vector *v)
{
	uint8_t key[32], context[32], derived[32], want_derived[32], nonce[12], dek[32],
		blob[VAULT_MAX_BLOB], raw[VAULT_MAX_BLOB], out[32];
	char b64[VAULT_CONTEXT_B64_LEN + 1];
	const char *ver = vector_field(v, "version"), *body;
	size_t blob_len, raw_len, ctx_len;
	struct kms_context ctx;
	uint32_t version = 0;

	n_vault++;
	if (!ver || vector_hex(v, "transit_key", key, 32, 32, NULL) ||
	    vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) ||
	    vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) ||
	    vector_hex(v, "context", context, 32, 32, NULL) ||
	    vector_hex(v, "derived_key", want_derived, 32, 32, NULL) ||
	    vector_hex(v, "nonce", nonce, 12, 12, NULL) || vector_hex(v, "dek", dek, 32, 32, NULL) ||
	    vector_hex(v, "blob", blob, sizeof(blob), 0, &blob_len)) {
		fprintf(stderr, "%s:%d: malformed vault_wrap vector\n", v->doc, v->line);
		CHECK(0);
		return;
	}
	vault_context_b64(&ctx, b64);
	REQUIRE(base64_decode(b64, strlen(b64), raw, sizeof(raw), &ctx_len) == 0);
	CHECK(ctx_len == 32 && memcmp(raw, context, 32) == 0);
	REQUIRE(crypto_hkdf_sha256(key, 32, NULL, 0, context, 32, derived, 32) == 0);
	CHECK(memcmp(derived, want_derived, 32) == 0);
	REQUIRE(vault_blob_parse_version(blob, blob_len, &version) == 0);
	CHECK_EQ_INT(version, strtoul(ver, NULL, 10));
	body = memchr(blob + 7, ':', blob_len - 7);
	REQUIRE(body);
	body++;
	REQUIRE(base64_decode(body, blob_len - (size_t)(body - (const char *)blob), raw,
			      sizeof(raw), &raw_len) == 0);
	REQUIRE(raw_len == 12 + 32 + 16);
	CHECK(memcmp(raw, nonce, 12) == 0);
	CHECK_EQ_INT(aead_open(derived, raw, NULL, 0, raw + 12, 32, raw + 44, out), 0);
	CHECK(memcmp(out, dek, 32) == 0);
	context[0] ^= 1; /* another volume: another key, the tag fails */
	REQUIRE(crypto_hkdf_sha256(key, 32, NULL, 0, context, 32, derived, 32) == 0);
	CHECK_EQ_INT(aead_open(derived, raw, NULL, 0, raw + 12, 32, raw + 44, out), -EBADMSG);
}

/* aws_blob: our framing of an AWS CiphertextBlob, and the EncryptionContext JSON. */
static void check_aws_blob(const struct vector *v)
{
	uint8_t ct[AWS_MAX_CIPHERTEXT], want[AWS_MAX_BLOB], blob[AWS_MAX_BLOB];
	const char *ver = vector_field(v, "version"), *want_ctx = vector_field(v, "context_json");
	size_t ct_len, want_len, len, got_len;
	const uint8_t *got;
	struct kms_context ctx;
	char json[AWS_CONTEXT_JSON_MAX];
	uint32_t version;

	n_aws++;
	REQUIRE(ver && want_ctx);
	REQUIRE(vector_hex(v, "aws_ciphertext", ct, sizeof(ct), 0, &ct_len) == 0);
	REQUIRE(vector_hex(v, "blob", want, sizeof(want), 0, &want_len) == 0);
	REQUIRE(vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) == 0);
	REQUIRE(aws_blob_frame((uint32_t)strtoul(ver, NULL, 10), ct, ct_len, blob, sizeof(blob),
			       &len) == 0);
	CHECK(len == want_len && memcmp(blob, want, len) == 0);
	REQUIRE(aws_blob_parse(want, want_len, &version, &got, &got_len) == 0);
	CHECK_EQ_INT(version, strtoul(ver, NULL, 10));
	CHECK(got_len == ct_len && memcmp(got, ct, ct_len) == 0);
	REQUIRE(aws_context_json(&ctx, json, sizeof(json)) == 0);
	CHECK(strcmp(json, want_ctx) == 0);
}

static void check_vector(const struct vector *v, const char *type)
{
	if (strcmp(type, "local_wrap") == 0)
		check_local_wrap(v);
	else if (strcmp(type, "aws_blob") == 0)
		check_aws_blob(v);
	else if (strcmp(type, "vault_wrap") == 0)
		check_vault_wrap(v);
	else
		check_keyring_file(v);
}

static void test_vectors(void)
{
	static const char *const types[] = { "local_wrap", "keyring_file", "aws_blob", "vault_wrap",
					     NULL };

	vector_scan("FORMAT.md", types, check_vector);
	/* At least the three vectors this section was written with. */
	CHECK(n_wrap >= 1);
	CHECK(n_keyring >= 2);
	CHECK(n_aws >= 1);
	CHECK(n_vault >= 1);
	printf("checked %d local_wrap, %d keyring_file, %d aws_blob and %d vault_wrap vectors\n",
	       n_wrap, n_keyring, n_aws, n_vault);
}

int main(void)
{
	test_dir_make();
	RUN(test_vectors);
	return check_summary();
}
