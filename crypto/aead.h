/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_AEAD_H
#define ENVELOPEFS_CRYPTO_AEAD_H

/*
 * One-shot AES-256-GCM with caller-chosen AAD, for the cold paths (key
 * wrapping by the local keyring, keyring files).  The hot path for file
 * content is block.h, which keeps per-thread contexts.
 */

#include <stddef.h>
#include <stdint.h>

#define AEAD_KEY_LEN 32
#define AEAD_NONCE_LEN 12
#define AEAD_TAG_LEN 16

/*
 * aead_seal - encrypt @len bytes of @plain into @cipher (same length) and
 * write the tag to @tag.  @plain and @cipher may alias.  Returns 0 or -EIO.
 */
int aead_seal(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
	      const void *aad, size_t aad_len, const void *plain, size_t len, void *cipher,
	      uint8_t tag[AEAD_TAG_LEN]);

/*
 * aead_open - verify and decrypt.  On a bad tag returns -EBADMSG and wipes
 * @plain, so no unauthenticated byte ever escapes.  Returns 0 or -errno.
 */
int aead_open(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
	      const void *aad, size_t aad_len, const void *cipher, size_t len,
	      const uint8_t tag[AEAD_TAG_LEN], void *plain);

#endif
