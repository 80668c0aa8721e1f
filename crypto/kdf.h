/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_KDF_H
#define ENVELOPEFS_CRYPTO_KDF_H

/* Hashes, MACs and key derivation: thin, bounds-checked wrappers over OpenSSL 3. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

/* crypto_sha256 - @out = SHA-256(@data).  Returns 0 or -EIO. */
int crypto_sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);

/* crypto_hmac_sha256 - @out = HMAC-SHA256(@key, @data).  Returns 0 or -EIO. */
int crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
		       uint8_t out[SHA256_LEN]);

/*
 * crypto_hkdf_sha256 - RFC 5869 HKDF (extract + expand) with SHA-256.
 * @salt may be NULL when @salt_len is 0.  Returns 0 or -EIO.
 */
int crypto_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		       const void *info, size_t info_len, void *out, size_t out_len);

/*
 * crypto_scrypt - scrypt(@pass, @salt, N = 2^@log2_n, @r, @p) into @out.
 * Returns 0, -EINVAL for parameters OpenSSL rejects, or -ENOMEM.
 */
int crypto_scrypt(const void *pass, size_t pass_len, const uint8_t *salt, size_t salt_len,
		  unsigned log2_n, uint32_t r, uint32_t p, void *out, size_t out_len);

/* crypto_memeq - constant-time comparison; true when equal. */
bool crypto_memeq(const void *a, const void *b, size_t len);

#endif
