/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TESTS_LOCAL_KMS_UTIL_H
#define ENVELOPEFS_TESTS_LOCAL_KMS_UTIL_H

/* A local-keyring KMS for unit tests (include after kms_test_util.h). */

#include <stdio.h>
#include <stdlib.h>

#include "crypto/hex.h"
#include "kms/keyring.h"
#include "kms/kms.h"

__attribute__((unused)) static const struct keyring_kdf fast_kdf = { KEYRING_SCRYPT_MIN_LOG2N, 8, 1 };

__attribute__((unused)) static void id_hex(const struct keyring *kr, char out[33])
{
	hex_encode(keyring_id(kr), 16, out);
}

/* settings - a [kms] section for the keyring at @path (its ID read from the file). */
__attribute__((unused)) static dictionary *settings(const char *path, const char *pw, const char *pass_file)
{
	dictionary *d = dictionary_new(0);
	struct keyring *kr = NULL;
	char err[512], hex[33];

	if (keyring_load(path, pw, pw ? strlen(pw) : 0, &kr, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		exit(2);
	}
	id_hex(kr, hex);
	keyring_free(kr);
	iniparser_set(d, "kms", NULL);
	iniparser_set(d, "kms:provider", "local");
	iniparser_set(d, "kms:keyring", path);
	iniparser_set(d, "kms:keyring_id", hex);
	if (pass_file)
		iniparser_set(d, "kms:passphrase_file", pass_file);
	return d;
}

__attribute__((unused)) static struct kms *open_kms(const char *path)
{
	char err[512];
	dictionary *d = settings(path, NULL, NULL);
	struct kms *kms = NULL;

	if (kms_open(d, &kms, err, sizeof(err)) < 0) {
		fprintf(stderr, "kms_open: %s\n", err);
		exit(2);
	}
	iniparser_freedict(d);
	return kms;
}

__attribute__((unused)) static const char *new_keyring(char *buf, size_t len, const char *name)
{
	char err[512];

	test_path(buf, len, name);
	if (keyring_create(buf, NULL, 0, NULL, NULL, err, sizeof(err)) < 0) {
		fprintf(stderr, "%s\n", err);
		exit(2);
	}
	return buf;
}

#endif
