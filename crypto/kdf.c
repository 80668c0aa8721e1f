// SPDX-License-Identifier: MIT
/*
 * Hashes, MACs and KDFs (see kdf.h).  All cold-path: key records, keyring
 * files, passphrases.  Nothing here keeps state between calls.
 */

#include "crypto/kdf.h"

#include <errno.h>
#include <limits.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

/**
 * crypto_sha256 - see kdf.h.
 */
int crypto_sha256(const void *data, size_t len, uint8_t out[SHA256_LEN])
{
	unsigned int out_len = 0;

	if (!data && len)
		return -EINVAL;
	if (EVP_Digest(data ? data : "", len, out, &out_len, EVP_sha256(), NULL) != 1 ||
	    out_len != SHA256_LEN)
		return -EIO;
	return 0;
}

/**
 * crypto_hmac_sha256 - see kdf.h.
 */
int crypto_hmac_sha256(const void *key, size_t key_len, const void *data, size_t len,
		       uint8_t out[SHA256_LEN])
{
	size_t out_len = 0;

	if ((!key && key_len) || (!data && len))
		return -EINVAL;
	if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key ? key : "", key_len,
		       data ? data : "", len, out, SHA256_LEN, &out_len) ||
	    out_len != SHA256_LEN)
		return -EIO;
	return 0;
}

/**
 * crypto_hkdf_sha256 - see kdf.h.  A missing salt is left to OpenSSL, which
 * uses HashLen zero bytes exactly as RFC 5869 section 2.2 specifies.
 * On failure @out is wiped so a half-written key never survives.
 */
int crypto_hkdf_sha256(const void *ikm, size_t ikm_len, const void *salt, size_t salt_len,
		       const void *info, size_t info_len, void *out, size_t out_len)
{
	OSSL_PARAM params[5], *p = params;
	EVP_KDF *kdf;
	EVP_KDF_CTX *kctx = NULL;
	int ret = -EIO;

	if (!ikm || (!salt && salt_len) || (!info && info_len) || !out || !out_len)
		return -EINVAL;

	kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	if (!kdf)
		return -EIO;
	kctx = EVP_KDF_CTX_new(kdf);
	if (!kctx)
		goto out_kdf;

	*p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
	*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
	if (salt_len)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt,
							 salt_len);
	if (info_len)
		*p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info,
							 info_len);
	*p = OSSL_PARAM_construct_end();

	if (EVP_KDF_derive(kctx, out, out_len, params) == 1)
		ret = 0;
	else
		OPENSSL_cleanse(out, out_len);

	/* EVP_KDF_CTX_free() cleanses the copies of ikm/salt/info it made. */
	EVP_KDF_CTX_free(kctx);
out_kdf:
	EVP_KDF_free(kdf);
	return ret;
}

/*
 * The memory scrypt needs (RFC 7914 section 5: V is N blocks of 128 r bytes,
 * B is p of them, plus OpenSSL's two scratch blocks).  Returns 0 on overflow.
 */
static uint64_t scrypt_mem(uint64_t n, uint64_t r, uint64_t p)
{
	uint64_t blocks;

	if (r > UINT64_MAX / 128)
		return 0;
	if (n > UINT64_MAX - p - 2)
		return 0;
	blocks = n + p + 2;
	if (blocks > UINT64_MAX / (128 * r))
		return 0;
	return blocks * 128 * r;
}

/**
 * crypto_scrypt - see kdf.h.  The parameters are validated here (N a power
 * of two > 1, r and p non-zero, p * r within RFC 7914's bound) so that a
 * refusal can be told apart from an allocation failure, which OpenSSL
 * reports the same way.
 */
int crypto_scrypt(const void *pass, size_t pass_len, const uint8_t *salt, size_t salt_len,
		  unsigned log2_n, uint32_t r, uint32_t p, void *out, size_t out_len)
{
	uint64_t n, mem;

	if ((!pass && pass_len) || (!salt && salt_len) || !out || !out_len)
		return -EINVAL;
	if (log2_n < 1 || log2_n > 63 || r == 0 || p == 0)
		return -EINVAL;
	/* RFC 7914: p <= ((2^32 - 1) * 32) / (128 * r). */
	if ((uint64_t)p * r > (((uint64_t)1 << 30) - 1))
		return -EINVAL;
	n = (uint64_t)1 << log2_n;
	/* RFC 7914: N < 2^(128 * r / 8). */
	if (16 * (uint64_t)r < 64 && log2_n >= 16 * r)
		return -EINVAL;
	mem = scrypt_mem(n, r, p);
	if (!mem || mem > SIZE_MAX)
		return -ENOMEM;

	if (EVP_PBE_scrypt(pass ? pass : "", pass_len, salt ? salt : (const uint8_t *)"",
			   salt_len, n, r, p, mem, out, out_len) != 1) {
		OPENSSL_cleanse(out, out_len);
		return -ENOMEM;
	}
	return 0;
}

/**
 * crypto_memeq - see kdf.h.
 */
bool crypto_memeq(const void *a, const void *b, size_t len)
{
	return CRYPTO_memcmp(a, b, len) == 0;
}
