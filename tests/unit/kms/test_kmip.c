// SPDX-License-Identifier: MIT
/*
 * The kmip provider through kms/kms.h against PyKMIP's server, started by
 * tests/kmsd/kmip_server.py (its own PKI; keys made with PyKMIP's client):
 * generate/unwrap/rewrap/wrap, every error kind of kms.h as the provider maps
 * the server's answers (bad ciphertext, not found, denied, unavailable,
 * invalid settings), versions found by name, batched unwraps, and many
 * threads sharing the connection pool.
 */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "crypto/bigendian.h"
#include "crypto/secmem.h"
#include "kms/kmip.h"
#include "kms/kms.h"
#include "kms_test_util.h"

static pid_t peer_pid;
static FILE *peer_in, *peer_out;
static char port[16], pki[512];

static void peer_line(char *buf, size_t cap)
{
	if (!fgets(buf, (int)cap, peer_out)) {
		fprintf(stderr, "kmip_server.py exited\n");
		exit(2);
	}
	buf[strcspn(buf, "\n")] = '\0';
}

/* peer_cmd - one command to the helper; its one-line answer in @answer. */
static void peer_cmd(const char *cmd, char *answer, size_t cap)
{
	char line[512];

	fprintf(peer_in, "%s\n", cmd);
	fflush(peer_in);
	peer_line(line, sizeof(line));
	if (answer) {
		size_t n = strlen(line) < cap ? strlen(line) : cap - 1;

		memcpy(answer, line, n);
		answer[n] = '\0';
	}
}

static void peer_start(void)
{
	const char *src = getenv("ENVELOPEFS_SOURCE_ROOT");
	char path[512], line[1024];
	int in[2], out[2];

	snprintf(path, sizeof(path), "%s/tests/kmsd/kmip_server.py", src ? src : ".");
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		exit(2);
	peer_pid = fork();
	if (peer_pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl(TEST_PYTHON, TEST_PYTHON, path, test_dir, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	peer_in = fdopen(in[1], "w");
	peer_out = fdopen(out[0], "r");
	peer_line(line, sizeof(line));
	if (sscanf(line, "%15s %511s", port, pki) != 2) {
		fprintf(stderr, "kmip_server.py: unexpected start line: %s\n", line);
		exit(2);
	}
}

static void peer_stop(void)
{
	fclose(peer_in);
	fclose(peer_out);
	waitpid(peer_pid, NULL, 0);
}

static dictionary *settings(const char *key_name)
{
	dictionary *ini = dictionary_new(0);
	char path[600];

	iniparser_set(ini, "kms", NULL);
	iniparser_set(ini, "kms:provider", "kmip");
	iniparser_set(ini, "kms:host", "127.0.0.1");
	iniparser_set(ini, "kms:port", port);
	snprintf(path, sizeof(path), "%s/ca.pem", pki);
	iniparser_set(ini, "kms:ca_file", path);
	snprintf(path, sizeof(path), "%s/client.pem", pki);
	iniparser_set(ini, "kms:cert_file", path);
	snprintf(path, sizeof(path), "%s/client.key", pki);
	iniparser_set(ini, "kms:key_file", path);
	iniparser_set(ini, "kms:key_name", key_name);
	iniparser_set(ini, "kms:timeout_ms", "3000");
	return ini;
}

static struct kms *open_kms(const char *key_name, int *rc, char *err, size_t err_len)
{
	dictionary *ini = settings(key_name);
	struct kms *kms = NULL;

	*rc = kms_open(ini, &kms, err, err_len);
	iniparser_freedict(ini);
	return kms;
}

static void create_key(const char *name, char *uid, size_t cap)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "create %s", name);
	peer_cmd(cmd, uid, cap);
}

static const struct kms_context ctx_a = { .volume_uuid = { 1, 2, 3 }, .file_id = { 9, 8, 7 } };

static void test_round_trip_and_errors(void)
{
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *back = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB], other[KMS_MAX_BLOB];
	struct kms_context ctx_b = ctx_a;
	size_t len, other_len;
	uint32_t v;
	char err[512], uid[64];
	struct kms *kms;
	int rc;

	REQUIRE(dek && back);
	create_key("rt.1", uid, sizeof(uid));
	kms = open_kms("rt", &rc, err, sizeof(err));
	REQUIRE(rc == 0);
	CHECK(strcmp(kms->key_ref, "kmip:rt") == 0);
	CHECK_EQ_INT(kms->max_blob_len, KMIP_BLOB_LEN);
	REQUIRE(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(len, KMIP_BLOB_LEN);
	CHECK_EQ_INT(v, 1);
	CHECK_EQ_INT(get_be32(blob), 1);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, back), 0);
	CHECK(memcmp(dek, back, KMS_DEK_LEN) == 0);
	/* Another file: the server's GCM tag fails. */
	ctx_b.file_id[0] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_b, blob, len, back), -EBADMSG);
	/* A flipped ciphertext byte, a short blob, version 0: bad ciphertext. */
	blob[20] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, back), -EBADMSG);
	blob[20] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len - 1, back), -EBADMSG);
	/* A version that no key is named for: not found. */
	memcpy(other, blob, len);
	put_be32(other, 77);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, other, len, back), -ENOENT);
	/* wrap: the caller's DEK under the current version. */
	REQUIRE(kms_wrap(kms, &ctx_b, dek, other, sizeof(other), &other_len, &v) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_b, other, other_len, back), 0);
	CHECK(memcmp(dek, back, KMS_DEK_LEN) == 0);

	/* Rotation: a new key name is a new version, seen without reopening. */
	create_key("rt.2", NULL, 0);
	CHECK(kms_current_version(kms, &v) == 0 && v == 2);
	REQUIRE(kms_rewrap(kms, &ctx_a, blob, len, other, sizeof(other), &other_len, &v) == 0);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(kms_blob_version(kms, other, other_len, &v), 0);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, other, other_len, back), 0);
	CHECK(memcmp(dek, back, KMS_DEK_LEN) == 0);

	/* A revoked (deactivated) version: PyKMIP denies Decrypt with it. */
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "revoke %s", uid);
		peer_cmd(cmd, NULL, 0);
	}
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, back), -EACCES);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, other, other_len, back), 0);

	/* The server down: unavailable, within the timeout; back up: working again. */
	peer_cmd("stop", NULL, 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, other, other_len, back), -EAGAIN);
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v), -EAGAIN);
	peer_cmd("start", NULL, 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, other, other_len, back), 0);
	kms_close(kms);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(back, KMS_DEK_LEN);
}

static void test_open_errors(void)
{
	dictionary *ini;
	struct kms *kms = NULL;
	char err[512], uid[64];
	int rc;

	kms = open_kms("nothing-here", &rc, err, sizeof(err));
	CHECK_EQ_INT(rc, -ENOENT);
	CHECK(strstr(err, "no AES-256 key named 'nothing-here.N'") != NULL);
	create_key("twice.3", uid, sizeof(uid));
	create_key("twice.3", uid, sizeof(uid));
	kms = open_kms("twice", &rc, err, sizeof(err));
	CHECK_EQ_INT(rc, -EINVAL);
	CHECK(strstr(err, "two keys are named 'twice.3'") != NULL);
	ini = settings("x");
	iniparser_set(ini, "kms:port", "70000");
	CHECK_EQ_INT(kms_open(ini, &kms, err, sizeof(err)), -EINVAL);
	iniparser_set(ini, "kms:port", port);
	iniparser_set(ini, "kms:ca_file", "relative.pem");
	CHECK_EQ_INT(kms_open(ini, &kms, err, sizeof(err)), -EINVAL);
	iniparser_set(ini, "kms:ca_file", "/nonexistent.pem");
	CHECK_EQ_INT(kms_open(ini, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "kms:ca_file") != NULL);
	iniparser_freedict(ini);
}

/* 40 blobs unwrapped in two Decrypt batches (round trips), each item with its own result. */
static void test_unwrap_many_batches(void)
{
	enum { N = 40 };
	uint8_t *deks = secmem_alloc(2 * N * KMS_DEK_LEN), blobs[N][KMIP_BLOB_LEN];
	struct kms_context ctx[N];
	struct kms_unwrap_item items[N];
	struct kms_remote_stats before, after;
	char err[512];
	struct kms *kms;
	size_t len;
	uint32_t v;
	int rc, i;

	REQUIRE(deks);
	create_key("many.1", NULL, 0);
	kms = open_kms("many", &rc, err, sizeof(err));
	REQUIRE(rc == 0);
	for (i = 0; i < N; i++) {
		ctx[i] = ctx_a;
		ctx[i].file_id[15] = (uint8_t)i;
		REQUIRE(kms_generate(kms, &ctx[i], deks + i * KMS_DEK_LEN, blobs[i], sizeof(blobs[i]),
				     &len, &v) == 0);
		items[i] = (struct kms_unwrap_item){ .ctx = &ctx[i], .blob = blobs[i],
						     .blob_len = len,
						     .dek = deks + (N + i) * KMS_DEK_LEN };
	}
	ctx[5].volume_uuid[0] ^= 1; /* another volume: bad ciphertext for this item only */
	put_be32(blobs[7], 77);	    /* a version no key is named for */
	kms_remote_stats(kms, &before);
	CHECK_EQ_INT(kms_unwrap_many(kms, items, N), -EBADMSG);
	kms_remote_stats(kms, &after);
	for (i = 0; i < N; i++) {
		if (i == 5) {
			CHECK_EQ_INT(items[i].rc, -EBADMSG);
		} else if (i == 7) {
			CHECK_EQ_INT(items[i].rc, -ENOENT);
		} else {
			CHECK_EQ_INT(items[i].rc, 0);
			CHECK(memcmp(items[i].dek, deks + i * KMS_DEK_LEN, KMS_DEK_LEN) == 0);
		}
	}
	/* Two Decrypt batches, and one Locate looking for version 77. */
	CHECK_EQ_INT(after.calls - before.calls, 3);
	kms_close(kms);
	secmem_free(deks, 2 * N * KMS_DEK_LEN);
}

struct worker {
	struct kms *kms;
	int failures;
};

static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *back = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB];
	struct kms_context ctx = ctx_a;
	size_t len;
	uint32_t v;
	int i;

	for (i = 0; i < 10 && dek && back; i++) {
		ctx.file_id[15] = (uint8_t)i;
		if (kms_generate(w->kms, &ctx, dek, blob, sizeof(blob), &len, &v) != 0 ||
		    kms_unwrap(w->kms, &ctx, blob, len, back) != 0 ||
		    memcmp(dek, back, KMS_DEK_LEN) != 0)
			w->failures++;
	}
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(back, KMS_DEK_LEN);
	return NULL;
}

/* Eight threads on a pool of four kept-alive connections: every call succeeds. */
static void test_threads_share_the_pool(void)
{
	struct worker w[8];
	pthread_t t[8];
	struct kms_remote_stats rs;
	char err[512];
	struct kms *kms;
	int rc, i;

	create_key("mt.1", NULL, 0);
	kms = open_kms("mt", &rc, err, sizeof(err));
	REQUIRE(rc == 0);
	for (i = 0; i < 8; i++) {
		w[i] = (struct worker){ .kms = kms };
		pthread_create(&t[i], NULL, work, &w[i]);
	}
	for (i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(w[i].failures, 0);
	}
	kms_remote_stats(kms, &rs);
	CHECK(rs.remote);
	CHECK(rs.calls >= 160);
	CHECK_EQ_INT(rs.failures, 0);
	kms_close(kms);
}

int main(void)
{
	test_dir_make();
	peer_start();
	RUN(test_round_trip_and_errors);
	RUN(test_open_errors);
	RUN(test_unwrap_many_batches);
	RUN(test_threads_share_the_pool);
	peer_stop();
	return check_summary();
}
