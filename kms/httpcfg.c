// SPDX-License-Identifier: MIT
/* The [kms] settings of the HTTP client, shared by the cloud providers (kms/httpcfg.h). */

#include "kms/httpcfg.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kms/config.h"

/* get_positive - a positive number of at most an hour, if set. */
static int get_positive(const dictionary *ini, const char *key, long *out, char *err,
			size_t err_len)
{
	const char *s = iniparser_getstring(ini, key, NULL);
	char *end;
	long v;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v <= 0 || v > 3600L * 1000)
		return kms_errf(err, err_len, -EINVAL, "setting %s = %s is not a positive number",
				key, s);
	*out = v;
	return 0;
}

int httpcfg_read(const dictionary *ini, struct http_settings *hs, char *err, size_t err_len)
{
	const char *ca_file = iniparser_getstring(ini, "kms:ca_file", NULL);
	const char *ca_dir = iniparser_getstring(ini, "kms:ca_dir", NULL);
	long attempts = 0, threshold = 0;
	int rc;

	hs->ca_file = ca_file && *ca_file ? ca_file : NULL;
	hs->ca_dir = ca_dir && *ca_dir ? ca_dir : NULL;
	hs->insecure = iniparser_getboolean(ini, "kms:insecure_skip_verify", 0) == 1;
	if ((rc = get_positive(ini, "kms:connect_timeout_ms", &hs->connect_timeout_ms, err,
			       err_len)) ||
	    (rc = get_positive(ini, "kms:timeout_ms", &hs->attempt_timeout_ms, err, err_len)) ||
	    (rc = get_positive(ini, "kms:deadline_ms", &hs->deadline_ms, err, err_len)) ||
	    (rc = get_positive(ini, "kms:breaker_cooldown_ms", &hs->breaker_cooldown_ms, err,
			       err_len)) ||
	    (rc = get_positive(ini, "kms:max_attempts", &attempts, err, err_len)) ||
	    (rc = get_positive(ini, "kms:breaker_threshold", &threshold, err, err_len)))
		return rc;
	hs->max_attempts = (unsigned)attempts;
	hs->breaker_threshold = (unsigned)threshold;
	return 0;
}

const char *httpcfg_setting(const dictionary *ini, const char *name, const char *env)
{
	char key[64];
	const char *v;

	snprintf(key, sizeof(key), "kms:%s", name);
	v = iniparser_getstring(ini, key, NULL);
	if ((!v || !*v) && env)
		v = getenv(env);
	return v && *v ? v : NULL;
}

bool httpcfg_metadata_url_ok(const char *url)
{
	return http_url_private(url) || strncasecmp(url, "http://169.254.169.254/", 23) == 0 ||
	       strncasecmp(url, "http://metadata.google.internal/", 32) == 0;
}
