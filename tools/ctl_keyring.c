// SPDX-License-Identifier: MIT
/* envelopefsctl keyring create|rotate|list: the local provider's keyring file. */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kms/keyring.h"
#include "tools/ctl.h"

static const char keyring_usage[] =
	"Usage: envelopefsctl keyring create [--passphrase-file FILE] PATH\n"
	"       envelopefsctl keyring rotate [--passphrase-file FILE] PATH\n"
	"       envelopefsctl keyring list   [--passphrase-file FILE] PATH\n"
	"\n"
	"create  make a new keyring file PATH (mode 0600) holding master key version 1;\n"
	"        passphrase-protected when a passphrase is given (see below)\n"
	"rotate  add a new master-key version and make it current; files keep\n"
	"        unwrapping under their old version\n"
	"list    show the keyring ID and its versions (never a key)\n"
	"\n"
	"Options:\n"
	"  --passphrase-file FILE  read the keyring passphrase from FILE\n"
	"  -h, --help              show this help\n"
	"\n" CTL_PASSPHRASE_HELP;

static void print_keyring(const struct keyring *kr)
{
	char id[2 * KEYRING_ID_LEN + 1];
	uint32_t *versions;
	size_t i, n;

	ctl_hex(keyring_id(kr), KEYRING_ID_LEN, id);
	printf("keyring:          %s\n", keyring_path(kr));
	printf("keyring ID:       %s\n", id);
	printf("passphrase:       %s\n", keyring_has_passphrase(kr) ? "yes" : "no");
	printf("current version:  %u\n", keyring_current(kr));
	n = keyring_versions(kr, NULL, 0);
	versions = calloc(n, sizeof(*versions));
	if (!versions)
		return;
	keyring_versions(kr, versions, n);
	printf("versions:        ");
	for (i = 0; i < n; i++)
		printf(" %u", versions[i]);
	printf("\n");
	free(versions);
}

int cmd_keyring(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pass_file = NULL, *action, *path;
	struct keyring *kr = NULL;
	char err[1024], *pass = NULL;
	size_t pass_len = 0;
	uint32_t version;
	int c, rc, tries;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			pass_file = optarg;
			break;
		case 'h':
			return ctl_usage(keyring_usage, true);
		default:
			return ctl_usage(keyring_usage, false);
		}
	}
	if (argc - optind != 2)
		return ctl_usage(keyring_usage, false);
	action = argv[optind];
	path = argv[optind + 1];
	if (strcmp(action, "create") == 0)
		ctl_cmd = "keyring create";
	else if (strcmp(action, "rotate") == 0)
		ctl_cmd = "keyring rotate";
	else if (strcmp(action, "list") == 0)
		ctl_cmd = "keyring list";
	else
		return ctl_err(CTL_USAGE, "unknown action '%s' (create, rotate or list)", action);

	rc = keyring_passphrase(pass_file, &pass, &pass_len, err, sizeof(err));
	if (rc < 0)
		return ctl_err(CTL_KEY, "%s", err);

	if (strcmp(action, "create") == 0) {
		rc = keyring_create(path, pass, pass_len, NULL, &kr, err, sizeof(err));
		keyring_passphrase_free(pass);
		if (rc < 0)
			return ctl_err(CTL_FAILED, "%s", err);
		printf("created keyring %s\n", path);
		print_keyring(kr);
		keyring_free(kr);
		return CTL_OK;
	}

	/* A concurrent rotation makes ours fail with -ESTALE: load again. */
	for (tries = 0; tries < 3; tries++) {
		rc = keyring_load(path, pass, pass_len, &kr, err, sizeof(err));
		if (rc < 0 || strcmp(action, "list") == 0)
			break;
		rc = keyring_rotate(kr, &version, err, sizeof(err));
		if (rc != -ESTALE)
			break;
		keyring_free(kr);
		kr = NULL;
	}
	keyring_passphrase_free(pass);
	if (rc < 0) {
		keyring_free(kr);
		return ctl_err(CTL_KEY, "%s", err);
	}
	if (strcmp(action, "rotate") == 0)
		printf("rotated keyring %s: version %u is now current\n", path, version);
	print_keyring(kr);
	keyring_free(kr);
	return CTL_OK;
}
