/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_SIV_H
#define ENVELOPEFS_CRYPTO_SIV_H

/*
 * Deterministic authenticated encryption: AES-256-SIV (RFC 5297) from
 * OpenSSL 3, for file names, symlink targets and xattrs
 * (docs/FORMAT.md, "Names").  The same key, associated data and plaintext
 * always give the same ciphertext, which is what lets a name be looked up
 * by encrypting it; any change to the ciphertext or the associated data
 * makes decryption fail.
 *
 * Output layout (RFC 5297): synthetic IV (16) ‖ ciphertext (same length as
 * the plaintext).  The associated data is a vector of up to SIV_MAX_AD
 * components, each fed to S2V separately (so ("ab","c") differs from
 * ("a","bc")).  The plaintext must not be empty: OpenSSL's EVP interface
 * cannot seal an empty message, so formats built on this one never ask it
 * to.
 *
 * Thread-safe; every call is one-shot.
 */

#include <stddef.h>
#include <stdint.h>

#define SIV_KEY_LEN 64 /* two AES-256 keys: S2V's CMAC key, then CTR's */
#define SIV_TAG_LEN 16
#define SIV_MAX_AD 4
#define SIV_MAX_DATA (1u << 20)

struct siv_ad {
	const void *data;
	size_t len;
};

/*
 * siv_seal - @out (SIV_TAG_LEN + @len bytes) = IV ‖ ciphertext of @plain
 * (1 .. SIV_MAX_DATA bytes) under @key with the @n_ad components of @ad.
 * Returns 0, -EINVAL (bad length or too many components) or -EIO.
 */
int siv_seal(const uint8_t key[SIV_KEY_LEN], const struct siv_ad *ad, size_t n_ad,
	     const void *plain, size_t len, uint8_t *out);

/*
 * siv_open - verify and decrypt @in (@len bytes: IV ‖ ciphertext, more than
 * SIV_TAG_LEN) into @plain (@len - SIV_TAG_LEN bytes).  Returns 0, -EBADMSG
 * when it is not authentic under @key and @ad (@plain is then wiped), or
 * -EINVAL / -EIO.
 */
int siv_open(const uint8_t key[SIV_KEY_LEN], const struct siv_ad *ad, size_t n_ad,
	     const uint8_t *in, size_t len, void *plain);

#endif
