/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_RANDOM_H
#define ENVELOPEFS_CRYPTO_RANDOM_H

#include <stddef.h>

/*
 * crypto_random - fill @buf with @len bytes from the kernel CSPRNG
 * (getrandom(2), blocking only until the pool is first initialised).
 * Used for DEKs, file IDs, volume UUIDs, salts and nonces.
 * Returns 0 or -errno (never a short fill).
 */
int crypto_random(void *buf, size_t len);

#endif
