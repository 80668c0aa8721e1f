/* SPDX-License-Identifier: MIT */
/* Key-scope definitions and their registry: see scopedef.h. */
#include "scopedef.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/bigendian.h"
#include "crypto/kdf.h"
#include "crypto/secmem.h"
#include "layout.h"
#include "names.h"
#include "volume.h"

#define SCOPE_DEF_INFO "envelopefs scope v1 definition"

int scope_def_key(const uint8_t *volume_key, const uint8_t *uuid, uint8_t out[SCOPE_MAC_LEN])
{
	return crypto_hkdf_sha256(volume_key, SCOPE_KEY_LEN, uuid, 16, SCOPE_DEF_INFO,
				  strlen(SCOPE_DEF_INFO), out, SCOPE_MAC_LEN) == 0
		       ? 0
		       : -EIO;
}

static int def_mac(const uint8_t *def_key, const uint8_t *data, size_t len,
		   uint8_t mac[SCOPE_MAC_LEN])
{
	return crypto_hmac_sha256(def_key, SCOPE_MAC_LEN, data, len, mac) == 0 ? 0 : -EIO;
}

/*
 * settings_canonical - whether @s (@len bytes) is KEY=VALUE\n lines with
 * non-empty keys free of '=', values free of NUL, keys strictly ascending,
 * and a `provider` line: the only form a definition may hold.
 */
static bool settings_canonical(const char *s, size_t len)
{
	const char *prev = NULL, *p = s, *end = s + len;
	size_t prev_len = 0;
	bool provider = false;

	if (len == 0 || len > SCOPE_SETTINGS_MAX || s[len - 1] != '\n' || memchr(s, '\0', len))
		return false;
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eq = memchr(p, '=', (size_t)(nl - p));
		size_t key_len;

		if (!eq || eq == p)
			return false;
		key_len = (size_t)(eq - p);
		if (prev) {
			int c = memcmp(prev, p, prev_len < key_len ? prev_len : key_len);

			if (c > 0 || (c == 0 && prev_len >= key_len))
				return false;
		}
		if (key_len == 8 && memcmp(p, "provider", 8) == 0 && nl > eq + 1)
			provider = true;
		prev = p;
		prev_len = key_len;
		p = nl + 1;
	}
	return provider;
}

int scope_def_encode(const struct scope_def *d, const uint8_t *def_key,
		     uint8_t *out, size_t cap, size_t *len)
{
	size_t s = strlen(d->settings), r = record_encoded_len(&d->record), rec_len, off;
	size_t p = strlen(d->previous);
	int ret;

	if (!settings_canonical(d->settings, s) || d->record.version != 1 || r > SCOPE_RECORD_MAX ||
	    (p && !settings_canonical(d->previous, p)) || (d->converting && !p))
		return -EINVAL;
	if (cap < SCOPE_DEF_FIXED + s + r + (p ? 2 + p : 0) + SCOPE_MAC_LEN)
		return -ENOSPC;
	memcpy(out, SCOPE_MAGIC, 4);
	out[4] = SCOPE_DEF_VERSION;
	out[5] = !p ? 0 : d->converting ? SCOPE_FLAG_CONVERTING : SCOPE_FLAG_MOVING;
	memcpy(out + 6, d->id, SCOPE_ID_LEN);
	memcpy(out + 22, d->root_dirid, 16);
	put_be16(out + 38, (uint16_t)s);
	memcpy(out + 40, d->settings, s);
	off = 40 + s;
	put_be16(out + off, (uint16_t)r);
	ret = record_encode(&d->record, out + off + 2, r, &rec_len);
	if (ret < 0)
		return ret;
	off += 2 + r;
	if (p) {
		put_be16(out + off, (uint16_t)p);
		memcpy(out + off + 2, d->previous, p);
		off += 2 + p;
	}
	ret = def_mac(def_key, out, off, out + off);
	if (ret < 0)
		return ret;
	*len = off + SCOPE_MAC_LEN;
	return 0;
}

int scope_def_decode(const uint8_t *buf, size_t len, const uint8_t *def_key,
		     struct scope_def *d)
{
	uint8_t mac[SCOPE_MAC_LEN];
	size_t s, r, off, p = 0, end;

	/* Every length is checked against what remains before it is used; a
	 * definition is moving or converting, never both. */
	if (len < SCOPE_DEF_FIXED + SCOPE_MAC_LEN || memcmp(buf, SCOPE_MAGIC, 4) != 0 ||
	    buf[4] != SCOPE_DEF_VERSION ||
	    (buf[5] != 0 && buf[5] != SCOPE_FLAG_MOVING && buf[5] != SCOPE_FLAG_CONVERTING))
		return -EBADMSG;
	s = get_be16(buf + 38);
	if (s == 0 || s > SCOPE_SETTINGS_MAX || 40 + s + 2 > len)
		return -EBADMSG;
	off = 40 + s;
	r = get_be16(buf + off);
	if (r == 0 || r > SCOPE_RECORD_MAX || off + 2 + r + SCOPE_MAC_LEN > len)
		return -EBADMSG;
	end = off + 2 + r;
	if (buf[5] != 0) {
		if (end + 2 + SCOPE_MAC_LEN > len)
			return -EBADMSG;
		p = get_be16(buf + end);
		if (p == 0 || p > SCOPE_SETTINGS_MAX)
			return -EBADMSG;
		end += 2 + p;
	}
	if (end + SCOPE_MAC_LEN != len || def_mac(def_key, buf, end, mac) != 0 ||
	    !crypto_memeq(mac, buf + end, SCOPE_MAC_LEN))
		return -EBADMSG;
	memset(d, 0, sizeof(*d));
	memcpy(d->id, buf + 6, SCOPE_ID_LEN);
	memcpy(d->root_dirid, buf + 22, 16);
	memcpy(d->settings, buf + 40, s);
	d->settings[s] = '\0';
	memcpy(d->previous, buf + off + 2 + r + 2, p);
	d->previous[p] = '\0';
	d->converting = buf[5] == SCOPE_FLAG_CONVERTING;
	if (!settings_canonical(d->settings, s) || (p && !settings_canonical(d->previous, p)) ||
	    record_decode(buf + off + 2, r, &d->record) != 0 || d->record.version != 1 ||
	    memcmp(d->record.file_id, d->id, SCOPE_ID_LEN) != 0)
		return -EBADMSG;
	return 0;
}

static int cmp_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int scope_settings_canon(const dictionary *ini, char *out, size_t cap, char *err, size_t err_len)
{
	int i, n = iniparser_getsecnkeys(ini, "kms");
	const char **keys;
	size_t off = 0;

	if (n <= 0 || !iniparser_getstring(ini, "kms:provider", NULL)) {
		snprintf(err, err_len, "a scope needs a KMS provider (--kms NAME)");
		return -EINVAL;
	}
	keys = calloc((size_t)n, sizeof(*keys));
	if (!keys) {
		snprintf(err, err_len, "out of memory");
		return -ENOMEM;
	}
	iniparser_getseckeys(ini, "kms", keys);
	qsort(keys, (size_t)n, sizeof(*keys), cmp_keys);
	for (i = 0; i < n; i++) {
		const char *value = iniparser_getstring(ini, keys[i], "");
		int w;

		if (strchr(value, '\n')) {
			snprintf(err, err_len, "setting %s: a value cannot hold a newline", keys[i] + 4);
			free(keys);
			return -EINVAL;
		}
		w = snprintf(out + off, cap - off, "%s=%s\n", keys[i] + 4, value);
		if (w < 0 || (size_t)w >= cap - off || off + (size_t)w > SCOPE_SETTINGS_MAX) {
			snprintf(err, err_len, "the scope's settings are longer than %d bytes",
				 SCOPE_SETTINGS_MAX);
			free(keys);
			return -EINVAL;
		}
		off += (size_t)w;
	}
	free(keys);
	return 0;
}

/* add_section - the canonical @settings into @ini as section @section.  0 or -ENOMEM. */
static int add_section(dictionary *ini, const char *section, const char *settings)
{
	const char *p = settings;
	char key[SCOPE_SETTINGS_MAX + 32];

	if (iniparser_set(ini, section, NULL) != 0)
		return -ENOMEM;
	while (*p) {
		const char *eq = strchr(p, '='), *nl = strchr(p, '\n');
		char *value;

		/* Canonical settings (scopedef.h): every line has both, '=' first. */
		snprintf(key, sizeof(key), "%s:%.*s", section, (int)(eq - p), p);
		value = strndup(eq + 1, (size_t)(nl - eq - 1));
		if (!value || iniparser_set(ini, key, value) != 0) {
			free(value);
			return -ENOMEM;
		}
		free(value);
		p = nl + 1;
	}
	return 0;
}

dictionary *scope_settings_ini(const char *settings)
{
	dictionary *ini = dictionary_new(0);

	if (ini && add_section(ini, "kms", settings) == 0)
		return ini;
	if (ini)
		iniparser_freedict(ini);
	return NULL;
}

dictionary *scope_def_ini(const struct scope_def *d)
{
	dictionary *ini = scope_settings_ini(d->settings);

	if (ini && d->previous[0] && add_section(ini, VOLUME_KMS_PREVIOUS, d->previous) < 0) {
		iniparser_freedict(ini);
		return NULL;
	}
	return ini;
}

static void context_of(const uint8_t *uuid, const struct scope_def *d, struct kms_context *ctx)
{
	memcpy(ctx->volume_uuid, uuid, 16);
	memcpy(ctx->file_id, d->id, SCOPE_ID_LEN);
}

/*
 * make_record - d->record: the scope @key wrapped by @kms, drawn by it first
 * when @fresh (its generate), else given (its wrap); its MAC sealed under @key.
 */
static int make_record(struct kms *kms, const uint8_t *uuid, struct scope_def *d, uint8_t *key,
		       bool fresh)
{
	struct key_record *rec = &d->record;
	struct kms_context ctx;
	size_t blob_len;
	int ret;

	context_of(uuid, d, &ctx);
	memset(rec, 0, sizeof(*rec));
	ret = fresh ? kms_generate(kms, &ctx, key, rec->wrapped, sizeof(rec->wrapped), &blob_len,
				   &rec->key_version)
		    : kms_wrap(kms, &ctx, key, rec->wrapped, sizeof(rec->wrapped), &blob_len,
			       &rec->key_version);
	if (ret < 0)
		return ret;
	rec->version = 1;
	rec->wrapped_len = (uint16_t)blob_len;
	memcpy(rec->file_id, d->id, SCOPE_ID_LEN);
	snprintf(rec->key_ref, sizeof(rec->key_ref), "%s", kms->key_ref);
	return record_seal_mac(rec, key, uuid);
}

int scope_key_create(struct kms *kms, const uint8_t *uuid, struct scope_def *d, uint8_t *key)
{
	return make_record(kms, uuid, d, key, true);
}

int scope_key_open(struct kms *kms, const uint8_t *uuid, const struct scope_def *d, uint8_t *key)
{
	struct kms_context ctx;
	int ret;

	if (strcmp(d->record.key_ref, kms->key_ref) != 0)
		return -ENOKEY;
	context_of(uuid, d, &ctx);
	ret = kms_unwrap(kms, &ctx, d->record.wrapped, d->record.wrapped_len, key);
	if (ret < 0)
		return ret;
	if (record_check_mac(&d->record, key, uuid) != 0) {
		secmem_wipe(key, SCOPE_KEY_LEN);
		return -EBADMSG;
	}
	return 0;
}

int scope_key_rewrap(struct kms *kms, const uint8_t *uuid, struct scope_def *d, uint32_t *current)
{
	struct key_record *rec = &d->record;
	uint8_t *key = NULL;
	struct kms_context ctx;
	size_t blob_len;
	int ret = kms_current_version(kms, current);

	if (ret < 0)
		return ret;
	if (strcmp(rec->key_ref, kms->key_ref) != 0)
		return -ENOKEY;
	if (rec->key_version == *current)
		return 1;
	key = secmem_alloc(SCOPE_KEY_LEN);
	if (!key)
		return -ENOMEM;
	/* The record is vouched for anew only once the old one has authenticated. */
	ret = scope_key_open(kms, uuid, d, key);
	context_of(uuid, d, &ctx);
	if (ret == 0)
		ret = kms_rewrap(kms, &ctx, rec->wrapped, rec->wrapped_len, rec->wrapped,
				 sizeof(rec->wrapped), &blob_len, &rec->key_version);
	if (ret == 0) {
		rec->wrapped_len = (uint16_t)blob_len;
		ret = record_seal_mac(rec, key, uuid);
	}
	secmem_free(key, SCOPE_KEY_LEN);
	return ret;
}

int scope_key_wrap(struct kms *kms, const uint8_t *uuid, struct scope_def *d, const uint8_t *key)
{
	/* Not written through: kms_wrap() only reads the key it wraps. */
	return make_record(kms, uuid, d, (uint8_t *)key, false);
}

/* open_registry - the registry directory (O_RDONLY), made (and the root fsynced) if @create. */
static int open_registry(int backing_fd, bool create)
{
	int fd = openat(backing_fd, SCOPE_REGISTRY, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	if (fd >= 0 || errno != ENOENT || !create)
		return fd >= 0 ? fd : -errno;
	if (mkdirat(backing_fd, SCOPE_REGISTRY, 0700) < 0 && errno != EEXIST)
		return -errno;
	/* @backing_fd may be O_PATH (the daemon's root inode): names_fsync_dir reopens it. */
	ret = names_fsync_dir(backing_fd);
	if (ret < 0)
		return ret;
	fd = openat(backing_fd, SCOPE_REGISTRY, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	return fd >= 0 ? fd : -errno;
}

int scope_registry_write(int backing_fd, const struct scope_def *d, const uint8_t *def_key)
{
	uint8_t *buf = malloc(SCOPE_DEF_MAX);
	char name[SCOPE_ID_TEXT + 1], tmp[SCOPE_ID_TEXT + 8];
	int dir = -1, fd = -1, ret;
	size_t len;

	if (!buf)
		return -ENOMEM;
	ret = scope_def_encode(d, def_key, buf, SCOPE_DEF_MAX, &len);
	if (ret < 0)
		goto out;
	dir = open_registry(backing_fd, true);
	if (dir < 0) {
		ret = dir;
		goto out;
	}
	names_b64_encode(d->id, SCOPE_ID_LEN, name);
	snprintf(tmp, sizeof(tmp), "%s.tmp", name);
	fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = layout_pwrite_full(fd, buf, len, 0);
	if (ret == 0 && fsync(fd) < 0)
		ret = -errno;
	if (ret == 0 && renameat(dir, tmp, dir, name) < 0)
		ret = -errno;
	if (ret == 0 && fsync(dir) < 0)
		ret = -errno;
	if (ret < 0)
		unlinkat(dir, tmp, 0);
out:
	if (fd >= 0)
		close(fd);
	if (dir >= 0)
		close(dir);
	free(buf);
	return ret;
}

int scope_registry_remove(int backing_fd, const uint8_t id[SCOPE_ID_LEN])
{
	char name[SCOPE_ID_TEXT + 1];
	int dir = open_registry(backing_fd, false), ret = 0;

	if (dir == -ENOENT)
		return 0;
	if (dir < 0)
		return dir;
	names_b64_encode(id, SCOPE_ID_LEN, name);
	if (unlinkat(dir, name, 0) < 0 && errno != ENOENT)
		ret = -errno;
	else if (fsync(dir) < 0)
		ret = -errno;
	close(dir);
	return ret;
}

/* read_def - the definition in registry entry @name.  0 or -errno (-EBADMSG: not authentic). */
static int read_def(int dir, const char *name, uint8_t *buf, const uint8_t *def_key,
		    struct scope_def *d)
{
	char want[SCOPE_ID_TEXT + 1];
	size_t len = 0;
	ssize_t n;
	int fd = openat(dir, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret;

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf + len, SCOPE_DEF_MAX + 1 - len)) > 0 && len + (size_t)n <= SCOPE_DEF_MAX)
		len += (size_t)n;
	ret = n < 0 ? -errno : n > 0 ? -EBADMSG : 0;
	close(fd);
	if (ret == 0)
		ret = scope_def_decode(buf, len, def_key, d);
	if (ret == 0) {
		/* The file's name is its ID: one definition per scope. */
		names_b64_encode(d->id, SCOPE_ID_LEN, want);
		if (strcmp(want, name) != 0)
			ret = -EBADMSG;
	}
	return ret;
}

int scope_registry_each(int backing_fd, const uint8_t *def_key, scope_visit_fn fn, void *arg)
{
	int dir = open_registry(backing_fd, false), ret = 0;
	struct scope_def *d = NULL;
	uint8_t *buf = NULL;
	struct dirent *de;
	DIR *dp;

	if (dir == -ENOENT)
		return 0;
	if (dir < 0)
		return dir;
	dp = fdopendir(dir);
	if (!dp) {
		close(dir);
		return -errno;
	}
	d = malloc(sizeof(*d));
	buf = malloc(SCOPE_DEF_MAX + 1);
	if (!d || !buf)
		ret = -ENOMEM;
	while (ret == 0 && (de = readdir(dp))) {
		/* Definitions are named by a bare ID; '.'-names are a crash's leftovers. */
		if (strchr(de->d_name, '.'))
			continue;
		ret = read_def(dirfd(dp), de->d_name, buf, def_key, d);
		if (ret == 0)
			ret = fn(arg, d);
	}
	closedir(dp);
	free(buf);
	free(d);
	return ret;
}
