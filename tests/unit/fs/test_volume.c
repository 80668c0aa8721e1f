// SPDX-License-Identifier: MIT
/* Unit tests for fs/volume.c: the volume configuration file. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fs/volume.h"

static char dir[64];
static char conf[128];

static const uint8_t uuid_bytes[16] = { 0x6f, 0x1c, 0x2b, 0x7e, 0x4a, 0x9d, 0x4e, 0x21,
					0xb3, 0xc5, 0xd8, 0xe9, 0xf0, 0xa1, 0xb2, 0xc3 };
static const char uuid_text[] = "6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3";

static void write_text_at(const char *path, const char *text)
{
	FILE *f;

	unlink(path);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

static void write_text(const char *text)
{
	write_text_at(conf, text);
}

static void test_uuid(void)
{
	static const char *const bad[] = {
		"6F1C2B7E-4A9D-4E21-B3C5-D8E9F0A1B2C3", /* uppercase */
		"6f1c2b7e4a9d4e21b3c5d8e9f0a1b2c3",	/* no dashes */
		"6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c",	/* short */
		"6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c33", /* long */
		"6f1c2b7e-4a9d4-e21-b3c5-d8e9f0a1b2c3", /* dash moved */
		"6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2cg", /* not hex */
		"",
	};
	uint8_t out[16];
	char text[37];
	size_t i;

	uuid_format(uuid_bytes, text);
	CHECK(strcmp(text, uuid_text) == 0);
	REQUIRE(uuid_parse(uuid_text, out) == 0);
	CHECK(memcmp(out, uuid_bytes, 16) == 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_EQ_INT(uuid_parse(bad[i], out), -EINVAL);
	CHECK_EQ_INT(uuid_parse(NULL, out), -EINVAL);
}

static dictionary *kms_settings(void)
{
	dictionary *d = dictionary_new(0);

	iniparser_set(d, "kms", NULL);
	iniparser_set(d, "kms:provider", "local");
	iniparser_set(d, "kms:keyring", "/srv/keys/a;b #c.keyring");
	iniparser_set(d, "kms:keyring_id", "00112233445566778899aabbccddeeff");
	return d;
}

static void test_write_load(void)
{
	struct volume_config cfg = { .format_version = 1, .block_size = 65536,
				     .placement = PLACEMENT_HEADER, .header_size = 512 };
	struct volume_config got;
	dictionary *d = kms_settings();
	char err[512];
	struct stat sb;

	memcpy(cfg.uuid, uuid_bytes, 16);
	unlink(conf);
	REQUIRE(volume_config_write(conf, &cfg, d) == 0);
	REQUIRE(stat(conf, &sb) == 0);
	CHECK_EQ_INT(sb.st_mode & 0777, 0644 & ~022);
	CHECK_EQ_INT(volume_config_write(conf, &cfg, d), -EEXIST); /* O_EXCL */
	REQUIRE(volume_config_load(conf, &got, err, sizeof(err)) == 0);
	CHECK_EQ_INT(got.format_version, 1);
	CHECK(memcmp(got.uuid, uuid_bytes, 16) == 0);
	CHECK_EQ_INT(got.block_size, 65536);
	CHECK_EQ_INT(got.placement, PLACEMENT_HEADER);
	CHECK_EQ_INT(got.header_size, 512);
	REQUIRE(got.ini != NULL);
	/* A value with ';' and '#' survives (written quoted). */
	CHECK(strcmp(iniparser_getstring(got.ini, "kms:keyring", ""),
		     "/srv/keys/a;b #c.keyring") == 0);
	CHECK(strcmp(iniparser_getstring(got.ini, "kms:keyring_id", ""),
		     "00112233445566778899aabbccddeeff") == 0);
	volume_config_free(&got);
	CHECK(got.ini == NULL);

	unlink(conf);
	cfg.placement = PLACEMENT_XATTR;
	cfg.header_size = 0;
	cfg.block_size = 4096;
	REQUIRE(volume_config_write(conf, &cfg, d) == 0);
	REQUIRE(volume_config_load(conf, &got, err, sizeof(err)) == 0);
	CHECK_EQ_INT(got.placement, PLACEMENT_XATTR);
	CHECK_EQ_INT(got.header_size, 0);
	volume_config_free(&got);

	/* Values iniparser could not give back are refused, and nothing is left. */
	unlink(conf);
	iniparser_set(d, "kms:keyring", "/a\"b");
	CHECK_EQ_INT(volume_config_write(conf, &cfg, d), -EINVAL);
	CHECK(access(conf, F_OK) < 0);
	iniparser_set(d, "kms:keyring", "/a\nprovider = evil");
	CHECK_EQ_INT(volume_config_write(conf, &cfg, d), -EINVAL);
	iniparser_freedict(d);
}

static void test_missing_file(void)
{
	struct volume_config got;
	char err[512];

	unlink(conf);
	CHECK_EQ_INT(volume_config_load(conf, &got, err, sizeof(err)), -ENOENT);
	CHECK(strstr(err, conf) && strstr(err, "not an envelopefs volume"));
	CHECK(got.ini == NULL);
}

#define GOOD_HEAD                                                                            \
	"[volume]\nformat_version = 1\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
#define GOOD_KMS "[kms]\nprovider = local\n"

static const struct {
	const char *text;
	int rc;
	const char *needle; /* must appear in the message */
} bad_configs[] = {
	{ "[kms]\nprovider = local\n", -EINVAL, "[volume]" },
	{ "[volume]\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\nblock_size = 4096\n"
	  "key_records = xattr\n" GOOD_KMS,
	  -EINVAL, "format_version" },
	{ "[volume]\nformat_version = 0\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\n" GOOD_KMS,
	  -EINVAL, "format_version" },
	{ "[volume]\nformat_version = one\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\n" GOOD_KMS,
	  -EINVAL, "format_version" },
	{ "[volume]\nformat_version = -1\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\n" GOOD_KMS,
	  -EINVAL, "format_version" },
	{ "[volume]\nformat_version = 4\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\n" GOOD_KMS,
	  -EPROTONOSUPPORT, "upgrade" },
	/* The configuration MAC: exactly on format 2 volumes with encrypted names. */
	{ "[volume]\nformat_version = 2\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\nnames = encrypted\n" GOOD_KMS,
	  -EINVAL, "mac is missing" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\nnames = encrypted\nmac = "
	  "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n" GOOD_KMS,
	  -EINVAL, "mac is set" },
	{ "[volume]\nformat_version = 2\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\nnames = plain\nmac = "
	  "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n" GOOD_KMS,
	  -EINVAL, "mac is set" },
	{ "[volume]\nformat_version = 2\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	  "block_size = 4096\nkey_records = xattr\nnames = encrypted\nmac = 0011\n" GOOD_KMS,
	  -EINVAL, "64 lowercase hex" },
	{ "[volume]\nformat_version = 1\nblock_size = 4096\nkey_records = xattr\n" GOOD_KMS,
	  -EINVAL, "uuid" },
	{ "[volume]\nformat_version = 1\nuuid = 6F1C2B7E-4A9D-4E21-B3C5-D8E9F0A1B2C3\n"
	  "block_size = 4096\nkey_records = xattr\n" GOOD_KMS,
	  -EINVAL, "uuid" },
	{ "[volume]\nformat_version = 1\nuuid = 6f1c2b7e\nblock_size = 4096\n"
	  "key_records = xattr\n" GOOD_KMS,
	  -EINVAL, "uuid" },
	{ GOOD_HEAD "key_records = xattr\n" GOOD_KMS, -EINVAL, "block_size" },
	{ GOOD_HEAD "block_size = 2048\nkey_records = xattr\n" GOOD_KMS, -EINVAL, "block_size" },
	{ GOOD_HEAD "block_size = 131072\nkey_records = xattr\n" GOOD_KMS, -EINVAL,
	  "block_size" },
	{ GOOD_HEAD "block_size = 12288\nkey_records = xattr\n" GOOD_KMS, -EINVAL, "block_size" },
	{ GOOD_HEAD "block_size = 4096k\nkey_records = xattr\n" GOOD_KMS, -EINVAL, "block_size" },
	{ GOOD_HEAD "block_size = 04096\nkey_records = xattr\n" GOOD_KMS, -EINVAL, "block_size" },
	{ GOOD_HEAD "block_size = 99999999999999999999\nkey_records = xattr\n" GOOD_KMS, -EINVAL,
	  "block_size" },
	{ GOOD_HEAD "block_size = 4096\n" GOOD_KMS, -EINVAL, "key_records" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = file\n" GOOD_KMS, -EINVAL, "key_records" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = header\n" GOOD_KMS, -EINVAL,
	  "header_size" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = header\nheader_size = 500\n" GOOD_KMS,
	  -EINVAL, "header_size" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = header\nheader_size = 0\n" GOOD_KMS,
	  -EINVAL, "header_size" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = header\nheader_size = 1048576\n" GOOD_KMS,
	  -EINVAL, "header_size" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\nheader_size = 512\n" GOOD_KMS,
	  -EINVAL, "header_size" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\nblocksize = 8192\n" GOOD_KMS,
	  -EINVAL, "blocksize" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\n", -EINVAL, "[kms]" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\nBlock_Size = 8192\n" GOOD_KMS, -EINVAL,
	  "more than once" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\n" GOOD_KMS "provider = local\n",
	  -EINVAL, "provider is set more than once" },
	{ "[volume]\ngarbage line\n" GOOD_KMS, -EINVAL, "syntax" },
	{ GOOD_HEAD "block_size = 4096\nkey_records = xattr\n[kms]\nkeyring = /x\n", -EINVAL,
	  "provider" },
};

static void test_malformed_fields(void)
{
	struct volume_config got;
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(bad_configs) / sizeof(bad_configs[0]); i++) {
		int rc;

		write_text(bad_configs[i].text);
		err[0] = '\0';
		rc = volume_config_load(conf, &got, err, sizeof(err));
		if (rc != bad_configs[i].rc || !strstr(err, bad_configs[i].needle) ||
		    !strstr(err, conf)) {
			fprintf(stderr, "case %zu: rc %d, message '%s'\n", i, rc, err);
			CHECK(0);
		}
		CHECK(got.ini == NULL);
	}
}

static void test_good_text(void)
{
	struct volume_config got;
	char err[512];

	/* Hand-written, with comments and spacing iniparser accepts. */
	write_text("; comment\n[volume]\nformat_version=1\n  uuid = " "6f1c2b7e-4a9d-4e21-b3c5-"
		   "d8e9f0a1b2c3\nblock_size = 8192 ; inline comment\nkey_records = header\n"
		   "header_size = 1024\n\n[kms]\nprovider = local\nkeyring = /k\n");
	REQUIRE(volume_config_load(conf, &got, err, sizeof(err)) == 0);
	CHECK_EQ_INT(got.block_size, 8192);
	CHECK_EQ_INT(got.header_size, 1024);
	volume_config_free(&got);
}

static void test_not_a_file(void)
{
	struct volume_config got;
	char err[512];

	unlink(conf);
	REQUIRE(mkdir(conf, 0700) == 0);
	CHECK(volume_config_load(conf, &got, err, sizeof(err)) < 0);
	rmdir(conf);
}

/*
 * A migration's replacement: [kms] and [kms_previous] written, read back and
 * told apart; mode kept; no temporary file left; the previous section goes
 * again when not given; a [kms_previous] without a provider is refused.
 */
static void test_replace_with_previous(void)
{
	struct volume_config cfg = { .format_version = 1, .block_size = 4096,
				     .placement = PLACEMENT_XATTR };
	struct volume_config got;
	dictionary *old = kms_settings(), *target = dictionary_new(0), *back;
	char err[512], tmp[160];
	struct stat sb;

	memcpy(cfg.uuid, uuid_bytes, 16);
	iniparser_set(target, "kms", NULL);
	iniparser_set(target, "kms:provider", "vault");
	iniparser_set(target, "kms:key", "vol");
	unlink(conf);
	REQUIRE(volume_config_write(conf, &cfg, old) == 0);
	REQUIRE(chmod(conf, 0640) == 0);
	snprintf(tmp, sizeof(tmp), "%s%s", conf, VOLUME_CONFIG_TMP_SUFFIX);
	write_text_at(tmp, "stale"); /* a crash's leftover is replaced, not an obstacle */
	REQUIRE(volume_config_replace(conf, &cfg, target, old) == 0);
	CHECK(access(tmp, F_OK) < 0);
	REQUIRE(stat(conf, &sb) == 0);
	CHECK_EQ_INT(sb.st_mode & 07777, 0640);
	REQUIRE(volume_config_load(conf, &got, err, sizeof(err)) == 0);
	CHECK(strcmp(iniparser_getstring(got.ini, "kms:provider", ""), "vault") == 0);
	CHECK(strcmp(iniparser_getstring(got.ini, "kms_previous:keyring", ""),
		     "/srv/keys/a;b #c.keyring") == 0);
	CHECK(volume_kms_same(got.ini, "kms", target, "kms"));
	CHECK(volume_kms_same(got.ini, VOLUME_KMS_PREVIOUS, old, "kms"));
	CHECK(!volume_kms_same(got.ini, "kms", old, "kms"));
	back = volume_kms_settings(got.ini, VOLUME_KMS_PREVIOUS);
	REQUIRE(back != NULL);
	CHECK(volume_kms_same(back, "kms", old, "kms"));
	iniparser_freedict(back);
	CHECK(volume_kms_settings(got.ini, "nosuch") == NULL);
	volume_config_free(&got);
	/* Finished: the previous section goes. */
	REQUIRE(volume_config_replace(conf, &cfg, target, NULL) == 0);
	REQUIRE(volume_config_load(conf, &got, err, sizeof(err)) == 0);
	CHECK(iniparser_find_entry(got.ini, VOLUME_KMS_PREVIOUS) == 0);
	volume_config_free(&got);
	/* A previous section must name its provider. */
	write_text("[volume]\nformat_version = 1\nuuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
		   "block_size = 4096\nkey_records = xattr\n[kms]\nprovider = local\n"
		   "[kms_previous]\nkeyring = /k\n");
	CHECK_EQ_INT(volume_config_load(conf, &got, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "[kms_previous] provider is missing") != NULL);
	iniparser_freedict(target);
	iniparser_freedict(old);
	unlink(conf);
}

int main(void)
{
	snprintf(dir, sizeof(dir), "/tmp/envfs-volume-test-XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	snprintf(conf, sizeof(conf), "%s/%s", dir, VOLUME_CONFIG_NAME);
	umask(022);
	RUN(test_uuid);
	RUN(test_write_load);
	RUN(test_replace_with_previous);
	RUN(test_missing_file);
	RUN(test_malformed_fields);
	RUN(test_good_text);
	RUN(test_not_a_file);
	unlink(conf);
	rmdir(dir);
	return check_summary();
}
