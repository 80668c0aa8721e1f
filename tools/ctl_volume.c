// SPDX-License-Identifier: MIT
/* envelopefsctl init|info: creating and describing a volume. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/random.h"
#include "crypto/record.h"
#include "fs/backing.h"
#include "fs/names.h"
#include "crypto/secmem.h"
#include "fs/confmac.h"
#include "fs/volkey.h"
#include "kms/keyring.h"
#include "crypto/hex.h"
#include "tools/ctl.h"

static const char init_usage[] =
	"Usage: envelopefsctl init [OPTIONS] BACKING\n"
	"\n"
	"Make the empty directory BACKING (created if missing) an envelopefs volume:\n"
	"write BACKING/" VOLUME_CONFIG_NAME " with a random volume UUID.  With the local\n"
	"provider, the keyring is created if it does not exist (passphrase-protected\n"
	"when a passphrase is given) and must live outside BACKING.  Other providers\n"
	"take their settings from --kms-setting and must be reachable: init opens the\n"
	"KMS and reads the master key's current version.  init tries out what the\n"
	"backing file system can do (in a hidden directory it removes again) and prints\n"
	"a \"backing:\" line for each missing feature and the fallback used instead.\n"
	"\n"
	"Options:\n"
	"  --kms NAME              key-management provider (default: local)\n"
	"  --kms-setting KEY=VALUE a provider setting for the [kms] section, repeatable\n"
	"                          (references only: secrets go in files or the\n"
	"                          environment, so *_file settings name them)\n"
	"  --keyring PATH          local keyring file (default:\n"
	"                          $XDG_CONFIG_HOME/envelopefs/<name of BACKING>.keyring,\n"
	"                          $XDG_CONFIG_HOME defaulting to $HOME/.config)\n"
	"  --header file|xattr     where per-file key records live: a header at the start\n"
	"                          of each backing file (default) or the xattr\n"
	"                          " VOLUME_XATTR_NAME " (refused where the backing file\n"
	"                          system's user xattrs cannot hold a key record)\n"
	"  --block-size N          content block size, a power of two from 4096 to 65536\n"
	"                          (default 4096)\n"
	"  --passphrase-file FILE  passphrase for a new keyring, or of an existing one;\n"
	"                          recorded in the volume as kms:passphrase_file\n"
	"  --names encrypted|plain file names, symlink targets and user xattrs encrypted\n"
	"                          with a volume key (default), or stored as they are\n"
	"  -h, --help              show this help\n"
	"\n" CTL_PASSPHRASE_HELP;

static const char info_usage[] =
	"Usage: envelopefsctl info [OPTIONS] BACKING\n"
	"\n"
	"Show the volume's format parameters and KMS settings (references only: the\n"
	"configuration never holds a secret), then the backing file system: its name,\n"
	"whether it is shared (network or FUSE), and a \"backing:\" line for each\n"
	"missing feature and its fallback, found by trying each once in a hidden\n"
	"directory removed again (\"not probed\" when the backing is read-only).\n"
	"\n"
	"Options:\n"
	"  --kms                   also open the KMS and show the key reference and the\n"
	"                          current master-key version (needs the passphrase of a\n"
	"                          protected keyring)\n"
	"  --passphrase-file FILE  read the keyring passphrase from FILE (with --kms)\n"
	"  -h, --help              show this help\n";

#define MAX_KMS_SETTINGS 32

struct init_opts {
	const char *kms;
	const char *kms_settings[MAX_KMS_SETTINGS]; /* "KEY=VALUE", as given */
	size_t n_kms_settings;
	const char *keyring;
	const char *pass_file;
	const char *backing;
	enum record_placement placement;
	uint32_t block_size;
	bool plain_names;
};

/* check_backing - BACKING must be (or become) an empty directory.  A CTL_* code. */
static int check_backing(const char *backing, char *abs)
{
	struct dirent *de;
	DIR *dir;

	if (mkdir(backing, 0700) < 0 && errno != EEXIST)
		return ctl_err(CTL_FAILED, "cannot create %s: %s", backing, strerror(errno));
	if (!realpath(backing, abs))
		return ctl_err(CTL_FAILED, "%s: %s", backing, strerror(errno));
	dir = opendir(abs);
	if (!dir)
		return ctl_err(CTL_FAILED, "%s: %s", backing, strerror(errno));
	while ((de = readdir(dir)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		bool is_volume = strcmp(de->d_name, VOLUME_CONFIG_NAME) == 0;

		closedir(dir);
		if (is_volume)
			return ctl_err(CTL_FAILED, "%s is already an envelopefs volume (%s exists)",
				       backing, VOLUME_CONFIG_NAME);
		return ctl_err(CTL_FAILED, "%s is not empty: init needs an empty directory",
			       backing);
	}
	closedir(dir);
	return CTL_OK;
}

/*
 * keyring_location - the absolute keyring path in @out (PATH_MAX bytes):
 * --keyring or the default; its directory must exist (the default one is
 * created 0700) and it must not lie inside @backing.
 */
static int keyring_location(const char *opt, const char *backing, char *out)
{
	char want[PATH_MAX], dir_abs[PATH_MAX], *copy, *base;
	const char *conf = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");
	size_t blen = strlen(backing);
	int n;

	if (opt) {
		n = snprintf(want, sizeof(want), "%s", opt);
	} else {
		char conf_dir[PATH_MAX];

		if ((!conf || conf[0] != '/') && (!home || home[0] != '/'))
			return ctl_err(CTL_USAGE, "neither XDG_CONFIG_HOME nor HOME is set: give "
				       "--keyring PATH");
		if (conf && conf[0] == '/')
			snprintf(conf_dir, sizeof(conf_dir), "%s", conf);
		else
			snprintf(conf_dir, sizeof(conf_dir), "%s/.config", home);
		mkdir(conf_dir, 0700);
		n = snprintf(want, sizeof(want), "%s/envelopefs", conf_dir);
		if (n > 0 && (size_t)n < sizeof(want) && mkdir(want, 0700) < 0 && errno != EEXIST)
			return ctl_err(CTL_FAILED, "cannot create %s: %s", want, strerror(errno));
		copy = strdup(backing);
		if (!copy)
			return ctl_err(CTL_FAILED, "out of memory");
		n = snprintf(want + n, sizeof(want) - (size_t)n, "/%s.keyring", basename(copy)) + n;
		free(copy);
	}
	if (n < 0 || (size_t)n >= sizeof(want))
		return ctl_err(CTL_USAGE, "keyring path too long");

	/* An existing keyring may be a symlink: judge where it really is. */
	if (realpath(want, out))
		goto check;
	copy = strdup(want);
	if (!copy)
		return ctl_err(CTL_FAILED, "out of memory");
	if (!realpath(dirname(copy), dir_abs)) {
		free(copy);
		return ctl_err(CTL_FAILED, "cannot use keyring %s: its directory: %s", want,
			       strerror(errno));
	}
	free(copy);
	copy = strdup(want);
	base = copy ? basename(copy) : NULL;
	if (!base || (size_t)snprintf(out, PATH_MAX, "%s/%s", strcmp(dir_abs, "/") ? dir_abs : "",
				      base) >= PATH_MAX) {
		free(copy);
		return ctl_err(CTL_USAGE, "keyring path too long");
	}
	free(copy);
check:
	if (strncmp(out, backing, blen) == 0 && (out[blen] == '/' || out[blen] == '\0'))
		return ctl_err(CTL_USAGE,
			       "keyring %s is inside the backing directory %s: keep the keyring "
			       "apart from the data it protects (choose another --keyring)",
			       out, backing);
	return CTL_OK;
}

/* open_keyring - load or create the keyring.  *@created says which.  A CTL_* code. */
static int open_keyring(const char *path, const char *pass_file, struct keyring **kr,
			bool *created)
{
	char err[1024], *pass = NULL;
	size_t pass_len = 0;
	struct stat sb;
	int rc;

	rc = keyring_passphrase(pass_file, &pass, &pass_len, err, sizeof(err));
	if (rc < 0)
		return ctl_err(CTL_KEY, "%s", err);
	*created = stat(path, &sb) < 0 && errno == ENOENT;
	if (*created)
		rc = keyring_create(path, pass, pass_len, NULL, kr, err, sizeof(err));
	else
		rc = keyring_load(path, pass, pass_len, kr, err, sizeof(err));
	keyring_passphrase_free(pass);
	if (rc < 0)
		return ctl_err(*created ? CTL_FAILED : CTL_KEY, "%s", err);
	return CTL_OK;
}

/*
 * probe_backing - what the file system of the directory @backing can do
 * (fs/backing.h: tried in a hidden scratch directory, removed again).
 * 0 or -errno.
 */
static int probe_backing(const char *backing, struct backing_caps *caps)
{
	int fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	*caps = (struct backing_caps){ .fs_name = "unknown" };
	if (fd < 0)
		return -errno;
	ret = backing_probe(fd, caps);
	close(fd);
	return ret;
}

/* print_fallbacks - "backing: LINE" for each feature the backing lacks; how many. */
static int print_fallbacks(const struct backing_caps *caps)
{
	char lines[4096], *line, *end;
	int n = 0;

	backing_fallbacks(caps, lines, sizeof(lines));
	for (line = lines; (end = strchr(line, '\n')) != NULL; line = end + 1, n++)
		printf("backing: %.*s\n", (int)(end - line), line);
	return n;
}

static int parse_init(int argc, char **argv, struct init_opts *o)
{
	static const struct option opts[] = {
		{ "kms", required_argument, NULL, 'k' },
		{ "kms-setting", required_argument, NULL, 's' },
		{ "keyring", required_argument, NULL, 'r' },
		{ "header", required_argument, NULL, 'H' },
		{ "block-size", required_argument, NULL, 'b' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "names", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	unsigned long bs;
	int c;

	*o = (struct init_opts){ .kms = "local", .placement = PLACEMENT_HEADER,
				 .block_size = VOLUME_DEFAULT_BLOCK };
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			o->kms = optarg;
			break;
		case 's':
			if (o->n_kms_settings == MAX_KMS_SETTINGS)
				return ctl_err(CTL_USAGE, "at most %d --kms-setting options",
					       MAX_KMS_SETTINGS);
			o->kms_settings[o->n_kms_settings++] = optarg;
			break;
		case 'r':
			o->keyring = optarg;
			break;
		case 'H':
			if (strcmp(optarg, "file") == 0 || strcmp(optarg, "header") == 0)
				o->placement = PLACEMENT_HEADER;
			else if (strcmp(optarg, "xattr") == 0)
				o->placement = PLACEMENT_XATTR;
			else
				return ctl_err(CTL_USAGE, "--header must be 'file' or 'xattr'");
			break;
		case 'b':
			errno = 0;
			bs = strtoul(optarg, &end, 10);
			if (errno || *end || bs < VOLUME_MIN_BLOCK || bs > VOLUME_MAX_BLOCK ||
			    (bs & (bs - 1)))
				return ctl_err(CTL_USAGE,
					       "--block-size must be a power of two from %d to %d",
					       VOLUME_MIN_BLOCK, VOLUME_MAX_BLOCK);
			o->block_size = (uint32_t)bs;
			break;
		case 'p':
			o->pass_file = optarg;
			break;
		case 'n':
			if (strcmp(optarg, "encrypted") != 0 && strcmp(optarg, "plain") != 0)
				return ctl_err(CTL_USAGE, "--names must be 'encrypted' or 'plain'");
			o->plain_names = strcmp(optarg, "plain") == 0;
			break;
		case 'h':
			ctl_usage(init_usage, true);
			return -1;
		default:
			return ctl_usage(init_usage, false);
		}
	}
	if (argc - optind != 1)
		return ctl_usage(init_usage, false);
	o->backing = argv[optind];
	if (strcmp(o->kms, "local") == 0 && o->n_kms_settings)
		return ctl_err(CTL_USAGE, "the local provider takes --keyring and "
			       "--passphrase-file, not --kms-setting");
	if (strcmp(o->kms, "local") != 0 && (o->keyring || o->pass_file))
		return ctl_err(CTL_USAGE, "--keyring and --passphrase-file are for --kms local");
	return CTL_OK;
}

bool ctl_secret_setting(const char *key)
{
	static const char *const secrets[] = { "token", "pin", "password", "passphrase",
					       "secret", "secret_access_key", "session_token",
					       "client_secret", "private_key" };
	size_t i;

	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (strcasecmp(key, secrets[i]) == 0)
			return true;
	return false;
}

/* remote_settings - "kms:provider" = @o->kms plus every --kms-setting.  A CTL_* code. */
static int remote_settings(const struct init_opts *o, dictionary *settings)
{
	char key[160];
	size_t i;

	iniparser_set(settings, "kms:provider", o->kms);
	for (i = 0; i < o->n_kms_settings; i++) {
		const char *kv = o->kms_settings[i], *eq = strchr(kv, '=');
		size_t klen = eq ? (size_t)(eq - kv) : 0;

		if (!eq || klen == 0 || klen + 5 >= sizeof(key) || strcspn(kv, ":;#[] \t") < klen)
			return ctl_err(CTL_USAGE, "--kms-setting wants KEY=VALUE, got '%s'", kv);
		snprintf(key, sizeof(key), "kms:%.*s", (int)klen, kv);
		if (ctl_secret_setting(key + 4))
			return ctl_err(CTL_USAGE,
				       "--kms-setting %s would put a secret on the command line "
				       "and in the volume configuration: give its file (%s_file) or "
				       "the provider's environment variable instead",
				       key + 4, key + 4);
		if (strcmp(key + 4, "provider") == 0 || iniparser_find_entry(settings, key))
			return ctl_err(CTL_USAGE, "--kms-setting %.*s given twice (or as provider)",
				       (int)klen, kv);
		iniparser_set(settings, key, eq + 1);
	}
	return CTL_OK;
}

/* local_settings - create or load the keyring and describe it in @settings.  A CTL_* code. */
static int local_settings(const struct init_opts *o, const char *backing, dictionary *settings,
			  char *keyring, bool *created)
{
	char id[2 * KEYRING_ID_LEN + 1], pass_abs[PATH_MAX];
	struct keyring *kr = NULL;
	int rc;

	rc = keyring_location(o->keyring, backing, keyring);
	if (rc == CTL_OK && o->pass_file && !realpath(o->pass_file, pass_abs))
		rc = ctl_err(CTL_KEY, "passphrase file %s: %s", o->pass_file, strerror(errno));
	if (rc == CTL_OK)
		rc = open_keyring(keyring, o->pass_file, &kr, created);
	if (rc != CTL_OK)
		return rc;
	hex_encode(keyring_id(kr), KEYRING_ID_LEN, id);
	keyring_free(kr); /* kms_open loads it again, as a mount will */
	iniparser_set(settings, "kms:provider", "local");
	iniparser_set(settings, "kms:keyring", keyring);
	iniparser_set(settings, "kms:keyring_id", id);
	if (o->pass_file)
		iniparser_set(settings, "kms:passphrase_file", pass_abs);
	return CTL_OK;
}

/*
 * make_volume_key - the volume key and the root's directory ID, written
 * before the configuration: a volume whose configuration exists is whole.
 */
static int make_volume_key(const char *backing, const struct volume_config *cfg,
			   struct kms *kms, uint8_t *key)
{
	int fd = open(backing, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc;

	if (fd < 0)
		return ctl_err(CTL_FAILED, "%s: %s", backing, strerror(errno));
	rc = volkey_create(fd, cfg, kms, key);
	if (rc < 0) {
		close(fd);
		return ctl_err(rc == -EEXIST || rc == -EIO || rc == -ENOMEM ? CTL_FAILED : CTL_KEY,
			       "cannot make the volume key %s/%s: %s", backing, VOLKEY_NAME,
			       rc == -EEXIST ? strerror(EEXIST) : kms_strerror(rc));
	}
	rc = names_dirid_make(fd);
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	close(fd);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "cannot give %s its directory ID: %s", backing,
			       strerror(-rc));
	return CTL_OK;
}

/* rmdir_probe_home - remove the probe's directory (backing.h) from @backing, if empty. */
static void rmdir_probe_home(const char *backing)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", backing, VOLUME_PROBE_DIR) < (int)sizeof(path))
		rmdir(path);
}

int cmd_init(int argc, char **argv)
{
	char backing[PATH_MAX], keyring[PATH_MAX], conf[PATH_MAX + 32], uuid[37], err[1024];
	struct volume_config cfg = { .format_version = VOLUME_FORMAT_VERSION };
	struct kms *kms = NULL;
	dictionary *settings = NULL;
	struct backing_caps caps;
	struct init_opts o;
	const char *refusal;
	bool local, created = false;
	size_t record_len;
	uint32_t version;
	int rc;

	rc = parse_init(argc, argv, &o);
	if (rc != CTL_OK)
		return rc < 0 ? CTL_OK : rc;
	local = strcmp(o.kms, "local") == 0;
	rc = check_backing(o.backing, backing);
	if (rc != CTL_OK)
		return rc;
	/* Before any keyring is made: a backing that cannot be written fails here. */
	rc = probe_backing(backing, &caps);
	if (rc < 0) {
		rmdir_probe_home(backing);
		return ctl_err(CTL_FAILED, "cannot probe the file system of %s: %s", backing,
			       strerror(-rc));
	}
	settings = dictionary_new(0);
	if (!settings)
		return ctl_err(CTL_FAILED, "out of memory");
	iniparser_set(settings, "kms", NULL);
	rc = local ? local_settings(&o, backing, settings, keyring, &created)
		   : remote_settings(&o, settings);
	if (rc != CTL_OK)
		goto out;
	rc = kms_open(settings, &kms, err, sizeof(err));
	if (rc == -EINVAL && !local) {
		rc = ctl_err(CTL_USAGE, "%s", err); /* a bad --kms or --kms-setting */
		goto out;
	} else if (rc < 0) {
		rc = ctl_err(CTL_KEY, "%s", err);
		goto out;
	}
	/* A remote KMS proves here that it is reachable and holds the master key. */
	rc = kms_current_version(kms, &version);
	if (rc < 0) {
		rc = ctl_err(CTL_KEY, "KMS %s: cannot read the master key's version: %s", o.kms,
			     kms_strerror(rc));
		goto out;
	}

	cfg.block_size = o.block_size;
	cfg.placement = o.placement;
	if (o.placement == PLACEMENT_HEADER)
		cfg.header_size = 2 * (uint32_t)slot_size_for_version(
						   cfg.format_version, strlen(kms->key_ref), kms->max_blob_len);
	record_len = RECORD_FIXED_LEN + strlen(kms->key_ref) + kms->max_blob_len + RECORD_V3_EXTRA;
	refusal = backing_refusal(&caps, o.placement == PLACEMENT_XATTR, record_len);
	if (refusal) {
		char sizes[96] = "";

		if (caps.user_xattr)
			snprintf(sizes, sizeof(sizes),
				 ": user xattrs of up to %zu bytes, a key record takes %zu",
				 caps.xattr_max, record_len);
		rc = ctl_err(CTL_FAILED, "%s (%s%s): %s", backing, caps.fs_name, sizes, refusal);
		goto out;
	}
	rc = crypto_random(cfg.uuid, sizeof(cfg.uuid));
	if (rc < 0) {
		rc = ctl_err(CTL_FAILED, "cannot draw a volume UUID: %s", strerror(-rc));
		goto out;
	}
	cfg.uuid[6] = (cfg.uuid[6] & 0x0f) | 0x40; /* RFC 9562 version 4 */
	cfg.uuid[8] = (cfg.uuid[8] & 0x3f) | 0x80;
	cfg.names_encrypted = !o.plain_names;
	if (cfg.names_encrypted) {
		uint8_t *key = secmem_alloc(KMS_DEK_LEN);

		rc = key ? make_volume_key(backing, &cfg, kms, key)
			 : ctl_err(CTL_FAILED, "out of locked memory");
		/* The configuration is sealed under the key it comes with (confmac.h). */
		if (rc == CTL_OK && confmac_seal(&cfg, settings, NULL, key) < 0)
			rc = ctl_err(CTL_FAILED, "cannot seal the configuration");
		secmem_free(key, KMS_DEK_LEN);
	}
	if (rc != CTL_OK)
		goto out;
	snprintf(conf, sizeof(conf), "%s/%s", backing, VOLUME_CONFIG_NAME);
	rc = volume_config_write(conf, &cfg, settings);
	if (rc < 0) {
		rc = ctl_err(CTL_FAILED, "cannot write %s: %s%s", conf, strerror(-rc),
			     rc == -EEXIST ? " (already a volume)" : "");
		goto out;
	}
	ctl_pin_record(backing); /* an init is a deliberate (re-)creation at this path */
	uuid_format(cfg.uuid, uuid);
	printf("initialised envelopefs volume %s\n", backing);
	printf("  uuid:         %s\n", uuid);
	printf("  block size:   %u\n", cfg.block_size);
	if (cfg.placement == PLACEMENT_HEADER)
		printf("  key records:  header (%u bytes)\n", cfg.header_size);
	else
		printf("  key records:  xattr %s\n", VOLUME_XATTR_NAME);
	printf("  names:        %s\n", cfg.names_encrypted ? "encrypted" : "plain");
	if (local)
		printf("  keyring:      %s (%s)\n", keyring, created ? "created" : "existing");
	printf("  kms:          %s, master key version %u\n", o.kms, version);
	printf("  key ref:      %s\n", kms->key_ref);
	print_fallbacks(&caps);
	if (created)
		printf("Back up the keyring: without it the data cannot be decrypted.\n");
	rc = CTL_OK;
out:
	/* A refused init leaves the directory as it found it: empty. */
	if (rc != CTL_OK)
		rmdir_probe_home(backing);
	kms_close(kms);
	if (settings)
		iniparser_freedict(settings);
	return rc;
}

int cmd_info(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kms", no_argument, NULL, 'k' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *pass_file = NULL;
	bool open_kms = false;
	struct backing_caps caps;
	struct ctl_volume v;
	const char **keys;
	char uuid[37];
	uint32_t version;
	int c, i, n, rc;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			open_kms = true;
			break;
		case 'p':
			pass_file = optarg;
			break;
		case 'h':
			return ctl_usage(info_usage, true);
		default:
			return ctl_usage(info_usage, false);
		}
	}
	if (argc - optind != 1)
		return ctl_usage(info_usage, false);
	rc = ctl_volume_open(argv[optind], NULL, pass_file, open_kms, &v);
	if (rc != CTL_OK)
		return rc;
	uuid_format(v.cfg.uuid, uuid);
	printf("config:          %s\n", v.conf);
	printf("format version:  %u\n", v.cfg.format_version);
	printf("uuid:            %s\n", uuid);
	printf("block size:      %u\n", v.cfg.block_size);
	if (v.cfg.placement == PLACEMENT_HEADER)
		printf("key records:     header (%u bytes: 2 slots of %u)\n", v.cfg.header_size,
		       v.cfg.header_size / 2);
	else
		printf("key records:     xattr %s\n", VOLUME_XATTR_NAME);
	printf("names:           %s\n", v.cfg.names_encrypted ? "encrypted" : "plain");
	n = iniparser_getsecnkeys(v.cfg.ini, "kms");
	keys = n > 0 ? calloc((size_t)n, sizeof(*keys)) : NULL;
	if (keys) {
		iniparser_getseckeys(v.cfg.ini, "kms", keys);
		for (i = 0; i < n; i++)
			printf("kms %-12s %s\n", strchr(keys[i], ':') + 1,
			       iniparser_getstring(v.cfg.ini, keys[i], ""));
		free(keys);
	}
	if (v.kms) {
		printf("key reference:   %s\n", v.kms->key_ref);
		if (kms_current_version(v.kms, &version) == 0)
			printf("current version: %u\n", version);
	}
	ctl_volume_close(&v);
	rc = probe_backing(argv[optind], &caps);
	/* Whatever the probe found, statfs named the file system. */
	printf("backing fs:      %s\n", caps.fs_name);
	printf("backing shared:  %s\n", caps.shared ? "yes" : "no");
	if (rc == -EROFS || rc == -EACCES || rc == -EPERM || rc == -ENOSPC || rc == -EDQUOT) {
		/* A read-only or full backing is still worth describing. */
		printf("backing: not probed: %s\n", strerror(-rc));
		return CTL_OK;
	}
	if (rc < 0)
		return ctl_err(CTL_FAILED, "cannot probe the file system of %s: %s", argv[optind],
			       strerror(-rc));
	if (print_fallbacks(&caps) == 0)
		printf("backing: no fallbacks needed\n");
	return CTL_OK;
}
