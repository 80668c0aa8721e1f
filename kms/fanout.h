/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_FANOUT_H
#define ENVELOPEFS_KMS_FANOUT_H

/*
 * Batch operations for providers whose service takes one item per call
 * (Azure Key Vault, Google Cloud KMS, AWS KMS) or per session (PKCS#11): the
 * items of a kms_unwrap_many() or kms_wrap_many() batch are sent as parallel
 * single calls with the provider's own single-item op, by up to @width
 * threads (the caller's among them), so a prefetch of a directory or a
 * refill of the DEK pool costs about n / width round trips rather than n.
 * Each item is done by exactly one thread, and its rc is what the op
 * returned for it.  Needs a provider whose ops are thread-safe (kms.h: all
 * are).  A thread that cannot be started leaves its share to the others.
 */

#include <stddef.h>

#include "kms/kms.h"

/* The width of fanout_unwrap_many() and fanout_wrap_many(). */
#define FANOUT_THREADS 8
/* The most threads one batch uses, whatever the width asked. */
#define FANOUT_MAX 64

void fanout_unwrap(struct kms *kms, struct kms_unwrap_item *items, size_t n, unsigned width);
void fanout_wrap(struct kms *kms, struct kms_wrap_item *items, size_t n, unsigned width);

/* The same at FANOUT_THREADS, in the forms of struct kms_ops's batch ops. */
void fanout_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n);
void fanout_wrap_many(struct kms *kms, struct kms_wrap_item *items, size_t n);

#endif
