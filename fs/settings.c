/* SPDX-License-Identifier: MIT */
/* Daemon settings from `-o config=FILE`: the [daemon] section of an INI file. */
#include <errno.h>
#include <iniparser.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envfs.h"
#include "log.h"
#include "shared.h"

void envfs_settings_defaults(struct envfs_settings *s)
{
	s->cache_entries = 4096;
	s->cache_max_age = 600;
	s->attr_timeout = 1.0;
	s->entry_timeout = 1.0;
	s->writeback_cache = true;
	s->read_ahead_kb = 4096;
	s->log_level = LOG_INFO;
	s->dek_pool = -1;
	s->prefetch = -1;
	s->shared = SHARED_AUTO;
	s->max_fds = 0; /* fdcache_default_max(), once the limit is raised */
}

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

int envfs_settings_load(const char *path, struct envfs_settings *s, char *err, size_t err_len)
{
	dictionary *ini;
	const char *keys[16];
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
	if (n > (int)(sizeof(keys) / sizeof(keys[0]))) {
		snprintf(err, err_len, "%s: too many keys in [daemon]", path);
		ret = -EINVAL;
		goto out;
	}
	if (n > 0 && !iniparser_getseckeys(ini, "daemon", keys)) {
		ret = -EINVAL;
		goto out;
	}
	for (int i = 0; i < n && ret == 0; i++) {
		const char *key = keys[i] + strlen("daemon:");
		const char *value = iniparser_getstring(ini, keys[i], "");

		if (strcmp(key, "cache_entries") == 0)
			ret = parse_uint(value, 1u << 24, &s->cache_entries);
		else if (strcmp(key, "cache_max_age") == 0)
			ret = parse_uint(value, 86400 * 365, &s->cache_max_age);
		else if (strcmp(key, "attr_timeout") == 0)
			ret = parse_seconds(value, &s->attr_timeout);
		else if (strcmp(key, "entry_timeout") == 0)
			ret = parse_seconds(value, &s->entry_timeout);
		else if (strcmp(key, "read_ahead_kb") == 0)
			ret = parse_uint(value, 1u << 20, &s->read_ahead_kb);
		else if (strcmp(key, "writeback_cache") == 0)
			ret = parse_bool(value, &s->writeback_cache);
		else if (strcmp(key, "dek_pool") == 0) {
			unsigned n_keys;

			if (strcmp(value, "auto") == 0)
				s->dek_pool = -1;
			else if ((ret = parse_uint(value, 4096, &n_keys)) == 0)
				s->dek_pool = (int)n_keys;
		} else if (strcmp(key, "prefetch") == 0) {
			bool on;

			if (strcmp(value, "auto") == 0)
				s->prefetch = -1;
			else if ((ret = parse_bool(value, &on)) == 0)
				s->prefetch = on;
		} else if (strcmp(key, "shared") == 0) {
			bool on;

			if (strcmp(value, "auto") == 0)
				s->shared = SHARED_AUTO;
			else if ((ret = parse_bool(value, &on)) == 0)
				s->shared = on ? SHARED_ON : SHARED_OFF;
		} else if (strcmp(key, "max_fds") == 0)
			ret = parse_uint(value, 1u << 24, &s->max_fds);
		else if (strcmp(key, "log_level") == 0)
			ret = (s->log_level = log_level_parse(value)) < 0 ? -EINVAL : 0;
		else {
			snprintf(err, err_len,
				 "%s: unknown setting '%s' in [daemon] (known: cache_entries, "
				 "cache_max_age, attr_timeout, entry_timeout, writeback_cache, "
				 "read_ahead_kb, log_level, dek_pool, prefetch, shared, max_fds)",
				 path, key);
			ret = -EINVAL;
			goto out;
		}
		if (ret < 0)
			snprintf(err, err_len, "%s: [daemon] %s = '%s' is not a valid value", path,
				 key, value);
	}
out:
	iniparser_freedict(ini);
	return ret;
}
