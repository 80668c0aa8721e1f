// SPDX-License-Identifier: MIT
/* Unit tests for the pool of fresh data keys (kms/dekpool.c), on the local keyring. */

#include "dekpool_test_util.h"
#include "kms_test_util.h"
#include "local_kms_util.h"

#include <errno.h>

#include "check.h"
#include "crypto/secmem.h"

static const uint8_t volume[16] = { 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6 };

/* take_and_check - a taken key unwraps, under its own context only, to its DEK. */
static void take_and_check(struct kms *kms, struct dek_pool *pool, uint32_t want_version,
			   uint8_t seen_ids[][16], size_t n_seen)
{
	struct fresh_key key;
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *out = secmem_alloc(KMS_DEK_LEN);
	size_t i;

	REQUIRE(dek && out);
	REQUIRE(dek_pool_take(pool, &key, dek) == 0);
	CHECK_EQ_INT(key.version, want_version);
	for (i = 0; i < n_seen; i++)
		CHECK(memcmp(seen_ids[i], key.file_id, 16) != 0);
	memcpy(seen_ids[n_seen], key.file_id, 16);
	memcpy(ctx.volume_uuid, volume, 16);
	memcpy(ctx.file_id, key.file_id, 16);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, key.blob, key.blob_len, out), 0);
	CHECK(memcmp(dek, out, KMS_DEK_LEN) == 0);
	ctx.file_id[0] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, key.blob, key.blob_len, out), -EBADMSG);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(out, KMS_DEK_LEN);
}

static void test_without_pool(void)
{
	char path[512];
	uint8_t ids[4][16];
	struct dek_pool *pool;
	struct dek_pool_stats st;
	struct kms *kms;

	kms = open_kms(new_keyring(path, sizeof(path), "plain.keyring"));
	REQUIRE(dek_pool_create(kms, volume, 0, &pool) == 0);
	take_and_check(kms, pool, 1, ids, 0);
	take_and_check(kms, pool, 1, ids, 1);
	dek_pool_get_stats(pool, &st);
	CHECK_EQ_INT(st.entries, 0);
	CHECK_EQ_INT(st.hits, 0);
	CHECK_EQ_INT(st.misses, 2);
	CHECK_EQ_INT(kms->counters.generate, 2);
	dek_pool_destroy(pool);
	kms_close(kms);
}

static void test_refills_in_background(void)
{
	char path[512];
	uint8_t ids[16][16];
	struct dek_pool *pool;
	struct dek_pool_stats st;
	struct kms *kms;
	size_t i;

	kms = open_kms(new_keyring(path, sizeof(path), "pool.keyring"));
	REQUIRE(dek_pool_create(kms, volume, 8, &pool) == 0);
	CHECK(wait_for_entries(pool, 8));
	CHECK_EQ_INT(kms->counters.generate, 8);
	for (i = 0; i < 8; i++)
		take_and_check(kms, pool, 1, ids, i);
	dek_pool_get_stats(pool, &st);
	CHECK(st.hits >= 1); /* the refill thread races the takes */
	CHECK_EQ_INT(st.hits + st.misses, 8);
	CHECK(wait_for_entries(pool, 8)); /* full again without anyone asking */
	for (; i < 16; i++)
		take_and_check(kms, pool, 1, ids, i);
	dek_pool_destroy(pool); /* with keys in it: wiped, no leak under ASan */
	kms_close(kms);
}

/* After a master-key rotation, keys made under the old version are never handed out. */
static void test_drops_stale_versions(void)
{
	char path[512], err[512];
	uint8_t ids[8][16];
	struct keyring *kr = NULL;
	struct dek_pool *pool;
	struct dek_pool_stats st;
	struct kms *kms;
	uint32_t version;

	kms = open_kms(new_keyring(path, sizeof(path), "rot.keyring"));
	REQUIRE(dek_pool_create(kms, volume, 4, &pool) == 0);
	CHECK(wait_for_entries(pool, 4));
	REQUIRE(keyring_load(path, NULL, 0, &kr, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(kr, &version, err, sizeof(err)) == 0);
	keyring_free(kr);
	CHECK_EQ_INT(version, 2);
	REQUIRE(kms_current_version(kms, &version) == 0);
	dek_pool_note_version(pool, version);
	take_and_check(kms, pool, 2, ids, 0);
	dek_pool_get_stats(pool, &st);
	CHECK(st.dropped >= 4);
	CHECK(wait_for_entries(pool, 4));
	take_and_check(kms, pool, 2, ids, 1);
	dek_pool_destroy(pool);
	kms_close(kms);
}

int main(void)
{
	test_dir_make();
	unsetenv("ENVELOPEFS_PASSPHRASE");
	unsetenv("ENVELOPEFS_PASSPHRASE_FILE");
	RUN(test_without_pool);
	RUN(test_refills_in_background);
	RUN(test_drops_stale_versions);
	return check_summary();
}
