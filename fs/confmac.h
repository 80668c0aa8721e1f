/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_CONFMAC_H
#define ENVELOPEFS_FS_CONFMAC_H

/*
 * The canonical form of a volume configuration and its MAC (docs/FORMAT.md,
 * "Volume configuration", "The configuration MAC").
 *
 * The canonical form is what the volume's data and keys depend on, one
 * "section:key=value\n" line each after a fixed first line: the [volume]
 * fields in a fixed order (mac excluded), then every [kms] and
 * [kms_previous] setting sorted by key.  Other sections ([daemon] tunables)
 * are not part of it.  Values never hold a newline and keys never an '=',
 * so the form is unambiguous.
 *
 *   K_conf = HKDF-SHA256(IKM = volume key, salt = volume UUID,
 *                        info = CONFMAC_INFO, L = 32)
 *   mac    = HMAC-SHA256(K_conf, canonical form)
 *
 * The host's pin (confpin.h) stores the same canonical form.
 */

#include <iniparser.h>
#include <stddef.h>
#include <stdint.h>

#include "volume.h"

#define CONFMAC_HEAD "envelopefs configuration v2\n"
#define CONFMAC_INFO "envelopefs v2 config mac"

/*
 * confmac_canonical - the canonical form of @cfg's [volume] fields with the
 * "kms" sections of @kms and @previous (may be NULL) as [kms] and
 * [kms_previous], into a malloc'd NUL-terminated @text.  0 or -ENOMEM.
 */
int confmac_canonical(const struct volume_config *cfg, const dictionary *kms,
		      const dictionary *previous, char **text);

/* confmac_canonical_of - the same for a loaded configuration (cfg->ini). */
int confmac_canonical_of(const struct volume_config *cfg, char **text);

/* confmac_compute - @mac over @text under the key derived from @volume_key.  0 or -EIO. */
int confmac_compute(const uint8_t *volume_key, const uint8_t uuid[16], const char *text,
		    uint8_t mac[32]);

/*
 * confmac_seal - set cfg->mac for the configuration @cfg + @kms + @previous
 * would be written as.  0 or -errno.
 */
int confmac_seal(struct volume_config *cfg, const dictionary *kms, const dictionary *previous,
		 const uint8_t *volume_key);

/* confmac_verify - does the loaded @cfg's mac match?  0, -EBADMSG, or -errno. */
int confmac_verify(const struct volume_config *cfg, const uint8_t *volume_key);

#endif
