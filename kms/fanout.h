/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_FANOUT_H
#define ENVELOPEFS_KMS_FANOUT_H

/*
 * Batch operations for providers whose service has no batch call (Azure Key
 * Vault, Google Cloud KMS): the items of a kms_unwrap_many() or
 * kms_wrap_many() batch are sent as parallel single calls, by up to
 * FANOUT_THREADS threads (the caller's among them), so a prefetch of a
 * directory or a refill of the DEK pool costs about n / FANOUT_THREADS round
 * trips rather than n.  Each item's rc is what the provider's single-item op
 * returned for it.  The forms match struct kms_ops's unwrap_many and
 * wrap_many, so a provider lists them there directly.  A thread that cannot
 * be started leaves its share to the others.
 */

#include <stddef.h>

#include "kms/kms.h"

#define FANOUT_THREADS 8

void fanout_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n);
void fanout_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n);

#endif
