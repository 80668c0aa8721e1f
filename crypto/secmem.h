/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_SECMEM_H
#define ENVELOPEFS_CRYPTO_SECMEM_H

/*
 * Memory for key material.
 *
 * Every byte returned by secmem_alloc() sits on pages that are locked in RAM
 * (mlock: never swapped), excluded from core dumps (MADV_DONTDUMP) and not
 * inherited by a forked child (MADV_WIPEONFORK).  Small requests (<= 64 bytes,
 * a DEK with its bookkeeping) come from a pool of 64-byte cells carved out of
 * such pages, so a cache of thousands of DEKs costs thousands of cells, not
 * thousands of pages.  Larger requests get pages of their own.
 *
 * secmem_free() wipes with OPENSSL_cleanse before the memory is reused or
 * unmapped.  All functions are thread-safe.
 */

#include <stddef.h>

/*
 * secmem_alloc - return @len zeroed bytes of locked, non-dumpable memory.
 * Returns NULL (errno set) when the pages cannot be mapped or locked; callers
 * treat that as -ENOMEM.  Never returns unlocked memory.
 */
void *secmem_alloc(size_t len);

/* secmem_free - wipe and release @p (NULL is a no-op); @len as allocated. */
void secmem_free(void *p, size_t len);

/* secmem_wipe - OPENSSL_cleanse wrapper for stack copies and buffers. */
void secmem_wipe(void *p, size_t len);

/*
 * secmem_harden_process - make the whole process non-dumpable
 * (PR_SET_DUMPABLE 0, RLIMIT_CORE 0) so that even key schedules inside
 * OpenSSL contexts, which live on the ordinary heap, never reach a core file.
 * Returns 0 or -errno.
 */
int secmem_harden_process(void);

#endif
