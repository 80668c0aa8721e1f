// SPDX-License-Identifier: MIT
/* Unit tests for kms/keyring.c: the local keyring file. */

#include "kms_test_util.h"

#include <errno.h>
#include <stdlib.h>

#include "check.h"
#include "kms/keyring.h"

/* Fast scrypt for tests; the file format and bounds are the same. */
static const struct keyring_kdf fast_kdf = { KEYRING_SCRYPT_MIN_LOG2N, 8, 1 };
static const char pass[] = "correct horse battery staple";

/*
 * create_image - a new keyring @name at @path (@pw and @kdf as for
 * keyring_create(); no passphrase when @pw is NULL) and its file's bytes,
 * malloc'd, *@len long; NULL, with the failure on stderr, when either fails.
 */
static uint8_t *create_image(char *path, size_t cap, const char *name, const char *pw,
			     const struct keyring_kdf *kdf, size_t *len)
{
	char err[512];

	test_path(path, cap, name);
	if (keyring_create(path, pw, pw ? strlen(pw) : 0, kdf, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "keyring_create: %s\n", err);
		return NULL;
	}
	return read_all(path, len);
}

static void test_create_load(void)
{
	char path[512], err[512];
	struct keyring *a = NULL, *b = NULL;
	uint32_t versions[4];
	struct stat sb;

	test_path(path, sizeof(path), "plain.keyring");
	REQUIRE(keyring_create(path, NULL, 0, NULL, &a, err, sizeof(err)) == 0);
	REQUIRE(stat(path, &sb) == 0);
	CHECK_EQ_INT(sb.st_mode & 07777, 0600);
	CHECK_EQ_INT(sb.st_size, KEYRING_HEADER_LEN + KEYRING_ENTRY_LEN + 32);
	CHECK_EQ_INT(keyring_current(a), 1);
	CHECK(!keyring_has_passphrase(a));
	REQUIRE(keyring_load(path, NULL, 0, &b, err, sizeof(err)) == 0);
	CHECK(memcmp(keyring_id(a), keyring_id(b), KEYRING_ID_LEN) == 0);
	REQUIRE(keyring_key(a, 1) && keyring_key(b, 1));
	CHECK(memcmp(keyring_key(a, 1), keyring_key(b, 1), KEYRING_KEY_LEN) == 0);
	CHECK(keyring_key(b, 0) == NULL);
	CHECK(keyring_key(b, 2) == NULL);
	CHECK_EQ_INT(keyring_versions(b, versions, 4), 1);
	CHECK_EQ_INT(versions[0], 1);
	CHECK(!keyring_changed(b));
	/* Never replaces a keyring. */
	CHECK_EQ_INT(keyring_create(path, NULL, 0, NULL, NULL, err, sizeof(err)), -EEXIST);
	keyring_free(a);
	keyring_free(b);
}

static void test_missing_file(void)
{
	char path[512], err[512];
	struct keyring *kr = NULL;

	test_path(path, sizeof(path), "nonexistent.keyring");
	CHECK_EQ_INT(keyring_load(path, NULL, 0, &kr, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "keyring create") != NULL);
}

static void test_rotate_and_list(void)
{
	char path[512], err[512];
	struct keyring *a = NULL, *b = NULL;
	uint8_t key1[KEYRING_KEY_LEN];
	uint32_t versions[8], v = 0;

	test_path(path, sizeof(path), "rotate.keyring");
	REQUIRE(keyring_create(path, NULL, 0, NULL, &a, err, sizeof(err)) == 0);
	memcpy(key1, keyring_key(a, 1), sizeof(key1));
	REQUIRE(keyring_rotate(a, &v, err, sizeof(err)) == 0);
	CHECK_EQ_INT(v, 2);
	REQUIRE(keyring_rotate(a, &v, err, sizeof(err)) == 0);
	CHECK_EQ_INT(v, 3);
	CHECK_EQ_INT(keyring_current(a), 3);
	CHECK(memcmp(keyring_key(a, 1), key1, sizeof(key1)) == 0);
	CHECK(memcmp(keyring_key(a, 2), keyring_key(a, 3), KEYRING_KEY_LEN) != 0);

	REQUIRE(keyring_load(path, NULL, 0, &b, err, sizeof(err)) == 0);
	CHECK_EQ_INT(keyring_current(b), 3);
	CHECK_EQ_INT(keyring_versions(b, versions, 8), 3);
	CHECK_EQ_INT(versions[0], 1);
	CHECK_EQ_INT(versions[1], 2);
	CHECK_EQ_INT(versions[2], 3);
	CHECK(memcmp(keyring_key(b, 1), key1, sizeof(key1)) == 0);
	CHECK(memcmp(keyring_key(b, 3), keyring_key(a, 3), KEYRING_KEY_LEN) == 0);
	keyring_free(a);
	keyring_free(b);
	memset(key1, 0, sizeof(key1));
}

static void test_retire(void)
{
	char path[512], err[512];
	struct keyring *a = NULL, *b = NULL;
	uint8_t key3[KEYRING_KEY_LEN];
	uint32_t versions[8];

	test_path(path, sizeof(path), "retire.keyring");
	REQUIRE(keyring_create(path, NULL, 0, NULL, &a, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(a, NULL, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(a, NULL, err, sizeof(err)) == 0);
	memcpy(key3, keyring_key(a, 3), sizeof(key3));
	CHECK_EQ_INT(keyring_retire(a, 3, err, sizeof(err)), -EBUSY);
	CHECK(strstr(err, "current") != NULL);
	CHECK_EQ_INT(keyring_retire(a, 7, err, sizeof(err)), -ENOENT);
	REQUIRE(keyring_retire(a, 1, err, sizeof(err)) == 0);
	CHECK(keyring_key(a, 1) == NULL);
	CHECK_EQ_INT(keyring_retire(a, 1, err, sizeof(err)), -ENOENT);

	/* The file no longer holds version 1; the others are intact. */
	REQUIRE(keyring_load(path, NULL, 0, &b, err, sizeof(err)) == 0);
	CHECK_EQ_INT(keyring_versions(b, versions, 8), 2);
	CHECK_EQ_INT(versions[0], 2);
	CHECK_EQ_INT(versions[1], 3);
	CHECK_EQ_INT(keyring_current(b), 3);
	CHECK(keyring_key(b, 1) == NULL);
	CHECK(memcmp(keyring_key(b, 3), key3, sizeof(key3)) == 0);
	/* A stale handle cannot retire (it would resurrect what it holds). */
	REQUIRE(keyring_retire(b, 2, err, sizeof(err)) == 0);
	CHECK_EQ_INT(keyring_retire(a, 2, err, sizeof(err)), -ESTALE);
	keyring_free(a);
	keyring_free(b);
	memset(key3, 0, sizeof(key3));
}

static void test_rotate_stale_and_reload(void)
{
	char path[512], err[512];
	struct keyring *a = NULL, *b = NULL;
	bool changed = false;

	test_path(path, sizeof(path), "stale.keyring");
	REQUIRE(keyring_create(path, NULL, 0, NULL, &a, err, sizeof(err)) == 0);
	REQUIRE(keyring_load(path, NULL, 0, &b, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(a, NULL, err, sizeof(err)) == 0);
	/* b was loaded before a's rotation: rotating it would lose version 2. */
	CHECK_EQ_INT(keyring_rotate(b, NULL, err, sizeof(err)), -ESTALE);
	CHECK(keyring_changed(b));
	REQUIRE(keyring_reload(b, &changed, err, sizeof(err)) == 0);
	CHECK(changed);
	CHECK_EQ_INT(keyring_current(b), 2);
	REQUIRE(keyring_key(b, 2) != NULL);
	CHECK(memcmp(keyring_key(a, 2), keyring_key(b, 2), KEYRING_KEY_LEN) == 0);
	REQUIRE(keyring_reload(b, &changed, err, sizeof(err)) == 0);
	CHECK(!changed);
	CHECK_EQ_INT(keyring_rotate(b, NULL, err, sizeof(err)), 0);
	keyring_free(a);
	keyring_free(b);
}

static void test_reload_refuses_other_keyring(void)
{
	char path[512], other[512], err[512];
	struct keyring *a = NULL;
	uint8_t key[KEYRING_KEY_LEN];

	test_path(path, sizeof(path), "swap.keyring");
	test_path(other, sizeof(other), "swap-other.keyring");
	REQUIRE(keyring_create(path, NULL, 0, NULL, &a, err, sizeof(err)) == 0);
	REQUIRE(keyring_create(other, NULL, 0, NULL, NULL, err, sizeof(err)) == 0);
	memcpy(key, keyring_key(a, 1), sizeof(key));
	REQUIRE(rename(other, path) == 0);
	CHECK_EQ_INT(keyring_reload(a, NULL, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "different keyring") != NULL);
	/* The keyring held is untouched. */
	CHECK(memcmp(keyring_key(a, 1), key, sizeof(key)) == 0);
	keyring_free(a);
}

static void test_mode_refused(void)
{
	static const mode_t bad[] = { 0640, 0604, 0660, 0606, 0644, 0610, 0601 };
	char path[512], err[512];
	struct keyring *kr = NULL;
	size_t i;

	test_path(path, sizeof(path), "mode.keyring");
	REQUIRE(keyring_create(path, NULL, 0, NULL, NULL, err, sizeof(err)) == 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		REQUIRE(chmod(path, bad[i]) == 0);
		CHECK_EQ_INT(keyring_load(path, NULL, 0, &kr, err, sizeof(err)), -EPERM);
		CHECK(strstr(err, "chmod 600") != NULL);
		CHECK(strstr(err, path) != NULL);
	}
	REQUIRE(chmod(path, 0400) == 0);
	CHECK_EQ_INT(keyring_load(path, NULL, 0, &kr, err, sizeof(err)), 0);
	keyring_free(kr);
}

/*
 * Every truncation and every single-bit flip of a keyring file must be
 * refused: a damaged keyring never yields a key.
 */
static void damage_all(const char *name, const char *pw, size_t pw_len, unsigned bit_stride)
{
	char path[512], copy[512], err[512];
	struct keyring *kr = NULL;
	uint8_t *image, *buf;
	size_t len, i, refused = 0, tried = 0;
	unsigned bit;

	test_path(path, sizeof(path), name);
	test_path(copy, sizeof(copy), "damaged.keyring");
	REQUIRE(keyring_create(path, pw, pw_len, &fast_kdf, &kr, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(kr, NULL, err, sizeof(err)) == 0);
	keyring_free(kr);
	kr = NULL;
	image = read_all(path, &len);
	REQUIRE(image != NULL);
	buf = malloc(len);
	REQUIRE(buf != NULL);

	for (i = 0; i < len; i++) {
		REQUIRE(write_all(copy, image, i, 0600) == 0);
		tried++;
		if (keyring_load(copy, pw, pw_len, &kr, err, sizeof(err)) < 0)
			refused++;
		else
			fprintf(stderr, "%s: truncation to %zu bytes accepted\n", name, i);
		keyring_free(kr);
		kr = NULL;
	}
	for (i = 0; i < len; i++) {
		for (bit = i % bit_stride; bit < 8; bit += bit_stride) {
			memcpy(buf, image, len);
			buf[i] ^= (uint8_t)(1u << bit);
			REQUIRE(write_all(copy, buf, len, 0600) == 0);
			tried++;
			if (keyring_load(copy, pw, pw_len, &kr, err, sizeof(err)) < 0)
				refused++;
			else
				fprintf(stderr, "%s: bit %u of byte %zu flipped, accepted\n", name,
					bit, i);
			keyring_free(kr);
			kr = NULL;
		}
	}
	/* One trailing byte too many is damage too. */
	memcpy(buf, image, len);
	REQUIRE(write_all(copy, image, len, 0600) == 0);
	{
		FILE *f = fopen(copy, "ab");

		REQUIRE(f != NULL);
		fputc(0, f);
		fclose(f);
	}
	tried++;
	if (keyring_load(copy, pw, pw_len, &kr, err, sizeof(err)) < 0)
		refused++;
	keyring_free(kr);
	CHECK_EQ_INT(refused, tried);
	/* The undamaged image still loads. */
	REQUIRE(write_all(copy, image, len, 0600) == 0);
	kr = NULL;
	CHECK_EQ_INT(keyring_load(copy, pw, pw_len, &kr, err, sizeof(err)), 0);
	keyring_free(kr);
	free(buf);
	free(image);
}

static void test_damage_plain(void)
{
	damage_all("damage-plain.keyring", NULL, 0, 1);
}

static void test_damage_passphrase(void)
{
	/* Two bits per byte: each load of this keyring runs scrypt. */
	damage_all("damage-pass.keyring", pass, strlen(pass), 4);
}

static void test_corrupt_message(void)
{
	char path[512], err[512];
	struct keyring *kr = NULL;
	uint8_t *image;
	size_t len;

	image = create_image(path, sizeof(path), "msg.keyring", NULL, NULL, &len);
	REQUIRE(image != NULL);
	image[len - 40] ^= 1;
	REQUIRE(write_all(path, image, len, 0600) == 0);
	CHECK_EQ_INT(keyring_load(path, NULL, 0, &kr, err, sizeof(err)), -EBADMSG);
	CHECK(strstr(err, path) != NULL);
	CHECK(strstr(err, "restore it from backup") != NULL);
	REQUIRE(write_all(path, image, 20, 0600) == 0);
	CHECK_EQ_INT(keyring_load(path, NULL, 0, &kr, err, sizeof(err)), -EBADMSG);
	free(image);
}

static void test_newer_format(void)
{
	char path[512], err[512];
	struct keyring *kr = NULL;
	uint8_t *image;
	size_t len;

	image = create_image(path, sizeof(path), "newer.keyring", NULL, NULL, &len);
	REQUIRE(image != NULL);
	image[9] = 2;
	REQUIRE(write_all(path, image, len, 0600) == 0);
	CHECK_EQ_INT(keyring_load(path, NULL, 0, &kr, err, sizeof(err)), -EPROTONOSUPPORT);
	CHECK(strstr(err, "upgrade") != NULL);
	free(image);
}

static void test_passphrase_keyring(void)
{
	char path[512], err[512];
	struct keyring *a = NULL, *b = NULL;
	uint32_t v;

	test_path(path, sizeof(path), "pass.keyring");
	REQUIRE(keyring_create(path, pass, strlen(pass), &fast_kdf, &a, err, sizeof(err)) == 0);
	CHECK(keyring_has_passphrase(a));
	REQUIRE(keyring_load(path, pass, strlen(pass), &b, err, sizeof(err)) == 0);
	CHECK(memcmp(keyring_key(a, 1), keyring_key(b, 1), KEYRING_KEY_LEN) == 0);
	keyring_free(b);
	b = NULL;

	CHECK_EQ_INT(keyring_load(path, "wrong", 5, &b, err, sizeof(err)), -EKEYREJECTED);
	CHECK(strstr(err, "wrong passphrase") != NULL);
	CHECK(b == NULL);
	CHECK_EQ_INT(keyring_load(path, pass, strlen(pass) - 1, &b, err, sizeof(err)),
		     -EKEYREJECTED);
	CHECK_EQ_INT(keyring_load(path, NULL, 0, &b, err, sizeof(err)), -ENOKEY);
	CHECK(strstr(err, "ENVELOPEFS_PASSPHRASE") != NULL);

	/* Rotation keeps the passphrase (and salt): reload needs no passphrase. */
	REQUIRE(keyring_load(path, pass, strlen(pass), &b, err, sizeof(err)) == 0);
	REQUIRE(keyring_rotate(a, &v, err, sizeof(err)) == 0);
	CHECK_EQ_INT(v, 2);
	REQUIRE(keyring_reload(b, NULL, err, sizeof(err)) == 0);
	CHECK_EQ_INT(keyring_current(b), 2);
	CHECK(memcmp(keyring_key(a, 2), keyring_key(b, 2), KEYRING_KEY_LEN) == 0);
	keyring_free(b);
	b = NULL;
	CHECK_EQ_INT(keyring_load(path, "wrong", 5, &b, err, sizeof(err)), -EKEYREJECTED);
	REQUIRE(keyring_load(path, pass, strlen(pass), &b, err, sizeof(err)) == 0);
	CHECK_EQ_INT(keyring_current(b), 2);
	keyring_free(a);
	keyring_free(b);
}

static void test_default_kdf(void)
{
	char path[512], err[512];
	struct keyring *kr = NULL;
	uint8_t *image;
	size_t len;

	image = create_image(path, sizeof(path), "default-kdf.keyring", pass, NULL, &len);
	REQUIRE(image != NULL);
	CHECK_EQ_INT(image[39], KEYRING_SCRYPT_LOG2N);
	CHECK_EQ_INT(image[43], KEYRING_SCRYPT_R);
	CHECK_EQ_INT(image[47], KEYRING_SCRYPT_P);
	CHECK_EQ_INT(keyring_load(path, pass, strlen(pass), &kr, err, sizeof(err)), 0);
	keyring_free(kr);
	free(image);
}

/* A hostile file must not make us run an enormous scrypt. */
static void test_hostile_kdf(void)
{
	static const struct {
		int off;
		uint8_t val;
	} edits[] = {
		{ 39, 30 }, /* log2 N = 30 */
		{ 39, 9 },  /* below the minimum */
		{ 43, 64 }, /* r = 64 */
		{ 43, 0 },  /* r = 0 */
		{ 47, 0 },  /* p = 0 */
		{ 47, 200 }, /* p = 200 */
		{ 36, 1 },  /* log2 N = 2^24 + 10 */
	};
	char path[512], err[512];
	struct keyring *kr = NULL;
	uint8_t *image;
	size_t len, i;

	image = create_image(path, sizeof(path), "hostile.keyring", pass, &fast_kdf, &len);
	REQUIRE(image != NULL);
	for (i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
		uint8_t saved = image[edits[i].off];

		image[edits[i].off] = edits[i].val;
		REQUIRE(write_all(path, image, len, 0600) == 0);
		CHECK_EQ_INT(keyring_load(path, pass, strlen(pass), &kr, err, sizeof(err)),
			     -EBADMSG);
		CHECK(strstr(err, "scrypt") != NULL);
		image[edits[i].off] = saved;
	}
	/* log2 N 20 with r 16: 2 GiB, over the memory bound. */
	image[39] = 20;
	image[43] = 16;
	REQUIRE(write_all(path, image, len, 0600) == 0);
	CHECK_EQ_INT(keyring_load(path, pass, strlen(pass), &kr, err, sizeof(err)), -EBADMSG);
	free(image);
}

static void test_passphrase_sources(void)
{
	char path[512], path2[512], err[512], *pw = NULL;
	size_t len = 0;

	unsetenv("ENVELOPEFS_PASSPHRASE");
	unsetenv("ENVELOPEFS_PASSPHRASE_FILE");
	CHECK_EQ_INT(keyring_passphrase(NULL, &pw, &len, err, sizeof(err)), 0);
	CHECK(pw == NULL);

	setenv("ENVELOPEFS_PASSPHRASE", "from env", 1);
	REQUIRE(keyring_passphrase(NULL, &pw, &len, err, sizeof(err)) == 0);
	REQUIRE(pw != NULL);
	CHECK(strcmp(pw, "from env") == 0);
	CHECK_EQ_INT(len, 8);
	keyring_passphrase_free(pw);

	test_path(path, sizeof(path), "pass.txt");
	REQUIRE(write_all(path, "from file\n", 10, 0600) == 0);
	setenv("ENVELOPEFS_PASSPHRASE_FILE", path, 1);
	REQUIRE(keyring_passphrase(NULL, &pw, &len, err, sizeof(err)) == 0);
	CHECK(strcmp(pw, "from file") == 0); /* the file beats the variable */
	CHECK_EQ_INT(len, 9);
	keyring_passphrase_free(pw);

	/* Only one newline is stripped; an explicit file beats both variables. */
	test_path(path2, sizeof(path2), "pass2.txt");
	REQUIRE(write_all(path2, "option\n\n", 8, 0600) == 0);
	REQUIRE(keyring_passphrase(path2, &pw, &len, err, sizeof(err)) == 0);
	CHECK_EQ_INT(len, 7);
	CHECK(memcmp(pw, "option\n", 7) == 0);
	keyring_passphrase_free(pw);

	REQUIRE(write_all(path2, "no newline", 10, 0600) == 0);
	REQUIRE(keyring_passphrase(path2, &pw, &len, err, sizeof(err)) == 0);
	CHECK(strcmp(pw, "no newline") == 0);
	keyring_passphrase_free(pw);

	REQUIRE(write_all(path2, "\n", 1, 0600) == 0);
	CHECK_EQ_INT(keyring_passphrase(path2, &pw, &len, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "empty") != NULL);
	test_path(path2, sizeof(path2), "missing.txt");
	CHECK_EQ_INT(keyring_passphrase(path2, &pw, &len, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, path2) != NULL);

	unsetenv("ENVELOPEFS_PASSPHRASE");
	unsetenv("ENVELOPEFS_PASSPHRASE_FILE");
}

int main(void)
{
	test_dir_make();
	RUN(test_create_load);
	RUN(test_missing_file);
	RUN(test_rotate_and_list);
	RUN(test_retire);
	RUN(test_rotate_stale_and_reload);
	RUN(test_reload_refuses_other_keyring);
	RUN(test_mode_refused);
	RUN(test_damage_plain);
	RUN(test_damage_passphrase);
	RUN(test_corrupt_message);
	RUN(test_newer_format);
	RUN(test_passphrase_keyring);
	RUN(test_default_kdf);
	RUN(test_hostile_kdf);
	RUN(test_passphrase_sources);
	return check_summary();
}
