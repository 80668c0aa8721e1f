// SPDX-License-Identifier: MIT
/* Unit tests for kms/kms.c and the local provider (kms/local.c). */

#include "kms_test_util.h"
#include "local_kms_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "check.h"
#include "crypto/secmem.h"
#include "kms/keyring.h"
#include "kms/kms.h"

static const struct kms_context ctx_a = {
	.volume_uuid = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 },
	.file_id = { 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc,
		     0xfd, 0xfe, 0xff },
};

static void test_open_and_ref(void)
{
	char path[512], hex[33], err[512], want[64];
	struct keyring *kr = NULL;
	struct kms *kms;

	new_keyring(path, sizeof(path), "ref.keyring");
	kms = open_kms(path);
	REQUIRE(keyring_load(path, NULL, 0, &kr, err, sizeof(err)) == 0);
	id_hex(kr, hex);
	snprintf(want, sizeof(want), "local:%s", hex);
	CHECK(strcmp(kms->key_ref, want) == 0);
	CHECK_EQ_INT(kms->max_blob_len, KMS_LOCAL_BLOB_LEN);
	CHECK(strcmp(kms->ops->name, "local") == 0);
	keyring_free(kr);
	kms_close(kms);
}

static void test_wrap_unwrap(void)
{
	char path[512];
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *out = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB], bad[KMS_MAX_BLOB];
	struct kms_context ctx;
	size_t blob_len = 0, i;
	uint32_t version = 0;
	struct kms *kms;

	REQUIRE(dek && out);
	kms = open_kms(new_keyring(path, sizeof(path), "wrap.keyring"));
	REQUIRE(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &blob_len, &version) == 0);
	CHECK_EQ_INT(blob_len, 64);
	CHECK_EQ_INT(version, 1);
	REQUIRE(kms_unwrap(kms, &ctx_a, blob, blob_len, out) == 0);
	CHECK(memcmp(dek, out, KMS_DEK_LEN) == 0);
	REQUIRE(kms_blob_version(kms, blob, blob_len, &version) == 0);
	CHECK_EQ_INT(version, 1);

	/* Another volume, another file: not the context it was made with. */
	ctx = ctx_a;
	ctx.volume_uuid[15] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, blob_len, out), -EBADMSG);
	ctx = ctx_a;
	ctx.file_id[0] ^= 0x80;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, blob_len, out), -EBADMSG);

	/* Any flipped bit past the version is bad ciphertext. */
	for (i = 4; i < blob_len; i++) {
		memcpy(bad, blob, blob_len);
		bad[i] ^= 0x10;
		CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, blob_len, out), -EBADMSG);
	}
	/* Wrong length. */
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, blob_len - 1, out), -EBADMSG);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, 0, out), -EINVAL);
	/* A version the keyring does not hold. */
	memcpy(bad, blob, blob_len);
	bad[3] = 99;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, blob_len, out), -ENOENT);
	/* Version 1 named as 2 would need key 2 (absent) and the AAD binds it anyway. */
	bad[3] = 2;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, blob_len, out), -ENOENT);

	/* Two generations differ (fresh DEK, fresh nonce). */
	REQUIRE(kms_generate(kms, &ctx_a, out, bad, sizeof(bad), &blob_len, &version) == 0);
	CHECK(memcmp(dek, out, KMS_DEK_LEN) != 0);
	CHECK(memcmp(blob, bad, 64) != 0);

	CHECK_EQ_INT(kms->counters.generate, 2);
	CHECK(kms->counters.unwrap >= 4);
	CHECK(kms->counters.failures >= 4);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(out, KMS_DEK_LEN);
	kms_close(kms);
}

/*
 * kms_wrap of a caller's DEK, and the batch forms (the local provider has no
 * batch op, so this runs kms.c's item-by-item path): every item gets its own
 * rc, bad items fail alone, counters count items.
 */
static void test_wrap_given_and_batches(void)
{
	enum { N = 5 };
	char path[512];
	uint8_t *deks[N], *outs[N];
	uint8_t blobs[N][KMS_MAX_BLOB];
	struct kms_context ctxs[N];
	struct kms_wrap_item w[N];
	struct kms_unwrap_item u[N];
	uint32_t version = 0;
	size_t len = 0, i;
	struct kms *kms;

	kms = open_kms(new_keyring(path, sizeof(path), "batch.keyring"));
	for (i = 0; i < N; i++) {
		deks[i] = secmem_alloc(KMS_DEK_LEN);
		outs[i] = secmem_alloc(KMS_DEK_LEN);
		REQUIRE(deks[i] && outs[i]);
		memset(deks[i], (int)(0x30 + i), KMS_DEK_LEN);
		ctxs[i] = ctx_a;
		ctxs[i].file_id[0] = (uint8_t)i;
	}

	REQUIRE(kms_wrap(kms, &ctxs[0], deks[0], blobs[0], sizeof(blobs[0]), &len, &version) == 0);
	CHECK_EQ_INT(len, 64);
	CHECK_EQ_INT(version, 1);
	REQUIRE(kms_unwrap(kms, &ctxs[0], blobs[0], len, outs[0]) == 0);
	CHECK(memcmp(deks[0], outs[0], KMS_DEK_LEN) == 0);
	CHECK_EQ_INT(kms_wrap(kms, &ctxs[0], deks[0], blobs[0], 10, &len, &version), -EINVAL);

	memset(w, 0, sizeof(w));
	for (i = 0; i < N; i++)
		w[i] = (struct kms_wrap_item){ .ctx = &ctxs[i], .dek = deks[i], .blob = blobs[i],
					       .blob_cap = sizeof(blobs[i]) };
	w[3].blob_cap = 10; /* too small: this item alone fails */
	CHECK_EQ_INT(kms_wrap_many(kms, w, N), -EINVAL);
	for (i = 0; i < N; i++)
		CHECK_EQ_INT(w[i].rc, i == 3 ? -EINVAL : 0);
	CHECK_EQ_INT(kms->counters.wrap, 2 + N);

	for (i = 0; i < N; i++)
		u[i] = (struct kms_unwrap_item){ .ctx = &ctxs[i], .blob = blobs[i],
						 .blob_len = w[i].blob_len, .dek = outs[i] };
	u[3].blob_len = 0;    /* the item that failed to wrap */
	u[1].ctx = &ctxs[2];  /* a blob under another file's context */
	CHECK_EQ_INT(kms_unwrap_many(kms, u, N), -EBADMSG);
	CHECK_EQ_INT(u[0].rc, 0);
	CHECK_EQ_INT(u[1].rc, -EBADMSG);
	CHECK_EQ_INT(u[2].rc, 0);
	CHECK_EQ_INT(u[3].rc, -EINVAL);
	CHECK_EQ_INT(u[4].rc, 0);
	for (i = 0; i < N; i += 2)
		CHECK(memcmp(deks[i], outs[i], KMS_DEK_LEN) == 0);
	CHECK_EQ_INT(kms_unwrap_many(kms, u, 0), 0);

	for (i = 0; i < N; i++) {
		secmem_free(deks[i], KMS_DEK_LEN);
		secmem_free(outs[i], KMS_DEK_LEN);
	}
	kms_close(kms);
}

static void test_blob_from_other_keyring(void)
{
	char p1[512], p2[512];
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB];
	struct kms *a, *b;
	size_t len;
	uint32_t v;

	REQUIRE(dek);
	a = open_kms(new_keyring(p1, sizeof(p1), "one.keyring"));
	b = open_kms(new_keyring(p2, sizeof(p2), "two.keyring"));
	REQUIRE(kms_generate(a, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	/* Same version number, other keyring: the key and the AAD differ. */
	CHECK_EQ_INT(kms_unwrap(b, &ctx_a, blob, len, dek), -EBADMSG);
	secmem_free(dek, KMS_DEK_LEN);
	kms_close(a);
	kms_close(b);
}

static void test_rewrap_after_rotation(void)
{
	char path[512], err[512];
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *out = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB], blob2[KMS_MAX_BLOB], blob3[KMS_MAX_BLOB];
	size_t len = 0, len2 = 0, len3 = 0;
	struct keyring *kr = NULL;
	struct kms *old, *fresh;
	uint32_t v = 0;

	REQUIRE(dek && out);
	old = open_kms(new_keyring(path, sizeof(path), "rewrap.keyring"));
	REQUIRE(kms_generate(old, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(v, 1);

	/* Another process rotates the keyring. */
	REQUIRE(keyring_load(path, NULL, 0, &kr, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(kr, &v, err, sizeof(err)) == 0);
	CHECK_EQ_INT(v, 2);
	keyring_free(kr);

	/* A provider opened now wraps under version 2 ... */
	fresh = open_kms(path);
	REQUIRE(kms_current_version(fresh, &v) == 0);
	CHECK_EQ_INT(v, 2);
	REQUIRE(kms_rewrap(fresh, &ctx_a, blob, len, blob2, sizeof(blob2), &len2, &v) == 0);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(len2, 64);
	REQUIRE(kms_blob_version(fresh, blob2, len2, &v) == 0);
	CHECK_EQ_INT(v, 2);
	REQUIRE(kms_unwrap(fresh, &ctx_a, blob2, len2, out) == 0);
	CHECK(memcmp(dek, out, KMS_DEK_LEN) == 0); /* same DEK, new wrapping */
	CHECK(memcmp(blob, blob2, 64) != 0);
	CHECK_EQ_INT(fresh->counters.rewrap, 1);

	/* ... and the provider opened before unwraps it at once: an unknown
	 * version makes it re-read the keyring file. */
	memset(out, 0, KMS_DEK_LEN);
	REQUIRE(kms_unwrap(old, &ctx_a, blob2, len2, out) == 0);
	CHECK(memcmp(dek, out, KMS_DEK_LEN) == 0);
	/* Within a second it also wraps new DEKs under the new version. */
	sleep(1);
	REQUIRE(kms_current_version(old, &v) == 0);
	CHECK_EQ_INT(v, 2);
	REQUIRE(kms_rewrap(old, &ctx_a, blob, len, blob3, sizeof(blob3), &len3, &v) == 0);
	CHECK_EQ_INT(v, 2);
	/* The rewrap of a blob under the wrong context fails and counts. */
	{
		struct kms_context ctx = ctx_a;

		ctx.file_id[3] ^= 4;
		CHECK_EQ_INT(kms_rewrap(old, &ctx, blob, len, blob3, sizeof(blob3), &len3, &v),
			     -EBADMSG);
	}
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(out, KMS_DEK_LEN);
	kms_close(old);
	kms_close(fresh);
}

static void test_open_errors(void)
{
	char path[512], other[512], err[512];
	struct kms *kms = NULL;
	dictionary *d;

	new_keyring(path, sizeof(path), "errors.keyring");
	new_keyring(other, sizeof(other), "errors-other.keyring");

	d = settings(path, NULL, NULL);
	iniparser_set(d, "kms:provider", "aws-typo");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "aws-typo") && strstr(err, "local"));
	iniparser_unset(d, "kms:provider");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "kms:provider") != NULL);
	iniparser_freedict(d);

	/* The keyring of another volume. */
	d = settings(path, NULL, NULL);
	iniparser_set(d, "kms:keyring", other);
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, "is not the keyring of this volume") != NULL);
	CHECK(strstr(err, other) != NULL);
	iniparser_freedict(d);

	d = settings(path, NULL, NULL);
	iniparser_set(d, "kms:keyring", "relative.keyring");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "absolute") != NULL);
	iniparser_set(d, "kms:keyring", path);
	iniparser_set(d, "kms:keyring_id", "0011");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "keyring_id") != NULL);
	iniparser_set(d, "kms:keyring_id", "00112233445566778899AABBCCDDEEFF");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	iniparser_unset(d, "kms:keyring_id");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	iniparser_freedict(d);

	d = settings(path, NULL, NULL);
	iniparser_set(d, "kms:keyrng", path);
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "keyrng") != NULL);
	iniparser_freedict(d);

	/* A keyring others can read. */
	d = settings(path, NULL, NULL);
	REQUIRE(chmod(path, 0644) == 0);
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EPERM);
	CHECK(strstr(err, "chmod 600") != NULL);
	REQUIRE(chmod(path, 0600) == 0);
	iniparser_freedict(d);
	CHECK(kms == NULL);
}

static void test_passphrase_provider(void)
{
	static const char pw[] = "provider passphrase";
	char path[512], pf[512], err[512];
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB];
	struct kms *kms = NULL;
	dictionary *d;
	size_t len;
	uint32_t v;

	REQUIRE(dek);
	unsetenv("ENVELOPEFS_PASSPHRASE");
	unsetenv("ENVELOPEFS_PASSPHRASE_FILE");
	test_path(path, sizeof(path), "provider-pass.keyring");
	REQUIRE(keyring_create(path, pw, strlen(pw), &fast_kdf, NULL, err, sizeof(err)) == 0);
	test_path(pf, sizeof(pf), "provider-pass.txt");
	REQUIRE(write_all(pf, "provider passphrase\n", 20, 0600) == 0);

	d = settings(path, pw, pf);
	REQUIRE(kms_open(d, &kms, err, sizeof(err)) == 0);
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v), 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, dek), 0);
	kms_close(kms);
	kms = NULL;

	/* Without the setting: the environment. */
	iniparser_unset(d, "kms:passphrase_file");
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -ENOKEY);
	setenv("ENVELOPEFS_PASSPHRASE", "not it", 1);
	CHECK_EQ_INT(kms_open(d, &kms, err, sizeof(err)), -EKEYREJECTED);
	setenv("ENVELOPEFS_PASSPHRASE", pw, 1);
	REQUIRE(kms_open(d, &kms, err, sizeof(err)) == 0);
	kms_close(kms);
	unsetenv("ENVELOPEFS_PASSPHRASE");
	iniparser_freedict(d);
	secmem_free(dek, KMS_DEK_LEN);
}

static void test_wrapper_args(void)
{
	char path[512];
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB];
	struct kms *kms;
	size_t len;
	uint32_t v;

	REQUIRE(dek);
	kms = open_kms(new_keyring(path, sizeof(path), "args.keyring"));
	CHECK_EQ_INT(kms_generate(kms, NULL, dek, blob, sizeof(blob), &len, &v), -EINVAL);
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, blob, 63, &len, &v), -EINVAL);
	CHECK_EQ_INT(kms_generate(NULL, &ctx_a, dek, blob, sizeof(blob), &len, &v), -EINVAL);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, KMS_MAX_BLOB + 1, dek), -EINVAL);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, NULL, 64, dek), -EINVAL);
	CHECK_EQ_INT(kms_rewrap(kms, &ctx_a, blob, 64, blob, 10, &len, &v), -EINVAL);
	CHECK_EQ_INT(kms_blob_version(kms, blob, 0, &v), -EINVAL);
	CHECK_EQ_INT(kms_blob_version(kms, blob, 65, &v), -EBADMSG);
	CHECK_EQ_INT(kms->counters.failures, 5); /* the NULL kms is not counted */
	CHECK(strcmp(kms_strerror(-EBADMSG), kms_strerror(-ENOENT)) != 0);
	CHECK(kms_strerror(-12345) != NULL);
	secmem_free(dek, KMS_DEK_LEN);
	kms_close(kms);
}

/* Wraps and unwraps from several threads while the keyring is rotated underneath. */
struct worker {
	struct kms *kms;
	int failures;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *out = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB], blob2[KMS_MAX_BLOB];
	size_t len, len2;
	uint32_t v;
	int i;

	if (!dek || !out) {
		w->failures++;
		return NULL;
	}
	for (i = 0; i < 300; i++) {
		struct kms_context ctx = ctx_a;

		ctx.file_id[0] = (uint8_t)i;
		if (kms_generate(w->kms, &ctx, dek, blob, sizeof(blob), &len, &v) < 0 ||
		    kms_unwrap(w->kms, &ctx, blob, len, out) < 0 ||
		    memcmp(dek, out, KMS_DEK_LEN) != 0 ||
		    kms_rewrap(w->kms, &ctx, blob, len, blob2, sizeof(blob2), &len2, &v) < 0 ||
		    kms_unwrap(w->kms, &ctx, blob2, len2, out) < 0 ||
		    memcmp(dek, out, KMS_DEK_LEN) != 0)
			w->failures++;
	}
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(out, KMS_DEK_LEN);
	return NULL;
}

static void test_threads_with_rotation(void)
{
	char path[512], err[512];
	struct worker w[4];
	pthread_t t[4];
	struct keyring *kr = NULL;
	struct kms *kms;
	int i;

	kms = open_kms(new_keyring(path, sizeof(path), "threads.keyring"));
	REQUIRE(keyring_load(path, NULL, 0, &kr, err, sizeof(err)) == 0);
	for (i = 0; i < 4; i++) {
		w[i] = (struct worker){ .kms = kms };
		REQUIRE(pthread_create(&t[i], NULL, work, &w[i]) == 0);
	}
	for (i = 0; i < 3; i++) {
		usleep(20000);
		CHECK_EQ_INT(keyring_rotate(kr, NULL, err, sizeof(err)), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(w[i].failures, 0);
	}
	CHECK_EQ_INT(kms->counters.failures, 0);
	CHECK_EQ_INT(kms->counters.generate, 1200);
	keyring_free(kr);
	kms_close(kms);
}

int main(void)
{
	test_dir_make();
	unsetenv("ENVELOPEFS_PASSPHRASE");
	unsetenv("ENVELOPEFS_PASSPHRASE_FILE");
	RUN(test_open_and_ref);
	RUN(test_wrap_unwrap);
	RUN(test_wrap_given_and_batches);
	RUN(test_blob_from_other_keyring);
	RUN(test_rewrap_after_rotation);
	RUN(test_open_errors);
	RUN(test_passphrase_provider);
	RUN(test_wrapper_args);
	RUN(test_threads_with_rotation);
	return check_summary();
}
