// SPDX-License-Identifier: MIT
/*
 * envelopefsctl scope - key scopes of a mounted volume (docs/FORMAT.md,
 * "Key scopes"): create one on an empty directory, list them, lock one.
 * Every action is the daemon's (fs/scope_ops.h): only it holds the volume
 * key that authenticates a definition, and the scope's provider settings
 * go to it as text, never a secret (providers read secrets from files or
 * the environment, the daemon's).
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define ENVELOPEFS_SCOPE_OPS_TOOL_ONLY
#include "fs/scope_ops.h"
#include "fs/status.h"
#include "tools/ctl.h"
#include "tools/ctl_daemon.h"
#include "tools/ctl_scope.h"

static const char usage[] =
	"Usage: envelopefsctl scope create [--convert] --kms NAME [--kms-setting KEY=VALUE]... DIR\n"
	"       envelopefsctl scope list MOUNTPOINT\n"
	"       envelopefsctl scope lock DIR\n"
	"       envelopefsctl scope shred [--yes] DIR\n"
	"\n"
	"Key scopes of a mounted volume (root only).  create makes the empty directory\n"
	"DIR the root of a key scope whose files' keys, names, symlink targets and xattrs\n"
	"are wrapped by its own KMS (the provider NAME with its settings, as in [kms];\n"
	"secrets come from files or the daemon's environment, never from here).  list\n"
	"shows each scope's directory, provider, key reference and whether it is\n"
	"unlocked.  lock drops the scope's cached keys at once: the next use asks its\n"
	"KMS again.  shred destroys the scope's master key in its KMS (a local keyring\n"
	"overwritten and removed, a Vault key deleted, an AWS key disabled and its\n"
	"deletion scheduled, a PKCS#11 token's or a KMIP server's key objects destroyed,\n"
	"an Azure key disabled, deleted and purged, a Cloud KMS key's versions scheduled\n"
	"for destruction): nothing under DIR decrypts again, offline tools included.\n"
	"With --convert, create makes a non-empty DIR a scope online: every name,\n"
	"symlink target and xattr under it is sealed anew under the scope's key and\n"
	"every file re-keyed under its KMS; run again, it resumes an interrupted run.\n"
	"Nested scopes, and hard links across DIR's boundary, are refused.\n"
	"\n"
	"Options:\n"
	"  --kms NAME              the scope's provider (local, pkcs11, aws, vault, ...)\n"
	"  --kms-setting KEY=VALUE one provider setting (repeatable)\n"
	"  --convert               (create) convert a non-empty DIR, or resume converting it\n"
	"  --yes                   (shred) do not ask; without it shred asks on a terminal\n"
	"  -h, --help              show this help\n";

/* open_dir - @path as an open directory of a mount.  fd or -1 (reported). */
static int open_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		ctl_err(CTL_FAILED, "%s: %s", path, strerror(errno));
	return fd;
}

static int daemon_error(const char *path, int err)
{
	switch (err) {
	case ENOTTY:
		return ctl_err(CTL_FAILED, "%s: not on a mounted envelopefs volume", path);
	case ENOTEMPTY:
		return ctl_err(CTL_FAILED, "%s: not empty: give --convert to convert what it holds "
					   "into the scope (every file is re-keyed)",
			       path);
	case EMLINK:
		return ctl_err(CTL_FAILED, "%s: holds a symlink with hard links, which cannot be "
					   "converted (the daemon's log names it)",
			       path);
	case EEXIST:
		return ctl_err(CTL_FAILED, "%s: already a key scope", path);
	case EINVAL:
		return ctl_err(CTL_FAILED, "%s: refused: nested scope, the volume's root, a "
					   "volume without encrypted names, a master key already in "
					   "use, key records too large for the volume's header slots, "
					   "or bad settings (the daemon's log says which)",
			       path);
	case EACCES:
		return ctl_err(CTL_KEY, "%s: the scope's KMS refused (the daemon's log says why)",
			       path);
	case EBUSY:
		return ctl_err(CTL_FAILED, "%s: the key scope is being converted: finish that first "
					   "(scope create --convert)",
			       path);
	case EIO:
		return ctl_err(CTL_FAILED, "%s: the daemon failed (its log says why)", path);
	default:
		return ctl_err(CTL_FAILED, "%s: %s", path, strerror(err));
	}
}

int ctl_scope_error(const char *path, int err)
{
	return daemon_error(path, err);
}

/*
 * json_field - the value of "@name": after @from (the daemon's own JSON, whose
 * strings here hold no escaped quote) into @out; a pointer to it, or NULL.
 */
static const char *json_field(const char *from, const char *name, char *out, size_t cap)
{
	char pat[64];
	const char *p;
	size_t n;

	snprintf(pat, sizeof(pat), "\"%s\":", name);
	p = strstr(from, pat);
	if (!p)
		return NULL;
	p += strlen(pat);
	if (*p == '"')
		p++;
	n = strcspn(p, "\",}");
	snprintf(out, cap, "%.*s", (int)(n < cap ? n : cap - 1), p);
	return p;
}

/* mount_root - the root of the mount holding @dir into @out (PATH_MAX).  0 or -errno. */
static int mount_root(const char *dir, char *out)
{
	struct stat st, up;
	char *slash;

	if (!realpath(dir, out) || stat(out, &st) < 0)
		return -errno;
	while ((slash = strrchr(out, '/')) && slash != out) {
		*slash = '\0';
		if (stat(out, &up) < 0 || up.st_dev != st.st_dev) {
			*slash = '/'; /* @out was the root */
			break;
		}
		st = up;
	}
	return 0;
}

/*
 * mark_volume - before the first scope: `scopes = true` in the configuration
 * of the volume mounted at the mount holding @dir, sealed under its volume
 * key (which this tool unwraps through the volume's KMS, as `pin` does) and
 * pinned on this host (docs/FORMAT.md, "Key scopes").  A CTL_* code.
 */
static int mark_volume(const char *dir)
{
	static char status[65536];
	char root[PATH_MAX], backing[PATH_MAX], conf[PATH_MAX + 32], err[1024];
	dictionary *kms = NULL, *previous = NULL;
	struct volume_config cfg;
	ssize_t len;
	int rc, code = CTL_OK;

	if (mount_root(dir, root) < 0)
		return ctl_err(CTL_FAILED, "%s: %s", dir, strerror(errno));
	len = getxattr(root, STATUS_XATTR, status, sizeof(status) - 1);
	if (len < 0)
		return ctl_err(CTL_FAILED, "%s: not on a mounted envelopefs volume", dir);
	status[len] = '\0';
	if (!json_field(status, "backing", backing, sizeof(backing)))
		return ctl_err(CTL_FAILED, "%s: the daemon does not name its backing directory", root);
	snprintf(conf, sizeof(conf), "%s/%s", backing, VOLUME_CONFIG_NAME);
	rc = volume_config_load(conf, &cfg, err, sizeof(err));
	if (rc < 0)
		return ctl_err(CTL_FAILED, "%s", err);
	if (cfg.scopes)
		goto out;
	if (!volume_config_sealed(&cfg)) {
		code = ctl_err(CTL_FAILED, "%s: key scopes need a volume of format_version 2 with "
					   "names = encrypted", backing);
		goto out;
	}
	cfg.scopes = true;
	kms = volume_kms_settings(cfg.ini, "kms");
	if (iniparser_find_entry(cfg.ini, VOLUME_KMS_PREVIOUS))
		previous = volume_kms_settings(cfg.ini, VOLUME_KMS_PREVIOUS);
	code = kms ? ctl_config_seal(backing, &cfg, kms, previous)
		   : ctl_err(CTL_FAILED, "out of memory");
	if (code == CTL_OK && (rc = volume_config_replace(conf, &cfg, kms, previous)) < 0)
		code = ctl_err(CTL_FAILED, "cannot replace %s: %s", conf, strerror(-rc));
	if (code == CTL_OK)
		ctl_pin_record(backing);
out:
	if (kms)
		iniparser_freedict(kms);
	if (previous)
		iniparser_freedict(previous);
	volume_config_free(&cfg);
	return code;
}

int ctl_scope_target(const char *dir, uint32_t *version, char *key_ref, size_t ref_cap,
		     char uuid[37])
{
	static char status[65536];
	char root[PATH_MAX], record[512];
	ssize_t len;
	int ret;

	if (getxattr(dir, SCOPE_XATTR, record, sizeof(record)) < 0)
		return errno == ENODATA ? ctl_err(CTL_USAGE, "%s: not the root of a key scope", dir)
					: daemon_error(dir, errno);
	ret = ctl_daemon_ioctl(dir, ENVELOPEFS_IOC_SCOPE_VERSION);
	if (ret < 0)
		return daemon_error(dir, -ret);
	*version = (uint32_t)ret;
	/* The scope root describes its scope key's record as the mount root the volume key's. */
	len = getxattr(dir, KEY_XATTR, record, sizeof(record) - 1);
	if (len < 0)
		return daemon_error(dir, errno);
	record[len] = '\0';
	if (sscanf(record, "%*u %511s", record) != 1 || strlen(record) >= ref_cap)
		return ctl_err(CTL_FAILED, "%s: the daemon describes no scope key", dir);
	snprintf(key_ref, ref_cap, "%s", record);
	if (mount_root(dir, root) < 0 ||
	    (len = getxattr(root, STATUS_XATTR, status, sizeof(status) - 1)) < 0)
		return ctl_err(CTL_FAILED, "%s: cannot read the volume's status", dir);
	status[len] = '\0';
	if (!json_field(status, "volume", record, sizeof(record)) || strlen(record) != 36)
		return ctl_err(CTL_FAILED, "%s: the daemon's status names no volume", root);
	memcpy(uuid, record, 37);
	return CTL_OK;
}

/* move_settings - the canonical [kms] settings of INI file @config into @out.  A CTL_* code. */
static int move_settings(const char *config, char *out, size_t cap)
{
	dictionary *ini = iniparser_load(config);
	const char **keys = NULL;
	char err[512];
	int n, code = CTL_OK;

	if (!ini)
		return ctl_err(CTL_USAGE, "--to-kms %s: not a readable INI file", config);
	n = iniparser_getsecnkeys(ini, "kms");
	if (iniparser_getnsec(ini) != 1 || n <= 0)
		code = ctl_err(CTL_USAGE, "--to-kms %s: wants exactly one section, [kms], with the "
					  "scope's new provider and its settings", config);
	else if (!(keys = calloc((size_t)n, sizeof(*keys))))
		code = ctl_err(CTL_FAILED, "out of memory");
	else
		iniparser_getseckeys(ini, "kms", keys);
	for (int i = 0; keys && i < n && code == CTL_OK; i++)
		if (ctl_secret_setting(keys[i] + 4))
			code = ctl_err(CTL_USAGE, "--to-kms %s: [kms] %s is a secret: give its file "
						  "(%s_file) or the provider's environment variable",
				       config, keys[i] + 4, keys[i] + 4);
	if (code == CTL_OK && scope_settings_canon(ini, out, cap, err, sizeof(err)) < 0)
		code = ctl_err(CTL_USAGE, "--to-kms %s: %s", config, err);
	free(keys);
	iniparser_freedict(ini);
	return code;
}

int ctl_scope_move_start(const char *dir, const char *config)
{
	struct scope_create_arg *arg = calloc(1, sizeof(*arg));
	int fd = -1, rc, code;

	if (!arg)
		return ctl_err(CTL_FAILED, "out of memory");
	code = move_settings(config, arg->settings, sizeof(arg->settings));
	if (code == CTL_OK && (fd = open_dir(dir)) < 0)
		code = CTL_FAILED;
	if (code == CTL_OK) {
		rc = ioctl(fd, ENVELOPEFS_IOC_SCOPE_MOVE, arg);
		if (rc < 0 && errno == EBUSY)
			code = ctl_err(CTL_FAILED, "%s: the scope is moving to another KMS already: "
						   "finish that move first", dir);
		else if (rc < 0)
			code = daemon_error(dir, errno);
		else
			fprintf(stderr, "envelopefsctl rotate: %s: %s\n", dir,
				rc == 1 ? "resuming the move to the new KMS"
					: "the scope key is the new KMS's; moving the files");
	}
	if (fd >= 0)
		close(fd);
	free(arg);
	return code;
}

int ctl_scope_move_end(const char *dir)
{
	int rc = ctl_daemon_ioctl(dir, ENVELOPEFS_IOC_SCOPE_MOVE_END);

	if (rc < 0)
		return daemon_error(dir, -rc);
	printf("%s: the scope has moved: its previous KMS is needed no more\n", dir);
	return CTL_OK;
}

static int scope_create(const char *dir, const char *provider, char **settings, int n,
			bool convert)
{
	struct scope_create_arg *arg = calloc(1, sizeof(*arg));
	dictionary *ini = dictionary_new(0);
	char err[512], key[512];
	int fd = -1, rc = CTL_OK;

	if (!arg || !ini || iniparser_set(ini, "kms", NULL) != 0 ||
	    iniparser_set(ini, "kms:provider", provider) != 0) {
		rc = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	for (int i = 0; i < n; i++) {
		const char *eq = strchr(settings[i], '=');

		if (!eq || eq == settings[i] || strncmp(settings[i], "provider=", 9) == 0) {
			rc = ctl_err(CTL_USAGE, "--kms-setting %s: want KEY=VALUE (and --kms for the "
						"provider)", settings[i]);
			goto out;
		}
		snprintf(key, sizeof(key), "kms:%.*s", (int)(eq - settings[i]), settings[i]);
		iniparser_set(ini, key, eq + 1);
	}
	if (scope_settings_canon(ini, arg->settings, sizeof(arg->settings), err, sizeof(err)) <
	    0) {
		rc = ctl_err(CTL_USAGE, "%s", err);
		goto out;
	}
	fd = open_dir(dir);
	if (fd < 0) {
		rc = CTL_FAILED;
		goto out;
	}
	rc = mark_volume(dir);
	if (rc != CTL_OK)
		goto out;
	if (convert)
		rc = ctl_scope_convert(dir, fd, arg);
	else if (ioctl(fd, ENVELOPEFS_IOC_SCOPE_CREATE, arg) < 0)
		rc = daemon_error(dir, errno);
	else
		printf("%s: key scope created (%s)\n", dir, provider);
out:
	if (fd >= 0)
		close(fd);
	if (ini)
		iniparser_freedict(ini);
	free(arg);
	return rc;
}

static int scope_lock_dir(const char *dir)
{
	int fd = open_dir(dir), rc = CTL_OK;

	if (fd < 0)
		return CTL_FAILED;
	if (ioctl(fd, ENVELOPEFS_IOC_SCOPE_LOCK) < 0)
		rc = errno == EINVAL ? ctl_err(CTL_FAILED, "%s: not the root of a key scope", dir)
				     : daemon_error(dir, errno);
	else
		printf("%s: key scope locked\n", dir);
	close(fd);
	return rc;
}

/* confirmed - whether the operator typed "yes" on the terminal for shredding @dir. */
static bool confirmed(const char *dir)
{
	char answer[16];

	fprintf(stderr, "Shred the master key of key scope %s? Nothing under it will ever decrypt "
			"again. Type yes to go on: ", dir);
	return fgets(answer, sizeof(answer), stdin) && strcmp(answer, "yes\n") == 0;
}

static int scope_shred_dir(const char *dir, bool yes)
{
	int fd, rc = CTL_OK;

	if (!yes && !isatty(STDIN_FILENO))
		return ctl_err(CTL_USAGE, "%s: shred destroys the scope's key for good: give --yes "
					  "(or run it on a terminal, which asks)", dir);
	if (!yes && !confirmed(dir))
		return ctl_err(CTL_FAILED, "%s: not shredded", dir);
	fd = open_dir(dir);
	if (fd < 0)
		return CTL_FAILED;
	if (ioctl(fd, ENVELOPEFS_IOC_SCOPE_SHRED) < 0) {
		if (errno == EINVAL)
			rc = ctl_err(CTL_FAILED, "%s: not the root of a key scope", dir);
		else if (errno == EOPNOTSUPP)
			rc = ctl_err(CTL_FAILED, "%s: the scope's provider cannot destroy its key: "
						 "destroy it in the KMS, then `scope lock` it", dir);
		else if (errno == EPERM)
			rc = ctl_err(CTL_FAILED, "%s: the scope's KMS refuses to destroy the key as "
						 "configured (the daemon's log says what to do)", dir);
		else
			rc = daemon_error(dir, errno);
	} else {
		printf("%s: key scope shredded: nothing under it decrypts again\n", dir);
	}
	close(fd);
	return rc;
}

/* The scope roots found by the walk: ID -> path. */
static struct {
	char id[SCOPE_ID_TEXT + 1];
	char *path;
} found[1024];
static size_t n_found;

static int visit(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	char id[SCOPE_ID_TEXT + 1];
	ssize_t len;

	(void)st;
	(void)ftw;
	if (type != FTW_D)
		return FTW_CONTINUE;
	len = getxattr(path, SCOPE_XATTR, id, sizeof(id) - 1);
	if (len != SCOPE_ID_TEXT || n_found == sizeof(found) / sizeof(found[0]))
		return FTW_CONTINUE;
	id[len] = '\0';
	memcpy(found[n_found].id, id, sizeof(id));
	found[n_found++].path = strdup(path);
	return FTW_SKIP_SUBTREE; /* no nested scopes */
}

static int scope_list(const char *mountpoint)
{
	static char status[65536];
	const char *p;
	ssize_t len = getxattr(mountpoint, STATUS_XATTR, status, sizeof(status) - 1);

	if (len < 0)
		return ctl_err(CTL_FAILED, "%s: %s", mountpoint,
			       errno == ENODATA || errno == ENOTSUP ? "not an envelopefs mount point"
								    : strerror(errno));
	status[len] = '\0';
	p = strstr(status, "\"scopes\":{");
	if (!p)
		return ctl_err(CTL_FAILED, "%s: the daemon does not list key scopes", mountpoint);
	nftw(mountpoint, visit, 16, FTW_PHYS | FTW_MOUNT | FTW_ACTIONRETVAL);
	printf("%-22s  %-8s  %-8s  %-40s  %s\n", "SCOPE", "STATE", "PROVIDER", "KEY", "DIRECTORY");
	p += strlen("\"scopes\":{");
	/* Each scope is "ID":{...}: the daemon's own JSON, IDs base64url. */
	while (*p == '"' || *p == ',') {
		char id[64], provider[64], ref[256], unlocked[8], converting[8] = "";
		const char *dir = "(not found)";

		p += *p == ',';
		snprintf(id, sizeof(id), "%.*s", (int)strcspn(p + 1, "\""), p + 1);
		json_field(p, "provider", provider, sizeof(provider));
		json_field(p, "key_ref", ref, sizeof(ref));
		json_field(p, "unlocked", unlocked, sizeof(unlocked));
		json_field(p, "converting", converting, sizeof(converting));
		for (size_t i = 0; i < n_found; i++)
			if (strcmp(found[i].id, id) == 0)
				dir = found[i].path;
		printf("%-22s  %-8s  %-8s  %-40s  %s\n", id,
		       strcmp(converting, "true") == 0 ? "converting"
		       : strcmp(unlocked, "true") == 0 ? "unlocked"
						       : "locked",
		       provider, ref, dir);
		p = strchr(p, '}');
		if (!p)
			break;
		p++;
	}
	for (size_t i = 0; i < n_found; i++)
		free(found[i].path);
	return CTL_OK;
}

int cmd_scope(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kms", required_argument, NULL, 'k' },
		{ "kms-setting", required_argument, NULL, 's' },
		{ "yes", no_argument, NULL, 'y' },
		{ "convert", no_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool yes = false, convert = false;
	char **settings = calloc((size_t)argc, sizeof(*settings));
	const char *provider = NULL, *action;
	int c, n = 0, rc;

	if (!settings)
		return ctl_err(CTL_FAILED, "out of memory");
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		if (c == 'k') {
			provider = optarg;
		} else if (c == 's') {
			settings[n++] = optarg;
		} else if (c == 'y') {
			yes = true;
		} else if (c == 'c') {
			convert = true;
		} else {
			free(settings);
			return ctl_usage(usage, c == 'h');
		}
	}
	if (argc - optind != 2) {
		free(settings);
		return ctl_usage(usage, false);
	}
	action = argv[optind];
	if (strcmp(action, "create") == 0 && provider && !yes)
		rc = scope_create(argv[optind + 1], provider, settings, n, convert);
	else if (convert)
		rc = ctl_usage(usage, false);
	else if (strcmp(action, "list") == 0 && !provider && n == 0 && !yes)
		rc = scope_list(argv[optind + 1]);
	else if (strcmp(action, "lock") == 0 && !provider && n == 0 && !yes)
		rc = scope_lock_dir(argv[optind + 1]);
	else if (strcmp(action, "shred") == 0 && !provider && n == 0)
		rc = scope_shred_dir(argv[optind + 1], yes);
	else
		rc = ctl_usage(usage, false);
	free(settings);
	return rc;
}
