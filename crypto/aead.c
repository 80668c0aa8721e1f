// SPDX-License-Identifier: MIT
/*
 * One-shot AES-256-GCM (see aead.h).  A context is created and freed per
 * call: these paths run once per key wrap or keyring load, where clarity
 * beats the few microseconds a cached context would save.
 */

#include "crypto/aead.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* EVP_*Update takes an int length: feed larger buffers in pieces. */
#define AEAD_CHUNK (1 << 30)

static int feed_aad(EVP_CIPHER_CTX *ctx, const void *aad, size_t aad_len)
{
	const unsigned char *a = aad;
	int n;

	while (aad_len > 0) {
		int piece = aad_len > AEAD_CHUNK ? AEAD_CHUNK : (int)aad_len;

		if (EVP_CipherUpdate(ctx, NULL, &n, a, piece) != 1)
			return -EIO;
		a += piece;
		aad_len -= (size_t)piece;
	}
	return 0;
}

static int feed_data(EVP_CIPHER_CTX *ctx, const void *in, size_t len, void *out)
{
	const unsigned char *i = in;
	unsigned char *o = out;
	int n;

	while (len > 0) {
		int piece = len > AEAD_CHUNK ? AEAD_CHUNK : (int)len;

		if (EVP_CipherUpdate(ctx, o, &n, i, piece) != 1 || n != piece)
			return -EIO;
		i += piece;
		o += piece;
		len -= (size_t)piece;
	}
	return 0;
}

/* The arguments seal and open share: @in and @out are plain and cipher either way. */
static bool args_ok(const uint8_t *key, const uint8_t *nonce, const void *aad, size_t aad_len,
		    const void *in, size_t len, const void *out, const uint8_t *tag)
{
	return key && nonce && (aad || !aad_len) && (!len || (in && out)) && tag;
}

/*
 * gcm_run - key @ctx for AES-256-GCM in direction @enc (1 seal, 0 open),
 * feed it the AAD and run @len bytes of @in through to @out.  0 or -EIO;
 * the tag is the caller's.
 */
static int gcm_run(EVP_CIPHER_CTX *ctx, int enc, const uint8_t *key, const uint8_t *nonce,
		   const void *aad, size_t aad_len, const void *in, size_t len, void *out)
{
	if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce, enc) != 1)
		return -EIO;
	if (feed_aad(ctx, aad, aad_len) || feed_data(ctx, in, len, out))
		return -EIO;
	return 0;
}

/**
 * aead_seal - see aead.h.  On failure @cipher and @tag are wiped, so a
 * caller that ignores the error cannot store a half-encrypted buffer.
 */
int aead_seal(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
	      const void *aad, size_t aad_len, const void *plain, size_t len, void *cipher,
	      uint8_t tag[AEAD_TAG_LEN])
{
	EVP_CIPHER_CTX *ctx;
	int n, ret = -EIO;

	if (!args_ok(key, nonce, aad, aad_len, plain, len, cipher, tag))
		return -EINVAL;

	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	if (gcm_run(ctx, 1, key, nonce, aad, aad_len, plain, len, cipher) < 0)
		goto out;
	if (EVP_EncryptFinal_ex(ctx, tag, &n) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_LEN, tag) != 1)
		goto out;
	ret = 0;
out:
	if (ret) {
		if (len)
			OPENSSL_cleanse(cipher, len);
		OPENSSL_cleanse(tag, AEAD_TAG_LEN);
	}
	/* Frees and cleanses the key schedule. */
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

/**
 * aead_open - see aead.h.  Decryption writes @plain before the tag is known
 * to be good, so every failure path wipes it.
 */
int aead_open(const uint8_t key[AEAD_KEY_LEN], const uint8_t nonce[AEAD_NONCE_LEN],
	      const void *aad, size_t aad_len, const void *cipher, size_t len,
	      const uint8_t tag[AEAD_TAG_LEN], void *plain)
{
	EVP_CIPHER_CTX *ctx;
	uint8_t tag_copy[AEAD_TAG_LEN];
	int n, ret = -EIO;

	if (!args_ok(key, nonce, aad, aad_len, cipher, len, plain, tag))
		return -EINVAL;

	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return -ENOMEM;
	/* The ctrl takes a non-const pointer. */
	memcpy(tag_copy, tag, AEAD_TAG_LEN);
	if (gcm_run(ctx, 0, key, nonce, aad, aad_len, cipher, len, plain) < 0)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_LEN, tag_copy) != 1)
		goto out;
	if (EVP_DecryptFinal_ex(ctx, tag_copy, &n) != 1) {
		ret = -EBADMSG;
		goto out;
	}
	ret = 0;
out:
	if (ret && len)
		OPENSSL_cleanse(plain, len);
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}
