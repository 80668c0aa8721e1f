// SPDX-License-Identifier: MIT
/* Unit tests for crypto/record.c: key records, slots and the two-slot header. */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crypto/kdf.h"
#include "crypto/random.h"
#include "crypto/record.h"

#define MAX_REC RECORD_MAX_LEN

static uint8_t dek[32], uuid[16];

static void make_record(struct key_record *r, const char *ref, size_t wrapped_len)
{
	memset(r, 0, sizeof(*r));
	crypto_random(r->file_id, sizeof(r->file_id));
	r->key_version = 0x01020304;
	snprintf(r->key_ref, sizeof(r->key_ref), "%s", ref);
	r->wrapped_len = (uint16_t)wrapped_len;
	crypto_random(r->wrapped, wrapped_len);
	record_seal_mac(r, dek, uuid);
}

static int records_equal(const struct key_record *a, const struct key_record *b)
{
	return memcmp(a->file_id, b->file_id, 16) == 0 && a->key_version == b->key_version &&
	       strcmp(a->key_ref, b->key_ref) == 0 && a->wrapped_len == b->wrapped_len &&
	       memcmp(a->wrapped, b->wrapped, a->wrapped_len) == 0 &&
	       memcmp(a->mac, b->mac, RECORD_MAC_LEN) == 0;
}

/* Rewrite a slot's checksum after a deliberate edit, so only the edit is judged. */
static void fix_checksum(uint8_t *slot, size_t slot_size)
{
	uint8_t d[SHA256_LEN];

	crypto_sha256(slot, slot_size - 16, d);
	memcpy(slot + slot_size - 16, d, 16);
}

static void test_round_trip(void)
{
	static const size_t wl[] = { 1, 40, 300, RECORD_MAX_WRAPPED };
	char longref[RECORD_MAX_KEY_REF + 1];
	const char *refs[] = { "k", "local:master/v1", longref };
	static struct key_record r, back;
	static uint8_t buf[MAX_REC + 10];
	size_t i, j, len;

	memset(longref, '~', RECORD_MAX_KEY_REF);
	longref[RECORD_MAX_KEY_REF] = '\0';
	for (i = 0; i < 3; i++) {
		for (j = 0; j < 4; j++) {
			make_record(&r, refs[i], wl[j]);
			CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), 0);
			CHECK_EQ_INT(len, record_encoded_len(&r));
			CHECK_EQ_INT(len, RECORD_FIXED_LEN + strlen(refs[i]) + wl[j]);
			CHECK(memcmp(buf, "EFKR\x01\x00", 6) == 0);
			CHECK_EQ_INT(record_decode(buf, len, &back), 0);
			CHECK(records_equal(&r, &back));
			CHECK_EQ_INT(record_check_mac(&back, dek, uuid), 0);
		}
	}
}

static void test_encode_rejects(void)
{
	static struct key_record r;
	static uint8_t buf[MAX_REC];
	size_t len;

	make_record(&r, "ref", 10);
	CHECK_EQ_INT(record_encode(&r, buf, record_encoded_len(&r) - 1, &len), -ENOSPC);
	r.key_ref[1] = ' ';
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
	r.key_ref[1] = 0x7f;
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
	r.key_ref[0] = '\0';
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
	make_record(&r, "ref", 10);
	r.wrapped_len = 0;
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
	r.wrapped_len = RECORD_MAX_WRAPPED + 1;
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
	/* No terminator within the field. */
	make_record(&r, "ref", 10);
	memset(r.key_ref, 'a', sizeof(r.key_ref));
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
}

static void test_decode_rejects(void)
{
	static struct key_record r, back;
	uint8_t buf[200], ext[201];
	size_t len, i;

	make_record(&r, "abc", 20);
	REQUIRE(record_encode(&r, buf, sizeof(buf), &len) == 0);
#define BAD_WITH(off, val)                                                     \
	do {                                                                   \
		uint8_t saved = buf[off];                                      \
		buf[off] = (val);                                              \
		CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);        \
		buf[off] = saved;                                              \
	} while (0)
	BAD_WITH(0, 'X');      /* magic */
	BAD_WITH(4, 0);	       /* version 0 */
	BAD_WITH(4, 2);	       /* a newer version */
	BAD_WITH(5, 2);	       /* flags other than RECORD_FLAG_REKEYING */
	BAD_WITH(5, 0x80);
	BAD_WITH(5, 0x81);
	BAD_WITH(26, 0);       /* reference length 0 */
	BAD_WITH(26, 4);       /* reference length disagrees with the rest */
	BAD_WITH(26, 255);
	BAD_WITH(27, 0x20);    /* reference characters */
	BAD_WITH(28, 0x7f);
	BAD_WITH(29, 0x00);
	BAD_WITH(31, 0);       /* wrapped length 20 -> 0 */
	BAD_WITH(31, 21);      /* one more than the bytes present */
	BAD_WITH(30, 0xff);
#undef BAD_WITH
	/* Trailing bytes. */
	memcpy(ext, buf, len);
	ext[len] = 0;
	CHECK_EQ_INT(record_decode(ext, len + 1, &back), -EBADMSG);
	/* Every truncation. */
	for (i = 0; i < len; i++)
		CHECK_EQ_INT(record_decode(buf, i, &back), -EBADMSG);
	CHECK_EQ_INT(record_decode(buf, len, &back), 0);
	/* A failed decode leaves nothing behind. */
	CHECK_EQ_INT(record_decode(buf, len - 1, &back), -EBADMSG);
	CHECK(back.wrapped_len == 0 && back.key_ref[0] == '\0');
}

/* A wrapped length over the limit is refused even when the buffer really is that long. */
static void test_decode_wrapped_over_limit(void)
{
	size_t len = RECORD_FIXED_LEN + 1 + RECORD_MAX_WRAPPED + 1;
	uint8_t *buf = calloc(1, len);
	static struct key_record back;

	REQUIRE(buf);
	memcpy(buf, "EFKR\x01\x00", 6);
	buf[26] = 1;
	buf[27] = 'k';
	buf[28] = (RECORD_MAX_WRAPPED + 1) >> 8;
	buf[29] = (RECORD_MAX_WRAPPED + 1) & 0xff;
	CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);
	free(buf);
}

/*
 * Flip every byte of an encoded record, several ways: the result must either
 * fail to decode or fail the MAC - never come back as a valid, altered record.
 */
static void test_flip_every_byte(void)
{
	static const uint8_t flips[] = { 0x01, 0x02, 0x10, 0x80, 0xff };
	static struct key_record r, back;
	uint8_t buf[300];
	size_t len, i, f;
	int accepted = 0, decoded = 0;

	make_record(&r, "kms/key-1", 60);
	REQUIRE(record_encode(&r, buf, sizeof(buf), &len) == 0);
	for (i = 0; i < len; i++) {
		for (f = 0; f < sizeof(flips); f++) {
			buf[i] ^= flips[f];
			if (record_decode(buf, len, &back) == 0) {
				decoded++;
				if (record_check_mac(&back, dek, uuid) == 0)
					accepted++;
			}
			buf[i] ^= flips[f];
		}
	}
	CHECK_EQ_INT(accepted, 0);
	CHECK(decoded > 0); /* the MAC, not only the parser, was exercised */
}

static void test_mac_binding(void)
{
	static struct key_record r;
	uint8_t other[32];

	make_record(&r, "ref", 48);
	CHECK_EQ_INT(record_check_mac(&r, dek, uuid), 0);
	memcpy(other, dek, 32);
	other[0] ^= 1;
	CHECK_EQ_INT(record_check_mac(&r, other, uuid), -EBADMSG);
	memcpy(other, uuid, 16);
	other[15] ^= 1;
	CHECK_EQ_INT(record_check_mac(&r, dek, other), -EBADMSG);
	r.key_version++;
	CHECK_EQ_INT(record_check_mac(&r, dek, uuid), -EBADMSG);
	r.key_version--;
	r.file_id[3] ^= 4;
	CHECK_EQ_INT(record_check_mac(&r, dek, uuid), -EBADMSG);
	r.file_id[3] ^= 4;
	strcpy(r.key_ref, "ref2");
	CHECK_EQ_INT(record_check_mac(&r, dek, uuid), -EBADMSG);
	strcpy(r.key_ref, "ref");
	r.wrapped[47] ^= 1;
	CHECK_EQ_INT(record_check_mac(&r, dek, uuid), -EBADMSG);
	r.wrapped[47] ^= 1;
	CHECK_EQ_INT(record_check_mac(&r, dek, uuid), 0);
}

static void test_slot_size_for(void)
{
	CHECK_EQ_INT(slot_size_for(10, 60), 192); /* 30 + 61 + 10 + 60 = 161 */
	CHECK_EQ_INT(slot_size_for(3, 100), 256); /* 194 */
	CHECK_EQ_INT(slot_size_for(2, 1), 128);	  /* 94 */
	CHECK_EQ_INT(slot_size_for(0, 1), 128);	  /* 92 */
	CHECK_EQ_INT(slot_size_for(1, 1) % SLOT_ALIGN, 0);
	CHECK_EQ_INT(slot_size_for(255, RECORD_MAX_WRAPPED), 6528);
}

static void test_slot_round_trip(void)
{
	static struct key_record r, back;
	size_t size = slot_size_for(20, 200);
	uint8_t *slot = malloc(size);
	uint64_t seq = 0;

	REQUIRE(slot);
	make_record(&r, "aaaaaaaaaaaaaaaaaaaa", 200);
	CHECK_EQ_INT(slot_encode(&r, 0x0102030405060708ull, slot, size), 0);
	CHECK(memcmp(slot, "EFSL\x01\x02\x03\x04\x05\x06\x07\x08", 12) == 0);
	CHECK_EQ_INT(slot_decode(slot, size, &back, &seq), 0);
	CHECK(seq == 0x0102030405060708ull);
	CHECK(records_equal(&r, &back));
	/* Record does not fit one byte less. */
	CHECK_EQ_INT(slot_encode(&r, 1, slot, size - SLOT_ALIGN), -ENOSPC);
	CHECK_EQ_INT(slot_encode(&r, 0, slot, size), -EINVAL);
	free(slot);
}

static void test_slot_rejects(void)
{
	static struct key_record r, back;
	uint8_t slot[256];
	uint64_t seq;
	size_t i;

	memset(slot, 0, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -ENODATA);

	make_record(&r, "ref", 16);
	REQUIRE(slot_encode(&r, 9, slot, sizeof(slot)) == 0);
	/* Every byte matters: the checksum covers it all. */
	for (i = 0; i < sizeof(slot); i++) {
		slot[i] ^= 0x40;
		CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -EBADMSG);
		slot[i] ^= 0x40;
	}
	/* With a matching checksum: non-zero padding, bad magic, seq 0, length overrun. */
	slot[200] = 1;
	fix_checksum(slot, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -EBADMSG);
	slot[200] = 0;
	slot[0] = 'X';
	fix_checksum(slot, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -EBADMSG);
	slot[0] = 'E';
	memset(slot + 4, 0, 8);
	fix_checksum(slot, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -EBADMSG);
	slot[11] = 9;
	slot[12] = 0xff;
	fix_checksum(slot, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -EBADMSG);
	slot[12] = 0;
	slot[13]++; /* record length one too long: record_decode sees a trailing zero */
	fix_checksum(slot, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), -EBADMSG);
	slot[13]--;
	fix_checksum(slot, sizeof(slot));
	CHECK_EQ_INT(slot_decode(slot, sizeof(slot), &back, &seq), 0);
	/* Too small to hold anything. */
	CHECK_EQ_INT(slot_decode(slot, 16, &back, &seq), -EBADMSG);
}

/*
 * Torn writes: slot 0 holds the current record; slot 1 is being replaced.
 * Whatever prefix of the new slot reached the disk - over the old content or
 * over zeros - header_pick must settle on slot 0 until the write is whole.
 */
static void test_torn_writes(void)
{
	static struct key_record cur, older, newer, got;
	enum { S = 256 };
	uint8_t header[2 * S], old1[S], new1[S];
	uint64_t seq;
	size_t k;
	int idx, pass, wrong = 0;

	make_record(&cur, "cur", 30);
	make_record(&older, "older", 30);
	make_record(&newer, "newer", 30);
	REQUIRE(slot_encode(&cur, 5, header, S) == 0);
	REQUIRE(slot_encode(&older, 4, old1, S) == 0);
	REQUIRE(slot_encode(&newer, 6, new1, S) == 0);

	for (pass = 0; pass < 2; pass++) {
		for (k = 0; k < S; k++) {
			if (pass == 0)
				memcpy(header + S, old1, S);
			else
				memset(header + S, 0, S);
			memcpy(header + S, new1, k);
			/* The old bytes past k may equal the new ones (random content: 1 in
			 * 256 for the last byte): then the write is complete, not torn. */
			if (memcmp(header + S, new1, S) == 0)
				continue;
			if (header_pick(header, S, &got, &seq, &idx) != 0 || idx != 0 ||
			    seq != 5 || !records_equal(&got, &cur))
				wrong++;
		}
		memcpy(header + S, new1, S);
		CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), 0);
		CHECK_EQ_INT(idx, 1);
		CHECK(seq == 6 && records_equal(&got, &newer));
	}
	CHECK_EQ_INT(wrong, 0);

	/* A torn write in the middle only (a lost sector) is caught too. */
	memcpy(header + S, new1, S);
	memset(header + S + 64, 0, 64);
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), 0);
	CHECK_EQ_INT(idx, 0);
}

/* The replacement protocol, run for a while: always write the other slot with seq + 1. */
static void test_sequence_logic(void)
{
	static struct key_record r, got;
	enum { S = 256 };
	uint8_t header[2 * S];
	uint64_t seq;
	int idx, i;

	memset(header, 0, sizeof(header));
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), -ENODATA);
	CHECK_EQ_INT(idx, -1);

	/* First record goes to slot 0 with sequence 1. */
	make_record(&r, "v1", 20);
	REQUIRE(slot_encode(&r, 1, header, S) == 0);
	for (i = 0; i < 20; i++) {
		REQUIRE(header_pick(header, S, &got, &seq, &idx) == 0);
		CHECK(seq == (uint64_t)i + 1);
		CHECK_EQ_INT(idx, i % 2);
		CHECK(records_equal(&got, &r));
		r.key_version = (uint32_t)i + 100;
		record_seal_mac(&r, dek, uuid);
		REQUIRE(slot_encode(&r, seq + 1, header + (1 - idx) * S, S) == 0);
	}

	/* The higher sequence wins regardless of slot order. */
	REQUIRE(slot_encode(&r, 1000, header, S) == 0);
	REQUIRE(slot_encode(&r, 999, header + S, S) == 0);
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), 0);
	CHECK(idx == 0 && seq == 1000);
	REQUIRE(slot_encode(&r, UINT64_MAX, header + S, S) == 0);
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), 0);
	CHECK(idx == 1 && seq == UINT64_MAX);

	/* Equal sequences cannot come from the protocol: refuse to guess. */
	REQUIRE(slot_encode(&r, 7, header, S) == 0);
	REQUIRE(slot_encode(&r, 7, header + S, S) == 0);
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), -EBADMSG);

	/* One empty, one damaged: no record to use, and not "no record". */
	memset(header, 0, S);
	header[S + 20] ^= 1;
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), -EBADMSG);
	/* One empty, one valid: the valid one. */
	header[S + 20] ^= 1;
	CHECK_EQ_INT(header_pick(header, S, &got, &seq, &idx), 0);
	CHECK(idx == 1 && seq == 7);
}

/* Version 2: the hole ranges round-trip, are covered by the MAC, and only canonically. */
static void test_v2_holes(void)
{
	static struct key_record r, back;
	static uint8_t buf[MAX_REC];
	size_t len, mac_at;

	make_record(&r, "local:x", 64);
	r.version = 2;
	record_holes_add(&r.holes, 10, 20);
	record_holes_add(&r.holes, 100, 200);
	REQUIRE(record_seal_mac(&r, dek, uuid) == 0);
	REQUIRE(record_encode(&r, buf, sizeof(buf), &len) == 0);
	CHECK_EQ_INT(len, record_encoded_len(&r));
	CHECK_EQ_INT(len, RECORD_FIXED_LEN + 7 + 64 + 1 + 2 + 32);
	REQUIRE(record_decode(buf, len, &back) == 0);
	CHECK(records_equal(&r, &back) && back.version == 2 && back.holes.n == 2 &&
	      back.holes.range[1].first == 100 && back.holes.range[1].end == 200);
	CHECK_EQ_INT(record_check_mac(&back, dek, uuid), 0);
	/* A widened range fails the MAC. */
	mac_at = len - RECORD_MAC_LEN;
	buf[mac_at - 1] ^= 1; /* the second range's end, 200 -> 201 */
	REQUIRE(record_decode(buf, len, &back) == 0);
	CHECK_EQ_INT(record_check_mac(&back, dek, uuid), -EBADMSG);
	buf[mac_at - 1] ^= 1;
	/* Touching ranges are not canonical (they would be one range). */
	buf[mac_at - 32 + 15] = 99; /* the first range ends at 99, the next starts at 100 */
	CHECK_EQ_INT(record_decode(buf, len, &back), 0);
	buf[mac_at - 32 + 15] = 100;
	CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);
	buf[mac_at - 32 + 15] = 20;
	/* An unknown tag, or a version-1 record with an extension, is refused. */
	buf[mac_at - 34] = 2;
	CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);
	buf[mac_at - 34] = 1;
	buf[4] = 1;
	CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);
	buf[4] = 2;
	REQUIRE(record_decode(buf, len, &back) == 0);
	/* Merging: touching ranges join, a third range merges the closest pair. */
	memset(&r.holes, 0, sizeof(r.holes));
	record_holes_add(&r.holes, 0, 5);
	record_holes_add(&r.holes, 5, 8);
	CHECK(r.holes.n == 1 && r.holes.range[0].end == 8);
	record_holes_add(&r.holes, 100, 110);
	record_holes_add(&r.holes, 20, 30);
	CHECK(r.holes.n == 2 && r.holes.range[0].first == 0 && r.holes.range[0].end == 30 &&
	      r.holes.range[1].first == 100);
	CHECK(record_holes_cover(&r.holes, 9, 30) && !record_holes_cover(&r.holes, 29, 31));
	/* A version-1 record cannot carry ranges. */
	r.version = 1;
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
}

/* Format 3: the version and the bindings round-trip, under the MAC, only canonically. */
static void test_v3_items(void)
{
	static struct key_record r, back;
	static uint8_t buf[MAX_REC];
	uint8_t a[RECORD_BINDING_LEN], b[RECORD_BINDING_LEN], zero[RECORD_BINDING_LEN] = {0};
	size_t len, at;
	unsigned i;

	make_record(&r, "local:x", 64);
	r.version = 2;
	r.file_version = 42;
	REQUIRE(record_binding_of(zero, "b", b) == 0);
	REQUIRE(record_binding_of(zero, "a", a) == 0);
	CHECK(memcmp(a, b, sizeof(a)) != 0);
	CHECK_EQ_INT(record_binding_of(zero, "", a), -EINVAL);
	REQUIRE(record_binding_of(zero, "a", a) == 0);
	CHECK_EQ_INT(record_bindings_add(&r.bindings, b), 0);
	CHECK_EQ_INT(record_bindings_add(&r.bindings, a), 0);
	CHECK_EQ_INT(record_bindings_add(&r.bindings, a), 0); /* already there */
	CHECK(r.bindings.n == 2 && memcmp(r.bindings.id[0], r.bindings.id[1], 16) < 0);
	CHECK(record_bindings_has(&r.bindings, a) && record_bindings_has(&r.bindings, b) &&
	      !record_bindings_has(&r.bindings, zero));
	REQUIRE(record_seal_mac(&r, dek, uuid) == 0);
	REQUIRE(record_encode(&r, buf, sizeof(buf), &len) == 0);
	CHECK_EQ_INT(len, RECORD_FIXED_LEN + 7 + 64 + 1 + 10 + 2 + 32);
	REQUIRE(record_decode(buf, len, &back) == 0);
	CHECK(records_equal(&r, &back) && back.file_version == 42 && back.bindings.n == 2 &&
	      memcmp(&back.bindings, &r.bindings, sizeof(r.bindings)) == 0);
	CHECK_EQ_INT(record_check_mac(&back, dek, uuid), 0);
	/* A binding changed fails the MAC; bindings out of order are not canonical. */
	at = len - RECORD_MAC_LEN - 2 * RECORD_BINDING_LEN;
	buf[at] ^= 1;
	if (record_decode(buf, len, &back) == 0)
		CHECK_EQ_INT(record_check_mac(&back, dek, uuid), -EBADMSG);
	buf[at] ^= 1;
	memcpy(buf + at + RECORD_BINDING_LEN, buf + at, RECORD_BINDING_LEN); /* a duplicate */
	CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);
	/* Version 0 has no encoding: the item is left out instead. */
	REQUIRE(record_encode(&r, buf, sizeof(buf), &len) == 0);
	at = len - RECORD_MAC_LEN - (2 + 2 * RECORD_BINDING_LEN) - 8;
	memset(buf + at, 0, 8);
	CHECK_EQ_INT(record_decode(buf, len, &back), -EBADMSG);
	/* Past RECORD_MAX_BINDINGS the caller is told to unbind. */
	memset(&r.bindings, 0, sizeof(r.bindings));
	for (i = 0; i < RECORD_MAX_BINDINGS; i++) {
		char name[4] = {(char)('a' + i), 0};

		REQUIRE(record_binding_of(zero, name, a) == 0);
		CHECK_EQ_INT(record_bindings_add(&r.bindings, a), 0);
	}
	CHECK_EQ_INT(record_bindings_add(&r.bindings, zero), -ENOSPC);
	/* Full items fit the format-3 slot of the local provider. */
	r.file_version = UINT64_MAX;
	record_holes_add(&r.holes, 1, 2);
	record_holes_add(&r.holes, 4, 8);
	REQUIRE(record_seal_mac(&r, dek, uuid) == 0);
	CHECK_EQ_INT(record_encoded_len(&r), RECORD_FIXED_LEN + 7 + 64 + RECORD_V3_EXTRA);
	CHECK_EQ_INT(slot_size_for_version(3, 38, 64), 320);
	CHECK_EQ_INT(slot_size_for_version(2, 38, 64), 256);
	/* A version-1 record carries none of them. */
	r.version = 1;
	CHECK_EQ_INT(record_encode(&r, buf, sizeof(buf), &len), -EINVAL);
}

int main(void)
{
	crypto_random(dek, sizeof(dek));
	crypto_random(uuid, sizeof(uuid));
	RUN(test_round_trip);
	RUN(test_encode_rejects);
	RUN(test_decode_rejects);
	RUN(test_decode_wrapped_over_limit);
	RUN(test_flip_every_byte);
	RUN(test_mac_binding);
	RUN(test_slot_size_for);
	RUN(test_slot_round_trip);
	RUN(test_slot_rejects);
	RUN(test_torn_writes);
	RUN(test_sequence_logic);
	RUN(test_v2_holes);
	RUN(test_v3_items);
	return check_summary();
}
