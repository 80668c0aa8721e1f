/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_VOLUME_H
#define ENVELOPEFS_FS_VOLUME_H

/*
 * The volume configuration: BACKING/envelopefs.conf (docs/FORMAT.md,
 * "Volume configuration").  INI, read with iniparser; never holds a secret.
 *
 *   [volume]
 *   format_version = 3               ; 1 and 2 still read (and written back as such)
 *   uuid           = 8-4-4-4-12 lowercase hex
 *   block_size     = 4096            ; power of two, 4096 .. 65536
 *   key_records    = header | xattr
 *   header_size    = 512             ; header placement only: 2 * slot size
 *   names          = encrypted | plain ; optional: plain when absent (volumes
 *                                    ; made before names could be encrypted)
 *   mac            = 64 hex digits   ; format 2 with encrypted names only:
 *                                    ; the configuration's MAC (confmac.h)
 *   [kms]
 *   provider       = local
 *   ...                              ; provider settings (references only)
 *   [kms_previous]                   ; only while migrating to another KMS:
 *   ...                              ; the provider being left
 *
 * The loader is strict: a missing or malformed field is an error whose
 * message names the file, the field and what is wrong.
 */

#include <iniparser.h>
#include <stdbool.h>
#include <stdint.h>

#define VOLUME_CONFIG_NAME "envelopefs.conf"
#define VOLUME_REKEY_DIR "envelopefs.rekey" /* re-key journals (fs/rekey.h) */
#define VOLUME_PROBE_DIR "envelopefs.probe" /* the backing probe's scratch space (fs/backing.h) */
/* init writes VOLUME_FORMAT_VERSION (docs/FORMAT.md "Versioning"); readers accept
 * VOLUME_FORMAT_MIN .. it. */
#define VOLUME_FORMAT_VERSION 3
#define VOLUME_FORMAT_MIN 1
#define VOLUME_MIN_BLOCK 4096
#define VOLUME_MAX_BLOCK 65536
#define VOLUME_DEFAULT_BLOCK 4096
#define VOLUME_XATTR_NAME "user.envelopefs.key"
/*
 * While a volume moves to another KMS (envelopefsctl rotate --to-kms), its
 * configuration names the new provider in [kms] and the old one in this
 * section; records under either open.  The section goes when every record
 * has moved.
 */
#define VOLUME_KMS_PREVIOUS "kms_previous"
/* BACKING/VOLUME_CONFIG_NAME + this: a replacement being written (volume_config_replace). */
#define VOLUME_CONFIG_TMP_SUFFIX ".tmp"

enum record_placement {
	PLACEMENT_HEADER,
	PLACEMENT_XATTR,
};

struct volume_config {
	unsigned format_version;
	uint8_t uuid[16];
	uint32_t block_size;
	enum record_placement placement;
	uint32_t header_size; /* 0 for PLACEMENT_XATTR */
	bool names_encrypted; /* names, symlink targets, user xattrs (names.h) */
	bool scopes;	      /* [volume] scopes = true: it has key scopes (scopedef.h) */
	uint8_t mac[32];      /* [volume] mac, when volume_config_sealed() */
	dictionary *ini;      /* the whole file, for the [kms] section */
};

/*
 * volume_config_sealed - does @cfg carry a MAC under its volume key
 * (confmac.h)?  Format 2 volumes with encrypted names do: they have a volume
 * key to derive it from.  Plain-names volumes rest on the host's pin alone
 * (confpin.h).
 */
static inline bool volume_config_sealed(const struct volume_config *cfg)
{
	return cfg->format_version >= 2 && cfg->names_encrypted;
}

/*
 * record_tags_v3 - may @cfg's key records carry the items of format 3, the
 * file's version and its entry bindings (docs/FORMAT.md, "Format version
 * 3")?  Only format-3 volumes have slots with room for them: older volumes
 * keep being written exactly as their format says.
 */
static inline bool record_tags_v3(const struct volume_config *cfg)
{
	return cfg->format_version >= 3;
}

/*
 * volume_config_load - read and validate @path (a file).  Returns 0, or
 * -errno with a message in @err: -ENOENT (no such file: not a volume),
 * -EINVAL (malformed), -EPROTONOSUPPORT (newer format version).
 */
int volume_config_load(const char *path, struct volume_config *cfg, char *err, size_t err_len);

/* volume_config_free - release cfg->ini. */
void volume_config_free(struct volume_config *cfg);

/*
 * volume_config_write - write @cfg's [volume] fields plus every key of
 * @kms_settings' "kms" section to @path, created with O_EXCL (0644), fsynced.
 * Returns 0 or -errno.
 */
int volume_config_write(const char *path, const struct volume_config *cfg,
			const dictionary *kms_settings);

/*
 * volume_config_replace - rewrite the existing @path atomically: the new text
 * goes to @path VOLUME_CONFIG_TMP_SUFFIX (same mode and owner; a stale one
 * from a crash is removed first; the caller excludes other replacements),
 * fsynced, renamed over @path, and the directory fsynced, so a crash leaves
 * the old or the new configuration.  [kms] holds @kms_settings' "kms"
 * section; @previous (may be NULL) becomes [VOLUME_KMS_PREVIOUS].  0 or -errno.
 */
int volume_config_replace(const char *path, const struct volume_config *cfg,
			  const dictionary *kms_settings, const dictionary *previous);

/*
 * volume_kms_settings - a new dictionary whose "kms" section is a copy of
 * @ini's @section ("kms" or VOLUME_KMS_PREVIOUS): what kms_open() reads.
 * NULL if the section is missing or memory ran out.  Free with
 * iniparser_freedict().
 */
dictionary *volume_kms_settings(const dictionary *ini, const char *section);

/*
 * volume_kms_same - do section @section_a of @a and @section_b of @b hold
 * exactly the same keys and values (a provider opened from one is the
 * provider the other describes)?
 */
bool volume_kms_same(const dictionary *a, const char *section_a, const dictionary *b,
		     const char *section_b);

/* uuid_format / uuid_parse - the 36-character textual form.  parse: 0 or -EINVAL. */
void uuid_format(const uint8_t uuid[16], char out[37]);
int uuid_parse(const char *text, uint8_t uuid[16]);

#endif
