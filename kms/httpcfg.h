/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_HTTPCFG_H
#define ENVELOPEFS_KMS_HTTPCFG_H

/*
 * The [kms] settings of the kms/http.h client, read the same way by the
 * cloud providers (kms/azure.c, kms/gcp.c):
 *   ca_file, ca_dir           CA store for the service's TLS certificate
 *   insecure_skip_verify      true: no TLS verification (tests only)
 *   connect_timeout_ms, timeout_ms, deadline_ms, max_attempts,
 *   breaker_threshold, breaker_cooldown_ms
 * HTTPCFG_KEYS lists them as "kms:NAME" for a provider's known-settings list.
 */

#include <iniparser.h>
#include <stdbool.h>
#include <stddef.h>

#include "kms/http.h"

#define HTTPCFG_KEYS                                                                           \
	"kms:ca_file", "kms:ca_dir", "kms:insecure_skip_verify", "kms:connect_timeout_ms",     \
		"kms:timeout_ms", "kms:deadline_ms", "kms:max_attempts", "kms:breaker_threshold", \
		"kms:breaker_cooldown_ms"

/*
 * httpcfg_read - fill @hs from @ini's [kms] settings (strings point into
 * @ini).  0, or -EINVAL with the setting named in @err.
 */
int httpcfg_read(const dictionary *ini, struct http_settings *hs, char *err, size_t err_len);

/*
 * httpcfg_setting - [kms] @name of @ini, else the environment variable @env
 * (may be NULL), else NULL; an empty value counts as unset.  Not for
 * secrets: those come through kms/envsecret.h or files.
 */
const char *httpcfg_setting(const dictionary *ini, const char *name, const char *env);

/*
 * httpcfg_metadata_url_ok - may a token come from @url: anything
 * http_url_private() accepts, or plain http:// to the cloud's link-local
 * metadata service (169.254.169.254, metadata.google.internal), which the
 * hypervisor answers on this very host: a request to it crosses no network.
 */
bool httpcfg_metadata_url_ok(const char *url);

#endif
