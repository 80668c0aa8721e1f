// SPDX-License-Identifier: MIT
/*
 * Key-scope definitions (fs/scopedef.c): docs/FORMAT.md's `scope` vector,
 * computed independently (Python cryptography, hmac, struct), strictness
 * against every flipped bit and non-canonical settings, and the registry on
 * a real directory.
 */

#include "vector.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fs/scopedef.h"

static int n_vectors, n_converting;
static uint8_t volume_key[32], uuid[16], def_key[32];
static struct scope_def want;
static uint8_t definition[SCOPE_DEF_MAX];
static size_t definition_len;

static void check_scope(const struct vector *v, const char *type)
{
	static uint8_t record[SCOPE_RECORD_MAX], settings[SCOPE_SETTINGS_MAX];
	static struct scope_def got;
	static uint8_t out[SCOPE_DEF_MAX];
	uint8_t scope_key[32], k[32];
	size_t record_len, settings_len, out_len, i;

	(void)type;
	n_vectors++;
	REQUIRE(vector_hex(v, "volume_key", volume_key, 32, 32, NULL) == 0);
	REQUIRE(vector_hex(v, "volume_uuid", uuid, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "scope_id", want.id, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "root_dirid", want.root_dirid, 16, 16, NULL) == 0);
	REQUIRE(vector_hex(v, "scope_key", scope_key, 32, 32, NULL) == 0);
	REQUIRE(vector_hex(v, "def_key", def_key, 32, 32, NULL) == 0);
	REQUIRE(vector_hex(v, "settings", settings, sizeof(settings), 0, &settings_len) == 0);
	REQUIRE(vector_hex(v, "record", record, sizeof(record), 0, &record_len) == 0);
	REQUIRE(vector_hex(v, "definition", definition, sizeof(definition), 0, &definition_len) ==
		0);
	memcpy(want.settings, settings, settings_len);
	want.settings[settings_len] = '\0';
	/* A moving or converting scope's vector carries its previous settings,
	 * a converting one `flags = 2` too; the others neither. */
	memset(want.previous, 0, sizeof(want.previous));
	if (vector_field(v, "previous")) {
		REQUIRE(vector_hex(v, "previous", settings, sizeof(settings), 0, &settings_len) == 0);
		memcpy(want.previous, settings, settings_len);
	}
	want.converting = vector_field(v, "flags") && strcmp(vector_field(v, "flags"), "2") == 0;
	if (want.converting)
		n_converting++;
	REQUIRE(record_decode(record, record_len, &want.record) == 0);
	CHECK_EQ_INT(record_check_mac(&want.record, scope_key, uuid), 0);

	CHECK_EQ_INT(scope_def_key(volume_key, uuid, k), 0);
	CHECK(memcmp(k, def_key, 32) == 0);
	CHECK_EQ_INT(scope_def_encode(&want, def_key, out, sizeof(out), &out_len), 0);
	CHECK(out_len == definition_len && memcmp(out, definition, out_len) == 0);

	CHECK_EQ_INT(scope_def_decode(definition, definition_len, def_key, &got), 0);
	CHECK(memcmp(got.id, want.id, 16) == 0);
	CHECK(memcmp(got.root_dirid, want.root_dirid, 16) == 0);
	CHECK(strcmp(got.settings, want.settings) == 0);
	CHECK(strcmp(got.previous, want.previous) == 0);
	CHECK(got.converting == want.converting);
	CHECK(strcmp(got.record.key_ref, want.record.key_ref) == 0);
	CHECK_EQ_INT(record_check_mac(&got.record, scope_key, uuid), 0);

	/* Any flipped bit, a short or long buffer, another volume key: refused. */
	for (i = 0; i < definition_len * 8; i++) {
		definition[i / 8] ^= (uint8_t)(1u << (i % 8));
		CHECK_EQ_INT(scope_def_decode(definition, definition_len, def_key, &got),
			     -EBADMSG);
		definition[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	CHECK_EQ_INT(scope_def_decode(definition, definition_len - 1, def_key, &got),
		     -EBADMSG);
	CHECK_EQ_INT(scope_def_decode(definition, definition_len + 1, def_key, &got),
		     -EBADMSG);
	def_key[5] ^= 1; /* another volume's K_def */
	CHECK_EQ_INT(scope_def_decode(definition, definition_len, def_key, &got),
		     -EBADMSG);
	def_key[5] ^= 1;
}

static void test_format_md_vectors(void)
{
	static const char *const types[] = { "scope", NULL };

	vector_scan("FORMAT.md", types, check_scope);
	CHECK(n_vectors >= 3); /* a settled scope, a moving one and a converting one */
	CHECK(n_converting >= 1);
}

/* Settings: canonical text from a [kms] section, back to a section, and what is refused. */
static void test_settings(void)
{
	static const char *const bad[] = { "", "provider=local", "keyring=/k\nprovider=local",
					   "provider=local\nkeyring=/k\n", "=x\nprovider=local\n",
					   "keyring=/a\nkeyring=/b\nprovider=local\n",
					   "keyring\nprovider=local\n", "provider=\n" };
	static struct scope_def d;
	static uint8_t out[SCOPE_DEF_MAX];
	dictionary *ini = dictionary_new(0), *back;
	char text[SCOPE_SETTINGS_MAX + 1], err[256];
	size_t len, i;

	REQUIRE(ini);
	CHECK_EQ_INT(scope_settings_canon(ini, text, sizeof(text), err, sizeof(err)), -EINVAL);
	iniparser_set(ini, "kms", NULL);
	iniparser_set(ini, "kms:provider", "local");
	iniparser_set(ini, "kms:keyring_id", "00");
	iniparser_set(ini, "kms:keyring", "/k/a b;c");
	CHECK_EQ_INT(scope_settings_canon(ini, text, sizeof(text), err, sizeof(err)), 0);
	CHECK(strcmp(text, "keyring=/k/a b;c\nkeyring_id=00\nprovider=local\n") == 0);
	back = scope_settings_ini(text);
	REQUIRE(back);
	CHECK(strcmp(iniparser_getstring(back, "kms:keyring", ""), "/k/a b;c") == 0);
	CHECK(strcmp(iniparser_getstring(back, "kms:provider", ""), "local") == 0);
	CHECK_EQ_INT(iniparser_getsecnkeys(back, "kms"), 3);
	iniparser_freedict(back);
	iniparser_set(ini, "kms:token", "a\nb");
	CHECK_EQ_INT(scope_settings_canon(ini, text, sizeof(text), err, sizeof(err)), -EINVAL);
	iniparser_freedict(ini);

	d = want;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(d.settings, sizeof(d.settings), "%s", bad[i]);
		CHECK_EQ_INT(scope_def_encode(&d, def_key, out, sizeof(out), &len),
			     -EINVAL);
	}
}

static int count_visit(void *arg, const struct scope_def *d)
{
	(void)d;
	++*(int *)arg;
	return 0;
}

/* The registry: written, listed, refused when tampered or misnamed, removed. */
static void test_registry(void)
{
	char dir[] = "/tmp/envfs-scope-test-XXXXXX", path[256], cmd[300];
	struct scope_def d = want;
	int root, n = 0, fd;

	REQUIRE(mkdtemp(dir));
	root = open(dir, O_RDONLY | O_DIRECTORY);
	REQUIRE(root >= 0);
	CHECK_EQ_INT(scope_registry_each(root, def_key, count_visit, &n), 0);
	CHECK_EQ_INT(n, 0);
	CHECK_EQ_INT(scope_registry_write(root, &d, def_key), 0);
	d.id[0] ^= 1;
	d.record.file_id[0] ^= 1;
	CHECK_EQ_INT(scope_registry_write(root, &d, def_key), 0);
	/* A crash's leftover is skipped. */
	snprintf(path, sizeof(path), "%s/%s/XYZ.tmp", dir, SCOPE_REGISTRY);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	REQUIRE(fd >= 0);
	close(fd);
	CHECK_EQ_INT(scope_registry_each(root, def_key, count_visit, &n), 0);
	CHECK_EQ_INT(n, 2);
	/* Another volume's key: nothing authentic. */
	def_key[0] ^= 1;
	CHECK_EQ_INT(scope_registry_each(root, def_key, count_visit, &n), -EBADMSG);
	def_key[0] ^= 1;
	CHECK_EQ_INT(scope_registry_remove(root, d.id), 0);
	CHECK_EQ_INT(scope_registry_remove(root, d.id), 0);
	n = 0;
	CHECK_EQ_INT(scope_registry_each(root, def_key, count_visit, &n), 0);
	CHECK_EQ_INT(n, 1);
	/* A definition under another scope's name is refused. */
	snprintf(cmd, sizeof(cmd), "cd '%s/%s' && rm XYZ.tmp && mv ./* ./AAAAAAAAAAAAAAAAAAAAAA", dir,
		 SCOPE_REGISTRY);
	REQUIRE(system(cmd) == 0);
	CHECK_EQ_INT(scope_registry_each(root, def_key, count_visit, &n), -EBADMSG);
	close(root);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

int main(void)
{
	RUN(test_format_md_vectors);
	RUN(test_settings);
	RUN(test_registry);
	return check_summary();
}
