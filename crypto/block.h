/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_BLOCK_H
#define ENVELOPEFS_CRYPTO_BLOCK_H

/*
 * File content blocks (docs/FORMAT.md, "Content blocks").
 *
 * Plaintext block i of a file (1 .. block_size bytes) is stored as
 *
 *     nonce (12) || AES-256-GCM ciphertext (same length as plaintext) || tag (16)
 *
 * with AAD = volume UUID (16) || file ID (16) || i as 64-bit big-endian, so a
 * block moved to another index, another file or another volume fails to open.
 *
 * Each thread keeps its own EVP_CIPHER_CTX pair and a buffer of random nonce
 * bytes refilled from getrandom(2) in bulk, so sealing or opening a block
 * allocates nothing and sets up no context; the AES key schedule is only
 * recomputed when the thread switches to a different DEK.  The per-thread
 * copy of the last DEK lives in secmem and is wiped at thread exit and by
 * block_thread_wipe().
 */

#include <stddef.h>
#include <stdint.h>

#define BLOCK_KEY_LEN 32
#define BLOCK_NONCE_LEN 12
#define BLOCK_TAG_LEN 16
#define BLOCK_OVERHEAD (BLOCK_NONCE_LEN + BLOCK_TAG_LEN)
#define BLOCK_ID_LEN 16 /* volume UUID and file ID lengths */

/* Who a block belongs to: bound into every block's AAD. */
struct block_owner {
	const uint8_t *key;	    /* BLOCK_KEY_LEN bytes, the file's DEK */
	const uint8_t *volume_uuid; /* BLOCK_ID_LEN bytes */
	const uint8_t *file_id;	    /* BLOCK_ID_LEN bytes */
};

/*
 * block_seal - encrypt block @index of @owner.
 * @plain: @plain_len bytes, 1 <= @plain_len (the caller enforces <= block size).
 * @sealed: receives @plain_len + BLOCK_OVERHEAD bytes; must not overlap @plain.
 * A fresh random nonce is drawn for every call.
 * Returns 0 or -errno (-EINVAL for @plain_len 0, -EIO on an OpenSSL failure).
 */
int block_seal(const struct block_owner *owner, uint64_t index, const void *plain,
	       size_t plain_len, void *sealed);

/*
 * block_seal_with_nonce - as block_seal() with a caller-supplied nonce.
 * Only for test vectors; production code must use block_seal().
 */
int block_seal_with_nonce(const struct block_owner *owner, uint64_t index,
			  const uint8_t nonce[BLOCK_NONCE_LEN], const void *plain, size_t plain_len,
			  void *sealed);

/*
 * block_open - authenticate and decrypt block @index of @owner.
 * @sealed: @sealed_len bytes, > BLOCK_OVERHEAD.
 * @plain: receives @sealed_len - BLOCK_OVERHEAD bytes; must not overlap @sealed.
 * Returns 0, -EBADMSG if the tag does not verify (then @plain is zeroed: no
 * unauthenticated byte is ever left for the caller), -EINVAL for a length
 * that cannot be a block, -EIO on an OpenSSL failure.
 */
int block_open(const struct block_owner *owner, uint64_t index, const void *sealed,
	       size_t sealed_len, void *plain);

/* block_thread_wipe - drop this thread's cached key schedule and DEK copy. */
void block_thread_wipe(void);

#endif
