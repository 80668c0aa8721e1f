// SPDX-License-Identifier: MIT
/*
 * The aws provider against moto_server with SigV4 checking on
 * (tests/kmsd/aws_moto.py): generate/unwrap/rewrap, encryption-context
 * binding, rotation through ReEncrypt, credentials from the environment and
 * from a profile file, wrong secret, denied access, a disabled key, an
 * unreachable or hanging KMS (deadline, breaker, reachability hook).  Error
 * answers moto cannot give (DisabledException, throttling) come from
 * tests/unit/kms/http_peer.py.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "crypto/secmem.h"
#include "kms/aws.h"
#include "kms/json.h"
#include "kms/kms.h"
#include "kms_test_util.h"

struct helper {
	pid_t pid;
	FILE *in;  /* commands to the helper */
	FILE *out; /* its answers */
};

static struct helper moto, faults;
static char endpoint[128], throttle_endpoint[128], access_key[64], secret[128], key_arn[256],
	key_id[64];
static char faults_base[64];

static void helper_start(struct helper *h, const char *script, const char *arg)
{
	const char *src = getenv("ENVELOPEFS_SOURCE_ROOT");
	char path[512];
	int in[2], out[2];

	snprintf(path, sizeof(path), "%s/%s", src ? src : ".", script);
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
		exit(2);
	h->pid = fork();
	if (h->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		execl(TEST_PYTHON, TEST_PYTHON, path, arg, (char *)NULL);
		_exit(127);
	}
	close(in[0]);
	close(out[1]);
	h->in = fdopen(in[1], "w");
	h->out = fdopen(out[0], "r");
}

static void helper_stop(struct helper *h)
{
	if (h->pid <= 0)
		return;
	fclose(h->in);
	fclose(h->out);
	waitpid(h->pid, NULL, 0);
	h->pid = 0;
}

/* helper_line - the next line the helper prints (exits the test if it died). */
static void helper_line(struct helper *h, char *buf, size_t cap)
{
	if (!fgets(buf, (int)cap, h->out)) {
		fprintf(stderr, "test peer exited\n");
		exit(2);
	}
	buf[strcspn(buf, "\n")] = '\0';
}

/* peer_cmd - send a command to the moto helper; 0 unless it answered an error. */
static int peer_cmd(const char *cmd, char *answer, size_t cap)
{
	char line[1024];

	fprintf(moto.in, "%s\n", cmd);
	fflush(moto.in);
	helper_line(&moto, line, sizeof(line));
	if (answer) {
		size_t n = strlen(line) < cap ? strlen(line) : cap - 1;

		memcpy(answer, line, n);
		answer[n] = '\0';
	}
	if (strstr(line, "\"error\"")) {
		fprintf(stderr, "peer: %s -> %s\n", cmd, line);
		return -1;
	}
	return 0;
}

static void json_field(const char *json, const char *path, char *out, size_t cap)
{
	struct json_doc *doc = NULL;

	out[0] = '\0';
	if (json_parse(json, strlen(json), &doc) == 0)
		json_get_string(doc, path, out, cap, NULL);
	json_free(doc);
}

static void start_moto(void)
{
	char line[2048];

	helper_start(&moto, "tests/kmsd/aws_moto.py", NULL);
	helper_line(&moto, line, sizeof(line));
	json_field(line, "endpoint", endpoint, sizeof(endpoint));
	json_field(line, "throttle_endpoint", throttle_endpoint, sizeof(throttle_endpoint));
	json_field(line, "access_key", access_key, sizeof(access_key));
	json_field(line, "secret", secret, sizeof(secret));
	json_field(line, "key_arn", key_arn, sizeof(key_arn));
	json_field(line, "key_id", key_id, sizeof(key_id));
	if (!endpoint[0] || !throttle_endpoint[0] || !secret[0] || !key_arn[0]) {
		fprintf(stderr, "aws_moto.py: unexpected start line: %s\n", line);
		exit(2);
	}
}

static void use_env_credentials(const char *secret_value)
{
	unsetenv("AWS_PROFILE");
	/* Set empty, not unset: the provider keeps a token it took out of the environment
	 * until the variable is set again (kms/envsecret.h). */
	setenv("AWS_SESSION_TOKEN", "", 1);
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
	setenv("AWS_ACCESS_KEY_ID", access_key, 1);
	setenv("AWS_SECRET_ACCESS_KEY", secret_value, 1);
}

static dictionary *settings(const char *key, const char *url)
{
	dictionary *d = dictionary_new(0);

	iniparser_set(d, "kms", NULL);
	iniparser_set(d, "kms:provider", "aws");
	iniparser_set(d, "kms:key_id", key);
	iniparser_set(d, "kms:region", "us-east-1");
	iniparser_set(d, "kms:endpoint", url);
	iniparser_set(d, "kms:deadline_ms", "3000");
	iniparser_set(d, "kms:timeout_ms", "1000");
	iniparser_set(d, "kms:breaker_threshold", "2");
	iniparser_set(d, "kms:breaker_cooldown_ms", "500");
	return d;
}

static int open_with(dictionary *d, struct kms **kms, char *err, size_t err_len)
{
	int rc = kms_open(d, kms, err, err_len);

	iniparser_freedict(d);
	return rc;
}

static struct kms *open_ok(const char *key)
{
	struct kms *kms = NULL;
	char err[512];

	if (open_with(settings(key, endpoint), &kms, err, sizeof(err)) < 0) {
		fprintf(stderr, "kms_open: %s\n", err);
		return NULL;
	}
	return kms;
}

static void make_ctx(struct kms_context *c, uint8_t vol, uint8_t file)
{
	memset(c->volume_uuid, vol, 16);
	memset(c->file_id, file, 16);
}

/* open_default - the provider on the test key, with the good credentials in the environment. */
static struct kms *open_default(void)
{
	use_env_credentials(secret);
	return open_ok(key_arn);
}

/*
 * open_and_generate - open_default(), then a DEK generated into @dek and
 * @blob (KMS_MAX_BLOB bytes) under the context (@vol, @file), made in @ctx.
 * NULL, with the failure on stderr, if either step fails.
 */
static struct kms *open_and_generate(struct kms_context *ctx, uint8_t vol, uint8_t file,
				     uint8_t *dek, uint8_t *blob, size_t *len)
{
	struct kms *kms = open_default();
	uint32_t v;
	int rc;

	if (!kms)
		return NULL;
	make_ctx(ctx, vol, file);
	rc = kms_generate(kms, ctx, dek, blob, KMS_MAX_BLOB, len, &v);
	if (rc < 0) {
		fprintf(stderr, "kms_generate: %d\n", rc);
		kms_close(kms);
		return NULL;
	}
	return kms;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_generate_unwrap(void)
{
	struct kms *kms;
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(32), *dek2 = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;
	uint32_t v, bv;

	REQUIRE(dek && dek2);
	kms = open_default();
	REQUIRE(kms);
	CHECK(strcmp(kms->ops->name, "aws") == 0);
	CHECK(strncmp(kms->key_ref, "aws:us-east-1:", 14) == 0);
	make_ctx(&ctx, 0x11, 0x22);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(v, 1);
	CHECK(blob[0] == AWS_BLOB_FORMAT && len > AWS_BLOB_HEADER && len <= kms->max_blob_len);
	CHECK_EQ_INT(kms_blob_version(kms, blob, len, &bv), 0);
	CHECK_EQ_INT(bv, 1);
	REQUIRE(kms_unwrap(kms, &ctx, blob, len, dek2) == 0);
	CHECK(memcmp(dek, dek2, 32) == 0);
	/* Two generates never give the same DEK. */
	REQUIRE(kms_generate(kms, &ctx, dek2, blob, sizeof(blob), &len, &v) == 0);
	CHECK(memcmp(dek, dek2, 32) != 0);
	kms_close(kms);
	secmem_free(dek, 32);
	secmem_free(dek2, 32);
}

/*
 * One connection per call at most, and the mean call latency.  moto's
 * Werkzeug server answers "Connection: close", so against it every call
 * connects anew; connection reuse is proven against http_peer.py in
 * test_http.c.
 */
static void test_keep_alive_and_latency(void)
{
	struct kms *kms;
	struct kms_context ctx;
	struct kms_remote_stats st0, st1;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	char answer[256];
	long before, after;
	size_t len;
	int i;

	REQUIRE(dek);
	kms = open_and_generate(&ctx, 0x71, 0x72, dek, blob, &len);
	REQUIRE(kms);
	kms_remote_stats(kms, &st0);
	REQUIRE(peer_cmd("connections", answer, sizeof(answer)) == 0);
	before = strtol(strchr(answer, ':') + 1, NULL, 10);
	for (i = 0; i < 50; i++)
		CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	REQUIRE(peer_cmd("connections", answer, sizeof(answer)) == 0);
	after = strtol(strchr(answer, ':') + 1, NULL, 10);
	kms_remote_stats(kms, &st1);
	CHECK_EQ_INT(st1.calls - st0.calls, 50);
	CHECK(after - before <= 50);
	printf("50 unwraps against moto: %ld new connection(s), mean %.2f ms per call\n",
	       after - before, (double)(st1.latency_us - st0.latency_us) / 50 / 1000);
	kms_close(kms);
	secmem_free(dek, 32);
}

static void test_context_binding(void)
{
	struct kms *kms;
	struct kms_context ctx, other_file, other_volume;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;

	REQUIRE(dek);
	kms = open_and_generate(&ctx, 0x11, 0x22, dek, blob, &len);
	REQUIRE(kms);
	make_ctx(&other_file, 0x11, 0x23);
	make_ctx(&other_volume, 0x12, 0x22);
	CHECK_EQ_INT(kms_unwrap(kms, &other_file, blob, len, dek), -EBADMSG);
	/* The same file ID in another volume: a header copied across volumes. */
	CHECK_EQ_INT(kms_unwrap(kms, &other_volume, blob, len, dek), -EBADMSG);
	/* A flipped bit in the AWS ciphertext, and a blob that is not ours at all. */
	blob[len - 1] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EBADMSG);
	blob[len - 1] ^= 1;
	blob[0] = 0;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EBADMSG);
	blob[0] = AWS_BLOB_FORMAT;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, AWS_BLOB_HEADER, dek), -EBADMSG);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	kms_close(kms);
	secmem_free(dek, 32);
}

/*
 * kms_wrap: a DEK made elsewhere (a volume moving here from another KMS)
 * goes through Encrypt with the file's context and comes back through
 * Decrypt, framed like a generated blob; another context does not open it.
 */
static void test_wrap_callers_dek(void)
{
	struct kms *kms;
	struct kms_context ctx, other_file;
	uint8_t *dek = secmem_alloc(32), *back = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB], made[KMS_MAX_BLOB];
	size_t len, made_len;
	uint32_t v, made_v, bv;

	REQUIRE(dek && back);
	kms = open_default();
	REQUIRE(kms);
	make_ctx(&ctx, 0x31, 0x32);
	make_ctx(&other_file, 0x31, 0x33);
	for (int i = 0; i < 32; i++)
		dek[i] = (uint8_t)(0xa0 + i);
	REQUIRE(kms_wrap(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(kms->counters.wrap, 1);
	REQUIRE(kms_generate(kms, &ctx, back, made, sizeof(made), &made_len, &made_v) == 0);
	CHECK(blob[0] == AWS_BLOB_FORMAT && len == made_len && v == made_v);
	CHECK_EQ_INT(kms_blob_version(kms, blob, len, &bv), 0);
	CHECK_EQ_INT(bv, v);
	REQUIRE(kms_unwrap(kms, &ctx, blob, len, back) == 0);
	CHECK(memcmp(dek, back, 32) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &other_file, blob, len, back), -EBADMSG);
	/* Two wraps of one DEK are two ciphertexts. */
	REQUIRE(kms_wrap(kms, &ctx, dek, made, sizeof(made), &made_len, &made_v) == 0);
	CHECK(made_len != len || memcmp(made, blob, len) != 0);
	kms_close(kms);
	secmem_free(dek, 32);
	secmem_free(back, 32);
}

static void test_rotation_uses_reencrypt(void)
{
	struct kms *kms;
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(32), *dek2 = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB], blob2[KMS_MAX_BLOB];
	char cmd[512], answer[1024];
	struct kms_remote_stats st;
	size_t len, len2;
	uint32_t v, cur;

	use_env_credentials(secret);
	REQUIRE(dek && dek2);
	/* A key of its own, so the other tests' versions stay put. */
	REQUIRE(peer_cmd("create-key", answer, sizeof(answer)) == 0);
	{
		char arn[256];

		json_field(answer, "key_arn", arn, sizeof(arn));
		kms = open_ok(arn);
		REQUIRE(kms);
		snprintf(cmd, sizeof(cmd), "rotate %s", arn);
	}
	make_ctx(&ctx, 0x31, 0x32);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(v, 1);
	REQUIRE(kms_current_version(kms, &cur) == 0);
	CHECK_EQ_INT(cur, 1);

	REQUIRE(peer_cmd(cmd, NULL, 0) == 0);
	usleep(1100 * 1000); /* the provider looks again at most once a second */
	REQUIRE(kms_current_version(kms, &cur) == 0);
	CHECK_EQ_INT(cur, 2);
	kms_remote_stats(kms, &st);
	REQUIRE(kms_rewrap(kms, &ctx, blob, len, blob2, sizeof(blob2), &len2, &v) == 0);
	CHECK_EQ_INT(v, 2);
	CHECK(len2 != len || memcmp(blob, blob2, len) != 0);
	/* One ReEncrypt call: the DEK was not unwrapped here and wrapped again. */
	{
		struct kms_remote_stats st2;

		kms_remote_stats(kms, &st2);
		CHECK_EQ_INT(st2.calls - st.calls, 1);
	}
	REQUIRE(kms_unwrap(kms, &ctx, blob2, len2, dek2) == 0);
	CHECK(memcmp(dek, dek2, 32) == 0);
	/* The old blob still unwraps: AWS keeps every backing key. */
	REQUIRE(kms_unwrap(kms, &ctx, blob, len, dek2) == 0);
	CHECK(memcmp(dek, dek2, 32) == 0);
	/* New files get the new version; a re-wrap under the wrong context fails. */
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(v, 2);
	ctx.file_id[0] ^= 1;
	CHECK_EQ_INT(kms_rewrap(kms, &ctx, blob2, len2, blob, sizeof(blob), &len, &v), -EBADMSG);
	kms_close(kms);
	secmem_free(dek, 32);
	secmem_free(dek2, 32);
}

static void test_wrong_secret_is_eacces(void)
{
	struct kms *kms = NULL;
	char err[512], wrong[128];

	snprintf(wrong, sizeof(wrong), "%s", secret);
	wrong[0] = wrong[0] == 'A' ? 'B' : 'A';
	use_env_credentials(wrong);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	CHECK(strstr(err, "access denied") != NULL);
	CHECK(strstr(err, wrong) == NULL && strstr(err, secret) == NULL);
	printf("wrong secret: %s\n", err);
	CHECK(kms == NULL);
}

static void test_profile_credentials(void)
{
	char path[512], err[512];
	struct kms *kms = NULL;
	dictionary *d;
	FILE *f;

	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	test_path(path, sizeof(path), "credentials");
	f = fopen(path, "w");
	REQUIRE(f);
	fprintf(f, "[default]\naws_access_key_id = AKIANOTTHISONE\naws_secret_access_key = x\n\n"
		   "[envfs]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
		access_key, secret);
	fclose(f);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	setenv("AWS_PROFILE", "envfs", 1);
	/* Readable by the group or others: refused, naming the file and the fix. */
	chmod(path, 0640);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	CHECK(strstr(err, path) && strstr(err, "group or others") && strstr(err, "chmod 600"));
	chmod(path, 0604);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	chmod(path, 0600);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), 0);
	kms_close(kms);
	kms = NULL;

	/* The volume's own settings name the file and profile; the default profile is wrong. */
	unsetenv("AWS_PROFILE");
	unsetenv("AWS_SHARED_CREDENTIALS_FILE");
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	d = settings(key_arn, endpoint);
	iniparser_set(d, "kms:credentials_file", path);
	iniparser_set(d, "kms:profile", "default");
	CHECK_EQ_INT(open_with(d, &kms, err, sizeof(err)), -EACCES);
	d = settings(key_arn, endpoint);
	iniparser_set(d, "kms:credentials_file", path);
	iniparser_set(d, "kms:profile", "envfs");
	CHECK_EQ_INT(open_with(d, &kms, err, sizeof(err)), 0);
	kms_close(kms);
	kms = NULL;
	d = settings(key_arn, endpoint);
	iniparser_set(d, "kms:credentials_file", path);
	iniparser_set(d, "kms:profile", "missing");
	CHECK_EQ_INT(open_with(d, &kms, err, sizeof(err)), -EACCES);
	CHECK(strstr(err, "no profile [missing]") != NULL);
}

static void test_session_token(void)
{
	char answer[2048], id[64], sec[128], token[1024], err[512];
	struct kms *kms = NULL;

	REQUIRE(peer_cmd("session", answer, sizeof(answer)) == 0);
	json_field(answer, "access_key", id, sizeof(id));
	json_field(answer, "secret", sec, sizeof(sec));
	json_field(answer, "token", token, sizeof(token));
	REQUIRE(id[0] && sec[0] && token[0]);
	unsetenv("AWS_PROFILE");
	setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
	setenv("AWS_ACCESS_KEY_ID", id, 1);
	setenv("AWS_SECRET_ACCESS_KEY", sec, 1);
	setenv("AWS_SESSION_TOKEN", token, 1);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), 0);
	kms_close(kms);
	kms = NULL;
	/* The token is signed and checked: a wrong one, or none, is refused. */
	setenv("AWS_SESSION_TOKEN", "AQoDYXdzEJr-not-a-token", 1);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	setenv("AWS_SESSION_TOKEN", "", 1);
	CHECK_EQ_INT(open_with(settings(key_arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	CHECK(kms == NULL);
}

/* A credentials file replaced under a running provider (refreshed keys) is read again. */
static void test_credentials_file_reloaded(void)
{
	char path[512], tmp[520];
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	struct kms *kms;
	size_t len;
	uint32_t v;
	FILE *f;

	REQUIRE(dek);
	unsetenv("AWS_ACCESS_KEY_ID");
	unsetenv("AWS_SECRET_ACCESS_KEY");
	unsetenv("AWS_SESSION_TOKEN");
	unsetenv("AWS_PROFILE");
	test_path(path, sizeof(path), "reloaded-credentials");
	snprintf(tmp, sizeof(tmp), "%s.new", path);
	setenv("AWS_SHARED_CREDENTIALS_FILE", path, 1);
	f = fopen(path, "w");
	REQUIRE(f);
	fprintf(f, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", access_key, secret);
	fclose(f);
	chmod(path, 0600);
	kms = open_ok(key_arn);
	REQUIRE(kms);
	make_ctx(&ctx, 0x61, 0x62);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	f = fopen(tmp, "w");
	REQUIRE(f);
	fprintf(f, "[default]\naws_access_key_id = %s\naws_secret_access_key = wrong%s\n", access_key,
		secret + 5);
	fclose(f);
	chmod(tmp, 0600);
	REQUIRE(rename(tmp, path) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EACCES);
	f = fopen(tmp, "w");
	REQUIRE(f);
	fprintf(f, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", access_key, secret);
	fclose(f);
	chmod(tmp, 0600);
	REQUIRE(rename(tmp, path) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	kms_close(kms);
	secmem_free(dek, 32);
}

static void test_settings_errors(void)
{
	struct kms *kms = NULL;
	char err[512];
	dictionary *d;

	use_env_credentials(secret);
	d = settings(key_arn, endpoint);
	iniparser_unset(d, "kms:key_id");
	CHECK_EQ_INT(open_with(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "kms:key_id") != NULL);
	d = settings(key_arn, endpoint);
	iniparser_set(d, "kms:secret_access_key", "x");
	CHECK_EQ_INT(open_with(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "unknown setting") != NULL);
	d = settings(key_arn, endpoint);
	iniparser_set(d, "kms:deadline_ms", "soon");
	CHECK_EQ_INT(open_with(d, &kms, err, sizeof(err)), -EINVAL);
	/* A key that does not exist. */
	CHECK_EQ_INT(open_with(settings("11111111-2222-3333-4444-555555555555", endpoint), &kms, err,
			       sizeof(err)),
		     -ENOENT);
	/* An alias resolves to its key; blobs name the ARN. */
	CHECK(kms == NULL);
}

static void test_denied_and_disabled(void)
{
	struct kms *kms;
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	char cmd[512], answer[1024], arn[256], err[512];
	size_t len;

	REQUIRE(dek);
	kms = open_and_generate(&ctx, 0x41, 0x42, dek, blob, &len);
	REQUIRE(kms);
	REQUIRE(peer_cmd("deny kms:Decrypt", NULL, 0) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EACCES);
	REQUIRE(peer_cmd("allow", NULL, 0) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	kms_close(kms);

	/* moto keeps serving a disabled key's Decrypt; the provider refuses to open one. */
	REQUIRE(peer_cmd("create-key", answer, sizeof(answer)) == 0);
	json_field(answer, "key_arn", arn, sizeof(arn));
	snprintf(cmd, sizeof(cmd), "disable %s", arn);
	REQUIRE(peer_cmd(cmd, NULL, 0) == 0);
	kms = NULL;
	CHECK_EQ_INT(open_with(settings(arn, endpoint), &kms, err, sizeof(err)), -EACCES);
	CHECK(strstr(err, "Disabled") != NULL);
	secmem_free(dek, 32);
}

/* Answers moto does not give, from the fault server: how each AWS error maps. */
static void test_error_mapping(void)
{
	static const struct {
		const char *type;
		int status;
		int want;
	} cases[] = {
		{ "DisabledException", 400, -EACCES },
		{ "KMSInvalidStateException", 400, -EACCES },
		{ "ExpiredTokenException", 400, -EACCES },
		{ "InvalidGrantTokenException", 400, -EACCES },
		{ "RequestExpired", 400, -EACCES },
		{ "InvalidArnException", 400, -EINVAL },
		{ "UnsupportedOperationException", 400, -EINVAL },
		{ "Throttling", 400, -EAGAIN },
		{ "RequestLimitExceeded", 400, -EAGAIN },
		{ "NotFoundException", 400, -ENOENT },
		{ "ThrottlingException", 400, -EAGAIN },
		{ "KMSInternalException", 500, -EAGAIN },
		{ "ValidationException", 400, -EINVAL },
		{ "SomethingNew", 400, -EIO },
	};
	struct kms *kms = NULL;
	char url[256], err[512];
	size_t i;

	use_env_credentials(secret);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		dictionary *d;
		double t0 = now_s();
		int rc;

		snprintf(url, sizeof(url), "%s/aws/%s/%d", faults_base, cases[i].type, cases[i].status);
		d = settings(key_arn, url);
		iniparser_set(d, "kms:deadline_ms", "400");
		rc = open_with(d, &kms, err, sizeof(err));
		if (rc != cases[i].want)
			fprintf(stderr, "%s: got %d (%s)\n", cases[i].type, rc, err);
		CHECK_EQ_INT(rc, cases[i].want);
		CHECK(now_s() - t0 < 1.5); /* retried ones stop at the 0.4 s deadline */
	}
}

static int downs, ups;

static void on_reachability(void *arg, const char *provider, bool up)
{
	(void)arg;
	CHECK(strcmp(provider, "aws") == 0);
	if (up)
		ups++;
	else
		downs++;
}

static void test_unreachable_and_back(void)
{
	struct kms *kms;
	struct kms_context ctx;
	struct kms_remote_stats st;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;
	uint32_t v;
	double t0, dt;

	REQUIRE(dek);
	kms = open_default();
	REQUIRE(kms);
	kms_set_reachability_hook(kms, on_reachability, NULL);
	make_ctx(&ctx, 0x51, 0x52);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);

	/* Refused connections: retried until the attempts or the 3 s deadline run out. */
	REQUIRE(peer_cmd("down", NULL, 0) == 0);
	t0 = now_s();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EAGAIN);
	dt = now_s() - t0;
	CHECK(dt < 3.5);
	CHECK_EQ_INT(downs, 0);
	/* A KMS that accepts and never answers: each attempt times out, the deadline ends it. */
	REQUIRE(peer_cmd("hang", NULL, 0) == 0);
	t0 = now_s();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EAGAIN);
	dt = now_s() - t0;
	printf("hanging KMS: unwrap failed after %.2f s (deadline 3 s)\n", dt);
	CHECK(dt >= 0.9 && dt < 3.5);
	/* Two failed calls: the breaker is open, the hook said "down" once, calls fail at once. */
	CHECK_EQ_INT(downs, 1);
	t0 = now_s();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EAGAIN);
	CHECK(now_s() - t0 < 0.2);
	kms_remote_stats(kms, &st);
	CHECK(st.remote && strcmp(st.breaker, "open") == 0 && st.breaker_opens == 1);
	CHECK(st.retries > 0 && st.failures >= 3 && st.latency_us > 0);

	/* Back: after the cool-down the probe succeeds, "up" once, no remount needed. */
	REQUIRE(peer_cmd("up", NULL, 0) == 0);
	usleep(600 * 1000);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	CHECK_EQ_INT(ups, 1);
	CHECK_EQ_INT(downs, 1);
	kms_remote_stats(kms, &st);
	CHECK(strcmp(st.breaker, "closed") == 0);
	kms_close(kms);
	secmem_free(dek, 32);
}

/* peer_count - the number @field of the throttling proxy's counters. */
static long peer_count(const char *field)
{
	char answer[256], *p;

	if (peer_cmd("throttled", answer, sizeof(answer)) < 0 || !(p = strstr(answer, field)))
		return -1;
	return strtol(p + strlen(field) + 2, NULL, 10);
}

/*
 * AWS's ThrottlingException (HTTP 400, from the throttling proxy in front of
 * moto): retried past max_attempts until the deadline, then -EAGAIN; never a
 * breaker failure, however often, and counted as throttled.
 */
static void test_throttling_is_not_an_outage(void)
{
	struct kms *kms = NULL;
	struct kms_context ctx;
	struct kms_remote_stats st;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	char err[512];
	dictionary *d;
	size_t len;
	uint32_t v;
	double t0, dt;
	long throttled;
	int i;

	use_env_credentials(secret);
	REQUIRE(dek);
	d = settings(key_arn, throttle_endpoint);
	iniparser_set(d, "kms:deadline_ms", "1000");
	iniparser_set(d, "kms:max_attempts", "2");
	REQUIRE(open_with(d, &kms, err, sizeof(err)) == 0);
	downs = ups = 0;
	kms_set_reachability_hook(kms, on_reachability, NULL);
	make_ctx(&ctx, 0x81, 0x82);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);

	/* A burst of three throttled answers: more than max_attempts, and the unwrap succeeds. */
	throttled = peer_count("throttled");
	REQUIRE(peer_cmd("throttle 0 3", NULL, 0) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	CHECK_EQ_INT(peer_count("throttled") - throttled, 3);

	/*
	 * Throttled for good: each call retries past max_attempts, then ends with
	 * -EAGAIN by the deadline (or as soon as the next wait would pass it).
	 */
	REQUIRE(peer_cmd("throttle 1", NULL, 0) == 0);
	for (i = 0; i < 3; i++) {
		throttled = peer_count("throttled");
		t0 = now_s();
		CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), -EAGAIN);
		dt = now_s() - t0;
		CHECK(dt < 1.3);
		CHECK(peer_count("throttled") - throttled > 2);
	}
	kms_remote_stats(kms, &st);
	CHECK(strcmp(st.breaker, "closed") == 0 && st.breaker_opens == 0);
	CHECK(st.throttled >= 3 + 3 * 2);
	CHECK_EQ_INT(downs, 0);
	printf("throttled KMS: %llu throttled answers, breaker %s\n",
	       (unsigned long long)st.throttled, st.breaker);
	REQUIRE(peer_cmd("throttle 0", NULL, 0) == 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	CHECK_EQ_INT(downs + ups, 0);
	kms_close(kms);
	secmem_free(dek, 32);
}

/*
 * One deadline per operation: generate and rewrap make two calls (the
 * version from ListKeyRotations, then the key), each slower than half the
 * deadline.  Together they would overrun it; the operation ends at the
 * deadline instead.  A one-call unwrap still fits.
 */
static void test_one_deadline_per_operation(void)
{
	struct kms *kms = NULL;
	struct kms_context ctx;
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB], blob2[KMS_MAX_BLOB];
	char err[512];
	dictionary *d;
	size_t len, len2;
	uint32_t v;
	double t0, dt;

	use_env_credentials(secret);
	REQUIRE(dek);
	d = settings(key_arn, throttle_endpoint);
	iniparser_set(d, "kms:deadline_ms", "1000");
	iniparser_set(d, "kms:breaker_threshold", "100");
	REQUIRE(open_with(d, &kms, err, sizeof(err)) == 0);
	make_ctx(&ctx, 0x91, 0x92);
	REQUIRE(kms_generate(kms, &ctx, dek, blob, sizeof(blob), &len, &v) == 0);
	REQUIRE(peer_cmd("latency 650", NULL, 0) == 0);
	t0 = now_s();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, len, dek), 0);
	dt = now_s() - t0;
	CHECK(dt >= 0.6 && dt < 1.0);
	usleep(1100 * 1000); /* past VERSION_CHECK_MS: rewrap looks the version up again */
	t0 = now_s();
	CHECK_EQ_INT(kms_rewrap(kms, &ctx, blob, len, blob2, sizeof(blob2), &len2, &v), -EAGAIN);
	dt = now_s() - t0;
	printf("rewrap with 650 ms per call, deadline 1 s: ended after %.2f s\n", dt);
	CHECK(dt >= 0.9 && dt < 1.25);
	kms_close(kms);

	/* A fresh provider has not read the version yet: generate makes both calls too. */
	REQUIRE(peer_cmd("latency 0", NULL, 0) == 0);
	d = settings(key_arn, throttle_endpoint);
	iniparser_set(d, "kms:deadline_ms", "1000");
	REQUIRE(open_with(d, &kms, err, sizeof(err)) == 0);
	REQUIRE(peer_cmd("latency 650", NULL, 0) == 0);
	t0 = now_s();
	CHECK_EQ_INT(kms_generate(kms, &ctx, dek, blob2, sizeof(blob2), &len2, &v), -EAGAIN);
	dt = now_s() - t0;
	printf("generate with 650 ms per call, deadline 1 s: ended after %.2f s\n", dt);
	CHECK(dt >= 0.9 && dt < 1.25);
	REQUIRE(peer_cmd("latency 0", NULL, 0) == 0);
	kms_close(kms);
	secmem_free(dek, 32);
}

/*
 * unwrap_many: KMS has no batch call, so the items go out as parallel
 * Decrypt calls.  With 300 ms per call, 16 items one after another take
 * 4.8 s at the very least; in parallel, one call's time plus moto's own
 * (it answers one request at a time, tens of ms each on a loaded machine).
 * Each item is answered on its own: a blob under another context fails
 * alone.
 */
static void test_unwrap_many_in_parallel(void)
{
	enum { MANY = 16 };
	struct kms *kms = NULL;
	struct kms_context ctxs[MANY];
	struct kms_unwrap_item items[MANY];
	uint8_t *deks = secmem_alloc(MANY * 32), *outs = secmem_alloc(MANY * 32);
	static uint8_t blobs[MANY][KMS_MAX_BLOB];
	size_t lens[MANY];
	char err[512];
	uint32_t v;
	double t0, dt;
	int i;

	REQUIRE(deks && outs);
	use_env_credentials(secret);
	REQUIRE(open_with(settings(key_arn, throttle_endpoint), &kms, err, sizeof(err)) == 0);
	for (i = 0; i < MANY; i++) {
		make_ctx(&ctxs[i], 0xa1, (uint8_t)i);
		REQUIRE(kms_generate(kms, &ctxs[i], deks + i * 32, blobs[i], KMS_MAX_BLOB, &lens[i],
				     &v) == 0);
		items[i] = (struct kms_unwrap_item){ .ctx = &ctxs[i], .blob = blobs[i],
						     .blob_len = lens[i], .dek = outs + i * 32 };
	}
	items[5].ctx = &ctxs[6]; /* another file's context */
	REQUIRE(peer_cmd("latency 300", NULL, 0) == 0);
	t0 = now_s();
	CHECK_EQ_INT(kms_unwrap_many(kms, items, MANY), -EBADMSG);
	dt = now_s() - t0;
	REQUIRE(peer_cmd("latency 0", NULL, 0) == 0);
	printf("unwrap_many of %d items with 300 ms per call: %.2f s\n", MANY, dt);
	CHECK(dt < 3.0);
	for (i = 0; i < MANY; i++) {
		CHECK_EQ_INT(items[i].rc, i == 5 ? -EBADMSG : 0);
		if (i != 5)
			CHECK(memcmp(deks + i * 32, outs + i * 32, 32) == 0);
	}
	CHECK_EQ_INT(kms->counters.unwrap, MANY);
	kms_close(kms);
	secmem_free(deks, MANY * 32);
	secmem_free(outs, MANY * 32);
}

int main(void)
{
	char line[64];

	test_dir_make();
	start_moto();
	helper_start(&faults, "tests/unit/kms/http_peer.py", NULL);
	helper_line(&faults, line, sizeof(line));
	snprintf(faults_base, sizeof(faults_base), "http://127.0.0.1:%d", atoi(line));
	RUN(test_generate_unwrap);
	RUN(test_keep_alive_and_latency);
	RUN(test_context_binding);
	RUN(test_wrap_callers_dek);
	RUN(test_rotation_uses_reencrypt);
	RUN(test_wrong_secret_is_eacces);
	RUN(test_profile_credentials);
	RUN(test_session_token);
	RUN(test_credentials_file_reloaded);
	RUN(test_settings_errors);
	RUN(test_denied_and_disabled);
	RUN(test_error_mapping);
	RUN(test_unreachable_and_back);
	RUN(test_throttling_is_not_an_outage);
	RUN(test_one_deadline_per_operation);
	RUN(test_unwrap_many_in_parallel);
	helper_stop(&faults);
	helper_stop(&moto);
	return check_summary();
}
