// SPDX-License-Identifier: MIT
/*
 * The volume configuration file (fs/volume.h, docs/FORMAT.md "Volume
 * configuration").  Loading is strict: every field of [volume] must be present
 * (header_size only for header placement), well-formed and in range, and no
 * other key may appear there, so a typo or a hand edit fails loudly instead
 * of mounting with a guess.
 */

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/hex.h"
#include "crypto/record.h"
#include "fs/volume.h"
#include "kms/config.h"

static const char *const volume_keys[] = { "volume:format_version", "volume:uuid",
					   "volume:block_size", "volume:key_records",
					   "volume:header_size", "volume:names",
					   "volume:mac", "volume:scopes" };

void uuid_format(const uint8_t uuid[16], char out[37])
{
	static const char digits[] = "0123456789abcdef";
	int i, o = 0;

	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			out[o++] = '-';
		out[o++] = digits[uuid[i] >> 4];
		out[o++] = digits[uuid[i] & 15];
	}
	out[o] = '\0';
}

int uuid_parse(const char *text, uint8_t uuid[16])
{
	uint8_t tmp[16];
	int i, n = 0;

	if (!text || strlen(text) != 36)
		return -EINVAL;
	for (i = 0; i < 36; i++) {
		char c = text[i];
		int v;

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (c != '-')
				return -EINVAL;
			continue;
		}
		if (c >= '0' && c <= '9')
			v = c - '0';
		else if (c >= 'a' && c <= 'f')
			v = c - 'a' + 10;
		else
			return -EINVAL;
		if (n % 2)
			tmp[n / 2] |= (uint8_t)v;
		else
			tmp[n / 2] = (uint8_t)(v << 4);
		n++;
	}
	memcpy(uuid, tmp, 16);
	return 0;
}

/* parse_u32 - a plain decimal number (no sign, no spaces, no leading zero). */
static int parse_u32(const char *s, uint32_t *out)
{
	uint64_t v = 0;

	if (!s || !*s || (s[0] == '0' && s[1]))
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

static int check_keys(const char *path, const dictionary *ini, char *err, size_t err_len)
{
	const char *unknown = config_unknown_key(ini, "volume", volume_keys,
						 sizeof(volume_keys) / sizeof(volume_keys[0]));

	if (!unknown)
		return 0;
	return kms_errf(err, err_len, -EINVAL,
			"%s: [volume] has an unknown field '%s' (known: format_version, uuid, "
			"block_size, key_records, header_size, names, mac, scopes): remove it",
			path, strchr(unknown, ':') + 1);
}

/*
 * find_duplicate - iniparser keeps the last of two equal keys without a word;
 * a configuration that says two things about one field is refused instead.
 * Returns 0, or -EINVAL with the "section:key" named in @err.
 */
static int find_duplicate(const char *path, char *err, size_t err_len)
{
	char line[1024], section[256] = "", entry[512], **seen = NULL;
	size_t n_seen = 0, i;
	FILE *f = fopen(path, "r");
	int rc = 0;

	if (!f)
		return 0; /* iniparser has read it; nothing more to learn */
	while (rc == 0 && fgets(line, sizeof(line), f)) {
		char *p = line + strspn(line, " \t"), *end;
		char **grown;

		if (*p == '[') {
			end = strchr(p, ']');
			if (end && (size_t)(end - p) < sizeof(section)) {
				*end = '\0';
				snprintf(section, sizeof(section), "%s", p + 1);
			}
			continue;
		}
		end = strchr(p, '=');
		if (*p == ';' || *p == '#' || !end)
			continue;
		while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		*end = '\0';
		snprintf(entry, sizeof(entry), "%s:%s", section, p);
		for (p = entry; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		for (i = 0; i < n_seen && rc == 0; i++)
			if (strcmp(seen[i], entry) == 0)
				rc = kms_errf(err, err_len, -EINVAL,
					      "%s: [%s] %s is set more than once: keep one", path,
					      section, strchr(entry, ':') + 1);
		grown = realloc(seen, (n_seen + 1) * sizeof(*seen));
		if (!grown)
			break;
		seen = grown;
		seen[n_seen] = strdup(entry);
		if (seen[n_seen])
			n_seen++;
	}
	fclose(f);
	for (i = 0; i < n_seen; i++)
		free(seen[i]);
	free(seen);
	return rc;
}

static int validate(const char *path, const dictionary *ini, struct volume_config *cfg,
		    char *err, size_t err_len)
{
	const char *s;
	uint32_t v;
	int rc;

	if (iniparser_find_entry(ini, "volume") == 0)
		return kms_errf(err, err_len, -EINVAL, "%s: no [volume] section: not an envelopefs "
				"volume configuration", path);
	rc = check_keys(path, ini, err, err_len);
	if (rc == 0)
		rc = find_duplicate(path, err, err_len);
	if (rc < 0)
		return rc;

	s = iniparser_getstring(ini, "volume:format_version", NULL);
	if (!s)
		return kms_errf(err, err_len, -EINVAL, "%s: [volume] format_version is missing",
				path);
	if (parse_u32(s, &v) < 0 || v == 0)
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] format_version = '%s' is not a positive number", path,
				s);
	if (v > VOLUME_FORMAT_VERSION)
		return kms_errf(err, err_len, -EPROTONOSUPPORT,
				"%s: [volume] format_version = %u is newer than this envelopefs "
				"supports (%u): upgrade envelopefs",
				path, v, VOLUME_FORMAT_VERSION);
	cfg->format_version = v;

	s = iniparser_getstring(ini, "volume:uuid", NULL);
	if (!s)
		return kms_errf(err, err_len, -EINVAL, "%s: [volume] uuid is missing", path);
	if (uuid_parse(s, cfg->uuid) < 0)
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] uuid = '%s' is not a lowercase 8-4-4-4-12 hex UUID",
				path, s);

	s = iniparser_getstring(ini, "volume:block_size", NULL);
	if (!s)
		return kms_errf(err, err_len, -EINVAL, "%s: [volume] block_size is missing", path);
	if (parse_u32(s, &v) < 0 || v < VOLUME_MIN_BLOCK || v > VOLUME_MAX_BLOCK || (v & (v - 1)))
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] block_size = '%s' must be a power of two from %d "
				"to %d",
				path, s, VOLUME_MIN_BLOCK, VOLUME_MAX_BLOCK);
	cfg->block_size = v;

	s = iniparser_getstring(ini, "volume:key_records", NULL);
	if (!s)
		return kms_errf(err, err_len, -EINVAL, "%s: [volume] key_records is missing", path);
	if (strcmp(s, "header") == 0)
		cfg->placement = PLACEMENT_HEADER;
	else if (strcmp(s, "xattr") == 0)
		cfg->placement = PLACEMENT_XATTR;
	else
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] key_records = '%s' must be 'header' or 'xattr'", path,
				s);

	s = iniparser_getstring(ini, "volume:header_size", NULL);
	cfg->header_size = 0;
	if (cfg->placement == PLACEMENT_XATTR) {
		if (s)
			return kms_errf(err, err_len, -EINVAL,
					"%s: [volume] header_size is set but key_records = xattr: "
					"remove it",
					path);
	} else {
		uint32_t lo = 2 * (uint32_t)slot_size_for(1, 1);
		uint32_t hi = 2 * (uint32_t)slot_size_for_version(3, RECORD_MAX_KEY_REF,
								  RECORD_MAX_WRAPPED);

		if (!s)
			return kms_errf(err, err_len, -EINVAL,
					"%s: [volume] header_size is missing (required with "
					"key_records = header)",
					path);
		if (parse_u32(s, &v) < 0 || v < lo || v > hi || v % (2 * SLOT_ALIGN))
			return kms_errf(err, err_len, -EINVAL,
					"%s: [volume] header_size = '%s' must be a multiple of %d "
					"from %u to %u",
					path, s, 2 * SLOT_ALIGN, lo, hi);
		cfg->header_size = v;
	}

	s = iniparser_getstring(ini, "volume:names", NULL);
	if (!s || strcmp(s, "plain") == 0)
		cfg->names_encrypted = false;
	else if (strcmp(s, "encrypted") == 0)
		cfg->names_encrypted = true;
	else
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] names = '%s' must be 'encrypted' or 'plain'", path,
				s);

	/* Key scopes: their definitions are authenticated by the volume key, and
	 * the line itself by the MAC (docs/FORMAT.md, "Key scopes"). */
	s = iniparser_getstring(ini, "volume:scopes", NULL);
	cfg->scopes = s != NULL;
	if (s && (strcmp(s, "true") != 0 || !volume_config_sealed(cfg)))
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] scopes = '%s': only 'true', on a format_version 2 "
				"volume with names = encrypted",
				path, s);

	/* The MAC is there exactly when the volume can have one (confmac.h). */
	s = iniparser_getstring(ini, "volume:mac", NULL);
	if (volume_config_sealed(cfg) && !s)
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] mac is missing (required with format_version 2 and "
				"names = encrypted): restore the configuration from a backup",
				path);
	if (!volume_config_sealed(cfg) && s)
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] mac is set, but only format_version 2 volumes with "
				"names = encrypted have one: remove it",
				path);
	if (s && hex_decode(s, cfg->mac, sizeof(cfg->mac)) < 0)
		return kms_errf(err, err_len, -EINVAL,
				"%s: [volume] mac = '%s' is not 64 lowercase hex digits", path, s);

	if (iniparser_find_entry(ini, "kms") == 0)
		return kms_errf(err, err_len, -EINVAL, "%s: no [kms] section", path);
	s = iniparser_getstring(ini, "kms:provider", NULL);
	if (!s || !*s)
		return kms_errf(err, err_len, -EINVAL, "%s: [kms] provider is missing", path);
	/* Mid-migration, the provider the volume is moving away from. */
	if (iniparser_find_entry(ini, VOLUME_KMS_PREVIOUS) != 0) {
		s = iniparser_getstring(ini, VOLUME_KMS_PREVIOUS ":provider", NULL);
		if (!s || !*s)
			return kms_errf(err, err_len, -EINVAL, "%s: [%s] provider is missing", path,
					VOLUME_KMS_PREVIOUS);
	}
	return 0;
}

int volume_config_load(const char *path, struct volume_config *cfg, char *err, size_t err_len)
{
	dictionary *ini;
	struct stat sb;
	int rc;

	memset(cfg, 0, sizeof(*cfg));
	/* iniparser does not say why it failed: find out first. */
	if (stat(path, &sb) < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			return kms_errf(err, err_len, rc,
					"%s does not exist: this is not an envelopefs volume "
					"(create one with 'envelopefsctl init')",
					path);
		return kms_errf(err, err_len, rc, "cannot read %s: %s", path, strerror(-rc));
	}
	if (!S_ISREG(sb.st_mode))
		return kms_errf(err, err_len, -EINVAL, "%s is not a regular file", path);
	if (access(path, R_OK) < 0)
		return kms_errf(err, err_len, -errno, "cannot read %s: %s", path, strerror(errno));
	ini = iniparser_load(path);
	if (!ini)
		return kms_errf(err, err_len, -EINVAL,
				"%s: not a valid INI file (syntax error): fix or restore it", path);
	rc = validate(path, ini, cfg, err, err_len);
	if (rc < 0) {
		iniparser_freedict(ini);
		memset(cfg, 0, sizeof(*cfg));
		return rc;
	}
	cfg->ini = ini;
	return 0;
}

void volume_config_free(struct volume_config *cfg)
{
	if (cfg && cfg->ini) {
		iniparser_freedict(cfg->ini);
		cfg->ini = NULL;
	}
}

/*
 * put_setting - append "key = value".  iniparser ends an unquoted value at
 * ';' or '#' and trims spaces, so such values are quoted; a value it could
 * not give back unchanged (a quote, a newline, empty) is refused.
 */
static int put_setting(FILE *f, const char *key, const char *value)
{
	size_t len = strlen(value);
	bool quote;

	if (!len || strpbrk(value, "\"\n\r") || strpbrk(key, "=;#[]\n\r \t"))
		return -EINVAL;
	quote = strpbrk(value, ";#'") || value[0] == ' ' || value[0] == '\t' ||
		value[len - 1] == ' ' || value[len - 1] == '\t';
	fprintf(f, quote ? "%s = \"%s\"\n" : "%s = %s\n", key, value);
	return 0;
}

/* put_section - "[@name]" and every key of @settings' "kms" section.  0 or -errno. */
static int put_section(FILE *f, const char *name, const dictionary *settings)
{
	const char **keys = NULL;
	int i, n, rc = 0;

	fprintf(f, "\n[%s]\n", name);
	n = iniparser_getsecnkeys(settings, "kms");
	if (n > 0) {
		keys = calloc((size_t)n, sizeof(*keys));
		if (!keys)
			return -ENOMEM;
		iniparser_getseckeys(settings, "kms", keys);
	}
	for (i = 0; i < n && rc == 0; i++) {
		const char *value = iniparser_getstring(settings, keys[i], NULL);

		rc = value ? put_setting(f, keys[i] + 4, value) : -EINVAL;
	}
	free(keys);
	return rc;
}

static int render(const struct volume_config *cfg, const dictionary *kms,
		  const dictionary *previous, char **text, size_t *len)
{
	char uuid[37];
	FILE *f;
	int rc;

	f = open_memstream(text, len);
	if (!f)
		return -ENOMEM;
	uuid_format(cfg->uuid, uuid);
	fprintf(f, "; envelopefs volume configuration (docs/FORMAT.md, \"Volume configuration\").\n"
		   "; It holds no secret.  Do not edit [volume]: the data depends on it.\n"
		   "[volume]\n"
		   "format_version = %u\n"
		   "uuid = %s\n"
		   "block_size = %u\n"
		   "key_records = %s\n",
		cfg->format_version, uuid, cfg->block_size,
		cfg->placement == PLACEMENT_XATTR ? "xattr" : "header");
	if (cfg->placement == PLACEMENT_HEADER)
		fprintf(f, "header_size = %u\n", cfg->header_size);
	fprintf(f, "names = %s\n", cfg->names_encrypted ? "encrypted" : "plain");
	if (cfg->scopes)
		fprintf(f, "scopes = true\n");
	if (volume_config_sealed(cfg)) {
		char mac[2 * sizeof(cfg->mac) + 1];

		hex_encode(cfg->mac, sizeof(cfg->mac), mac);
		fprintf(f, "mac = %s\n", mac);
	}
	rc = put_section(f, "kms", kms);
	if (rc == 0 && previous)
		rc = put_section(f, VOLUME_KMS_PREVIOUS, previous);
	if (fclose(f) != 0 && rc == 0)
		rc = -ENOMEM;
	if (rc < 0) {
		free(*text);
		*text = NULL;
	}
	return rc;
}

/* write_all - @len bytes of @text to @fd, then fsync.  0 or -errno. */
static int write_all(int fd, const char *text, size_t len)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = write(fd, text + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return fsync(fd) < 0 ? -errno : 0;
}

int volume_config_write(const char *path, const struct volume_config *cfg,
			const dictionary *kms_settings)
{
	char *text = NULL;
	size_t len = 0;
	int fd, rc;

	if (!path || !cfg || !kms_settings || cfg->format_version < VOLUME_FORMAT_MIN ||
	    cfg->format_version > VOLUME_FORMAT_VERSION ||
	    !iniparser_getstring(kms_settings, "kms:provider", NULL))
		return -EINVAL;
	rc = render(cfg, kms_settings, NULL, &text, &len);
	if (rc < 0)
		return rc;
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		rc = -errno;
		free(text);
		return rc;
	}
	rc = write_all(fd, text, len);
	close(fd);
	free(text);
	if (rc < 0) {
		unlink(path);
		return rc;
	}
	/* Make the new directory entry durable too. */
	return config_fsync_dir_of(path);
}

int volume_config_replace(const char *path, const struct volume_config *cfg,
			  const dictionary *kms_settings, const dictionary *previous)
{
	char tmp[4096], *text = NULL;
	size_t len = 0;
	struct stat st;
	int fd, rc;

	/* A volume keeps its format version: old volumes stay readable by old releases. */
	if (!path || !cfg || !kms_settings || cfg->format_version < VOLUME_FORMAT_MIN ||
	    cfg->format_version > VOLUME_FORMAT_VERSION ||
	    !iniparser_getstring(kms_settings, "kms:provider", NULL) ||
	    (previous && !iniparser_getstring(previous, "kms:provider", NULL)))
		return -EINVAL;
	if (stat(path, &st) < 0)
		return -errno;
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s%s", path, VOLUME_CONFIG_TMP_SUFFIX) >=
	    sizeof(tmp))
		return -ENAMETOOLONG;
	rc = render(cfg, kms_settings, previous, &text, &len);
	if (rc < 0)
		return rc;
	unlink(tmp); /* left by a crash in an earlier replacement */
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = -errno;
		free(text);
		return rc;
	}
	/* The replacement keeps the file's mode and owner. */
	if (fchmod(fd, st.st_mode & 07777) < 0 ||
	    (fchown(fd, st.st_uid, st.st_gid) < 0 && errno != EPERM))
		rc = -errno;
	if (rc == 0)
		rc = write_all(fd, text, len);
	close(fd);
	free(text);
	/* rename() swaps whole files: a reader sees the old or the new text, never a mix. */
	if (rc == 0 && rename(tmp, path) < 0)
		rc = -errno;
	if (rc < 0) {
		unlink(tmp);
		return rc;
	}
	return config_fsync_dir_of(path);
}

dictionary *volume_kms_settings(const dictionary *ini, const char *section)
{
	dictionary *out;
	const char **keys;
	char key[512];
	int i, n = iniparser_getsecnkeys(ini, section);
	size_t skip = strlen(section) + 1;

	if (n <= 0 || !(out = dictionary_new(0)))
		return NULL;
	keys = calloc((size_t)n, sizeof(*keys));
	if (!keys || iniparser_set(out, "kms", NULL) != 0) {
		free(keys);
		iniparser_freedict(out);
		return NULL;
	}
	iniparser_getseckeys(ini, section, keys);
	for (i = 0; i < n; i++) {
		snprintf(key, sizeof(key), "kms:%s", keys[i] + skip);
		if (iniparser_set(out, key, iniparser_getstring(ini, keys[i], "")) != 0) {
			free(keys);
			iniparser_freedict(out);
			return NULL;
		}
	}
	free(keys);
	return out;
}

bool volume_kms_same(const dictionary *a, const char *section_a, const dictionary *b,
		     const char *section_b)
{
	int n = iniparser_getsecnkeys(a, section_a), i;
	const char **keys;
	char other[512];
	bool same;

	if (n <= 0 || n != iniparser_getsecnkeys(b, section_b))
		return false;
	keys = calloc((size_t)n, sizeof(*keys));
	if (!keys)
		return false;
	iniparser_getseckeys(a, section_a, keys);
	same = true;
	for (i = 0; i < n && same; i++) {
		const char *va = iniparser_getstring(a, keys[i], NULL), *vb;

		snprintf(other, sizeof(other), "%s:%s", section_b, keys[i] + strlen(section_a) + 1);
		vb = iniparser_getstring(b, other, NULL);
		same = va && vb && strcmp(va, vb) == 0;
	}
	free(keys);
	return same;
}
