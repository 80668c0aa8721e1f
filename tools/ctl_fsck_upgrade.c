// SPDX-License-Identifier: MIT
/*
 * envelopefsctl fsck --upgrade: which format a clean volume is raised to,
 * and what format 3 adds outside the configuration (docs/FORMAT.md,
 * "Upgrading").
 *
 * Format 3 changes no layout a volume already has: its records may carry
 * two more items (the file's version, its entry bindings), which need room
 * in the header slots, and a volume with a volume key gets an epoch file.
 * A header slot's size is the volume's, fixed when it was made (every
 * backing file starts with two of them), so a volume whose slots have no
 * room for the items cannot become format 3 in place: it stays at (or is
 * raised to) format 2.
 */

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "crypto/secmem.h"
#include "fs/hoststate.h"
#include "fs/volepoch.h"
#include "fs/volkey.h"
#include "tools/ctl_fsck.h"

/* slot_room_v3 - do @l's slots hold a format-3 record of @kms (always with xattr placement)? */
static bool slot_room_v3(const struct layout *l, const struct kms *kms, size_t *need)
{
	*need = kms ? slot_size_for_version(3, strlen(kms->key_ref), kms->max_blob_len) : 0;
	return l->placement != PLACEMENT_HEADER || !kms || *need <= l->slot_size;
}

int fsck_upgrade_target(struct fsck *f, unsigned *target)
{
	const struct ctl_volume *v = &f->vol;
	size_t need = 0, need_previous = 0;
	bool room = slot_room_v3(&v->layout, v->kms, &need) &&
		    slot_room_v3(&v->layout, v->previous, &need_previous);

	if (need_previous > need)
		need = need_previous;
	/* A key scope's KMS is not opened here: its records' size is unknown. */
	if (v->cfg.scopes && v->layout.placement == PLACEMENT_HEADER)
		room = false;
	*target = room ? 3 : 2;
	if (v->cfg.format_version < *target)
		return CTL_OK;
	if (v->cfg.format_version >= 3)
		return ctl_err(CTL_FAILED, "%s is already format version %u", f->backing,
			       v->cfg.format_version);
	if (v->cfg.scopes && v->layout.placement == PLACEMENT_HEADER)
		return ctl_err(CTL_FAILED, "%s stays format version 2: its key scopes' records "
			       "may not fit format 3's header slots", f->backing);
	return ctl_err(CTL_FAILED, "%s stays format version 2: its header slots are %u bytes and "
		       "format 3's items (a file's version and entry bindings) need %zu; a volume "
		       "made by `envelopefsctl init` has them (copy the files into one)", f->backing,
		       v->layout.slot_size, need);
}

void fsck_upgrade_epoch(struct fsck *f)
{
	struct kms_pair keys = ctl_volume_keys(&f->vol);
	uint8_t *key = NULL;
	struct volepoch *e = NULL;
	char err[512], state[PATH_MAX];
	int rc;

	if (!record_tags_v3(&f->vol.cfg) || !f->vol.cfg.names_encrypted)
		return;
	rc = hoststate_root(f->state_dir, state, sizeof(state));
	if (rc < 0)
		snprintf(err, sizeof(err), "no state directory for this host: %s", strerror(-rc));
	key = rc == 0 ? secmem_alloc(KMS_DEK_LEN) : NULL;
	if (rc == 0 && !key) {
		rc = -ENOMEM;
		snprintf(err, sizeof(err), "no locked memory for the volume key");
	}
	if (rc == 0)
		rc = volkey_load(f->root_fd, &f->vol.cfg, &keys, key, err, sizeof(err));
	if (rc == 0) {
		rc = volepoch_open(f->backing, f->vol.cfg.uuid, key, state, false, &e);
		if (rc < 0)
			snprintf(err, sizeof(err), "%s", strerror(-rc));
	}
	secmem_free(key, KMS_DEK_LEN);
	/* A volume without an epoch, on a host that never noted one, gets one. */
	if (rc == 0)
		rc = volepoch_raise(e, VOLEPOCH_MOUNT, err, sizeof(err));
	volepoch_close(e);
	if (rc < 0)
		fprintf(stderr, "envelopefsctl fsck: the volume epoch (%s) is not made yet: %s; the "
			"next mount makes it\n", VOLEPOCH_NAME, err);
}
