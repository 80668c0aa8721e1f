// SPDX-License-Identifier: MIT
/*
 * The pkcs11 provider (kms/pkcs11.c) against a real SoftHSM2 token in a
 * private token directory: wrap/unwrap/rewrap, contexts, rotation by a new
 * key label, the error codes of kms.h, many threads on a small session pool,
 * recovery from lost sessions, the `pkcs11_wrap` vectors of docs/FORMAT.md,
 * and the latency of one call.
 */

#include "kms_test_util.h"
#include "vector.h"

#include <dlfcn.h>
#include <errno.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

#include "check.h"
#include "crypto/aead.h"
#include "crypto/secmem.h"
#include "kms/kms.h"

#define MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define TOKEN "envfs-unit"
#define PIN "4321"
#define KEY "envfs-kek"

static char pin_file[512];

/* sh - run a shell command built from @fmt, quietly; its exit status. */
__attribute__((format(printf, 1, 2))) static int sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd) - 20, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 20)
		return -1;
	strcat(cmd, " >/dev/null 2>&1");
	return system(cmd);
}

/* keygen - a new AES key of @bytes on the token, labelled @label. */
static void keygen(const char *label, int bytes)
{
	if (sh("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
	       " --keygen --key-type AES:%d --label '%s'",
	       bytes, label) != 0) {
		fprintf(stderr, "pkcs11-tool --keygen %s failed\n", label);
		exit(2);
	}
}

/* import_key - @key (32 bytes) on the token as a secret key labelled @label. */
static void import_key(const uint8_t key[32], const char *label)
{
	char path[512];

	test_path(path, sizeof(path), "import.key");
	if (write_all(path, key, 32, 0600) < 0 ||
	    sh("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
	       " --write-object %s --type secrkey --key-type AES:32 --sensitive --label '%s'",
	       path, label) != 0) {
		fprintf(stderr, "pkcs11-tool --write-object %s failed\n", label);
		exit(2);
	}
	unlink(path);
}

static void delete_key(const char *label)
{
	sh("pkcs11-tool --module " MODULE " --token-label " TOKEN " --login --pin " PIN
	   " --delete-object --type secrkey --label '%s'",
	   label);
}

/* A token of our own: SOFTHSM2_CONF names a config whose tokendir is in the test directory. */
static void token_setup(void)
{
	char conf[512], tokens[512], text[700];

	test_path(tokens, sizeof(tokens), "tokens");
	test_path(conf, sizeof(conf), "softhsm2.conf");
	snprintf(text, sizeof(text), "directories.tokendir = %s\nobjectstore.backend = file\n",
		 tokens);
	if (mkdir(tokens, 0700) < 0 || write_all(conf, text, strlen(text), 0600) < 0) {
		perror("token directory");
		exit(2);
	}
	setenv("SOFTHSM2_CONF", conf, 1);
	if (sh("softhsm2-util --init-token --free --label " TOKEN " --so-pin 12345678 --pin " PIN) !=
	    0) {
		fprintf(stderr, "softhsm2-util --init-token failed (is softhsm2 installed?)\n");
		exit(2);
	}
	keygen(KEY ".1", 32);
	test_path(pin_file, sizeof(pin_file), "pin");
	write_all(pin_file, PIN "\n", strlen(PIN) + 1, 0600);
}

/* settings - a [kms] section; a NULL value leaves that key out. */
static dictionary *settings(const char *module, const char *token, const char *key,
			    const char *pin)
{
	dictionary *d = dictionary_new(0);

	iniparser_set(d, "kms", NULL);
	iniparser_set(d, "kms:provider", "pkcs11");
	if (module)
		iniparser_set(d, "kms:module", module);
	if (token)
		iniparser_set(d, "kms:token_label", token);
	if (key)
		iniparser_set(d, "kms:key_label", key);
	if (pin)
		iniparser_set(d, "kms:pin_file", pin);
	return d;
}

static int try_open(dictionary *d, struct kms **kms, char *err, size_t err_len)
{
	int rc = kms_open(d, kms, err, err_len);

	iniparser_freedict(d);
	return rc;
}

static struct kms *open_kms(const char *key, const char *sessions)
{
	dictionary *d = settings(MODULE, TOKEN, key, pin_file);
	struct kms *kms = NULL;
	char err[512];

	if (sessions)
		iniparser_set(d, "kms:sessions", sessions);
	if (try_open(d, &kms, err, sizeof(err)) < 0) {
		fprintf(stderr, "kms_open: %s\n", err);
		exit(2);
	}
	return kms;
}

static const struct kms_context ctx_a = {
	.volume_uuid = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 },
	.file_id = { 0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0xfa, 0xfb, 0xfc,
		     0xfd, 0xfe, 0xff },
};

static void test_open_and_ref(void)
{
	struct kms *kms = open_kms(KEY, NULL);
	uint32_t v = 0;

	CHECK(strcmp(kms->key_ref, "pkcs11:token=" TOKEN ";object=" KEY) == 0);
	CHECK_EQ_INT(kms->max_blob_len, 64);
	CHECK_EQ_INT(kms_current_version(kms, &v), 0);
	CHECK_EQ_INT(v, 1);
	kms_close(kms);
}

static void test_wrap_unwrap(void)
{
	struct kms *kms = open_kms(KEY, NULL);
	uint8_t *dek = secmem_alloc(32), *back = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB], bad[KMS_MAX_BLOB];
	struct kms_context other = ctx_a;
	size_t len = 0;
	uint32_t v = 0, bv = 0;
	size_t i;

	REQUIRE(dek && back);
	REQUIRE(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	CHECK_EQ_INT(len, 64);
	CHECK_EQ_INT(v, 1);
	CHECK_EQ_INT(kms_blob_version(kms, blob, len, &bv), 0);
	CHECK_EQ_INT(bv, 1);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);

	/* Another file or another volume: the AAD differs, the tag fails. */
	other.file_id[15] ^= 1;
	CHECK_EQ_INT(kms_unwrap(kms, &other, blob, len, back), -EBADMSG);
	other = ctx_a;
	other.volume_uuid[0] ^= 0x80;
	CHECK_EQ_INT(kms_unwrap(kms, &other, blob, len, back), -EBADMSG);
	/* Any flipped bit after the version: IV, ciphertext or tag. */
	for (i = 4; i < len; i += 9) {
		memcpy(bad, blob, len);
		bad[i] ^= 0x01;
		CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, len, back), -EBADMSG);
	}
	/* A version the token does not have; a truncated or extended blob; version 0. */
	memcpy(bad, blob, len);
	bad[3] = 9;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, len, back), -ENOENT);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len - 1, back), -EBADMSG);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len + 1, back), -EBADMSG);
	bad[3] = 0;
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, len, back), -EBADMSG);
	CHECK_EQ_INT(kms_blob_version(kms, bad, len, &bv), -EBADMSG);
	/* Every wrap draws a new IV: the same DEK never wraps to the same blob. */
	REQUIRE(kms_rewrap(kms, &ctx_a, blob, len, bad, sizeof(bad), &len, &v) == 0);
	CHECK(memcmp(bad + 4, blob + 4, 12) != 0);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, bad, len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);
	CHECK(kms->counters.failures >= 5);
	secmem_free(dek, 32);
	secmem_free(back, 32);
	kms_close(kms);
}

/* A new key labelled envfs-kek.2 is a new master-key version, current without reopening. */
static void test_rotation_by_new_label(void)
{
	struct kms *kms = open_kms(KEY, NULL);
	uint8_t *dek = secmem_alloc(32), *back = secmem_alloc(32);
	uint8_t old[KMS_MAX_BLOB], moved[KMS_MAX_BLOB];
	size_t old_len = 0, moved_len = 0;
	uint32_t v = 0;

	REQUIRE(dek && back);
	REQUIRE(kms_generate(kms, &ctx_a, dek, old, sizeof(old), &old_len, &v) == 0);
	CHECK_EQ_INT(v, 1);
	keygen(KEY ".2", 32);
	CHECK_EQ_INT(kms_current_version(kms, &v), 0);
	CHECK_EQ_INT(v, 2);
	REQUIRE(kms_rewrap(kms, &ctx_a, old, old_len, moved, sizeof(moved), &moved_len, &v) == 0);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(kms_blob_version(kms, moved, moved_len, &v), 0);
	CHECK_EQ_INT(v, 2);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, moved, moved_len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);
	/* The old version still unwraps what it wrapped. */
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, old, old_len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);
	/* New DEKs go under the new version. */
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, old, sizeof(old), &old_len, &v), 0);
	CHECK_EQ_INT(v, 2);
	/* A rewrap under the wrong context fails and writes nothing. */
	{
		struct kms_context other = ctx_a;

		other.file_id[0] ^= 1;
		CHECK_EQ_INT(kms_rewrap(kms, &other, moved, moved_len, old, sizeof(old), &old_len,
					&v),
			     -EBADMSG);
	}
	/* Version 1 deleted from the token: its blobs are "not found", the rest works. */
	REQUIRE(kms_generate(kms, &ctx_a, dek, moved, sizeof(moved), &moved_len, &v) == 0);
	delete_key(KEY ".2");
	keygen(KEY ".3", 32);
	CHECK_EQ_INT(kms_current_version(kms, &v), 0);
	CHECK_EQ_INT(v, 3);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, moved, moved_len, back), -ENOENT);
	/* Version 3 replaced by another key of the same label: the provider finds the
	 * new key, by its once-a-second search or through the stale handle. */
	delete_key(KEY ".3");
	keygen(KEY ".3", 32);
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, moved, sizeof(moved), &moved_len, &v), 0);
	CHECK_EQ_INT(v, 3);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, moved, moved_len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);
	secmem_free(dek, 32);
	secmem_free(back, 32);
	kms_close(kms);
}

static void test_open_errors(void)
{
	char err[512], path[512];
	struct kms *kms = NULL;
	dictionary *d;

	/* Wrong PIN, from the file and from the environment. */
	test_path(path, sizeof(path), "wrong-pin");
	write_all(path, "9999", 4, 0600);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, path), &kms, err, sizeof(err)),
		     -EACCES);
	CHECK(strstr(err, "refused the PIN") && strstr(err, path));
	CHECK(!strstr(err, "9999"));
	setenv("ENVELOPEFS_PKCS11_PIN", "8888", 1);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, NULL), &kms, err, sizeof(err)),
		     -EACCES);
	CHECK(strstr(err, "ENVELOPEFS_PKCS11_PIN") && !strstr(err, "8888"));
	setenv("ENVELOPEFS_PKCS11_PIN", PIN, 1);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, NULL), &kms, err, sizeof(err)), 0);
	kms_close(kms);
	/* The variable is gone now (kms/envsecret.h) but the PIN is still known: a second open works. */
	CHECK(getenv("ENVELOPEFS_PKCS11_PIN") == NULL);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, NULL), &kms, err, sizeof(err)), 0);
	kms_close(kms);
	/* Set empty by the process itself: no PIN any more. */
	setenv("ENVELOPEFS_PKCS11_PIN", "", 1);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, NULL), &kms, err, sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "no PIN"));
	/* A PIN file others may read is refused before it is used. */
	chmod(pin_file, 0644);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, pin_file), &kms, err, sizeof(err)),
		     -EACCES);
	CHECK(strstr(err, "chmod 600"));
	chmod(pin_file, 0600);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, KEY, "pin"), &kms, err, sizeof(err)),
		     -EINVAL);

	/* No such key label, no such token. */
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, "nokey", pin_file), &kms, err, sizeof(err)),
		     -ENOENT);
	CHECK(strstr(err, "nokey.N") && strstr(err, "--keygen"));
	CHECK_EQ_INT(try_open(settings(MODULE, "absent", KEY, pin_file), &kms, err, sizeof(err)),
		     -ENOENT);
	CHECK(strstr(err, "no token labelled 'absent'") && strstr(err, "'" TOKEN "'"));

	/* A base label whose versions include an AES-128 key, or a version twice. */
	keygen("short.1", 16);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, "short", pin_file), &kms, err, sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "AES-256"));
	keygen("twice.1", 32);
	keygen("twice.1", 32);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, "twice", pin_file), &kms, err, sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "two keys"));
	/* Labels that are not "<base>.N" are not versions. */
	keygen("odd.01", 32);
	keygen("odd.x", 32);
	keygen("odd.4294967296", 32);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, "odd", pin_file), &kms, err, sizeof(err)),
		     -ENOENT);

	/* Bad settings. */
	CHECK_EQ_INT(try_open(settings("libsofthsm2.so", TOKEN, KEY, pin_file), &kms, err,
			      sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "absolute"));
	CHECK_EQ_INT(try_open(settings("/nonexistent/module.so", TOKEN, KEY, pin_file), &kms, err,
			      sizeof(err)),
		     -ENOENT);
	CHECK_EQ_INT(try_open(settings("/etc/hostname", TOKEN, KEY, pin_file), &kms, err,
			      sizeof(err)),
		     -EINVAL);
	CHECK(strstr(err, "cannot load"));
	/* A module copy others could replace: in a world-writable directory, or itself writable. */
	test_path(path, sizeof(path), "module.so");
	REQUIRE(sh("cp %s %s && chmod 0755 %s", MODULE, path, path) == 0);
	CHECK_EQ_INT(try_open(settings(path, TOKEN, KEY, pin_file), &kms, err, sizeof(err)),
		     -EACCES);
	CHECK(strstr(err, ": /tmp may be changed by users other than root"));
	chmod(path, 0666);
	CHECK_EQ_INT(try_open(settings(path, TOKEN, KEY, pin_file), &kms, err, sizeof(err)),
		     -EACCES);
	CHECK(strstr(err, "module.so may be changed"));
	CHECK_EQ_INT(try_open(settings(MODULE, NULL, KEY, pin_file), &kms, err, sizeof(err)),
		     -EINVAL);
	CHECK_EQ_INT(try_open(settings(MODULE, TOKEN, NULL, pin_file), &kms, err, sizeof(err)),
		     -EINVAL);
	d = settings(MODULE, TOKEN, KEY, pin_file);
	iniparser_set(d, "kms:pin", PIN);
	CHECK_EQ_INT(try_open(d, &kms, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "kms:pin is not known"));
	d = settings(MODULE, TOKEN, KEY, pin_file);
	iniparser_set(d, "kms:sessions", "0");
	CHECK_EQ_INT(try_open(d, &kms, err, sizeof(err)), -EINVAL);
}

struct worker {
	struct kms *kms;
	int id, rounds, failures;
};

/* Each thread makes DEKs for its own files, unwraps and rewraps them, and checks every one. */
static void *work(void *arg)
{
	struct worker *w = arg;
	uint8_t *dek = secmem_alloc(32), *back = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB], moved[KMS_MAX_BLOB];
	struct kms_context ctx = ctx_a;
	size_t len, moved_len;
	uint32_t v;
	int i;

	if (!dek || !back) {
		w->failures++;
		return NULL;
	}
	ctx.file_id[0] = (uint8_t)w->id;
	for (i = 0; i < w->rounds; i++) {
		ctx.file_id[1] = (uint8_t)i;
		if (kms_generate(w->kms, &ctx, dek, blob, sizeof(blob), &len, &v) != 0 ||
		    kms_unwrap(w->kms, &ctx, blob, len, back) != 0 || memcmp(dek, back, 32) != 0 ||
		    kms_rewrap(w->kms, &ctx, blob, len, moved, sizeof(moved), &moved_len, &v) != 0 ||
		    kms_unwrap(w->kms, &ctx, moved, moved_len, back) != 0 ||
		    memcmp(dek, back, 32) != 0)
			w->failures++;
	}
	secmem_free(dek, 32);
	secmem_free(back, 32);
	return NULL;
}

/* Eight threads on a pool of two sessions: every op must wait its turn, none may fail. */
static void test_threads(void)
{
	struct kms *kms = open_kms(KEY, "2");
	struct worker w[8];
	pthread_t t[8];
	int i;

	for (i = 0; i < 8; i++) {
		w[i] = (struct worker){ .kms = kms, .id = i, .rounds = 40 };
		REQUIRE(pthread_create(&t[i], NULL, work, &w[i]) == 0);
	}
	for (i = 0; i < 8; i++) {
		pthread_join(t[i], NULL);
		CHECK_EQ_INT(w[i].failures, 0);
	}
	CHECK_EQ_INT(kms->counters.generate, 8 * 40);
	CHECK_EQ_INT(kms->counters.failures, 0);
	kms_close(kms);
}

/*
 * same_module - the function list of the module the provider loaded (dlopen
 * hands out the same object), for doing to the token what an administrator
 * or a token reset would, inside this process where SoftHSM2 sees it.  The
 * caller dlclose()s *@dl.
 */
static CK_FUNCTION_LIST_PTR same_module(void **dl, CK_SLOT_ID *slot)
{
	CK_C_GetFunctionList get_list;
	CK_FUNCTION_LIST_PTR f = NULL;
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16, i;

	*dl = dlopen(MODULE, RTLD_NOW | RTLD_LOCAL);
	get_list = *dl ? (CK_C_GetFunctionList)dlsym(*dl, "C_GetFunctionList") : NULL;
	if (!get_list || get_list(&f) != CKR_OK || f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK) {
		fprintf(stderr, "cannot reach %s\n", MODULE);
		exit(2);
	}
	for (i = 0; i < n; i++) {
		CK_TOKEN_INFO info;

		if (f->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
		    memcmp(info.label, TOKEN " ", strlen(TOKEN) + 1) == 0)
			*slot = slots[i];
	}
	return f;
}

/* close_all_sessions - as a token reset would; closing the last session also logs out. */
static void close_all_sessions(void)
{
	CK_SLOT_ID slot = 0;
	void *dl;
	CK_FUNCTION_LIST_PTR f = same_module(&dl, &slot);

	f->C_CloseAllSessions(slot);
	dlclose(dl);
}

/* set_pin - change the user PIN from @old to @new, as the token's user would. */
static CK_RV set_pin(const char *old, const char *new)
{
	CK_SESSION_HANDLE h;
	CK_SLOT_ID slot = 0;
	void *dl;
	CK_FUNCTION_LIST_PTR f = same_module(&dl, &slot);
	CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h);

	if (rv == CKR_OK) {
		rv = f->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)old, strlen(old));
		if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN)
			rv = f->C_SetPIN(h, (CK_UTF8CHAR_PTR)old, strlen(old),
					 (CK_UTF8CHAR_PTR)new, strlen(new));
		f->C_CloseSession(h);
	}
	dlclose(dl);
	return rv;
}

/*
 * Every session of the process closed behind the provider's back (as a token
 * reset would): the next call opens a new session, logs in again and works.
 */
static void test_session_recovery(void)
{
	struct kms *kms = open_kms(KEY, NULL);
	uint8_t *dek = secmem_alloc(32), *back = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;
	uint32_t v;

	REQUIRE(dek && back);
	REQUIRE(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	close_all_sessions();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v), 0);
	secmem_free(dek, 32);
	secmem_free(back, 32);
	kms_close(kms);
}

/*
 * The user PIN changed on the token while mounted, then the sessions lost: the
 * old PIN is refused once and never offered again, even after the PIN is back.
 */
static void test_refused_pin_is_not_retried(void)
{
	struct kms *kms = open_kms(KEY, NULL);
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;
	uint32_t v;

	REQUIRE(dek);
	REQUIRE(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	REQUIRE(set_pin(PIN, "5555") == CKR_OK);
	close_all_sessions();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, dek), -EACCES);
	REQUIRE(set_pin("5555", PIN) == CKR_OK);
	close_all_sessions();
	CHECK_EQ_INT(kms_unwrap(kms, &ctx_a, blob, len, dek), -EACCES);
	CHECK_EQ_INT(kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v), -EACCES);
	secmem_free(dek, 32);
	kms_close(kms);
}

/* Two providers on one module in one process share its initialisation; closing one keeps the other working. */
static void test_two_instances(void)
{
	struct kms *a = open_kms(KEY, NULL), *b = open_kms(KEY, "1");
	uint8_t *dek = secmem_alloc(32), *back = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	size_t len;
	uint32_t v;

	REQUIRE(dek && back);
	REQUIRE(kms_generate(a, &ctx_a, dek, blob, sizeof(blob), &len, &v) == 0);
	kms_close(a);
	CHECK_EQ_INT(kms_unwrap(b, &ctx_a, blob, len, back), 0);
	CHECK(memcmp(dek, back, 32) == 0);
	secmem_free(dek, 32);
	secmem_free(back, 32);
	kms_close(b);
}

/* ---- docs/FORMAT.md vectors ---------------------------------------------- */

static int n_vectors;

/*
 * A vector's key goes on the token as "vec<line>.<version>"; the provider
 * must unwrap the vector's blob to its DEK, and what it wraps must open with
 * plain AES-GCM under the same key and the AAD the document defines.
 */
static void check_vector(const struct vector *v, const char *type)
{
	uint8_t kek[32], iv[12], dek[32], aad[61], blob[64], fresh[KMS_MAX_BLOB];
	uint8_t *got = secmem_alloc(32);
	struct kms_context ctx;
	const char *ver = vector_field(v, "version");
	char base[32], label[48];
	struct kms *kms;
	uint32_t version, fresh_version;
	size_t len;

	(void)type;
	n_vectors++;
	REQUIRE(got);
	if (!ver || vector_hex(v, "kek", kek, 32, 32, NULL) ||
	    vector_hex(v, "iv", iv, 12, 12, NULL) ||
	    vector_hex(v, "volume_uuid", ctx.volume_uuid, 16, 16, NULL) ||
	    vector_hex(v, "file_id", ctx.file_id, 16, 16, NULL) ||
	    vector_hex(v, "dek", dek, 32, 32, NULL) || vector_hex(v, "aad", aad, 61, 61, NULL) ||
	    vector_hex(v, "blob", blob, 64, 64, NULL)) {
		fprintf(stderr, "FORMAT.md:%d: malformed pkcs11_wrap vector\n", v->line);
		CHECK(0);
		secmem_free(got, 32);
		return;
	}
	version = (uint32_t)strtoul(ver, NULL, 10);
	snprintf(base, sizeof(base), "vec%d", v->line);
	snprintf(label, sizeof(label), "%s.%u", base, version);
	import_key(kek, label);
	kms = open_kms(base, NULL);
	CHECK_EQ_INT(kms_unwrap(kms, &ctx, blob, 64, got), 0);
	CHECK(memcmp(got, dek, 32) == 0);
	/* The blob's framing, independently of the provider. */
	CHECK(memcmp(blob + 4, iv, 12) == 0);
	CHECK_EQ_INT(aead_open(kek, iv, aad, sizeof(aad), blob + 16, 32, blob + 48, got), 0);
	CHECK(memcmp(got, dek, 32) == 0);
	/* The other direction: a fresh wrap is the documented framing around our key. */
	REQUIRE(kms_generate(kms, &ctx, got, fresh, sizeof(fresh), &len, &fresh_version) == 0);
	CHECK_EQ_INT(len, 64);
	CHECK_EQ_INT(fresh_version, version);
	CHECK(memcmp(fresh, blob, 4) == 0);
	memcpy(dek, got, 32);
	CHECK_EQ_INT(aead_open(kek, fresh + 4, aad, sizeof(aad), fresh + 16, 32, fresh + 48, got),
		     0);
	CHECK(memcmp(got, dek, 32) == 0);
	/* kms_wrap of the vector's own DEK: the documented framing, under kek and aad. */
	memcpy(got, dek, 32);
	REQUIRE(kms_wrap(kms, &ctx, got, fresh, sizeof(fresh), &len, &fresh_version) == 0);
	CHECK_EQ_INT(len, 64);
	CHECK_EQ_INT(fresh_version, version);
	CHECK(memcmp(fresh, blob, 4) == 0);
	CHECK(memcmp(fresh + 4, iv, 12) != 0); /* a fresh IV, not the vector's */
	memset(got, 0, 32);
	CHECK_EQ_INT(aead_open(kek, fresh + 4, aad, sizeof(aad), fresh + 16, 32, fresh + 48, got),
		     0);
	CHECK(memcmp(got, dek, 32) == 0);
	kms_close(kms);
	secmem_free(got, 32);
}

static void test_vectors(void)
{
	static const char *const types[] = { "pkcs11_wrap", NULL };

	vector_scan("FORMAT.md", types, check_vector);
	CHECK(n_vectors >= 1);
	printf("checked %d pkcs11_wrap vectors\n", n_vectors);
}

/* ---- latency --------------------------------------------------------------- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One thread's cost per call on SoftHSM2, printed for the record (not a pass criterion). */
static void test_latency(void)
{
	struct kms *kms = open_kms(KEY, NULL);
	uint8_t *dek = secmem_alloc(32);
	uint8_t blob[KMS_MAX_BLOB];
	double t0, t1, t2;
	size_t len;
	uint32_t v;
	int i, n = 500, bad = 0;

	REQUIRE(dek);
	t0 = now();
	for (i = 0; i < n; i++)
		bad += kms_generate(kms, &ctx_a, dek, blob, sizeof(blob), &len, &v) != 0;
	t1 = now();
	for (i = 0; i < n; i++)
		bad += kms_unwrap(kms, &ctx_a, blob, len, dek) != 0;
	t2 = now();
	CHECK_EQ_INT(bad, 0);
	printf("SoftHSM2 latency, one thread, %d calls each: generate %.1f us, unwrap %.1f us\n",
	       n, (t1 - t0) / n * 1e6, (t2 - t1) / n * 1e6);
	secmem_free(dek, 32);
	kms_close(kms);
}

/*
 * unwrap_many runs the items on parallel sessions (kms/fanout.h): 24
 * items on a pool of 3, each answered on its own, a blob under another
 * context failing alone.
 */
static void test_unwrap_many(void)
{
	enum { MANY = 24 };
	struct kms *kms = open_kms(KEY, "3");
	struct kms_context ctxs[MANY];
	struct kms_unwrap_item items[MANY];
	uint8_t *deks = secmem_alloc(MANY * 32), *outs = secmem_alloc(MANY * 32);
	static uint8_t blobs[MANY][KMS_MAX_BLOB];
	size_t len;
	uint32_t v;
	int i;

	REQUIRE(kms && deks && outs);
	for (i = 0; i < MANY; i++) {
		ctxs[i] = ctx_a;
		ctxs[i].file_id[15] = (uint8_t)i;
		REQUIRE(kms_generate(kms, &ctxs[i], deks + i * 32, blobs[i], KMS_MAX_BLOB, &len,
				     &v) == 0);
		items[i] = (struct kms_unwrap_item){ .ctx = &ctxs[i], .blob = blobs[i],
						     .blob_len = len, .dek = outs + i * 32 };
	}
	items[9].ctx = &ctxs[10];
	CHECK_EQ_INT(kms_unwrap_many(kms, items, MANY), -EBADMSG);
	for (i = 0; i < MANY; i++) {
		CHECK_EQ_INT(items[i].rc, i == 9 ? -EBADMSG : 0);
		if (i != 9)
			CHECK(memcmp(deks + i * 32, outs + i * 32, 32) == 0);
	}
	secmem_free(deks, MANY * 32);
	secmem_free(outs, MANY * 32);
	kms_close(kms);
}

int main(void)
{
	test_dir_make();
	token_setup();
	RUN(test_open_and_ref);
	RUN(test_wrap_unwrap);
	RUN(test_open_errors);
	RUN(test_threads);
	RUN(test_unwrap_many);
	RUN(test_session_recovery);
	RUN(test_refused_pin_is_not_retried);
	RUN(test_two_instances);
	RUN(test_vectors);
	RUN(test_latency);
	/* Last: it adds versions 2 and 3 to the shared key label. */
	RUN(test_rotation_by_new_label);
	return check_summary();
}
