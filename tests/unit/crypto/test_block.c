// SPDX-License-Identifier: MIT
/* Unit tests for crypto/block.c. */

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "crypto/block.h"
#include "crypto/random.h"

static uint8_t key_a[BLOCK_KEY_LEN], key_b[BLOCK_KEY_LEN];
static uint8_t vol_a[BLOCK_ID_LEN], vol_b[BLOCK_ID_LEN];
static uint8_t fid_a[BLOCK_ID_LEN], fid_b[BLOCK_ID_LEN];

static int all_zero(const uint8_t *p, size_t len)
{
	while (len--)
		if (*p++)
			return 0;
	return 1;
}

static void setup(void)
{
	crypto_random(key_a, sizeof(key_a));
	crypto_random(key_b, sizeof(key_b));
	crypto_random(vol_a, sizeof(vol_a));
	crypto_random(vol_b, sizeof(vol_b));
	crypto_random(fid_a, sizeof(fid_a));
	crypto_random(fid_b, sizeof(fid_b));
}

/* Plaintext size of a file stored as @data sealed bytes (docs/FORMAT.md). */
static uint64_t plain_size(uint64_t data, uint64_t block)
{
	uint64_t sealed = block + BLOCK_OVERHEAD;
	uint64_t tail = data % sealed;

	return data / sealed * block + (tail > BLOCK_OVERHEAD ? tail - BLOCK_OVERHEAD : 0);
}

/*
 * Seal a whole file of @size bytes the way the filesystem lays it out (every
 * block full but the last), check the stored size gives back @size, then
 * open every block and compare.
 */
static int file_round_trip(size_t block, size_t size)
{
	struct block_owner o = { key_a, vol_a, fid_a };
	size_t sealed_sz = block + BLOCK_OVERHEAD;
	size_t nblocks = (size + block - 1) / block;
	uint8_t *plain = malloc(size + 1), *store = malloc(nblocks * sealed_sz + 1);
	uint8_t *back = malloc(block);
	size_t i, stored = 0;
	int bad = 0;

	if (!plain || !store || !back) {
		bad = 1;
		goto out;
	}
	crypto_random(plain, size);
	for (i = 0; i < nblocks; i++) {
		size_t len = (i + 1 < nblocks) ? block : size - i * block;

		if (block_seal(&o, i, plain + i * block, len, store + stored) != 0)
			bad = 1;
		stored += len + BLOCK_OVERHEAD;
	}
	if (plain_size(stored, block) != size)
		bad = 1;
	for (i = 0, stored = 0; i < nblocks; i++) {
		size_t len = (i + 1 < nblocks) ? block : size - i * block;

		if (block_open(&o, i, store + stored, len + BLOCK_OVERHEAD, back) != 0 ||
		    memcmp(back, plain + i * block, len) != 0)
			bad = 1;
		stored += len + BLOCK_OVERHEAD;
	}
out:
	free(plain);
	free(store);
	free(back);
	return bad;
}

static void test_sizes(void)
{
	static const size_t blocks[] = { 4096, 8192, 16384, 65536 };
	size_t b;

	for (b = 0; b < 4; b++) {
		size_t bs = blocks[b];
		size_t sizes[] = { 1, bs - 1, bs, bs + 1, 2 * bs - 1, 2 * bs, 2 * bs + 1,
				   3 * bs, 3 * bs + 1 };
		size_t s;

		for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			int bad = file_round_trip(bs, sizes[s]);

			if (bad)
				fprintf(stderr, "block %zu size %zu failed\n", bs, sizes[s]);
			CHECK(!bad);
		}
		CHECK(plain_size(0, bs) == 0);
	}
}

static void test_zero_length_and_bad_lengths(void)
{
	struct block_owner o = { key_a, vol_a, fid_a };
	uint8_t plain[8] = { 1 }, sealed[64], out[64];

	CHECK_EQ_INT(block_seal(&o, 0, plain, 0, sealed), -EINVAL);
	CHECK_EQ_INT(block_open(&o, 0, sealed, BLOCK_OVERHEAD, out), -EINVAL);
	CHECK_EQ_INT(block_open(&o, 0, sealed, 3, out), -EINVAL);
	/* Overlapping buffers are refused rather than silently corrupted. */
	CHECK_EQ_INT(block_seal(&o, 0, sealed + 4, 8, sealed), -EINVAL);

	REQUIRE(block_seal(&o, 0, plain, 8, sealed) == 0);
	/* One byte short: the tag is read from the wrong place. */
	memset(out, 0xEE, sizeof(out));
	CHECK_EQ_INT(block_open(&o, 0, sealed, 8 + BLOCK_OVERHEAD - 1, out), -EBADMSG);
	CHECK(all_zero(out, 7));
	{
		struct block_owner nokey = { NULL, vol_a, fid_a };

		CHECK_EQ_INT(block_seal(&nokey, 0, plain, 8, sealed), -EINVAL);
	}
}

/* Every byte of a sealed block - nonce, ciphertext, tag - is covered. */
static void tamper_every_byte(size_t len)
{
	struct block_owner o = { key_a, vol_a, fid_a };
	uint8_t *plain = malloc(len), *sealed = malloc(len + BLOCK_OVERHEAD), *out = malloc(len);
	size_t i;
	int wrong_rc = 0, not_zeroed = 0;

	REQUIRE(plain && sealed && out);
	crypto_random(plain, len);
	REQUIRE(block_seal(&o, 7, plain, len, sealed) == 0);
	for (i = 0; i < len + BLOCK_OVERHEAD; i++) {
		uint8_t flip = (uint8_t)(1u << (i % 8));

		sealed[i] ^= flip;
		memset(out, 0xEE, len);
		if (block_open(&o, 7, sealed, len + BLOCK_OVERHEAD, out) != -EBADMSG)
			wrong_rc++;
		if (!all_zero(out, len))
			not_zeroed++;
		sealed[i] ^= flip;
	}
	CHECK_EQ_INT(wrong_rc, 0);
	CHECK_EQ_INT(not_zeroed, 0);
	CHECK_EQ_INT(block_open(&o, 7, sealed, len + BLOCK_OVERHEAD, out), 0);
	CHECK(memcmp(out, plain, len) == 0);
	free(plain);
	free(sealed);
	free(out);
}

static void test_tamper_small(void)
{
	tamper_every_byte(1);
	tamper_every_byte(100);
}

static void test_tamper_full_block(void)
{
	tamper_every_byte(4096);
}

static void test_wrong_owner_or_index(void)
{
	struct block_owner o = { key_a, vol_a, fid_a };
	struct block_owner other_key = { key_b, vol_a, fid_a };
	struct block_owner other_vol = { key_a, vol_b, fid_a };
	struct block_owner other_file = { key_a, vol_a, fid_b };
	uint8_t plain[300], sealed[300 + BLOCK_OVERHEAD], out[300];

	crypto_random(plain, sizeof(plain));
	REQUIRE(block_seal(&o, 258, plain, sizeof(plain), sealed) == 0);

#define EXPECT_BAD(owner, idx)                                                             \
	do {                                                                               \
		memset(out, 0xEE, sizeof(out));                                            \
		CHECK_EQ_INT(block_open(owner, idx, sealed, sizeof(sealed), out), -EBADMSG); \
		CHECK(all_zero(out, sizeof(out)));                                         \
	} while (0)
	EXPECT_BAD(&o, 257);
	EXPECT_BAD(&o, 259);
	EXPECT_BAD(&o, 2);		  /* only the low byte of 258 */
	EXPECT_BAD(&o, 258ull << 32);	  /* index bytes in the wrong half */
	EXPECT_BAD(&o, UINT64_MAX);
	EXPECT_BAD(&other_key, 258);
	EXPECT_BAD(&other_vol, 258);
	EXPECT_BAD(&other_file, 258);
#undef EXPECT_BAD
	/* After all the failures (and key switches) the right owner still opens it. */
	CHECK_EQ_INT(block_open(&o, 258, sealed, sizeof(sealed), out), 0);
	CHECK(memcmp(out, plain, sizeof(out)) == 0);
}

/* Same key, same index, same plaintext: the block must still differ each time. */
static void test_nonces_differ(void)
{
	enum { N = 2000 }; /* several refills of the 4 KiB nonce buffer */
	struct block_owner o = { key_a, vol_a, fid_a };
	static uint8_t nonces[N][BLOCK_NONCE_LEN];
	uint8_t plain[16] = { 0 }, sealed[16 + BLOCK_OVERHEAD];
	int i, j, dup = 0;

	for (i = 0; i < N; i++) {
		REQUIRE(block_seal(&o, 0, plain, sizeof(plain), sealed) == 0);
		memcpy(nonces[i], sealed, BLOCK_NONCE_LEN);
	}
	for (i = 0; i < N; i++)
		for (j = i + 1; j < N; j++)
			if (memcmp(nonces[i], nonces[j], BLOCK_NONCE_LEN) == 0)
				dup++;
	CHECK_EQ_INT(dup, 0);
}

/* Switching DEKs on one thread (the key-schedule cache) never mixes them up. */
static void test_key_switching(void)
{
	struct block_owner a = { key_a, vol_a, fid_a }, b = { key_b, vol_a, fid_a };
	uint8_t plain[64], sa[64 + BLOCK_OVERHEAD], sb[64 + BLOCK_OVERHEAD], out[64];
	int i;

	crypto_random(plain, sizeof(plain));
	for (i = 0; i < 10; i++) {
		REQUIRE(block_seal(&a, 1, plain, 64, sa) == 0);
		REQUIRE(block_seal(&b, 1, plain, 64, sb) == 0);
		CHECK_EQ_INT(block_open(&b, 1, sb, sizeof(sb), out), 0);
		CHECK_EQ_INT(block_open(&a, 1, sa, sizeof(sa), out), 0);
		CHECK(memcmp(out, plain, 64) == 0);
		CHECK_EQ_INT(block_open(&b, 1, sa, sizeof(sa), out), -EBADMSG);
		CHECK_EQ_INT(block_open(&a, 1, sb, sizeof(sb), out), -EBADMSG);
		if (i == 5)
			block_thread_wipe();
	}
}

/* Blocks sealed on one thread open on another, with every thread keeping its own state. */
struct worker {
	const uint8_t *key;
	int failures;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct block_owner o = { w->key, vol_a, fid_a };
	uint8_t plain[512], sealed[512 + BLOCK_OVERHEAD], out[512];
	uint64_t i;

	for (i = 0; i < 3000; i++) {
		size_t len = 1 + (size_t)(i * 37 % 512);

		crypto_random(plain, len);
		if (block_seal(&o, i, plain, len, sealed) != 0 ||
		    block_open(&o, i, sealed, len + BLOCK_OVERHEAD, out) != 0 ||
		    memcmp(out, plain, len) != 0)
			w->failures++;
	}
	return NULL;
}

static void test_threads(void)
{
	pthread_t tid[6];
	struct worker w[6];
	int i;

	for (i = 0; i < 6; i++) {
		w[i].key = (i & 1) ? key_a : key_b;
		w[i].failures = 0;
		REQUIRE(pthread_create(&tid[i], NULL, worker_main, &w[i]) == 0);
	}
	for (i = 0; i < 6; i++) {
		pthread_join(tid[i], NULL);
		CHECK_EQ_INT(w[i].failures, 0);
	}
}

/*
 * A forked child must not reuse the parent's buffered nonces: the parent's
 * next block and the child's first block get different nonces.
 */
static void test_fork_nonces(void)
{
	struct block_owner o = { key_a, vol_a, fid_a };
	uint8_t plain[16] = { 0 }, sealed[16 + BLOCK_OVERHEAD], child_nonce[BLOCK_NONCE_LEN];
	int fds[2], status;
	pid_t pid;

	REQUIRE(block_seal(&o, 0, plain, 16, sealed) == 0); /* buffer now full */
	REQUIRE(pipe(fds) == 0);
	pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		int ok = block_seal(&o, 0, plain, 16, sealed) == 0 &&
			 block_open(&o, 0, sealed, sizeof(sealed), plain) == 0;

		if (!ok || write(fds[1], sealed, BLOCK_NONCE_LEN) != BLOCK_NONCE_LEN)
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	REQUIRE(block_seal(&o, 0, plain, 16, sealed) == 0);
	CHECK(read(fds[0], child_nonce, BLOCK_NONCE_LEN) == BLOCK_NONCE_LEN);
	close(fds[0]);
	REQUIRE(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(memcmp(child_nonce, sealed, BLOCK_NONCE_LEN) != 0);
}

int main(void)
{
	setup();
	RUN(test_sizes);
	RUN(test_zero_length_and_bad_lengths);
	RUN(test_tamper_small);
	RUN(test_tamper_full_block);
	RUN(test_wrong_owner_or_index);
	RUN(test_nonces_differ);
	RUN(test_key_switching);
	RUN(test_threads);
	RUN(test_fork_nonces);
	block_thread_wipe();
	return check_summary();
}
