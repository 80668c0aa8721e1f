// SPDX-License-Identifier: MIT
/* The canonical configuration and its MAC: see confmac.h. */
#include "confmac.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/kdf.h"
#include "crypto/secmem.h"

static int by_key(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* put_section - "@name:key=value\n" for every key of @settings' "kms" section, sorted. */
static int put_section(FILE *f, const char *name, const dictionary *settings)
{
	int i, n = iniparser_getsecnkeys(settings, "kms");
	const char **keys;

	if (n <= 0)
		return 0;
	keys = calloc((size_t)n, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	iniparser_getseckeys(settings, "kms", keys);
	qsort(keys, (size_t)n, sizeof(*keys), by_key);
	for (i = 0; i < n; i++)
		fprintf(f, "%s:%s=%s\n", name, keys[i] + strlen("kms:"),
			iniparser_getstring(settings, keys[i], ""));
	free(keys);
	return 0;
}

int confmac_canonical(const struct volume_config *cfg, const dictionary *kms,
		      const dictionary *previous, char **text)
{
	char uuid[37];
	size_t len;
	FILE *f = open_memstream(text, &len);
	int ret;

	if (!f)
		return -ENOMEM;
	uuid_format(cfg->uuid, uuid);
	fprintf(f, CONFMAC_HEAD "volume:format_version=%u\nvolume:uuid=%s\nvolume:block_size=%u\n"
		   "volume:key_records=%s\n",
		cfg->format_version, uuid, cfg->block_size,
		cfg->placement == PLACEMENT_XATTR ? "xattr" : "header");
	if (cfg->placement == PLACEMENT_HEADER)
		fprintf(f, "volume:header_size=%u\n", cfg->header_size);
	fprintf(f, "volume:names=%s\n", cfg->names_encrypted ? "encrypted" : "plain");
	if (cfg->scopes) /* absent otherwise: the MAC of a volume without scopes is unchanged */
		fprintf(f, "volume:scopes=true\n");
	ret = put_section(f, "kms", kms);
	if (ret == 0 && previous)
		ret = put_section(f, VOLUME_KMS_PREVIOUS, previous);
	if (fclose(f) != 0 && ret == 0)
		ret = -ENOMEM;
	if (ret < 0) {
		free(*text);
		*text = NULL;
	}
	return ret;
}

int confmac_canonical_of(const struct volume_config *cfg, char **text)
{
	dictionary *kms = volume_kms_settings(cfg->ini, "kms"), *previous = NULL;
	int ret = kms ? 0 : -ENOMEM;

	if (ret == 0 && iniparser_find_entry(cfg->ini, VOLUME_KMS_PREVIOUS) != 0) {
		previous = volume_kms_settings(cfg->ini, VOLUME_KMS_PREVIOUS);
		if (!previous)
			ret = -ENOMEM;
	}
	if (ret == 0)
		ret = confmac_canonical(cfg, kms, previous, text);
	if (kms)
		iniparser_freedict(kms);
	if (previous)
		iniparser_freedict(previous);
	return ret;
}

int confmac_compute(const uint8_t *volume_key, const uint8_t uuid[16], const char *text,
		    uint8_t mac[32])
{
	uint8_t *k_conf = secmem_alloc(SHA256_LEN);
	int ret;

	if (!k_conf)
		return -ENOMEM;
	ret = crypto_hkdf_sha256(volume_key, 32, uuid, 16, CONFMAC_INFO, strlen(CONFMAC_INFO),
				 k_conf, SHA256_LEN);
	if (ret == 0)
		ret = crypto_hmac_sha256(k_conf, SHA256_LEN, text, strlen(text), mac);
	secmem_free(k_conf, SHA256_LEN);
	return ret;
}

int confmac_seal(struct volume_config *cfg, const dictionary *kms, const dictionary *previous,
		 const uint8_t *volume_key)
{
	char *text = NULL;
	int ret = confmac_canonical(cfg, kms, previous, &text);

	if (ret == 0)
		ret = confmac_compute(volume_key, cfg->uuid, text, cfg->mac);
	free(text);
	return ret;
}

int confmac_verify(const struct volume_config *cfg, const uint8_t *volume_key)
{
	uint8_t mac[SHA256_LEN];
	char *text = NULL;
	int ret = confmac_canonical_of(cfg, &text);

	if (ret == 0)
		ret = confmac_compute(volume_key, cfg->uuid, text, mac);
	free(text);
	if (ret == 0 && !crypto_memeq(mac, cfg->mac, sizeof(mac)))
		ret = -EBADMSG;
	return ret;
}
