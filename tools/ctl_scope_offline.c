// SPDX-License-Identifier: MIT
/* Offline tools inside key scopes: see ctl_scope_offline.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "fs/names.h"
#include "fs/rewrap.h"
#include "fs/scopedef.h"
#include "fs/volkey.h"
#include "tools/ctl_scope_offline.h"

/* What a definition is looked up by: its scope key's master key, or its root's directory ID. */
struct scope_search {
	const char *key_ref;
	const uint8_t *dirid;
	struct scope_def *found;
};

static int match(void *arg, const struct scope_def *d)
{
	struct scope_search *s = arg;

	if (s->key_ref ? strcmp(d->record.key_ref, s->key_ref) != 0
		       : memcmp(d->root_dirid, s->dirid, NAMES_DIRID_LEN) != 0)
		return 0;
	*s->found = *d;
	return 1; /* stops the walk: key references and roots are unique among scopes */
}

/*
 * find_scope - the definition @search names, into search->found, read from
 * the registry of @v (authenticated under its volume key, unwrapped through
 * its KMS).  1 found, 0 not (-ESRCH for a volume without scopes), or -errno
 * + @err.
 */
static int find_scope(struct ctl_volume *v, struct scope_search *search, char *err,
		      size_t err_len)
{
	struct kms_pair keys = ctl_volume_keys(v);
	uint8_t *volume_key = secmem_alloc(KMS_DEK_LEN), *def_key = secmem_alloc(SCOPE_MAC_LEN);
	char backing[sizeof(v->conf)], *slash;
	int root_fd = -1, ret = volume_key && def_key ? 0 : -ENOMEM;

	/* Scopes live only on volumes whose configuration says so (FORMAT.md). */
	if (!v->cfg.scopes || !v->kms)
		ret = -ESRCH;
	snprintf(backing, sizeof(backing), "%s", v->conf);
	slash = strrchr(backing, '/');
	if (slash)
		*slash = '\0';
	if (ret == 0 && (root_fd = open(slash ? backing : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		ret = -errno;
	if (ret == 0)
		ret = volkey_load(root_fd, &v->cfg, &keys, volume_key, err, err_len);
	if (ret == 0)
		ret = scope_def_key(volume_key, v->cfg.uuid, def_key);
	if (ret == 0) {
		ret = scope_registry_each(root_fd, def_key, match, search);
		if (ret == -EBADMSG)
			snprintf(err, err_len, "%s/: a key scope's definition is damaged or forged",
				 SCOPE_REGISTRY);
	}
	if (root_fd >= 0)
		close(root_fd);
	secmem_free(volume_key, KMS_DEK_LEN);
	secmem_free(def_key, SCOPE_MAC_LEN);
	return ret;
}

/* open_kms - the provider of @d's KMS (its current one), opened.  0 or -errno + @err. */
static int open_kms(const struct scope_def *d, struct kms **out, char *err, size_t err_len)
{
	dictionary *ini = scope_settings_ini(d->settings);
	int ret = ini ? kms_open(ini, out, err, err_len) : -ENOMEM;

	if (ini)
		iniparser_freedict(ini);
	return ret;
}

int ctl_scope_kms(struct ctl_volume *v, const char *key_ref, struct kms **out, char *err,
		  size_t err_len)
{
	struct scope_def *d = malloc(sizeof(*d));
	struct scope_search search = {.key_ref = key_ref, .found = d};
	int ret = d ? find_scope(v, &search, err, err_len) : -ENOMEM;

	if (ret == 0)
		ret = -ESRCH;
	if (ret == 1)
		ret = open_kms(d, out, err, err_len);
	free(d);
	return ret;
}

/* scope_codec - the name codec of scope @d: its scope key unwrapped through its KMS.  0 or -errno + @err. */
static int scope_codec(struct ctl_volume *v, const struct scope_def *d, struct names **out,
		       char *err, size_t err_len)
{
	uint8_t *key = secmem_alloc(SCOPE_KEY_LEN);
	struct kms *kms = NULL;
	int ret = key ? open_kms(d, &kms, err, err_len) : -ENOMEM;

	if (ret == 0 && (ret = scope_key_open(kms, v->cfg.uuid, d, key)) < 0)
		snprintf(err, err_len, "cannot unwrap its scope key: %s", kms_strerror(ret));
	if (ret == 0)
		ret = names_create(true, NULL, NULL, out);
	if (ret == 0 && (ret = names_set_key(*out, key, v->cfg.uuid)) < 0) {
		names_destroy(*out);
		*out = NULL;
	}
	kms_close(kms);
	secmem_free(key, SCOPE_KEY_LEN);
	return ret;
}

int ctl_scope_enter(struct ctl_volume *v, int dirfd, const char *path, struct names **names)
{
	uint8_t id[NAMES_DIRID_LEN];
	struct scope_def *d;
	struct scope_search search = {.dirid = id};
	struct names *codec = NULL;
	char err[1024] = "";
	int ret;

	if (!v->cfg.scopes || !names_encrypted(*names) || names_dirid_read(dirfd, id) < 0)
		return CTL_OK; /* no scope here; a missing ID is the next step's to report */
	d = malloc(sizeof(*d));
	search.found = d;
	ret = d ? find_scope(v, &search, err, sizeof(err)) : -ENOMEM;
	if (ret == 1)
		ret = scope_codec(v, d, &codec, err, sizeof(err));
	free(d);
	if (ret < 0)
		return ctl_err(ret == -EBADMSG ? CTL_INTEGRITY : CTL_KEY,
			       "%s: a key scope whose names this tool cannot open: %s", path,
			       err[0] ? err : strerror(-ret));
	if (codec) {
		names_destroy(*names);
		*names = codec;
	}
	return CTL_OK;
}
