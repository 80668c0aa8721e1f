/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_CONFIG_H
#define ENVELOPEFS_KMS_CONFIG_H

/*
 * Helpers for configuration and key files, shared by kms/ (keyrings,
 * provider settings) and fs/ (the volume configuration): the one place that
 * decides what an unknown INI key is and how a new file becomes durable.
 */

#include <iniparser.h>
#include <stddef.h>

/*
 * config_unknown_key - the first key of @section in @ini that is not one of
 * the @n "section:key" names in @known, or NULL (also when the list cannot
 * be had: then nothing is refused).  The string belongs to @ini.
 */
const char *config_unknown_key(const dictionary *ini, const char *section,
			       const char *const *known, size_t n);

/*
 * config_refuse_unknown - 0 when every key of @section is one of @known (as
 * config_unknown_key()), else -EINVAL with "setting S:K is not known to
 * @who (known: a, b, ...)" in @err, the known keys listed without their
 * section.
 */
int config_refuse_unknown(const dictionary *ini, const char *section, const char *const *known,
			  size_t n, const char *who, char *err, size_t err_len);

/*
 * kms_errf - format a message into @err (if any) and return @rc: how kms/
 * and the volume configuration hand an error and its context to the caller.
 */
int kms_errf(char *err, size_t err_len, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* config_fsync_dir_of - fsync the directory holding @path (its new name is durable).  0 or -errno. */
int config_fsync_dir_of(const char *path);

#endif
