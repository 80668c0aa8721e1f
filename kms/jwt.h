/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_JWT_H
#define ENVELOPEFS_KMS_JWT_H

/*
 * RS256 JSON Web Tokens (RFC 7519, RFC 7515) signed with OpenSSL: the
 * assertions the cloud KMS providers trade for access tokens (an Azure
 * client certificate's client_assertion, a Google service account's
 * jwt-bearer grant).
 *
 * The private key comes as PEM text (secmem) and is parsed, used and freed
 * within one call: an assertion is made once per token, so no key object
 * outlives it.  OpenSSL's parsed copy lives briefly on its own heap (freed,
 * and OpenSSL clears private key material when it frees it).
 */

#include <stddef.h>

/* base64url of a SHA-1 (x5t) or SHA-256 digest, without padding, and the NUL. */
#define JWT_X5T_LEN 28
#define JWT_X5T_S256_LEN 44

/*
 * jwt_sign_rs256 - "B64URL(@header_json).B64URL(@claims_json).B64URL(sig)"
 * into @out (@cap bytes, NUL-terminated), sig the RSASSA-PKCS1-v1_5
 * SHA-256 signature by the RSA private key in @pem_key (PEM, any of the
 * PKCS#1/PKCS#8 forms OpenSSL reads, unencrypted).  Returns 0, -EINVAL for
 * a key that is not an RSA private key, -ENOSPC, -ENOMEM or -EIO.
 */
int jwt_sign_rs256(const char *pem_key, size_t pem_len, const char *header_json,
		   const char *claims_json, char *out, size_t cap);

/*
 * jwt_cert_thumbprints - the x5t (SHA-1) and x5t#S256 (SHA-256) thumbprints
 * of the first certificate in @pem, base64url without padding.  0, or
 * -EINVAL when @pem holds no certificate.
 */
int jwt_cert_thumbprints(const char *pem, size_t pem_len, char x5t[JWT_X5T_LEN + 1],
			 char x5t_s256[JWT_X5T_S256_LEN + 1]);

#endif
