// SPDX-License-Identifier: MIT
/*
 * AES-256-SIV through OpenSSL 3's provider (see siv.h).  The cipher is
 * fetched once per process; a context is made per call, since SIV's key
 * schedule is part of its state and names are short.
 */

#include "crypto/siv.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

static EVP_CIPHER *siv_cipher;
static pthread_once_t siv_once = PTHREAD_ONCE_INIT;

static void siv_fetch(void)
{
	siv_cipher = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
}

/* A context keyed for @enc with every AD component fed, or NULL. */
static EVP_CIPHER_CTX *siv_start(const uint8_t key[SIV_KEY_LEN], const struct siv_ad *ad,
				 size_t n_ad, int enc)
{
	EVP_CIPHER_CTX *ctx;
	int n;

	pthread_once(&siv_once, siv_fetch);
	if (!siv_cipher)
		return NULL;
	ctx = EVP_CIPHER_CTX_new();
	if (!ctx)
		return NULL;
	if (EVP_CipherInit_ex2(ctx, siv_cipher, key, NULL, enc, NULL) != 1)
		goto fail;
	for (size_t i = 0; i < n_ad; i++) {
		/* An empty component still counts in S2V: it is fed as such. */
		static const unsigned char none;
		const unsigned char *d = ad[i].len ? ad[i].data : &none;

		if (EVP_CipherUpdate(ctx, NULL, &n, d, (int)ad[i].len) != 1)
			goto fail;
	}
	return ctx;
fail:
	EVP_CIPHER_CTX_free(ctx);
	return NULL;
}

static int check_args(const struct siv_ad *ad, size_t n_ad, size_t len)
{
	if (n_ad > SIV_MAX_AD || len == 0 || len > SIV_MAX_DATA)
		return -EINVAL;
	for (size_t i = 0; i < n_ad; i++)
		if (ad[i].len > SIV_MAX_DATA || (ad[i].len && !ad[i].data))
			return -EINVAL;
	return 0;
}

int siv_seal(const uint8_t key[SIV_KEY_LEN], const struct siv_ad *ad, size_t n_ad,
	     const void *plain, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *ctx;
	int n, ret = check_args(ad, n_ad, len);

	if (ret < 0)
		return ret;
	ctx = siv_start(key, ad, n_ad, 1);
	if (!ctx)
		return -EIO;
	ret = -EIO;
	if (EVP_CipherUpdate(ctx, out + SIV_TAG_LEN, &n, plain, (int)len) != 1 ||
	    (size_t)n != len)
		goto out;
	if (EVP_CipherFinal_ex(ctx, out + SIV_TAG_LEN + len, &n) != 1)
		goto out;
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, SIV_TAG_LEN, out) != 1)
		goto out;
	ret = 0;
out:
	if (ret < 0)
		OPENSSL_cleanse(out, SIV_TAG_LEN + len);
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}

int siv_open(const uint8_t key[SIV_KEY_LEN], const struct siv_ad *ad, size_t n_ad,
	     const uint8_t *in, size_t len, void *plain)
{
	uint8_t tag[SIV_TAG_LEN];
	EVP_CIPHER_CTX *ctx;
	size_t plain_len = len > SIV_TAG_LEN ? len - SIV_TAG_LEN : 0;
	int n, ret = check_args(ad, n_ad, plain_len);

	if (ret < 0)
		return ret;
	ctx = siv_start(key, ad, n_ad, 0);
	if (!ctx)
		return -EIO;
	ret = -EIO;
	/* The IV is the tag; OpenSSL wants it before the ciphertext. */
	memcpy(tag, in, SIV_TAG_LEN);
	if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, SIV_TAG_LEN, tag) != 1)
		goto out;
	if (EVP_CipherUpdate(ctx, plain, &n, in + SIV_TAG_LEN, (int)plain_len) != 1 ||
	    (size_t)n != plain_len) {
		ret = -EBADMSG;
		goto out;
	}
	if (EVP_CipherFinal_ex(ctx, (uint8_t *)plain + plain_len, &n) != 1) {
		ret = -EBADMSG;
		goto out;
	}
	ret = 0;
out:
	if (ret < 0)
		OPENSSL_cleanse(plain, plain_len);
	EVP_CIPHER_CTX_free(ctx);
	return ret;
}
