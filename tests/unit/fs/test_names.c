// SPDX-License-Identifier: MIT
/*
 * The name codec (fs/names.c): docs/FORMAT.md's name, symlink (versions 1
 * and 2) and xattr vectors, round trips of every name and target length and
 * byte value, and refusal of tampered, moved and non-canonical encodings.
 */

#include "vector.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "crypto/kdf.h"
#include "fs/names.h"

static int n_vectors;

/*
 * hex - field @name of @v decoded into @out (at most @cap bytes): its length,
 * or -1 when it is missing or not hex.
 */
static long hex(const struct vector *v, const char *name, uint8_t *out, size_t cap)
{
	size_t len;

	return vector_hex(v, name, out, cap, 0, &len) < 0 ? -1 : (long)len;
}

/* The codec of the vector's volume key and UUID. */
static struct names *codec_of(const struct vector *v)
{
	uint8_t key[NAMES_KEY_LEN], uuid[16];
	struct names *n = NULL;

	if (hex(v, "volume_key", key, sizeof(key)) != NAMES_KEY_LEN ||
	    hex(v, "volume_uuid", uuid, sizeof(uuid)) != 16 ||
	    names_create(true, key, uuid, &n) < 0)
		return NULL;
	return n;
}

static void check_keys(const struct vector *v)
{
	static const char *const labels[][2] = {{"k_name", "envelopefs v1 names"},
						{"k_link", "envelopefs v1 symlink targets"},
						{"k_xattr", "envelopefs v1 xattrs"}};
	uint8_t key[NAMES_KEY_LEN], uuid[16], want[64], got[64];

	REQUIRE(hex(v, "volume_key", key, sizeof(key)) == NAMES_KEY_LEN);
	REQUIRE(hex(v, "volume_uuid", uuid, sizeof(uuid)) == 16);
	for (size_t i = 0; i < 3; i++) {
		REQUIRE(hex(v, labels[i][0], want, sizeof(want)) == 64);
		REQUIRE(crypto_hkdf_sha256(key, sizeof(key), uuid, 16, labels[i][1],
					   strlen(labels[i][1]), got, 64) == 0);
		CHECK(memcmp(got, want, 64) == 0);
	}
}

static void check_name(const struct vector *v)
{
	struct names *n = codec_of(v);
	uint8_t dirid[16], raw[NAMES_MAX];
	char name[NAMES_MAX + 1], back[NAMES_MAX + 1];
	struct backing_name b;
	const char *full = vector_field(v, "full"), *entry = vector_field(v, "entry");
	long len = hex(v, "name", raw, sizeof(raw));

	REQUIRE(n && len > 0 && entry);
	REQUIRE(hex(v, "dirid", dirid, sizeof(dirid)) == 16);
	memcpy(name, raw, (size_t)len);
	name[len] = '\0';
	CHECK(names_encode(n, dirid, false, name, &b) == 0);
	CHECK(strcmp(b.entry, entry) == 0);
	CHECK(strcmp(b.full, full ? full : "") == 0);
	CHECK_EQ_INT(names_classify(n, false, b.entry), full ? NAMES_ENTRY_LONG : NAMES_ENTRY_SHORT);
	CHECK(names_decode(n, dirid, false, entry, full, back) == 0);
	CHECK(strcmp(back, name) == 0);
	names_destroy(n);
}

static void check_dirid(const struct vector *v)
{
	uint8_t dirid[16], got[18];
	char text[32];

	REQUIRE(hex(v, "dirid", dirid, sizeof(dirid)) == 16 && vector_field(v, "link"));
	names_b64_encode(dirid, 16, text);
	CHECK(strcmp(text, vector_field(v, "link")) == 0);
	CHECK(names_b64_decode(vector_field(v, "link"), got, sizeof(got)) == 16);
	CHECK(memcmp(got, dirid, 16) == 0);
}

static void check_symlink(const struct vector *v)
{
	struct names *n = codec_of(v);
	uint8_t dirid[16], raw[NAMES_TARGET_MAX];
	char name[NAMES_MAX + 1], target[NAMES_TARGET_MAX + 1], stored[NAMES_TARGET_MAX + 1];
	char back[NAMES_TARGET_MAX + 1];
	long len;

	REQUIRE(n && vector_field(v, "stored"));
	REQUIRE(hex(v, "dirid", dirid, sizeof(dirid)) == 16);
	len = hex(v, "name", raw, NAMES_MAX);
	REQUIRE(len > 0);
	memcpy(name, raw, (size_t)len);
	name[len] = '\0';
	len = hex(v, "target", raw, sizeof(raw));
	REQUIRE(len > 0);
	memcpy(target, raw, (size_t)len);
	target[len] = '\0';
	CHECK(names_link_seal(n, dirid, name, target, stored) == 0);
	CHECK(strcmp(stored, vector_field(v, "stored")) == 0);
	CHECK(names_link_open(n, dirid, name, vector_field(v, "stored"), back) == 0);
	CHECK(strcmp(back, target) == 0);
	CHECK_EQ_INT(names_link_size(n, strlen(stored)), strlen(target));
	/* Bound to its name: the same target under another name does not open. */
	CHECK(names_link_open(n, dirid, "other", vector_field(v, "stored"), back) == -EBADMSG);
	names_destroy(n);
}

/* The target field of @v into @target (NAMES_TARGET_MAX + 1): its length, or -1. */
static long vector_target(const struct vector *v, char *target)
{
	long len = hex(v, "target", (uint8_t *)target, NAMES_TARGET_MAX);

	if (len > 0)
		target[len] = '\0';
	return len;
}

static void check_symlink2(const struct vector *v)
{
	static const char label[] = "envelopefs v2 symlink targets";
	struct names *n = codec_of(v);
	uint8_t key[NAMES_KEY_LEN], uuid[16], k_target[64], derived[64], id[NAMES_LINK_ID_LEN];
	uint8_t sealed[NAMES_TARGET_SEALED_MAX], side[NAMES_TARGET_SEALED_MAX];
	char target[NAMES_TARGET_MAX + 1], stored[NAMES_TARGET_MAX + 1], back[NAMES_TARGET_MAX + 1];
	char store_name[NAMES_LINK_ID_TEXT + 1];
	const char *want = vector_field(v, "stored");
	struct names_target t;
	size_t sealed_len;
	long side_len = vector_field(v, "side") ? hex(v, "side", side, sizeof(side)) : 0;
	long len = vector_target(v, target);

	REQUIRE(n && want && len > 0 && side_len >= 0);
	REQUIRE(hex(v, "volume_key", key, sizeof(key)) == NAMES_KEY_LEN);
	REQUIRE(hex(v, "volume_uuid", uuid, sizeof(uuid)) == 16);
	REQUIRE(hex(v, "k_target", k_target, sizeof(k_target)) == 64);
	REQUIRE(hex(v, "link_id", id, sizeof(id)) == NAMES_LINK_ID_LEN);
	REQUIRE(crypto_hkdf_sha256(key, sizeof(key), uuid, 16, label, strlen(label), derived, 64) ==
		0);
	CHECK(memcmp(derived, k_target, 64) == 0);
	names_link_store_name(id, store_name);
	CHECK(strcmp(store_name, vector_field(v, "store_name")) == 0);
	CHECK(names_target_parse(want, &t) == 0);
	CHECK(memcmp(t.id, id, sizeof(id)) == 0);
	CHECK_EQ_INT(t.len, len);
	CHECK(names_target_open(n, &t, side, (size_t)side_len, back) == 0);
	CHECK(strcmp(back, target) == 0);
	CHECK(names_target_seal(n, id, target, stored, sealed, &sealed_len) == 0);
	if (side_len) {
		/* The external form: written so only when inline would not fit,
		 * read whatever the length. */
		CHECK_EQ_INT(t.form, NAMES_TARGET_EXTERNAL);
		CHECK_EQ_INT(sealed_len, side_len);
		CHECK(memcmp(sealed, side, (size_t)side_len) == 0);
		CHECK(names_target_open(n, &t, side, (size_t)side_len - 1, back) == -EBADMSG);
	} else {
		CHECK_EQ_INT(t.form, NAMES_TARGET_INLINE);
		CHECK(strcmp(stored, want) == 0);
	}
	/* Bound to its ID: the same sealed target under another ID does not open. */
	t.id[0] ^= 1;
	CHECK(names_target_open(n, &t, side, (size_t)side_len, back) == -EBADMSG);
	names_destroy(n);
}

static void check_xattr(const struct vector *v)
{
	struct names *n = codec_of(v);
	uint8_t owner[16], raw[NAMES_XATTR_NAME_MAX], value[256], stored[256 + 32], out[256];
	char name[NAMES_XATTR_NAME_MAX + 1], sname[NAMES_XATTR_NAME_MAX + 1];
	long len, vlen, slen;

	REQUIRE(n && vector_field(v, "stored_name"));
	REQUIRE(hex(v, "owner", owner, sizeof(owner)) == 16);
	len = hex(v, "name", raw, sizeof(raw));
	REQUIRE(len > 0);
	memcpy(name, raw, (size_t)len);
	name[len] = '\0';
	vlen = hex(v, "value", value, sizeof(value));
	slen = hex(v, "stored_value", stored, sizeof(stored));
	REQUIRE(vlen >= 0 && slen == vlen + NAMES_XATTR_OVERHEAD);
	CHECK(names_xattr_is_user(n, name));
	CHECK(names_xattr_name_seal(n, owner, name, sname) == 0);
	CHECK(strcmp(sname, vector_field(v, "stored_name")) == 0);
	CHECK(names_xattr_name_open(n, owner, vector_field(v, "stored_name"), sname) == 0);
	CHECK(strcmp(sname, name) == 0);
	CHECK(names_xattr_value_seal(n, owner, name, value, (size_t)vlen, out) == 0);
	CHECK(memcmp(out, stored, (size_t)slen) == 0);
	CHECK(names_xattr_value_open(n, owner, name, stored, (size_t)slen, out) == 0);
	CHECK(memcmp(out, value, (size_t)vlen) == 0);
	/* Another owner (a copy onto another file) opens neither. */
	owner[0] ^= 1;
	CHECK(names_xattr_name_open(n, owner, vector_field(v, "stored_name"), sname) == -EBADMSG);
	CHECK(names_xattr_value_open(n, owner, name, stored, (size_t)slen, out) == -EBADMSG);
	names_destroy(n);
}

static void check_vector(const struct vector *v, const char *type)
{
	if (strcmp(type, "names_keys") == 0)
		check_keys(v);
	else if (strcmp(type, "name") == 0)
		check_name(v);
	else if (strcmp(type, "dirid") == 0)
		check_dirid(v);
	else if (strcmp(type, "symlink") == 0)
		check_symlink(v);
	else if (strcmp(type, "symlink2") == 0)
		check_symlink2(v);
	else
		check_xattr(v);
	n_vectors++;
}

static void test_format_md_vectors(void)
{
	static const char *const types[] = { "names_keys", "name",     "dirid", "symlink",
					     "symlink2",   "xattr", NULL };

	vector_scan("FORMAT.md", types, check_vector);
	printf("checked %d name, symlink and xattr vectors\n", n_vectors);
	CHECK(n_vectors >= 12);
}

static const uint8_t test_key[NAMES_KEY_LEN] = {1, 2, 3};
static const uint8_t test_uuid[16] = {9, 8, 7};
static const uint8_t dir_a[16] = {0xaa}, dir_b[16] = {0xbb};

/* encode then decode @name in dir_a, reading a long name's side record from @b. */
static int round_trip(struct names *n, const char *name, char *back)
{
	struct backing_name b;
	int ret = names_encode(n, dir_a, false, name, &b);

	if (ret < 0)
		return ret;
	if (strlen(b.entry) > NAMES_MAX || strchr(b.entry, '/'))
		return -EINVAL;
	return names_decode(n, dir_a, false, b.entry, backing_name_is_long(&b) ? b.full : NULL,
			    back);
}

static void test_every_length_and_byte(void)
{
	struct names *n;
	char name[NAMES_MAX + 1], back[NAMES_MAX + 1];
	int longs = 0;

	REQUIRE(names_create(true, test_key, test_uuid, &n) == 0);
	for (int len = 1; len <= NAMES_MAX; len++) {
		struct backing_name b;

		for (int i = 0; i < len; i++)
			name[i] = (char)(1 + (i * 37 + len) % 255 == '/' ? 'x' : 1 + (i * 37 + len) % 255);
		name[len] = '\0';
		CHECK(round_trip(n, name, back) == 0);
		CHECK(strcmp(back, name) == 0);
		CHECK(names_encode(n, dir_a, false, name, &b) == 0);
		longs += backing_name_is_long(&b);
		CHECK(backing_name_is_long(&b) == (len > 175));
	}
	CHECK_EQ_INT(longs, NAMES_MAX - 175);
	for (int c = 1; c < 256; c++) {
		if (c == '/')
			continue;
		name[0] = (char)c;
		name[1] = 'q';
		name[2] = '\0';
		CHECK(round_trip(n, name, back) == 0);
		CHECK(strcmp(back, name) == 0);
	}
	memset(name, 'a', NAMES_MAX + 1);
	name[NAMES_MAX] = 'a';
	name[NAMES_MAX] = '\0';
	CHECK(round_trip(n, name, back) == 0);
	{
		char too_long[NAMES_MAX + 2];
		struct backing_name b;

		memset(too_long, 'a', sizeof(too_long) - 1);
		too_long[NAMES_MAX + 1] = '\0';
		CHECK(names_encode(n, dir_a, false, too_long, &b) == -ENAMETOOLONG);
	}
	names_destroy(n);
}

static void test_tampered_and_moved_names_refused(void)
{
	struct names *n;
	struct backing_name b, other;
	char back[NAMES_MAX + 1], name[200];

	REQUIRE(names_create(true, test_key, test_uuid, &n) == 0);
	REQUIRE(names_encode(n, dir_a, false, "secret.txt", &b) == 0);
	/* Moved to another directory in the backing store. */
	CHECK(names_decode(n, dir_b, false, b.entry, NULL, back) == -EBADMSG);
	/* Any character changed. */
	for (size_t i = 0; b.entry[i]; i++) {
		char saved = b.entry[i];
		b.entry[i] = saved == 'A' ? 'B' : 'A';
		CHECK(names_decode(n, dir_a, false, b.entry, NULL, back) == -EBADMSG);
		b.entry[i] = saved;
	}
	/* Non-canonical base64 (low bits set in the last character) is refused. */
	{
		size_t last = strlen(b.entry) - 1;
		uint8_t raw[64];
		if (strlen(b.entry) % 4 != 0) {
			char saved = b.entry[last];
			b.entry[last] = (char)(saved == '_' ? '-' : saved + 1);
			CHECK(names_b64_decode(b.entry, raw, sizeof(raw)) == -EINVAL ||
			      names_decode(n, dir_a, false, b.entry, NULL, back) == -EBADMSG);
			b.entry[last] = saved;
		}
	}
	/* A long entry with another name's side record, or a short one. */
	memset(name, 'L', 199);
	name[199] = '\0';
	REQUIRE(names_encode(n, dir_a, false, name, &b) == 0);
	name[0] = 'M';
	REQUIRE(names_encode(n, dir_a, false, name, &other) == 0);
	CHECK(names_decode(n, dir_a, false, b.entry, b.full, back) == 0);
	CHECK(names_decode(n, dir_a, false, b.entry, other.full, back) == -EBADMSG);
	CHECK(names_decode(n, dir_a, false, b.entry, NULL, back) == -EBADMSG);
	/* The volume's own names are hidden, dots included. */
	CHECK_EQ_INT(names_classify(n, true, "envelopefs.conf"), NAMES_ENTRY_HIDDEN);
	CHECK_EQ_INT(names_classify(n, false, NAMES_DIRID_ENTRY), NAMES_ENTRY_HIDDEN);
	CHECK_EQ_INT(names_classify(n, false, "envelopefs.tmp.1.2"), NAMES_ENTRY_HIDDEN);
	CHECK_EQ_INT(names_classify(n, false, ".."), NAMES_ENTRY_HIDDEN);
	{
		char side[NAMES_MAX + 1];
		snprintf(side, sizeof(side), "%s%s", b.entry, NAMES_SIDE_SUFFIX);
		CHECK_EQ_INT(names_classify(n, false, side), NAMES_ENTRY_HIDDEN);
	}
	names_destroy(n);
}

static void test_plain_mode_is_identity(void)
{
	struct names *n;
	struct backing_name b;
	char back[NAMES_MAX + 1];

	REQUIRE(names_create(false, NULL, NULL, &n) == 0);
	CHECK(names_encode(n, NULL, false, "a.txt", &b) == 0 && strcmp(b.entry, "a.txt") == 0);
	CHECK(names_encode(n, NULL, true, "envelopefs.conf", &b) == -EPERM);
	CHECK(names_encode(n, NULL, false, "envelopefs.conf", &b) == 0);
	CHECK(names_decode(n, NULL, true, "envelopefs.conf", NULL, back) == -ENOENT);
	CHECK(names_decode(n, NULL, false, "x.y", NULL, back) == 0 && strcmp(back, "x.y") == 0);
	CHECK(!names_xattr_is_user(n, "user.a"));
	names_destroy(n);
}

static void test_dirid_and_side_records_on_disk(void)
{
	char dir[] = "/tmp/test_names.XXXXXX", full[NAMES_FULL_MAX + 1], name[200];
	uint8_t id[16], again[16];
	struct names *n;
	struct backing_name b;
	int fd;

	REQUIRE(mkdtemp(dir) != NULL);
	fd = open(dir, O_RDONLY | O_DIRECTORY);
	REQUIRE(fd >= 0);
	CHECK(names_dirid_read(fd, id) == -EIO); /* missing */
	CHECK(names_dirid_make(fd) == 0);
	CHECK(names_dirid_make(fd) == -EEXIST);
	CHECK(names_dirid_read(fd, id) == 0);
	CHECK(names_dirid_read(fd, again) == 0 && memcmp(id, again, 16) == 0);
	REQUIRE(names_create(true, test_key, test_uuid, &n) == 0);
	memset(name, 'S', 199);
	name[199] = '\0';
	REQUIRE(names_encode(n, id, false, name, &b) == 0 && backing_name_is_long(&b));
	CHECK(names_side_read(fd, b.entry, full) == -EIO);
	CHECK(names_side_write(fd, &b) == 0);
	CHECK(names_side_write(fd, &b) == 0); /* already there: kept */
	CHECK(names_side_read(fd, b.entry, full) == 0 && strcmp(full, b.full) == 0);
	names_side_remove(fd, b.entry);
	CHECK(names_side_read(fd, b.entry, full) == -EIO);
	unlinkat(fd, NAMES_DIRID_ENTRY, 0);
	/* A malformed ID is refused, not guessed. */
	CHECK(symlinkat("tooshort", fd, NAMES_DIRID_ENTRY) == 0);
	CHECK(names_dirid_read(fd, id) == -EIO);
	unlinkat(fd, NAMES_DIRID_ENTRY, 0);
	close(fd);
	rmdir(dir);
	names_destroy(n);
}

/* Seal @target for @id and open it again, from the link or from @side as the store would. */
static int target_round_trip(struct names *n, const uint8_t *id, const char *target,
			     struct names_target *t, char *back)
{
	static char stored[NAMES_TARGET_MAX + 1];
	uint8_t side[NAMES_TARGET_SEALED_MAX];
	size_t side_len;
	int ret = names_target_seal(n, id, target, stored, side, &side_len);

	if (ret == 0)
		ret = strlen(stored) <= NAMES_TARGET_MAX && !strchr(stored, '/') ? 0 : -EINVAL;
	if (ret == 0)
		ret = names_target_parse(stored, t);
	if (ret == 0)
		ret = names_target_open(n, t, side, side_len, back);
	return ret;
}

static void test_targets_v2_every_length(void)
{
	static char target[NAMES_TARGET_MAX + 2], back[NAMES_TARGET_MAX + 1];
	uint8_t id[NAMES_LINK_ID_LEN] = {0x5a, 1, 2};
	struct names_target t;
	struct names *n;
	int external = 0;

	REQUIRE(names_create(true, test_key, test_uuid, &n) == 0);
	for (int len = 1; len <= NAMES_TARGET_MAX; len++) {
		target[len - 1] = (char)(1 + (len * 53) % 255);
		target[len] = '\0';
		if (target_round_trip(n, id, target, &t, back) != 0 || strcmp(back, target) != 0) {
			CHECK(!"round trip");
			break;
		}
		CHECK_EQ_INT(t.len, len);
		external += t.form == NAMES_TARGET_EXTERNAL;
		CHECK(t.form == (len > NAMES_TARGET_INLINE_MAX ? NAMES_TARGET_EXTERNAL
							       : NAMES_TARGET_INLINE));
	}
	CHECK_EQ_INT(external, NAMES_TARGET_MAX - NAMES_TARGET_INLINE_MAX);
	/* The inline limit is the longest whose stored form fits the backing. */
	{
		char stored[NAMES_TARGET_MAX + 1];
		uint8_t sealed[NAMES_TARGET_SEALED_MAX];
		size_t sealed_len;

		target[NAMES_TARGET_INLINE_MAX] = '\0';
		CHECK(names_target_seal(n, id, target, stored, sealed, &sealed_len) == 0);
		CHECK_EQ_INT(strlen(stored), NAMES_TARGET_MAX);
		CHECK(NAMES_LINK_ID_TEXT + 1 + (4 * (sealed_len + 1) + 2) / 3 > NAMES_TARGET_MAX);
		memset(target, 'a', NAMES_TARGET_MAX + 1);
		target[NAMES_TARGET_MAX + 1] = '\0';
		CHECK(names_target_seal(n, id, target, stored, sealed, &sealed_len) ==
		      -ENAMETOOLONG);
		CHECK(names_target_seal(n, id, "", stored, sealed, &sealed_len) == -ENOENT);
	}
	names_destroy(n);
}

static void test_targets_v2_tampered_and_malformed(void)
{
	static const char *const malformed[] = {
		"short.AAAAAAAAAAAAAAAAAAAAAAAAAAAA",   /* ID not 22 characters */
		"AAAAAAAAAAAAAAAAAAAAAB.AAAAAAAAAAAAAAAAAAAAAAAAAAAA", /* ID not canonical */
		"AAAAAAAAAAAAAAAAAAAAAA.",               /* nothing sealed */
		"AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA", /* 16 bytes: a tag alone */
		"AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAA.A", /* a second dot */
		"AAAAAAAAAAAAAAAAAAAAAA..",              /* no length */
		"AAAAAAAAAAAAAAAAAAAAAA..0",
		"AAAAAAAAAAAAAAAAAAAAAA..0123",
		"AAAAAAAAAAAAAAAAAAAAAA..4096",
		"AAAAAAAAAAAAAAAAAAAAAA..40950",
		"AAAAAAAAAAAAAAAAAAAAAA..12x",
	};
	uint8_t id[NAMES_LINK_ID_LEN] = {7}, side[NAMES_TARGET_SEALED_MAX];
	char stored[NAMES_TARGET_MAX + 1], back[NAMES_TARGET_MAX + 1], target[3500];
	struct names_target t;
	struct names *n;
	size_t side_len;

	REQUIRE(names_create(true, test_key, test_uuid, &n) == 0);
	for (size_t i = 0; i < sizeof(malformed) / sizeof(malformed[0]); i++)
		CHECK(names_target_parse(malformed[i], &t) == -EBADMSG);
	CHECK(names_target_parse("AAAAAAAAAAAAAAAAAAAAAA..4095", &t) == 0 && t.len == 4095);
	/* A version-1 target: pure base64url. */
	CHECK(names_target_parse("HyDQ5NJSEWcSPG5V8zIBOCd4C3IfO3ivcvtFTXi94vLS", &t) == 0 &&
	      t.form == NAMES_TARGET_V1);
	/* Any character of an inline target changed, or the text cut short. */
	REQUIRE(names_target_seal(n, id, "../secret/place", stored, side, &side_len) == 0);
	for (size_t i = 0; stored[i]; i++) {
		char saved = stored[i];

		stored[i] = saved == 'A' ? 'B' : 'A';
		CHECK(names_target_parse(stored, &t) < 0 ||
		      names_target_open(n, &t, NULL, 0, back) == -EBADMSG);
		stored[i] = saved;
	}
	for (size_t cut = strlen(stored); cut-- > NAMES_LINK_ID_TEXT;) {
		char saved = stored[cut];

		stored[cut] = '\0';
		CHECK(names_target_parse(stored, &t) < 0 ||
		      names_target_open(n, &t, NULL, 0, back) == -EBADMSG);
		stored[cut] = saved;
	}
	/* An external target: a flipped bit or a cut in its store file, or a
	 * length the link misstates. */
	memset(target, 'x', sizeof(target) - 1);
	target[sizeof(target) - 1] = '\0';
	REQUIRE(names_target_seal(n, id, target, stored, side, &side_len) == 0);
	REQUIRE(names_target_parse(stored, &t) == 0 && t.form == NAMES_TARGET_EXTERNAL);
	CHECK(names_target_open(n, &t, side, side_len, back) == 0 && strcmp(back, target) == 0);
	for (size_t bit = 0; bit < side_len * 8; bit += 997) {
		side[bit / 8] ^= (uint8_t)(1 << bit % 8);
		CHECK(names_target_open(n, &t, side, side_len, back) == -EBADMSG);
		side[bit / 8] ^= (uint8_t)(1 << bit % 8);
	}
	CHECK(names_target_open(n, &t, side, side_len - 1, back) == -EBADMSG);
	t.len--;
	CHECK(names_target_open(n, &t, side, side_len, back) == -EBADMSG);
	names_destroy(n);
}

/*
 * A key scope's codec (names_set_key / names_forget_keys): without keys it
 * seals nothing (-EACCES) and opens nothing; with a key it is exactly the
 * codec of that key; forgotten, it is keyless again and set again, it opens
 * what it sealed.
 */
static void test_keyless_codec_for_scopes(void)
{
	struct names *scoped, *plain;
	struct backing_name b, want;
	char back[NAMES_MAX + 1], xname[NAMES_XATTR_NAME_MAX + 1];

	REQUIRE(names_create(true, NULL, NULL, &scoped) == 0);
	REQUIRE(names_create(true, test_key, test_uuid, &plain) == 0);
	CHECK_EQ_INT(names_encode(scoped, dir_a, false, "report.txt", &b), -EACCES);
	CHECK_EQ_INT(names_xattr_name_seal(scoped, dir_a, "user.x", xname), -EACCES);
	CHECK_EQ_INT(names_set_key(scoped, test_key, test_uuid), 0);
	CHECK_EQ_INT(names_encode(scoped, dir_a, false, "report.txt", &b), 0);
	CHECK_EQ_INT(names_encode(plain, dir_a, false, "report.txt", &want), 0);
	CHECK(strcmp(b.entry, want.entry) == 0);
	names_forget_keys(scoped);
	CHECK_EQ_INT(names_decode(scoped, dir_a, false, want.entry, NULL, back), -EBADMSG);
	CHECK_EQ_INT(names_encode(scoped, dir_a, false, "report.txt", &b), -EACCES);
	CHECK_EQ_INT(names_set_key(scoped, test_key, test_uuid), 0);
	CHECK_EQ_INT(names_decode(scoped, dir_a, false, want.entry, NULL, back), 0);
	CHECK(strcmp(back, "report.txt") == 0);
	names_destroy(scoped);
	names_destroy(plain);
}

int main(void)
{
	RUN(test_format_md_vectors);
	RUN(test_every_length_and_byte);
	RUN(test_tampered_and_moved_names_refused);
	RUN(test_plain_mode_is_identity);
	RUN(test_dirid_and_side_records_on_disk);
	RUN(test_targets_v2_every_length);
	RUN(test_targets_v2_tampered_and_malformed);
	RUN(test_keyless_codec_for_scopes);
	return check_summary();
}
