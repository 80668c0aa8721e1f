// SPDX-License-Identifier: MIT
/* Offline tools inside key scopes: see ctl_scope_offline.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "crypto/secmem.h"
#include "fs/rewrap.h"
#include "fs/scopedef.h"
#include "fs/volkey.h"
#include "tools/ctl_scope_offline.h"

struct scope_search {
	const char *key_ref;
	struct scope_def *found;
};

static int match_ref(void *arg, const struct scope_def *d)
{
	struct scope_search *s = arg;

	if (strcmp(d->record.key_ref, s->key_ref) != 0)
		return 0;
	*s->found = *d;
	return 1; /* stops the walk: key references are unique among scopes */
}

/* find_scope - the definition whose scope key @key_ref wraps, into @d.  1 found, 0 not, or -errno. */
static int find_scope(struct ctl_volume *v, int root_fd, const char *key_ref, struct scope_def *d,
		      char *err, size_t err_len)
{
	struct kms_pair keys = ctl_volume_keys(v);
	uint8_t *volume_key = secmem_alloc(KMS_DEK_LEN), *def_key = secmem_alloc(SCOPE_MAC_LEN);
	struct scope_search search = {.key_ref = key_ref, .found = d};
	int ret = volume_key && def_key ? 0 : -ENOMEM;

	if (ret == 0)
		ret = volkey_load(root_fd, &v->cfg, &keys, volume_key, err, err_len);
	if (ret == 0)
		ret = scope_def_key(volume_key, v->cfg.uuid, def_key);
	if (ret == 0) {
		ret = scope_registry_each(root_fd, def_key, match_ref, &search);
		if (ret == -EBADMSG)
			snprintf(err, err_len, "%s/: a key scope's definition is damaged or forged",
				 SCOPE_REGISTRY);
	}
	secmem_free(volume_key, KMS_DEK_LEN);
	secmem_free(def_key, SCOPE_MAC_LEN);
	return ret;
}

int ctl_scope_kms(struct ctl_volume *v, const char *key_ref, struct kms **out, char *err,
		  size_t err_len)
{
	struct scope_def *d = malloc(sizeof(*d));
	char backing[sizeof(v->conf)], *slash;
	dictionary *ini = NULL;
	int root_fd, ret;

	/* Scopes live only on volumes whose configuration says so (FORMAT.md). */
	if (!v->cfg.scopes || !v->kms)
		return -ESRCH;
	if (!d)
		return -ENOMEM;
	snprintf(backing, sizeof(backing), "%s", v->conf);
	slash = strrchr(backing, '/');
	if (slash)
		*slash = '\0';
	root_fd = open(slash ? backing : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	ret = root_fd < 0 ? -errno : find_scope(v, root_fd, key_ref, d, err, err_len);
	if (ret == 0)
		ret = -ESRCH;
	if (ret == 1) {
		ini = scope_settings_ini(d->settings);
		ret = ini ? kms_open(ini, out, err, err_len) : -ENOMEM;
	}
	if (ini)
		iniparser_freedict(ini);
	if (root_fd >= 0)
		close(root_fd);
	free(d);
	return ret;
}
