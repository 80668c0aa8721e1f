// SPDX-License-Identifier: MIT
/* Unit tests for crypto/aead.c. */

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "crypto/aead.h"
#include "crypto/random.h"

static const uint8_t zero_key[AEAD_KEY_LEN];
static const uint8_t zero_nonce[AEAD_NONCE_LEN];

static int all_zero(const uint8_t *p, size_t len)
{
	while (len--)
		if (*p++)
			return 0;
	return 1;
}

/* The GCM specification's AES-256 test cases 13 and 14 (zero key and IV). */
static void test_known_answers(void)
{
	static const uint8_t tag13[16] = { 0x53, 0x0f, 0x8a, 0xfb, 0xc7, 0x45, 0x36, 0xb9,
					   0xa9, 0x63, 0xb4, 0xf1, 0xc4, 0xcb, 0x73, 0x8b };
	static const uint8_t ct14[16] = { 0xce, 0xa7, 0x40, 0x3d, 0x4d, 0x60, 0x6b, 0x6e,
					  0x07, 0x4e, 0xc5, 0xd3, 0xba, 0xf3, 0x9d, 0x18 };
	static const uint8_t tag14[16] = { 0xd0, 0xd1, 0xc8, 0xa7, 0x99, 0x99, 0x6b, 0xf0,
					   0x26, 0x5b, 0x98, 0xb5, 0xd4, 0x8a, 0xb9, 0x19 };
	uint8_t plain[16] = { 0 }, ct[16], tag[16];

	CHECK_EQ_INT(aead_seal(zero_key, zero_nonce, NULL, 0, NULL, 0, NULL, tag), 0);
	CHECK(memcmp(tag, tag13, 16) == 0);
	CHECK_EQ_INT(aead_seal(zero_key, zero_nonce, NULL, 0, plain, 16, ct, tag), 0);
	CHECK(memcmp(ct, ct14, 16) == 0);
	CHECK(memcmp(tag, tag14, 16) == 0);
	CHECK_EQ_INT(aead_open(zero_key, zero_nonce, NULL, 0, ct14, 16, tag14, plain), 0);
	CHECK(all_zero(plain, 16));
}

static void test_round_trip_in_place(void)
{
	uint8_t key[32], nonce[12], aad[21], buf[1000], orig[1000], tag[16];

	REQUIRE(crypto_random(key, sizeof(key)) == 0);
	REQUIRE(crypto_random(nonce, sizeof(nonce)) == 0);
	REQUIRE(crypto_random(aad, sizeof(aad)) == 0);
	REQUIRE(crypto_random(orig, sizeof(orig)) == 0);
	memcpy(buf, orig, sizeof(buf));
	CHECK_EQ_INT(aead_seal(key, nonce, aad, sizeof(aad), buf, sizeof(buf), buf, tag), 0);
	CHECK(memcmp(buf, orig, sizeof(buf)) != 0);
	CHECK_EQ_INT(aead_open(key, nonce, aad, sizeof(aad), buf, sizeof(buf), tag, buf), 0);
	CHECK(memcmp(buf, orig, sizeof(buf)) == 0);
}

/* Every single-bit change to ciphertext, tag, AAD, nonce or key fails and leaves no plaintext. */
static void test_tamper(void)
{
	uint8_t key[32], nonce[12], aad[9], plain[33], ct[33], tag[16], out[33];
	size_t i;

	REQUIRE(crypto_random(key, sizeof(key)) == 0);
	REQUIRE(crypto_random(nonce, sizeof(nonce)) == 0);
	REQUIRE(crypto_random(aad, sizeof(aad)) == 0);
	REQUIRE(crypto_random(plain, sizeof(plain)) == 0);
	REQUIRE(aead_seal(key, nonce, aad, sizeof(aad), plain, sizeof(plain), ct, tag) == 0);

#define EXPECT_BAD()                                                                          \
	do {                                                                                  \
		memset(out, 0xEE, sizeof(out));                                               \
		CHECK_EQ_INT(aead_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), tag, out), \
			     -EBADMSG);                                                       \
		CHECK(all_zero(out, sizeof(out)));                                            \
	} while (0)

	for (i = 0; i < sizeof(ct) * 8; i++) {
		ct[i / 8] ^= (uint8_t)(1u << (i % 8));
		EXPECT_BAD();
		ct[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	for (i = 0; i < sizeof(tag); i++) {
		tag[i] ^= 0x01;
		EXPECT_BAD();
		tag[i] ^= 0x01;
	}
	for (i = 0; i < sizeof(aad); i++) {
		aad[i] ^= 0x80;
		EXPECT_BAD();
		aad[i] ^= 0x80;
	}
	for (i = 0; i < sizeof(nonce); i++) {
		nonce[i] ^= 0x10;
		EXPECT_BAD();
		nonce[i] ^= 0x10;
	}
	key[31] ^= 1;
	EXPECT_BAD();
	key[31] ^= 1;
#undef EXPECT_BAD

	CHECK_EQ_INT(aead_open(key, nonce, aad, sizeof(aad), ct, sizeof(ct), tag, out), 0);
	CHECK(memcmp(out, plain, sizeof(out)) == 0);
	/* A shorter AAD is a different message. */
	CHECK_EQ_INT(aead_open(key, nonce, aad, sizeof(aad) - 1, ct, sizeof(ct), tag, out),
		     -EBADMSG);
}

static void test_bad_args(void)
{
	uint8_t tag[16], buf[4] = { 0 };

	CHECK_EQ_INT(aead_seal(NULL, zero_nonce, NULL, 0, buf, 4, buf, tag), -EINVAL);
	CHECK_EQ_INT(aead_seal(zero_key, zero_nonce, NULL, 3, buf, 4, buf, tag), -EINVAL);
	CHECK_EQ_INT(aead_open(zero_key, zero_nonce, NULL, 0, NULL, 4, tag, buf), -EINVAL);
}

int main(void)
{
	RUN(test_known_answers);
	RUN(test_round_trip_in_place);
	RUN(test_tamper);
	RUN(test_bad_args);
	return check_summary();
}
