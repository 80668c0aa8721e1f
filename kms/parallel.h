/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_PARALLEL_H
#define ENVELOPEFS_KMS_PARALLEL_H

/*
 * Batches for providers whose service takes one item per call (AWS KMS) or
 * per session (PKCS#11): the items of a kms_unwrap_many() go out as
 * parallel single calls, at most @width at a time, so a batch costs about
 * n / width round trips instead of n.
 */

#include <stddef.h>

#include "kms/kms.h"

/*
 * kms_unwrap_parallel - set every item's rc (and dek) with @kms's own
 * unwrap op, on the calling thread and up to @width - 1 helper threads.
 * Needs a provider whose ops are thread-safe (kms.h: all are).  With
 * fewer threads than asked (pthread_create failing), the items still all
 * get done, only less in parallel.
 */
void kms_unwrap_parallel(struct kms *kms, struct kms_unwrap_item *items, size_t n,
			 unsigned width);

#endif
