// SPDX-License-Identifier: MIT
/*
 * Unit tests for fs/kmsset.c: the daemon's replaceable set of KMS providers,
 * on two real local keyrings.
 */
#include "../kms/kms_test_util.h"
#include "../kms/local_kms_util.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "crypto/secmem.h"
#include "fs/kmsset.h"
#include "fs/volume.h"

static const uint8_t uuid[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static char path_a[512], path_b[512];

/* config - a volume configuration's providers: [kms] from @cur, [kms_previous] from @prev. */
static dictionary *config(const char *cur, const char *prev)
{
	dictionary *d = dictionary_new(0), *s;
	const char *const sections[2] = { "kms", VOLUME_KMS_PREVIOUS };
	const char *const paths[2] = { cur, prev };

	for (int i = 0; i < 2 && paths[i]; i++) {
		char key[64];

		s = settings(paths[i], NULL, NULL);
		iniparser_set(d, sections[i], NULL);
		snprintf(key, sizeof(key), "%s:provider", sections[i]);
		iniparser_set(d, key, "local");
		snprintf(key, sizeof(key), "%s:keyring", sections[i]);
		iniparser_set(d, key, iniparser_getstring(s, "kms:keyring", ""));
		snprintf(key, sizeof(key), "%s:keyring_id", sections[i]);
		iniparser_set(d, key, iniparser_getstring(s, "kms:keyring_id", ""));
		iniparser_freedict(s);
	}
	return d;
}

struct reload_arg {
	struct kms_keeper *k;
	dictionary *ini;
	int rc;
	atomic_bool done;
};

static void *reload_thread(void *p)
{
	struct reload_arg *a = p;
	char err[512];

	a->rc = kms_keeper_reload(a->k, a->ini, err, sizeof(err));
	atomic_store(&a->done, true);
	return NULL;
}

static void test_reload_waits_and_carries_over(void)
{
	dictionary *only_a = config(path_a, NULL), *a_to_b = config(path_b, path_a),
		   *only_b = config(path_b, NULL), *same = config(path_a, path_a);
	struct reload_arg arg = { .ini = a_to_b };
	const struct kms_set *s1, *s2;
	struct kms *kms_a, *kms_b;
	struct fresh_key *key = malloc(sizeof(*key));
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *back = secmem_alloc(KMS_DEK_LEN);
	struct kms_context ctx;
	struct kms_keeper *k;
	pthread_t t;
	char err[512];

	REQUIRE(key && dek && back);
	REQUIRE(kms_keeper_open(only_a, uuid, 0, NULL, NULL, &k, err, sizeof(err)) == 0);
	s1 = kms_keeper_get(k);
	kms_a = s1->keys.current;
	CHECK(strncmp(kms_a->key_ref, "local:", 6) == 0);
	CHECK(s1->keys.previous == NULL);

	/* The reload publishes at once but returns only when s1 is given back. */
	arg.k = k;
	REQUIRE(pthread_create(&t, NULL, reload_thread, &arg) == 0);
	usleep(200 * 1000);
	CHECK(!atomic_load(&arg.done));
	s2 = kms_keeper_get(k);
	CHECK(s2 != s1 && s2->keys.previous == kms_a); /* carried over, not reopened */
	kms_b = s2->keys.current;
	CHECK(strcmp(kms_b->key_ref, kms_a->key_ref) != 0);
	kms_keeper_put(k, s1);
	pthread_join(t, NULL);
	CHECK(atomic_load(&arg.done));
	CHECK_EQ_INT(arg.rc, 0);

	/* New keys come from the new provider's pool; the old one still opens its records. */
	REQUIRE(dek_pool_take(s2->pool, key, dek) == 0);
	memcpy(ctx.volume_uuid, uuid, 16);
	memcpy(ctx.file_id, key->file_id, 16);
	CHECK_EQ_INT(kms_unwrap(kms_b, &ctx, key->blob, key->blob_len, back), 0);
	CHECK(memcmp(dek, back, KMS_DEK_LEN) == 0);
	CHECK(kms_pair_for(&s2->keys, kms_a->key_ref) == kms_a);
	CHECK(kms_pair_for(&s2->keys, "local:00") == NULL);
	kms_keeper_put(k, s2);

	/* Two sections naming one key are refused; the set stays. */
	CHECK_EQ_INT(kms_keeper_reload(k, same, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "same master key") != NULL);
	s2 = kms_keeper_get(k);
	CHECK(s2->keys.current == kms_b && s2->keys.previous == kms_a);
	kms_keeper_put(k, s2);

	/* Finished: the previous provider goes, the current one stays as it was. */
	REQUIRE(kms_keeper_reload(k, only_b, err, sizeof(err)) == 0);
	s2 = kms_keeper_get(k);
	CHECK(s2->keys.current == kms_b && s2->keys.previous == NULL);
	kms_keeper_put(k, s2);
	kms_keeper_close(k);

	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(back, KMS_DEK_LEN);
	free(key);
	iniparser_freedict(only_a);
	iniparser_freedict(a_to_b);
	iniparser_freedict(only_b);
	iniparser_freedict(same);
}

/* A provider that cannot be opened leaves the old set in place, with a message. */
static void test_failed_reload_keeps_the_set(void)
{
	dictionary *only_a = config(path_a, NULL), *bad = config(path_a, NULL);
	const struct kms_set *s;
	struct kms_keeper *k;
	struct kms *kms_a;
	char err[512];

	REQUIRE(kms_keeper_open(only_a, uuid, 0, NULL, NULL, &k, err, sizeof(err)) == 0);
	s = kms_keeper_get(k);
	kms_a = s->keys.current;
	kms_keeper_put(k, s);
	iniparser_set(bad, "kms:keyring", "/nonexistent/keyring");
	CHECK(kms_keeper_reload(k, bad, err, sizeof(err)) < 0);
	CHECK(strstr(err, "/nonexistent/keyring") != NULL);
	s = kms_keeper_get(k);
	CHECK(s->keys.current == kms_a);
	kms_keeper_put(k, s);
	kms_keeper_close(k);
	iniparser_freedict(only_a);
	iniparser_freedict(bad);
}

int main(void)
{
	test_dir_make();
	new_keyring(path_a, sizeof(path_a), "a.keyring");
	new_keyring(path_b, sizeof(path_b), "b.keyring");
	RUN(test_reload_waits_and_carries_over);
	RUN(test_failed_reload_keeps_the_set);
	return check_summary();
}
