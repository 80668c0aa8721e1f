// SPDX-License-Identifier: MIT
/* envelopefsctl keyring create|rotate|list|retire: the local provider's keyring file. */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/xattr.h>

#define ENVELOPEFS_SCOPE_OPS_TOOL_ONLY
#include "fs/scope_ops.h"
#include "fs/status.h"
#include "kms/keyring.h"
#include "crypto/hex.h"
#include "tools/ctl.h"
#include "tools/ctl_scope.h"

static const char keyring_usage[] =
	"Usage: envelopefsctl keyring create [--passphrase-file FILE] PATH\n"
	"       envelopefsctl keyring rotate [--passphrase-file FILE] PATH\n"
	"       envelopefsctl keyring list   [--passphrase-file FILE] PATH\n"
	"       envelopefsctl keyring retire [--passphrase-file FILE] --volume DIR... PATH VERSION\n"
	"\n"
	"create  make a new keyring file PATH (mode 0600) holding master key version 1;\n"
	"        passphrase-protected when a passphrase is given (see below)\n"
	"rotate  add a new master-key version and make it current; files keep\n"
	"        unwrapping under their old version\n"
	"list    show the keyring ID and its versions (never a key)\n"
	"retire  remove master-key VERSION for good, after checking that no file of any\n"
	"        --volume DIR (a mountpoint, through the daemon, or an unmounted backing\n"
	"        directory) is still wrapped under it (`envelopefsctl rotate` moves them).\n"
	"        Whatever else (a backup) still holds it can never be decrypted again.\n"
	"\n"
	"Options:\n"
	"  --passphrase-file FILE  read the keyring passphrase from FILE\n"
	"  --volume DIR            (retire) a volume using this keyring; repeatable\n"
	"  -h, --help              show this help\n"
	"\n" CTL_PASSPHRASE_HELP;

static void print_keyring(const struct keyring *kr)
{
	char id[2 * KEYRING_ID_LEN + 1];
	uint32_t *versions;
	size_t i, n;

	hex_encode(keyring_id(kr), KEYRING_ID_LEN, id);
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

#define MAX_VOLUMES 64

/* scope_check - volume_check() for the root @dir of a key scope, through its daemon. */
static int scope_check(const char *dir, const char *id, uint32_t version)
{
	char ref[KMS_MAX_REF + 1], want[64], uuid[37];
	uint32_t current;
	int code = ctl_scope_target(dir, &current, ref, sizeof(ref), uuid);

	snprintf(want, sizeof(want), "local:%s", id);
	if (code != CTL_OK)
		return code;
	if (strcmp(ref, want) != 0)
		return ctl_err(CTL_KEY, "key scope %s does not use keyring %s", dir, id);
	if (current <= version)
		return ctl_err(CTL_FAILED, "key scope %s still wraps new keys under version %u or "
					   "older: rotate the keyring first", dir, version);
	return CTL_OK;
}

/*
 * Does volume @dir use keyring @id?  Online (its mount root answers the
 * status xattr) through the daemon's key reference, offline from its
 * configuration.  *@online tells which.  Returns a CTL_* code.
 */
/*
 * Does volume @dir use keyring @id, and may @version go?  Online (its mount
 * root answers the status xattr; reading it makes the daemon look at the
 * keyring file) through the daemon's key reference and current version,
 * offline from its configuration.  *@online tells which.  Returns a CTL_*
 * code.
 */
static int volume_check(const char *dir, const char *id, uint32_t version, bool *online)
{
	char status[16384], ref[64], *cur;
	ssize_t n = getxattr(dir, STATUS_XATTR, status, sizeof(status) - 1);
	unsigned current = 0;
	struct ctl_volume v;
	int code;

	snprintf(ref, sizeof(ref), "\"key_ref\":\"local:%s\"", id);
	*online = n >= 0 || getxattr(dir, SCOPE_XATTR, NULL, 0) >= 0;
	if (n < 0 && *online)
		return scope_check(dir, id, version);
	if (*online) {
		status[n] = '\0';
		/* The volume's own KMS, not a key scope's: the walk leaves scopes out. */
		if ((cur = strstr(status, "\"scopes\":")))
			*cur = '\0';
		if (!strstr(status, ref))
			return ctl_err(CTL_KEY, "volume %s does not use keyring %s (for a key scope's "
					       "keyring, give the scope's root directory)", dir, id);
		cur = strstr(status, "\"current_version\":");
		if (!cur || sscanf(cur + strlen("\"current_version\":"), "%u", &current) != 1 ||
		    current <= version)
			return ctl_err(CTL_FAILED,
				       "the daemon of %s still wraps new keys under version %u or "
				       "older: rotate the keyring first",
				       dir, version);
		return CTL_OK;
	}
	code = ctl_volume_open(dir, NULL, NULL, false, &v);
	if (code != CTL_OK)
		return code;
	if (strcmp(iniparser_getstring(v.cfg.ini, "kms:keyring_id", ""), id) != 0)
		code = ctl_err(CTL_KEY, "volume %s does not use keyring %s", dir, id);
	ctl_volume_close(&v);
	return code;
}

static int retire(struct keyring *kr, const char *version_text, char **volumes, int n_volumes)
{
	char id[2 * KEYRING_ID_LEN + 1], err[1024], *end;
	unsigned long version = strtoul(version_text, &end, 10);
	bool online[MAX_VOLUMES];
	int code, rc;

	if (*end || version == 0 || version > UINT32_MAX)
		return ctl_err(CTL_USAGE, "'%s' is not a key version", version_text);
	if (n_volumes == 0)
		return ctl_err(CTL_USAGE, "name every volume that uses this keyring with --volume "
					  "DIR: retiring a version still in use destroys data");
	hex_encode(keyring_id(kr), KEYRING_ID_LEN, id);
	for (int i = 0; i < n_volumes; i++) {
		code = volume_check(volumes[i], id, (uint32_t)version, &online[i]);
		if (code != CTL_OK)
			return code;
	}
	/* Two full passes: a file that a rename carried past the first walk
	 * (from a directory not yet visited to one already visited) is seen by
	 * the second, unless the tree keeps moving, which the counts then show. */
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n_volumes; i++) {
			size_t users, unreadable;

			code = ctl_count_key_version(volumes[i], !online[i], (uint32_t)version, &users,
						     &unreadable);
			if (code != CTL_OK)
				return code;
			if (users || unreadable)
				return ctl_err(CTL_FAILED,
					       "volume %s: %zu files still use version %lu and %zu could "
					       "not be checked; run `envelopefsctl rotate %s%s` first",
					       volumes[i], users, version, unreadable,
					       !online[i] ? "--offline "
					       : getxattr(volumes[i], SCOPE_XATTR, NULL, 0) >= 0 ? "--scope "
												  : "",
					       volumes[i]);
		}
	}
	rc = keyring_retire(kr, (uint32_t)version, err, sizeof(err));
	if (rc < 0)
		return ctl_err(rc == -ESTALE || rc == -EBUSY || rc == -ENOENT ? CTL_FAILED : CTL_KEY,
			       "%s", err);
	printf("retired version %lu of keyring %s\n", version, keyring_path(kr));
	return CTL_OK;
}

int cmd_keyring(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "volume", required_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pass_file = NULL, *action, *path;
	char *volumes[MAX_VOLUMES];
	int n_volumes = 0;
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
		case 'v':
			if (n_volumes == MAX_VOLUMES)
				return ctl_err(CTL_USAGE, "at most %d --volume options", MAX_VOLUMES);
			volumes[n_volumes++] = optarg;
			break;
		case 'h':
			return ctl_usage(keyring_usage, true);
		default:
			return ctl_usage(keyring_usage, false);
		}
	}
	if (argc - optind < 2)
		return ctl_usage(keyring_usage, false);
	action = argv[optind];
	path = argv[optind + 1];
	if (argc - optind != (strcmp(action, "retire") == 0 ? 3 : 2))
		return ctl_usage(keyring_usage, false);
	if (strcmp(action, "create") == 0)
		ctl_cmd = "keyring create";
	else if (strcmp(action, "rotate") == 0)
		ctl_cmd = "keyring rotate";
	else if (strcmp(action, "list") == 0)
		ctl_cmd = "keyring list";
	else if (strcmp(action, "retire") == 0)
		ctl_cmd = "keyring retire";
	else
		return ctl_err(CTL_USAGE, "unknown action '%s' (create, rotate, list or retire)",
			       action);

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

	if (strcmp(action, "retire") == 0) {
		rc = keyring_load(path, pass, pass_len, &kr, err, sizeof(err));
		keyring_passphrase_free(pass);
		if (rc < 0)
			return ctl_err(CTL_KEY, "%s", err);
		rc = retire(kr, argv[optind + 2], volumes, n_volumes);
		keyring_free(kr);
		return rc;
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
