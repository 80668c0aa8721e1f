// SPDX-License-Identifier: MIT
/*
 * The vault provider through kms.h against the Transit test server
 * (tests/kmsd/vault_transit.py, started here on a free port): generate,
 * unwrap and rewrap round trips, wrap of a caller's DEK (Transit encrypt), context binding, key versions, error
 * mapping (bad ciphertext, too new, too old, wrong token, non-derived key)
 * and re-wraps from many threads at once, which the provider batches — each
 * caller must get its own result, failures included.
 */

#include "kms_test_util.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include "check.h"
#include "crypto/secmem.h"
#include "kms/http.h"
#include "kms/kms.h"
#include "kms/vault.h"

#define THREADS 8
#define ROUNDS 6

static pid_t server_pid;
static char base[64], token_path[300], token_header[128];

static void server_start(void)
{
	const char *src = getenv("ENVELOPEFS_SOURCE_ROOT");
	char script[512], port_path[300], port[16] = "";
	int i, fd;

	snprintf(script, sizeof(script), "%s/tests/kmsd/vault_transit.py", src ? src : ".");
	test_path(port_path, sizeof(port_path), "port");
	test_path(token_path, sizeof(token_path), "token");
	if (write_all(token_path, (const uint8_t *)"s.unit-test-token\n", 18, 0600) < 0) {
		fprintf(stderr, "cannot write %s\n", token_path);
		exit(2);
	}
	snprintf(token_header, sizeof(token_header), "X-Vault-Token: s.unit-test-token");
	server_pid = fork();
	if (server_pid == 0) {
		execl("/usr/bin/python3", "python3", script, "--port", "0", "--port-file", port_path,
		      "--token-file", token_path, "--test-control", (char *)NULL);
		_exit(127);
	}
	for (i = 0; i < 400; i++) {
		fd = open(port_path, O_RDONLY);
		if (fd >= 0) {
			ssize_t n = read(fd, port, sizeof(port) - 1);

			close(fd);
			if (n > 0)
				break;
		}
		usleep(25000);
	}
	if (!port[0]) {
		fprintf(stderr, "vault_transit.py did not start\n");
		exit(2);
	}
	snprintf(base, sizeof(base), "http://127.0.0.1:%d", atoi(port));
}

static void server_stop(void)
{
	if (server_pid > 0) {
		kill(server_pid, SIGTERM);
		waitpid(server_pid, NULL, 0);
	}
}

/* admin - a POST to @path the test makes itself (key set-up, faults), with the valid token. */
static long admin(struct http_client *http, const char *path, const char *body)
{
	const char *headers[] = { token_header, "Content-Type: application/json", NULL };
	struct http_response resp = { 0 };
	char url[256], err[256];
	struct http_request req = {
		.method = "POST", .url = url, .headers = headers, .body = body,
		.body_len = strlen(body),
	};
	long status;

	snprintf(url, sizeof(url), "%s%s", base, path);
	if (http_request(http, &req, &resp, err, sizeof(err)) < 0)
		status = -1;
	else
		status = resp.status;
	http_response_free(&resp);
	return status;
}

static dictionary *settings(const char *key, const char *token_file)
{
	dictionary *ini = dictionary_new(0);

	iniparser_set(ini, "kms", NULL);
	iniparser_set(ini, "kms:provider", "vault");
	iniparser_set(ini, "kms:address", base);
	iniparser_set(ini, "kms:key", key);
	iniparser_set(ini, "kms:token_file", token_file);
	iniparser_set(ini, "kms:deadline_ms", "3000");
	return ini;
}

static int open_vault(const char *key, const char *token_file, struct kms **kms, char *err,
		      size_t err_len)
{
	dictionary *ini = settings(key, token_file);
	int rc = kms_open(ini, kms, err, err_len);

	iniparser_freedict(ini);
	return rc;
}

static void context_for(struct kms_context *ctx, int n)
{
	memset(ctx->volume_uuid, 0xa5, 16);
	memset(ctx->file_id, 0, 16);
	ctx->file_id[0] = (uint8_t)n;
	ctx->file_id[15] = (uint8_t)(n >> 8);
}

static struct kms *shared;

struct job {
	int n;
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;
	uint8_t dek[KMS_DEK_LEN];
	bool wrong_context; /* this re-wrap must fail alone */
	int rc;
	uint32_t version;
};

static void *rewrap_job(void *arg)
{
	struct job *j = arg;
	struct kms_context ctx;
	uint8_t out[KMS_MAX_BLOB];
	size_t out_len;

	context_for(&ctx, j->wrong_context ? j->n + 1000 : j->n);
	j->rc = kms_rewrap(shared, &ctx, j->blob, j->len, out, sizeof(out), &out_len, &j->version);
	if (j->rc == 0) {
		memcpy(j->blob, out, out_len);
		j->len = out_len;
	}
	return NULL;
}

static void test_provider(void)
{
	struct http_settings hs = { 0 };
	struct http_client *http;
	struct kms *kms = NULL;
	struct kms_context ctx, other;
	struct job jobs[THREADS * ROUNDS];
	pthread_t threads[THREADS];
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN), *again = secmem_alloc(KMS_DEK_LEN);
	uint8_t blob[KMS_MAX_BLOB], bad[KMS_MAX_BLOB], wrapped[KMS_MAX_BLOB];
	char err[512], wrong_token[300];
	size_t len, wrapped_len, bad_len;
	uint32_t v = 0;
	int i, r;

	REQUIRE(dek && again);
	REQUIRE(http_client_new(&hs, &http, err, sizeof(err)) == 0);
	REQUIRE(admin(http, "/v1/transit/keys/k", "{\"derived\":true}") == 200);
	REQUIRE(admin(http, "/v1/transit/keys/plain", "{}") == 200);

	CHECK_EQ_INT(open_vault("plain", token_path, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "not a derived key") != NULL);
	CHECK_EQ_INT(open_vault("missing", token_path, &kms, err, sizeof(err)), -ENOENT);
	test_path(wrong_token, sizeof(wrong_token), "wrong-token");
	REQUIRE(write_all(wrong_token, (const uint8_t *)"s.wrong", 7, 0600) == 0);
	CHECK_EQ_INT(open_vault("k", wrong_token, &kms, err, sizeof(err)), -EACCES);

	REQUIRE(open_vault("k", token_path, &kms, err, sizeof(err)) == 0);
	CHECK(strcmp(kms->key_ref, "vault:transit/k") == 0);
	CHECK(kms_current_version(kms, &v) == 0 && v == 1);

	/* generate / unwrap round trip, bound to the context. */
	context_for(&ctx, 1);
	context_for(&other, 2);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK(v == 1 && len <= VAULT_MAX_BLOB && memcmp(blob, "vault:v1:", 9) == 0);
	CHECK(kms_blob_version(kms, blob, len, &v) == 0 && v == 1);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, again), 0);
	CHECK(memcmp(dek, again, KMS_DEK_LEN) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &other, blob, len, again), -EBADMSG);
	memcpy(bad, blob, len);
	bad[len - 5] = bad[len - 5] == 'A' ? 'B' : 'A';
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, bad, len, again), -EBADMSG);
	memcpy(bad, "vault:v9", 8); /* a version the key does not have */
	memcpy(bad + 8, blob + 8, len - 8);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, bad, len, again), -ENOENT);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, (const uint8_t *)"local:v1:AAAA", 13, again), -EBADMSG);

	/* wrap: the caller's DEK through Transit encrypt, a blob like a generated one. */
	memset(dek, 0x3c, KMS_DEK_LEN);
	REQUIRE(kms_wrap(kms, &ctx, dek, wrapped, sizeof(wrapped), &wrapped_len, &v) == 0);
	CHECK(v == 1 && wrapped_len <= VAULT_MAX_BLOB && memcmp(wrapped, "vault:v1:", 9) == 0);
	CHECK(kms_blob_version(kms, wrapped, wrapped_len, &v) == 0 && v == 1);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, wrapped, wrapped_len, again), 0);
	CHECK(memcmp(dek, again, KMS_DEK_LEN) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &other, wrapped, wrapped_len, again), -EBADMSG);
	CHECK(kms->counters.wrap == 1);

	/* Blobs under version 1 for every job, then a rotation: seen at once, never stale. */
	for (i = 0; i < THREADS * ROUNDS; i++) {
		jobs[i].n = i;
		jobs[i].wrong_context = i % 7 == 3;
		context_for(&ctx, i);
		REQUIRE(kms_generate(kms, &ctx, jobs[i].dek, jobs[i].blob, sizeof(jobs[i].blob),
				     &jobs[i].len, &v) == 0);
	}
	REQUIRE(admin(http, "/v1/transit/keys/k/rotate", "{}") == 200);
	CHECK(kms_current_version(kms, &v) == 0 && v == 2);

	/* Concurrent re-wraps (batched by the provider): each gets its own outcome. */
	shared = kms;
	for (r = 0; r < ROUNDS; r++) {
		for (i = 0; i < THREADS; i++)
			pthread_create(&threads[i], NULL, rewrap_job, &jobs[r * THREADS + i]);
		for (i = 0; i < THREADS; i++)
			pthread_join(threads[i], NULL);
	}
	for (i = 0; i < THREADS * ROUNDS; i++) {
		struct job *j = &jobs[i];

		context_for(&ctx, i);
		if (j->wrong_context) {
			CHECK_EQ_INT(j->rc, -EBADMSG);
			continue;
		}
		CHECK_EQ_INT(j->rc, 0);
		CHECK(j->version == 2 && memcmp(j->blob, "vault:v2:", 9) == 0);
		CHECK_EQ_INT(kms_unwrap(kms, &ctx, j->blob, j->len, again), 0);
		CHECK(memcmp(again, j->dek, KMS_DEK_LEN) == 0);
	}

	/* The wrapped blob re-wraps like a generated one; a new wrap takes the new version. */
	context_for(&ctx, 1);
	CHECK_EQ_INT(kms_rewrap(kms, &ctx, wrapped, wrapped_len, bad, sizeof(bad), &bad_len, &v), 0);
	CHECK(v == 2 && memcmp(bad, "vault:v2:", 9) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, bad, bad_len, again), 0);
	CHECK(memcmp(again, dek, KMS_DEK_LEN) == 0);
	CHECK_EQ_INT(kms_wrap(kms, &ctx, dek, wrapped, sizeof(wrapped), &wrapped_len, &v), 0);
	CHECK(v == 2 && memcmp(wrapped, "vault:v2:", 9) == 0);

	/* Version 1 retired by policy: "too old" is -ENOENT, for unwrap and rewrap alike. */
	REQUIRE(admin(http, "/v1/transit/keys/k/config", "{\"min_decryption_version\":2}") == 200);
	context_for(&ctx, 1);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, again), -ENOENT);
	CHECK_EQ_INT(kms_rewrap(kms, &ctx, blob, len, bad, sizeof(bad), &len, &v), -ENOENT);

	/* Service trouble: 503s past the deadline are -EAGAIN, and the provider recovers. */
	REQUIRE(admin(http, "/_test/fault", "{\"status\":503,\"seconds\":30}") == 204);
	context_for(&ctx, 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, jobs[0].blob, jobs[0].len, again), -EAGAIN);
	REQUIRE(admin(http, "/_test/fault", "{\"status\":0}") == 204);

	kms_close(kms);
	http_client_free(http);
	secmem_free(dek, KMS_DEK_LEN);
	secmem_free(again, KMS_DEK_LEN);
}

int main(void)
{
	test_dir_make();
	server_start();
	RUN(test_provider);
	server_stop();
	return check_summary();
}
