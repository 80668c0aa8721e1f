// SPDX-License-Identifier: MIT
/* Unit tests for crypto/kdf.c and crypto/random.c against published vectors. */

#include "vector.h" /* unhex() */

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "crypto/kdf.h"
#include "crypto/random.h"

static int matches(const uint8_t *got, const char *hex)
{
	uint8_t want[256];
	size_t n;

	return unhex(hex, want, sizeof(want), &n) == 0 && n > 0 && memcmp(got, want, n) == 0;
}

static void test_sha256_abc(void)
{
	uint8_t out[SHA256_LEN];

	CHECK_EQ_INT(crypto_sha256("abc", 3, out), 0);
	CHECK(matches(out, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
	CHECK_EQ_INT(crypto_sha256(NULL, 0, out), 0);
	CHECK(matches(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
}

/* RFC 4231 test case 1. */
static void test_hmac_rfc4231_1(void)
{
	uint8_t key[20], out[SHA256_LEN];

	memset(key, 0x0b, sizeof(key));
	CHECK_EQ_INT(crypto_hmac_sha256(key, sizeof(key), "Hi There", 8, out), 0);
	CHECK(matches(out, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
}

/* RFC 5869 test case 1 (salt and info) and test case 3 (neither). */
static void test_hkdf_rfc5869(void)
{
	uint8_t ikm[22], salt[13], info[10], okm[42];
	int i;

	memset(ikm, 0x0b, sizeof(ikm));
	for (i = 0; i < 13; i++)
		salt[i] = (uint8_t)i;
	for (i = 0; i < 10; i++)
		info[i] = (uint8_t)(0xf0 + i);
	CHECK_EQ_INT(crypto_hkdf_sha256(ikm, 22, salt, 13, info, 10, okm, 42), 0);
	CHECK(matches(okm, "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
			   "34007208d5b887185865"));

	CHECK_EQ_INT(crypto_hkdf_sha256(ikm, 22, NULL, 0, NULL, 0, okm, 42), 0);
	CHECK(matches(okm, "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d"
			   "9d201395faa4b61a96c8"));

	/* RFC 5869: L <= 255 * HashLen. */
	{
		static uint8_t big[255 * 32 + 1];

		CHECK_EQ_INT(crypto_hkdf_sha256(ikm, 22, NULL, 0, NULL, 0, big, sizeof(big)),
			     -EIO);
		CHECK_EQ_INT(crypto_hkdf_sha256(ikm, 22, NULL, 0, NULL, 0, big, 255 * 32), 0);
	}
	CHECK_EQ_INT(crypto_hkdf_sha256(ikm, 22, NULL, 5, NULL, 0, okm, 42), -EINVAL);
}

/* RFC 7914 section 12, vectors 1 and 2. */
static void test_scrypt_rfc7914(void)
{
	uint8_t out[64];

	CHECK_EQ_INT(crypto_scrypt("", 0, (const uint8_t *)"", 0, 4, 1, 1, out, 64), 0);
	CHECK(matches(out, "77d6576238657b203b19ca42c18a0497f16b4844e3074ae8dfdffa3fede21442"
			   "fcd0069ded0948f8326a753a0fc81f17e8d3e0fb2e0d3628cf35e20c38d18906"));
	CHECK_EQ_INT(crypto_scrypt("password", 8, (const uint8_t *)"NaCl", 4, 10, 8, 16, out, 64),
		     0);
	CHECK(matches(out, "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
			   "2eaf30d92e22a3886ff109279d9830dac727afb94a83ee6d8360cbdfa2cc0640"));
}

static void test_scrypt_bad_params(void)
{
	uint8_t out[32];

	CHECK_EQ_INT(crypto_scrypt("p", 1, (const uint8_t *)"s", 1, 0, 8, 1, out, 32), -EINVAL);
	CHECK_EQ_INT(crypto_scrypt("p", 1, (const uint8_t *)"s", 1, 10, 0, 1, out, 32), -EINVAL);
	CHECK_EQ_INT(crypto_scrypt("p", 1, (const uint8_t *)"s", 1, 10, 8, 0, out, 32), -EINVAL);
	CHECK_EQ_INT(crypto_scrypt("p", 1, (const uint8_t *)"s", 1, 16, 1, 1, out, 32), -EINVAL);
	CHECK_EQ_INT(crypto_scrypt("p", 1, (const uint8_t *)"s", 1, 10, 8, 1, out, 0), -EINVAL);
	/* 2^62 * 128 * 8 bytes cannot be allocated. */
	CHECK(crypto_scrypt("p", 1, (const uint8_t *)"s", 1, 62, 8, 1, out, 32) < 0);
}

static void test_memeq(void)
{
	CHECK(crypto_memeq("abcd", "abcd", 4));
	CHECK(!crypto_memeq("abcd", "abce", 4));
	CHECK(crypto_memeq("x", "y", 0));
}

static void test_random(void)
{
	static uint8_t a[100000], b[100000];
	size_t i, zeros = 0;

	CHECK_EQ_INT(crypto_random(a, sizeof(a)), 0);
	CHECK_EQ_INT(crypto_random(b, sizeof(b)), 0);
	CHECK(memcmp(a, b, sizeof(a)) != 0);
	/* A fill that stopped short would leave a run of zeros at the end. */
	for (i = sizeof(a) - 64; i < sizeof(a); i++)
		zeros += a[i] == 0;
	CHECK(zeros < 16);
	CHECK_EQ_INT(crypto_random(a, 0), 0);
}

int main(void)
{
	RUN(test_sha256_abc);
	RUN(test_hmac_rfc4231_1);
	RUN(test_hkdf_rfc5869);
	RUN(test_scrypt_rfc7914);
	RUN(test_scrypt_bad_params);
	RUN(test_memeq);
	RUN(test_random);
	return check_summary();
}
