/* SPDX-License-Identifier: MIT */
/*
 * The content engine against a model: random writes, truncates and reads on
 * a real backing file (and punched or zeroed ranges), for both record placements and several block sizes,
 * plus tampering and SEEK_DATA/SEEK_HOLE.  The seed is printed on failure;
 * ENVELOPEFS_SEED=N replays one.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "content.h"

static const uint8_t test_key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
				     17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
static const uint8_t test_volume[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
					0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
static const uint8_t test_file_id[16] = {0xf0, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7,
					 0xf8, 0xf9, 0xfa, 0xfb, 0xfc, 0xfd, 0xfe, 0xff};

/* xorshift64*: reproducible from the seed alone. */
static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1DULL;
}
static uint64_t rnd_below(uint64_t n)
{
	return rnd() % n;
}

struct fixture {
	struct layout layout;
	struct content_file file;
	char path[64];
	struct record_holes holes; /* a version-2 record's, when bound */
	struct pending_holes pending;
	unsigned declared;	   /* declare_holes() calls */
};

/* The fixture whose holes are bound (one at a time). */
static struct fixture *bound_fixture;

/* content.h's declare_holes, as the daemon's does but without a record. */
static int declare_holes(const struct content_file *f, uint64_t first, uint64_t end)
{
	CHECK(f == &bound_fixture->file && first < end);
	record_holes_add(&bound_fixture->holes, first, end);
	bound_fixture->declared++;
	return 0;
}

/*
 * bind_holes - make @fx a file with a version-2 record: an all-zero block
 * outside the declared holes is damage.  @holes_trusted as the backing's.
 */
static void bind_holes(struct fixture *fx, bool holes_trusted)
{
	memset(&fx->holes, 0, sizeof(fx->holes));
	fx->declared = 0;
	bound_fixture = fx;
	memset(&fx->pending, 0, sizeof(fx->pending));
	fx->file.holes = &fx->holes;
	fx->file.pending = &fx->pending;
	fx->file.declare_holes = declare_holes;
	fx->file.holes_trusted = holes_trusted;
}

static int fixture_open(struct fixture *fx, uint32_t block_size, uint32_t header_size)
{
	struct volume_config cfg = {
		.block_size = block_size,
		.placement = header_size ? PLACEMENT_HEADER : PLACEMENT_XATTR,
		.header_size = header_size,
	};
	layout_init(&fx->layout, &cfg);
	snprintf(fx->path, sizeof(fx->path), "/tmp/envfs-content-XXXXXX");
	int fd = mkstemp(fx->path);
	if (fd < 0)
		return -errno;
	unlink(fx->path);
	/* The header region (its record is not the content engine's business). */
	if (header_size && ftruncate(fd, header_size) < 0)
		return -errno;
	fx->file = (struct content_file){
		.fd = fd,
		.layout = &fx->layout,
		.owner = {.key = test_key, .volume_uuid = test_volume, .file_id = test_file_id},
		.holes_trusted = true, /* /tmp: a local file system */
	};
	return 0;
}

static void fixture_close(struct fixture *fx)
{
	close(fx->file.fd);
}

/*
 * model_run - random operations against a model.  @bound: the file's holes
 * are bound (a version-2 record), on a backing whose hole reports are not
 * trusted: every hole an operation makes must have been declared, or its
 * read fails.
 */
static void model_run(uint32_t block_size, uint32_t header_size, uint64_t seed, bool bound)
{
	struct fixture fx;
	size_t limit = 5 * block_size + 333, model_len = 0;
	uint8_t *model = calloc(1, limit + 4 * block_size), *buf = malloc(4 * block_size);
	uint64_t bad;

	REQUIRE(model && buf);
	REQUIRE(fixture_open(&fx, block_size, header_size) == 0);
	if (bound)
		bind_holes(&fx, false);
	rng_state = seed;
	for (int step = 0; step < 2000 && !check_failures_in_test; step++) {
		uint64_t r = rnd_below(100), off = rnd_below(limit);
		size_t n = 1 + rnd_below(3 * block_size), done, size_now;

		if (r < 55) {
			for (size_t i = 0; i < n; i++)
				buf[i] = (uint8_t)rnd();
			CHECK_EQ_INT(content_write(&fx.file, buf, n, off, &bad), 0);
			if (off > model_len)
				memset(model + model_len, 0, off - model_len);
			memcpy(model + off, buf, n);
			if (off + n > model_len)
				model_len = off + n;
		} else if (r < 70) {
			CHECK_EQ_INT(content_truncate(&fx.file, off, &bad), 0);
			if (off > model_len)
				memset(model + model_len, 0, off - model_len);
			model_len = off;
		} else if (r < 73 && bound) {
			/* A sync or close: the pending holes go into the "record". */
			CHECK_EQ_INT(content_settle_holes(&fx.file), 0);
			CHECK_EQ_INT(fx.pending.n, 0);
			/* Reading all of it now needs no pending cover. */
			CHECK_EQ_INT(content_read(&fx.file, buf, block_size, 0, &done, &bad), 0);
		} else if (r < 78) {
			int mode = r & 1 ? FALLOC_FL_PUNCH_HOLE : FALLOC_FL_ZERO_RANGE;

			CHECK_EQ_INT(content_zero(&fx.file, off, n, mode, &bad), 0);
			if (off < model_len)
				memset(model + off, 0, model_len - off < n ? model_len - off : n);
		} else {
			CHECK_EQ_INT(content_read(&fx.file, buf, n, off, &done, &bad), 0);
			size_t want = off >= model_len ? 0 : (model_len - off < n ? model_len - off : n);
			CHECK_EQ_INT(done, want);
			CHECK(memcmp(buf, model + off, want) == 0);
		}
		uint64_t plain;
		CHECK_EQ_INT(content_size(fx.file.fd, &fx.layout, &plain), 0);
		size_now = plain;
		CHECK_EQ_INT(size_now, model_len);
		if (check_failures_in_test)
			fprintf(stderr, "model: block %u header %u bound %d seed %llu step %d op %llu\n",
				block_size, header_size, bound, (unsigned long long)seed, step,
				(unsigned long long)r);
	}
	fixture_close(&fx);
	free(model);
	free(buf);
}

static uint64_t test_seed(void)
{
	const char *env = getenv("ENVELOPEFS_SEED");
	uint64_t seed;

	if (env)
		return strtoull(env, NULL, 10);
	if (getentropy(&seed, sizeof(seed)) != 0)
		seed = (uint64_t)getpid();
	return seed | 1;
}

static void test_model_header_4k(void)
{
	model_run(4096, 512, test_seed(), false);
}

static void test_model_xattr_4k(void)
{
	model_run(4096, 0, test_seed(), false);
}

static void test_model_header_16k(void)
{
	model_run(16384, 1024, test_seed(), false);
}

static void test_model_xattr_64k(void)
{
	model_run(65536, 0, test_seed(), false);
}

static void test_model_bound_header_4k(void)
{
	model_run(4096, 512, test_seed(), true);
}

static void test_model_bound_xattr_16k(void)
{
	model_run(16384, 0, test_seed(), true);
}

/*
 * A block zeroed in the backing reads as -EIO unless a declared hole covers
 * it, whatever the backing says of its holes; the declared ones read as zeros.
 */
static void test_zeroed_block_bound(void)
{
	static uint8_t data[8 * 4096], out[8 * 4096], zeros[4096 + BLOCK_OVERHEAD];
	struct fixture fx;
	uint64_t bad = 0;
	size_t done;

	for (int trusted = 0; trusted < 2; trusted++) {
		REQUIRE(fixture_open(&fx, 4096, 512) == 0);
		bind_holes(&fx, trusted);
		memset(data, 0x5a, sizeof(data));
		REQUIRE(content_write(&fx.file, data, sizeof(data), 0, &bad) == 0);
		CHECK_EQ_INT(fx.declared, 0); /* written in order: no hole, no record write */
		REQUIRE(pwrite(fx.file.fd, zeros, sizeof(zeros),
			       (off_t)layout_block_offset(&fx.layout, 3)) == (ssize_t)sizeof(zeros));
		CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), -EIO);
		CHECK_EQ_INT(bad, 3);
		/* A write over part of it cannot launder it either. */
		CHECK_EQ_INT(content_write(&fx.file, "x", 1, 3 * 4096 + 7, &bad), -EIO);
		/* Written past the end, then the gap filled (writeback out of order): nothing to record. */
		REQUIRE(content_write(&fx.file, data, 4096, 10 * 4096, &bad) == 0);
		CHECK_EQ_INT(fx.pending.n, 1);
		REQUIRE(content_write(&fx.file, data, 2 * 4096, 8 * 4096, &bad) == 0);
		CHECK_EQ_INT(fx.pending.n, 0);
		CHECK_EQ_INT(content_settle_holes(&fx.file), 0);
		CHECK_EQ_INT(fx.declared, 0);
		/* A gap left unfilled is recorded when settled. */
		REQUIRE(content_write(&fx.file, data, 4096, 14 * 4096, &bad) == 0);
		CHECK_EQ_INT(content_read(&fx.file, out, 4096, 12 * 4096, &done, &bad), 0);
		CHECK_EQ_INT(content_settle_holes(&fx.file), 0);
		CHECK_EQ_INT(fx.declared, 1);
		CHECK(record_holes_cover(&fx.holes, 11, 14));
		/* Grown: the new blocks are declared, and read as zeros. */
		REQUIRE(content_truncate(&fx.file, 20 * 4096, &bad) == 0);
		CHECK_EQ_INT(fx.declared, 2);
		CHECK(record_holes_cover(&fx.holes, 15, 20) && !record_holes_cover(&fx.holes, 3, 4));
		CHECK_EQ_INT(content_read(&fx.file, out, 4096, 12 * 4096, &done, &bad), 0);
		CHECK(done == 4096 && out[0] == 0 && out[4095] == 0);
		fixture_close(&fx);
	}
}

/* Flip every byte of a middle block in turn: reads of it fail, naming it. */
static void test_tamper_each_byte(void)
{
	struct fixture fx;
	uint8_t data[3 * 4096], out[3 * 4096];
	uint64_t bad = 99;
	size_t done;

	REQUIRE(fixture_open(&fx, 4096, 512) == 0);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	REQUIRE(content_write(&fx.file, data, sizeof(data), 0, &bad) == 0);
	uint64_t start = layout_block_offset(&fx.layout, 1);
	for (uint64_t i = 0; i < fx.layout.sealed_size; i++) {
		uint8_t b;
		REQUIRE(pread(fx.file.fd, &b, 1, (off_t)(start + i)) == 1);
		b ^= 0x20;
		REQUIRE(pwrite(fx.file.fd, &b, 1, (off_t)(start + i)) == 1);
		memset(out, 0, sizeof(out));
		CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), -EIO);
		CHECK_EQ_INT(bad, 1);
		/* Neighbours still read. */
		CHECK_EQ_INT(content_read(&fx.file, out, 4096, 2 * 4096, &done, &bad), 0);
		CHECK(memcmp(out, data + 2 * 4096, 4096) == 0);
		b ^= 0x20;
		REQUIRE(pwrite(fx.file.fd, &b, 1, (off_t)(start + i)) == 1);
	}
	CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), 0);
	CHECK(memcmp(out, data, sizeof(data)) == 0);
	fixture_close(&fx);
}

/* A block swapped with another of the same file fails at its new index. */
static void test_block_swap(void)
{
	struct fixture fx;
	uint8_t data[2 * 4096], a[4124], b[4124], out[4096];
	uint64_t bad;
	size_t done;

	REQUIRE(fixture_open(&fx, 4096, 0) == 0);
	memset(data, 'a', 4096);
	memset(data + 4096, 'b', 4096);
	REQUIRE(content_write(&fx.file, data, sizeof(data), 0, &bad) == 0);
	REQUIRE(pread(fx.file.fd, a, sizeof(a), 0) == sizeof(a));
	REQUIRE(pread(fx.file.fd, b, sizeof(b), sizeof(a)) == sizeof(b));
	REQUIRE(pwrite(fx.file.fd, b, sizeof(b), 0) == sizeof(b));
	CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), -EIO);
	CHECK_EQ_INT(bad, 0);
	fixture_close(&fx);
}

static void test_holes_and_seek(void)
{
	struct fixture fx;
	uint8_t out[4096];
	uint64_t bad, at;
	size_t done;

	REQUIRE(fixture_open(&fx, 4096, 512) == 0);
	/* Growing writes nothing: the file is one hole. */
	REQUIRE(content_truncate(&fx.file, 100ULL << 20, &bad) == 0);
	struct stat st;
	REQUIRE(fstat(fx.file.fd, &st) == 0);
	CHECK(st.st_blocks * 512 < 64 * 1024);
	CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 50ULL << 20, &done, &bad), 0);
	CHECK_EQ_INT(done, sizeof(out));
	CHECK(out[0] == 0 && out[4095] == 0);
	CHECK_EQ_INT(content_seek(&fx.file, 0, SEEK_DATA, &at), -ENXIO);
	REQUIRE(content_write(&fx.file, "data", 4, (60ULL << 20) + 10, &bad) == 0);
	CHECK_EQ_INT(content_seek(&fx.file, 0, SEEK_DATA, &at), 0);
	CHECK_EQ_INT(at, 60ULL << 20);
	CHECK_EQ_INT(content_seek(&fx.file, at, SEEK_HOLE, &at), 0);
	CHECK(at > (60ULL << 20) && at <= (60ULL << 20) + 3 * 4096);
	CHECK_EQ_INT(content_seek(&fx.file, 100ULL << 20, SEEK_HOLE, &at), -ENXIO);
	fixture_close(&fx);
}

/* A new file's first header rides with its first blocks; never over content. */
static void test_first_header(void)
{
	struct fixture fx;
	uint8_t header[512], data[5000], out[5000], back[512];
	uint64_t bad;
	size_t done;
	struct stat st;

	REQUIRE(fixture_open(&fx, 4096, 512) == 0);
	REQUIRE(ftruncate(fx.file.fd, 0) == 0); /* a file with no record yet */
	memset(header, 0x5a, sizeof(header));
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7);
	fx.file.first_header = header;
	CHECK_EQ_INT(content_write(&fx.file, data, 10, 1, &bad), -EAGAIN);
	REQUIRE(fstat(fx.file.fd, &st) == 0);
	CHECK_EQ_INT(st.st_size, 0);
	CHECK_EQ_INT(content_write(&fx.file, data, sizeof(data), 0, &bad), 0);
	REQUIRE(fstat(fx.file.fd, &st) == 0);
	CHECK_EQ_INT(st.st_size, 512 + 4124 + (5000 - 4096) + 28);
	REQUIRE(pread(fx.file.fd, back, sizeof(back), 0) == sizeof(back));
	CHECK(memcmp(back, header, sizeof(header)) == 0);
	/* Another writer's content is there now: its record is not overwritten. */
	memset(header, 0x33, sizeof(header));
	CHECK_EQ_INT(content_write(&fx.file, data, 10, 0, &bad), -EAGAIN);
	fx.file.first_header = NULL;
	CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), 0);
	CHECK_EQ_INT(done, sizeof(out));
	CHECK(memcmp(out, data, sizeof(data)) == 0);
	REQUIRE(pread(fx.file.fd, back, sizeof(back), 0) == sizeof(back));
	CHECK(back[0] == 0x5a);
	fixture_close(&fx);
}

/*
 * content_write() with the file size limited to @limit backing bytes: past
 * it the kernel writes short, then fails with EFBIG, as a full disk would.
 * *@ret is what it returned, *@backing_size the backing file's size after;
 * checks that the first @want plaintext bytes read back whole.
 */
static void write_past_limit(struct fixture *fx, const uint8_t *data, size_t len, uint64_t off,
			     rlim_t limit, size_t want, int *ret, off_t *backing_size)
{
	struct rlimit old, small;
	uint8_t out[4096];
	uint64_t bad;
	size_t done;
	struct stat st;

	REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
	small = (struct rlimit){.rlim_cur = limit, .rlim_max = old.rlim_max};
	signal(SIGXFSZ, SIG_IGN);
	REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
	*ret = content_write(&fx->file, data, len, off, &bad);
	REQUIRE(setrlimit(RLIMIT_FSIZE, &old) == 0);
	signal(SIGXFSZ, SIG_DFL);
	REQUIRE(fstat(fx->file.fd, &st) == 0);
	*backing_size = st.st_size;
	CHECK_EQ_INT(content_read(&fx->file, out, sizeof(out), 0, &done, &bad), 0);
	CHECK_EQ_INT(done, want);
}

/* An append that the backing refuses part-way is cut back: no torn block. */
static void test_failed_append_is_cut_back(void)
{
	struct fixture fx;
	uint8_t data[3 * 4096];
	uint64_t bad;
	off_t size;
	int ret;

	REQUIRE(fixture_open(&fx, 4096, 512) == 0);
	memset(data, 'x', sizeof(data));
	REQUIRE(content_write(&fx.file, data, 4096, 0, &bad) == 0);
	write_past_limit(&fx, data, sizeof(data), 4096, 512 + 4124 + 6000, 4096, &ret, &size);
	CHECK_EQ_INT(ret, -EFBIG);
	CHECK_EQ_INT(size, 512 + 4124);
	fixture_close(&fx);
}

/*
 * A write that rewrites the stored last block longer and goes past the end
 * (no space reserved first), refused by the backing part-way: the old block
 * is put back and the file cut back, so the old content reads whole.
 */
static void test_failed_tail_extension_is_undone(void)
{
	struct fixture fx;
	uint8_t data[3 * 4096], out[4096];
	uint64_t bad;
	size_t done;
	off_t size;
	int ret;

	REQUIRE(fixture_open(&fx, 4096, 512) == 0);
	memset(data, 'a', 100);
	REQUIRE(content_write(&fx.file, data, 100, 0, &bad) == 0);
	memset(data, 'y', sizeof(data));
	/* The new block 0 gets past the old end, then the kernel writes short. */
	write_past_limit(&fx, data, sizeof(data), 100, 512 + 128 + 1000, 100, &ret, &size);
	CHECK_EQ_INT(ret, -EFBIG);
	CHECK_EQ_INT(size, 512 + 128);
	CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), 0);
	CHECK(memcmp(out, "aaaaaaaaaa", 10) == 0 && out[99] == 'a');
	/* And the same write, with room, continues the file. */
	CHECK_EQ_INT(content_write(&fx.file, data, sizeof(data), 100, &bad), 0);
	CHECK_EQ_INT(content_read(&fx.file, out, sizeof(out), 0, &done, &bad), 0);
	CHECK_EQ_INT(done, 4096);
	CHECK(out[99] == 'a' && out[100] == 'y' && out[4095] == 'y');
	fixture_close(&fx);
}

static void test_size_arithmetic(void)
{
	struct layout l;
	struct volume_config cfg = {.block_size = 4096, .placement = PLACEMENT_HEADER,
				    .header_size = 512};

	layout_init(&l, &cfg);
	for (uint64_t size = 0; size < 5 * 4096; size += 1 + size / 3)
		CHECK_EQ_INT(layout_plain_size(&l, layout_backing_size(&l, size)), size);
	CHECK_EQ_INT(layout_plain_size(&l, 0), 0);
	CHECK_EQ_INT(layout_plain_size(&l, 512), 0);
	CHECK_EQ_INT(layout_plain_size(&l, 512 + 28), 0); /* damage: not a block */
	CHECK_EQ_INT(layout_plain_size(&l, 512 + 29), 1);
	CHECK_EQ_INT(layout_backing_size(&l, 4096), 512 + 4124);
}

int main(void)
{
	RUN(test_size_arithmetic);
	RUN(test_model_header_4k);
	RUN(test_model_xattr_4k);
	RUN(test_model_header_16k);
	RUN(test_model_xattr_64k);
	RUN(test_model_bound_header_4k);
	RUN(test_model_bound_xattr_16k);
	RUN(test_zeroed_block_bound);
	RUN(test_tamper_each_byte);
	RUN(test_block_swap);
	RUN(test_holes_and_seek);
	RUN(test_first_header);
	RUN(test_failed_append_is_cut_back);
	RUN(test_failed_tail_extension_is_undone);
	return check_summary();
}
