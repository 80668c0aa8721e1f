/* SPDX-License-Identifier: MIT */
/* Helpers for configuration and key files: see config.h. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *config_unknown_key(const dictionary *ini, const char *section,
			       const char *const *known, size_t n)
{
	int count = iniparser_getsecnkeys(ini, section);
	const char **keys, *unknown = NULL;

	if (count <= 0 || !(keys = calloc((size_t)count, sizeof(*keys))))
		return NULL;
	iniparser_getseckeys(ini, section, keys);
	for (int i = 0; i < count && !unknown; i++) {
		size_t k = 0;

		while (k < n && strcmp(keys[i], known[k]) != 0)
			k++;
		if (k == n)
			unknown = keys[i];
	}
	free(keys);
	return unknown;
}

int config_refuse_unknown(const dictionary *ini, const char *section, const char *const *known,
			  size_t n, const char *who, char *err, size_t err_len)
{
	const char *unknown = config_unknown_key(ini, section, known, n);
	size_t used, i;

	if (!unknown)
		return 0;
	if (err && err_len) {
		used = (size_t)snprintf(err, err_len, "setting %s is not known to %s (known: ",
					unknown, who);
		for (i = 0; i < n && used < err_len; i++) {
			const char *key = strchr(known[i], ':');

			used += (size_t)snprintf(err + used, err_len - used, "%s%s", i ? ", " : "",
						 key ? key + 1 : known[i]);
		}
		if (used < err_len)
			snprintf(err + used, err_len - used, ")");
	}
	return -EINVAL;
}

int kms_errf(char *err, size_t err_len, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && err_len) {
		va_start(ap, fmt);
		vsnprintf(err, err_len, fmt, ap);
		va_end(ap);
	}
	return rc;
}

int config_fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, rc = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(copy);
	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}
