// SPDX-License-Identifier: MIT
/*
 * The configuration's canonical form and MAC (fs/confmac.c): docs/FORMAT.md's
 * config_mac vectors, computed independently (Python cryptography, hmac), and
 * the host's pin (fs/confpin.c) naming the setting that changed.
 */

#include "vector.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "check.h"
#include "fs/confmac.h"
#include "fs/confpin.h"

static int n_vectors;
static char dir[] = "/tmp/envfs-confmac-test-XXXXXX";
static char conf[256];

static void write_file(const char *path, const void *data, size_t len)
{
	FILE *f = fopen(path, "w");

	REQUIRE(f && fwrite(data, 1, len, f) == len);
	REQUIRE(fclose(f) == 0);
}

static void check_mac(const struct vector *v, const char *type)
{
	static uint8_t text[VECTOR_MAX_VALUE], canonical[VECTOR_MAX_VALUE];
	uint8_t key[32], mac[32], want[32];
	struct volume_config cfg;
	size_t text_len, canonical_len;
	char err[512], *got = NULL;

	(void)type;
	n_vectors++;
	REQUIRE(vector_hex(v, "volume_key", key, sizeof(key), 32, NULL) == 0);
	REQUIRE(vector_hex(v, "conf", text, sizeof(text), 0, &text_len) == 0);
	REQUIRE(vector_hex(v, "canonical", canonical, sizeof(canonical) - 1, 0, &canonical_len) ==
		0);
	REQUIRE(vector_hex(v, "mac", want, sizeof(want), 32, NULL) == 0);
	canonical[canonical_len] = '\0';
	write_file(conf, text, text_len);
	REQUIRE(volume_config_load(conf, &cfg, err, sizeof(err)) == 0);
	REQUIRE(confmac_canonical_of(&cfg, &got) == 0);
	CHECK(strcmp(got, (const char *)canonical) == 0);
	CHECK(confmac_compute(key, cfg.uuid, got, mac) == 0);
	CHECK(memcmp(mac, want, 32) == 0);
	CHECK(memcmp(cfg.mac, want, 32) == 0);
	CHECK_EQ_INT(confmac_verify(&cfg, key), 0);
	key[0] ^= 1; /* another volume key */
	CHECK_EQ_INT(confmac_verify(&cfg, key), -EBADMSG);
	key[0] ^= 1;
	cfg.block_size *= 2; /* another setting */
	CHECK_EQ_INT(confmac_verify(&cfg, key), -EBADMSG);
	free(got);
	volume_config_free(&cfg);
}

static void test_format_md_vectors(void)
{
	static const char *const types[] = { "config_mac", NULL };

	vector_scan("FORMAT.md", types, check_mac);
	CHECK(n_vectors >= 2); /* and one with key scopes */
}

/* The pin: a first mount (1), a match (0), and each kind of change named. */
static void test_pin(void)
{
	static const char base[] = "[volume]\nformat_version = 2\n"
				   "uuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
				   "block_size = 4096\nkey_records = xattr\nnames = plain\n"
				   "[kms]\nprovider = local\nkeyring = /k/a\n";
	static const struct {
		const char *from, *to, *needle;
	} changes[] = {
		{ "block_size = 4096", "block_size = 8192",
		  "[volume] block_size changed from '4096' to '8192'" },
		{ "keyring = /k/a\n", "keyring = /k/a\nkeyring_id = x\n", "[kms] keyring_id was added" },
		{ "keyring = /k/a\n", "", "[kms] keyring was removed" },
		{ "[kms]", "[kms_previous]\nprovider = aws\n[kms]", "[kms_previous] provider was added" },
	};
	char root[300], text[512], err[1024];
	struct volume_config cfg;
	size_t i;

	snprintf(root, sizeof(root), "%s/state", dir);
	write_file(conf, base, strlen(base));
	REQUIRE(volume_config_load(conf, &cfg, err, sizeof(err)) == 0);
	CHECK_EQ_INT(confpin_check(root, "/srv/vol", &cfg, err, sizeof(err)), 1);
	REQUIRE(confpin_record(root, "/srv/vol", &cfg) == 0);
	CHECK_EQ_INT(confpin_check(root, "/srv/vol", &cfg, err, sizeof(err)), 0);
	/* The same volume at a new path is new to that path only. */
	CHECK_EQ_INT(confpin_check(root, "/srv/copy", &cfg, err, sizeof(err)), 1);
	volume_config_free(&cfg);
	for (i = 0; i < sizeof(changes) / sizeof(changes[0]); i++) {
		const char *at = strstr(base, changes[i].from);

		REQUIRE(at);
		snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - base), base, changes[i].to,
			 at + strlen(changes[i].from));
		write_file(conf, text, strlen(text));
		REQUIRE(volume_config_load(conf, &cfg, err, sizeof(err)) == 0);
		CHECK_EQ_INT(confpin_check(root, "/srv/vol", &cfg, err, sizeof(err)), -ESTALE);
		if (!strstr(err, changes[i].needle))
			fprintf(stderr, "change %zu: %s\n", i, err);
		CHECK(strstr(err, changes[i].needle) != NULL);
		volume_config_free(&cfg);
	}
	/* Another volume where this one was. */
	snprintf(text, sizeof(text), "%s", base);
	memcpy(strstr(text, "6f1c"), "7f1c", 4);
	write_file(conf, text, strlen(text));
	REQUIRE(volume_config_load(conf, &cfg, err, sizeof(err)) == 0);
	CHECK_EQ_INT(confpin_check(root, "/srv/vol", &cfg, err, sizeof(err)), -ESTALE);
	CHECK(strstr(err, "was replaced") != NULL);
	volume_config_free(&cfg);
}

int main(void)
{
	char cmd[300];
	int rc;

	if (!mkdtemp(dir))
		return 1;
	snprintf(conf, sizeof(conf), "%s/envelopefs.conf", dir);
	RUN(test_format_md_vectors);
	RUN(test_pin);
	rc = check_summary();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return rc;
}
