// SPDX-License-Identifier: MIT
/* RS256 JSON Web Tokens signed with OpenSSL (kms/jwt.h). */

#include "kms/jwt.h"

#include <errno.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "crypto/base64.h"

/* Room for a 4096-bit RSA signature (512 bytes). */
#define MAX_SIG 512

/* append_b64url - @len bytes of @in as base64url at @out + *@used (cap checked). */
static int append_b64url(const void *in, size_t len, char *out, size_t cap, size_t *used)
{
	if (*used + BASE64URL_ENCODED_LEN(len) + 1 > cap)
		return -ENOSPC;
	*used += base64url_encode(in, len, out + *used);
	return 0;
}

int jwt_sign_rs256(const char *pem_key, size_t pem_len, const char *header_json,
		   const char *claims_json, char *out, size_t cap)
{
	unsigned char sig[MAX_SIG];
	size_t used = 0, sig_len = sizeof(sig);
	EVP_MD_CTX *md = NULL;
	EVP_PKEY *key = NULL;
	BIO *bio;
	int rc;

	bio = BIO_new_mem_buf(pem_key, (int)pem_len);
	if (!bio)
		return -ENOMEM;
	key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!key || !EVP_PKEY_is_a(key, "RSA")) {
		EVP_PKEY_free(key);
		return -EINVAL;
	}
	rc = append_b64url(header_json, strlen(header_json), out, cap, &used);
	if (rc == 0 && used + 2 < cap)
		out[used++] = '.';
	else if (rc == 0)
		rc = -ENOSPC;
	if (rc == 0)
		rc = append_b64url(claims_json, strlen(claims_json), out, cap, &used);
	if (rc == 0) {
		md = EVP_MD_CTX_new();
		/* The signing input is the two encoded parts and the dot between them. */
		if (!md || EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
		    EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)out, used) != 1)
			rc = -EIO;
	}
	if (rc == 0 && used + 2 < cap)
		out[used++] = '.';
	else if (rc == 0)
		rc = -ENOSPC;
	if (rc == 0)
		rc = append_b64url(sig, sig_len, out, cap, &used);
	if (rc == 0)
		out[used] = '\0';
	EVP_MD_CTX_free(md);
	EVP_PKEY_free(key);
	return rc;
}

int jwt_cert_thumbprints(const char *pem, size_t pem_len, char x5t[JWT_X5T_LEN + 1],
			 char x5t_s256[JWT_X5T_S256_LEN + 1])
{
	unsigned char sha1[20], sha256[32];
	unsigned int n1 = sizeof(sha1), n256 = sizeof(sha256);
	X509 *cert;
	BIO *bio;
	int rc = 0;

	bio = BIO_new_mem_buf(pem, (int)pem_len);
	if (!bio)
		return -ENOMEM;
	cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (!cert)
		return -EINVAL;
	if (X509_digest(cert, EVP_sha1(), sha1, &n1) != 1 ||
	    X509_digest(cert, EVP_sha256(), sha256, &n256) != 1)
		rc = -EIO;
	X509_free(cert);
	if (rc == 0) {
		x5t[base64url_encode(sha1, n1, x5t)] = '\0';
		x5t_s256[base64url_encode(sha256, n256, x5t_s256)] = '\0';
	}
	return rc;
}
