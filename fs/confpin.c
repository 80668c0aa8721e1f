// SPDX-License-Identifier: MIT
/* The host's pin of a volume configuration: see confpin.h. */
#include "confpin.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "confmac.h"
#include "hoststate.h"

/* A pinned configuration is a few hundred bytes; this bounds a damaged one. */
#define PIN_MAX 65536

/*
 * find_line - the line of @text whose name (before '=') is @name (length
 * @len), or NULL.  Names are unique within a canonical form.
 */
static const char *find_line(const char *text, const char *name, size_t len)
{
	const char *p = text;

	while (*p) {
		const char *end = strchrnul(p, '\n');

		if ((size_t)(end - p) > len && p[len] == '=' && strncmp(p, name, len) == 0)
			return p;
		p = *end ? end + 1 : end;
	}
	return NULL;
}

/* setting_of - "[section] key" for a canonical name "section:key". */
static void setting_of(const char *name, size_t len, char *out, size_t out_len)
{
	const char *colon = memchr(name, ':', len);

	if (!colon)
		snprintf(out, out_len, "%.*s", (int)len, name);
	else
		snprintf(out, out_len, "[%.*s] %.*s", (int)(colon - name), name,
			 (int)(len - (size_t)(colon - name) - 1), colon + 1);
}

/*
 * describe_change - name the first setting in which @now differs from
 * @pinned into @out: changed, added or removed.
 */
static void describe_change(const char *pinned, const char *now, char *out, size_t out_len)
{
	const char *texts[2] = { now, pinned }, *p;
	char setting[300];
	int pass;

	for (pass = 0; pass < 2; pass++) {
		for (p = texts[pass]; *p;) {
			const char *end = strchrnul(p, '\n'), *eq = memchr(p, '=', (size_t)(end - p));
			const char *other, *other_end;

			if (eq) {
				other = find_line(texts[1 - pass], p, (size_t)(eq - p));
				setting_of(p, (size_t)(eq - p), setting, sizeof(setting));
				if (!other) {
					snprintf(out, out_len, "%s was %s", setting,
						 pass == 0 ? "added" : "removed");
					return;
				}
				other_end = strchrnul(other, '\n');
				if (other_end - other != end - p || strncmp(other, p, (size_t)(end - p))) {
					snprintf(out, out_len, "%s changed from '%.*s' to '%.*s'",
						 setting, (int)(other_end - other - (eq - p) - 1),
						 other + (eq - p) + 1, (int)(end - eq - 1), eq + 1);
					return;
				}
			}
			p = *end ? end + 1 : end;
		}
	}
	snprintf(out, out_len, "its canonical form differs");
}

/* check_path - was another volume pinned at @backing?  0, 1 (nothing pinned) or -errno. */
static int check_path(const char *root, const char *backing, const struct volume_config *cfg,
		      char *err, size_t err_len)
{
	char path[PATH_MAX], text[PATH_MAX + 64], uuid[37];
	long len;
	int ret = hoststate_path_file(root, backing, 0, path, sizeof(path));

	if (ret < 0)
		return ret;
	len = hoststate_read(path, text, sizeof(text));
	if (len == -ENOENT)
		return 1;
	if (len < 0) {
		snprintf(err, err_len, "cannot read this host's pin %s: %s", path,
			 strerror((int)-len));
		return (int)len;
	}
	uuid_format(cfg->uuid, uuid);
	if (len < 37 || strncmp(text, uuid, 36) != 0 || text[36] != '\n') {
		snprintf(err, err_len, "the volume at this path was %.36s when this host last "
			 "mounted it, and is now %s: the volume was replaced", text, uuid);
		return -ESTALE;
	}
	return 0;
}

int confpin_check(const char *root, const char *backing, const struct volume_config *cfg,
		  char *err, size_t err_len)
{
	char path[PATH_MAX], *pinned, *now = NULL;
	long len;
	int ret = check_path(root, backing, cfg, err, err_len), by_path = ret;

	if (ret < 0)
		return ret;
	ret = hoststate_volume_file(root, cfg->uuid, CONFPIN_FILE, 0, path, sizeof(path));
	if (ret < 0)
		return ret;
	pinned = malloc(PIN_MAX);
	if (!pinned)
		return -ENOMEM;
	len = hoststate_read(path, pinned, PIN_MAX);
	if (len == -ENOENT) {
		free(pinned);
		return 1; /* a volume new to this host, wherever it is */
	}
	if (len < 0) {
		snprintf(err, err_len, "cannot read this host's pin %s: %s", path,
			 strerror((int)-len));
		free(pinned);
		return (int)len;
	}
	ret = confmac_canonical_of(cfg, &now);
	if (ret == 0 && strcmp(pinned, now) != 0) {
		char change[600];

		describe_change(pinned, now, change, sizeof(change));
		snprintf(err, err_len, "the volume configuration differs from the one this host "
			 "pinned (%s): %s", path, change);
		ret = -ESTALE;
	}
	free(pinned);
	free(now);
	/* Pinned elsewhere but never at this path: the path's pin is still to write. */
	return ret == 0 && by_path == 1 ? 1 : ret;
}

int confpin_record(const char *root, const char *backing, const struct volume_config *cfg)
{
	char path[PATH_MAX], line[PATH_MAX + 64], uuid[37], *text = NULL;
	int ret = confmac_canonical_of(cfg, &text);

	if (ret == 0)
		ret = hoststate_volume_file(root, cfg->uuid, CONFPIN_FILE, 1, path, sizeof(path));
	if (ret == 0)
		ret = hoststate_write(path, text, strlen(text));
	free(text);
	if (ret == 0)
		ret = hoststate_path_file(root, backing, 1, path, sizeof(path));
	if (ret < 0)
		return ret;
	uuid_format(cfg->uuid, uuid);
	snprintf(line, sizeof(line), "%s\n%s\n", uuid, backing);
	return hoststate_write(path, line, strlen(line));
}
