/* SPDX-License-Identifier: MIT */
/*
 * Daemon settings: the [daemon] section of `-o config=FILE`, and the same
 * names as `-o NAME=VALUE` mount options.  One table says every setting's
 * name, accepted values, default and meaning; the INI reader, the mount
 * option parser, the defaults and `envelopefs --help` all read it, so a new
 * setting is one parse function and one line in the table.
 */
#include <errno.h>
#include <iniparser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envfs.h"
#include "log.h"
#include "shared.h"

static int parse_uint(const char *text, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (errno || end == text || *end || v > max || text[0] == '-')
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int parse_seconds(const char *text, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(text, &end);
	if (errno || end == text || *end || !(v >= 0 && v <= 86400))
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_bool(const char *text, bool *out)
{
	if (strcmp(text, "true") == 0 || strcmp(text, "yes") == 0 || strcmp(text, "1") == 0)
		*out = true;
	else if (strcmp(text, "false") == 0 || strcmp(text, "no") == 0 || strcmp(text, "0") == 0)
		*out = false;
	else
		return -EINVAL;
	return 0;
}

/* "auto", or a boolean as 0 or 1: the tri-state settings. */
static int parse_auto_bool(const char *text, int *out)
{
	bool on;

	if (strcmp(text, "auto") == 0) {
		*out = -1;
		return 0;
	}
	if (parse_bool(text, &on) < 0)
		return -EINVAL;
	*out = on;
	return 0;
}

static int set_cache_entries(struct envfs_settings *s, const char *v)
{
	return parse_uint(v, 1u << 24, &s->cache_entries);
}

static int set_cache_max_age(struct envfs_settings *s, const char *v)
{
	return parse_uint(v, 86400 * 365, &s->cache_max_age);
}

static int set_attr_timeout(struct envfs_settings *s, const char *v)
{
	return parse_seconds(v, &s->attr_timeout);
}

static int set_entry_timeout(struct envfs_settings *s, const char *v)
{
	return parse_seconds(v, &s->entry_timeout);
}

static int set_writeback_cache(struct envfs_settings *s, const char *v)
{
	return parse_bool(v, &s->writeback_cache);
}

static int set_xattrs(struct envfs_settings *s, const char *v)
{
	return parse_bool(v, &s->xattrs);
}

static int set_read_ahead_kb(struct envfs_settings *s, const char *v)
{
	return parse_uint(v, 1u << 20, &s->read_ahead_kb);
}

static int set_log_level(struct envfs_settings *s, const char *v)
{
	int level = log_level_parse(v);

	if (level < 0)
		return -EINVAL;
	s->log_level = level;
	return 0;
}

static int set_dek_pool(struct envfs_settings *s, const char *v)
{
	unsigned n_keys;

	if (strcmp(v, "auto") == 0) {
		s->dek_pool = -1;
		return 0;
	}
	if (parse_uint(v, 4096, &n_keys) < 0)
		return -EINVAL;
	s->dek_pool = (int)n_keys;
	return 0;
}

static int set_prefetch(struct envfs_settings *s, const char *v)
{
	return parse_auto_bool(v, &s->prefetch);
}

/* "auto" (0: half the open-file limit, at most 65536; fdcache.h) or N >= 1. */
static int set_max_fds(struct envfs_settings *s, const char *v)
{
	unsigned n;

	if (strcmp(v, "auto") == 0) {
		s->max_fds = 0;
		return 0;
	}
	if (parse_uint(v, 1u << 24, &n) < 0 || n == 0)
		return -EINVAL;
	s->max_fds = n;
	return 0;
}

/* N, 0 for no bound (inode_evict.h). */
static int set_max_inodes(struct envfs_settings *s, const char *v)
{
	return parse_uint(v, 1u << 30, &s->max_inodes);
}

static int set_rollback_sync_interval(struct envfs_settings *s, const char *v)
{
	return parse_uint(v, 86400, &s->rollback_sync_interval);
}

static int set_shared(struct envfs_settings *s, const char *v)
{
	int on;

	if (parse_auto_bool(v, &on) < 0)
		return -EINVAL;
	/* enum shared_setting has the tri-state's values: -1 auto, 0, 1. */
	s->shared = on;
	return 0;
}

/*
 * Every setting.  `values` is what --help and errors show; `fallback` is
 * the default, applied through `set` like any other value (so it must
 * parse: envfs_settings_defaults() relies on it).
 */
static const struct setting {
	const char *name;
	const char *values;
	const char *fallback;
	const char *meaning;
	int (*set)(struct envfs_settings *s, const char *value);
} settings[] = {
	{"cache_entries", "N", "4096", "DEKs kept after their files close",
	 set_cache_entries},
	{"cache_max_age", "SECONDS", "600", "an idle DEK leaves memory after this long",
	 set_cache_max_age},
	{"attr_timeout", "SECONDS", "1", "the kernel caches attributes this long", set_attr_timeout},
	{"entry_timeout", "SECONDS", "1", "the kernel caches names this long", set_entry_timeout},
	{"writeback_cache", "true|false", "true", "the kernel buffers and merges writes",
	 set_writeback_cache},
	{"xattrs", "true|false", "true",
	 "extended attributes (false: none, EOPNOTSUPP, as on vfat)", set_xattrs},
	{"read_ahead_kb", "KIB", "4096", "kernel read-ahead, 0: the kernel's own",
	 set_read_ahead_kb},
	{"log_level", "error|warning|notice|info|debug", "info", "least severe message logged",
	 set_log_level},
	{"dek_pool", "auto|N", "auto", "new-file keys made ahead (auto: by the KMS)",
	 set_dek_pool},
	{"prefetch", "auto|true|false", "auto",
	 "unwrap listed files' keys ahead (auto: remote KMS)", set_prefetch},
	{"shared", "auto|true|false", "auto",
	 "hosts share the volume (auto: network/FUSE backing)", set_shared},
	{"max_fds", "auto|N", "auto",
	 "inode descriptors kept open (auto: half the open-file limit, at most 65536)",
	 set_max_fds},
	{"max_inodes", "N", "65536",
	 "inodes kept for the kernel's cache (before Linux 6.18: beside directories "
	 "and open files), 0: no bound",
	 set_max_inodes},
	{"rollback_sync_interval", "SECONDS", "30",
	 "format 3: syncfs period for new file versions, 0: none", set_rollback_sync_interval},
};
#define N_SETTINGS (sizeof(settings) / sizeof(settings[0]))

static const struct setting *setting_find(const char *name)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		if (strcmp(settings[i].name, name) == 0)
			return &settings[i];
	return NULL;
}

bool envfs_setting_known(const char *name)
{
	return setting_find(name) != NULL;
}

void envfs_settings_defaults(struct envfs_settings *s)
{
	for (size_t i = 0; i < N_SETTINGS; i++)
		settings[i].set(s, settings[i].fallback);
}

int envfs_setting_set(struct envfs_settings *s, const char *name, const char *value, char *err,
		      size_t err_len)
{
	const struct setting *def = setting_find(name);
	size_t len;

	if (!def) {
		len = (size_t)snprintf(err, err_len, "unknown setting '%s' (known:", name);
		for (size_t i = 0; i < N_SETTINGS && len < err_len; i++)
			len += (size_t)snprintf(err + len, err_len - len, " %s", settings[i].name);
		if (len < err_len)
			snprintf(err + len, err_len - len, ")");
		return -ENOENT;
	}
	if (def->set(s, value) < 0) {
		snprintf(err, err_len, "%s = '%s' is not a valid value (%s)", name, value,
			 def->values);
		return -EINVAL;
	}
	return 0;
}

void envfs_settings_help(FILE *out)
{
	enum { COLUMN = 28 }; /* where the meaning starts, as in the rest of --help */

	for (size_t i = 0; i < N_SETTINGS; i++) {
		int width = fprintf(out, "    %s=%s", settings[i].name, settings[i].values);

		if (width >= COLUMN) {
			fputc('\n', out);
			width = 0;
		}
		fprintf(out, "%*s%s", COLUMN - width, "", settings[i].meaning);
		/* The default goes on a line of its own rather than past 80 columns. */
		if (COLUMN + strlen(settings[i].meaning) + strlen("; default ") +
			    strlen(settings[i].fallback) > 80)
			fprintf(out, "\n%*sdefault %s\n", COLUMN, "", settings[i].fallback);
		else
			fprintf(out, "; default %s\n", settings[i].fallback);
	}
}

int envfs_settings_load(const char *path, struct envfs_settings *s, char *err, size_t err_len)
{
	dictionary *ini;
	const char **all = NULL;
	char why[512];
	int n, ret = 0;

	if (access(path, R_OK) != 0) {
		snprintf(err, err_len, "%s: cannot read daemon settings: %s", path, strerror(errno));
		return -errno;
	}
	ini = iniparser_load(path);
	if (!ini) {
		snprintf(err, err_len, "%s: not a valid INI file", path);
		return -EINVAL;
	}
	n = iniparser_getsecnkeys(ini, "daemon");
	if (n > 0)
		all = calloc((size_t)n, sizeof(*all));

	if (n > 0 && (!all || !iniparser_getseckeys(ini, "daemon", all))) {
		snprintf(err, err_len, "%s: out of memory", path);
		ret = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < n && ret == 0; i++) {
		const char *key = all[i] + strlen("daemon:");

		ret = envfs_setting_set(s, key, iniparser_getstring(ini, all[i], ""), why,
					sizeof(why));
		if (ret < 0)
			snprintf(err, err_len, "%s: [daemon] %s", path, why);
	}
out:
	free(all);
	iniparser_freedict(ini);
	return ret;
}
