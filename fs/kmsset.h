/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_KMSSET_H
#define ENVELOPEFS_FS_KMSSET_H

/*
 * The mounted volume's KMS providers, replaceable while it is in use.
 *
 * A set is the current provider (new files, the target of every re-wrap),
 * its pool of new-file keys, and while the volume moves to the current
 * provider from another (envelopefsctl rotate --to-kms), the previous one,
 * through which records not moved yet still open.  Every key operation
 * takes the set of the moment (kms_keeper_get) and gives it back when done
 * (kms_keeper_put); nothing keeps a set across FUSE requests.
 *
 * kms_keeper_reload() builds a set from a (re-read) volume configuration,
 * publishes it, and returns only when no operation holds an older set.
 * Invariant: once it returns, no key record is written under a provider the
 * configuration no longer names, and no new file gets a key from one — so a
 * walk started afterwards sees every record it has to move.  A provider
 * named by both sets with the same settings is carried over, not reopened
 * (its master keys, sessions and pool stay); one no live set names is closed
 * (its keys wiped) by whoever drops the last set naming it.
 */

#include <iniparser.h>

#include "kms/dekpool.h"
#include "kms/kms.h"
#include "rewrap.h"

/* The automatic pool size: none for the local keyring, this many for a remote KMS. */
#define DEK_POOL_AUTO_REMOTE 64

struct kms_set {
	struct kms_pair keys;
	struct dek_pool *pool; /* new-file keys from keys.current */
};

struct kms_keeper;

/*
 * kms_keeper_open - open the providers of @ini ([kms], and [kms_previous]
 * if present) for the volume @volume_uuid.  @pool_capacity: the current
 * provider's pool (-1: none for the local keyring, DEK_POOL_AUTO_REMOTE
 * otherwise).  @hook (may be NULL) is set on every provider opened, now or
 * by a reload.  0, or -errno with a message in @err.
 */
int kms_keeper_open(const dictionary *ini, const uint8_t volume_uuid[16], int pool_capacity,
		    kms_reachability_fn hook, void *hook_arg, struct kms_keeper **out, char *err,
		    size_t err_len);

/* kms_keeper_close - close every provider (keys wiped).  No set may be held. */
void kms_keeper_close(struct kms_keeper *k);

/* kms_keeper_get / kms_keeper_put - hold the current set for one operation. */
const struct kms_set *kms_keeper_get(struct kms_keeper *k);
void kms_keeper_put(struct kms_keeper *k, const struct kms_set *set);

/*
 * kms_keeper_reload - make the providers of @ini the volume's (see the top).
 * Refuses (-EINVAL) a configuration whose two providers have the same key
 * reference.  On failure the old set stays.  0 or -errno, message in @err.
 */
int kms_keeper_reload(struct kms_keeper *k, const dictionary *ini, char *err, size_t err_len);

#endif
