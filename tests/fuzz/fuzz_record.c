// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for the key-record and header-slot decoders, which parse
 * bytes anyone with write access to the backing store controls.
 *
 * Every input goes through record_decode(), slot_decode() and header_pick()
 * as it is, and again with the slot checksums recomputed so that the fuzzer
 * reaches the parser behind the checksum instead of stopping at it.  Any
 * accepted input must re-encode to exactly the same bytes: the format has one
 * encoding per record, and a decoder that accepts anything else is lax.
 *
 * Seeds: ENVELOPEFS_FUZZ_SEEDS=DIR ./fuzz_record -runs=0 writes valid
 * encodings to DIR (see tests/fuzz/meson.build).
 */

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

#include "crypto/record.h"

static const uint8_t fuzz_dek[32] = { 1, 2, 3 };
static const uint8_t fuzz_uuid[16] = { 9, 8, 7 };

static struct key_record rec, rec2;
static uint8_t out[2 * 65536];

static void check_record(const uint8_t *data, size_t size)
{
	size_t len = 0;

	if (record_decode(data, size, &rec) != 0)
		return;
	assert(record_encoded_len(&rec) == size);
	assert(record_encode(&rec, out, sizeof(out), &len) == 0);
	assert(len == size && memcmp(out, data, size) == 0);
	/* The MAC check must cope with any decoded record (it will fail). */
	(void)record_check_mac(&rec, fuzz_dek, fuzz_uuid);
}

static void check_slot(const uint8_t *slot, size_t size)
{
	uint64_t seq;
	int ret = slot_decode(slot, size, &rec, &seq);

	assert(ret == 0 || ret == -ENODATA || ret == -EBADMSG);
	if (ret != 0 || size > sizeof(out))
		return;
	assert(seq >= 1);
	assert(slot_encode(&rec, seq, out, size) == 0);
	assert(memcmp(out, slot, size) == 0);
}

static void check_header(const uint8_t *header, size_t slot_size)
{
	uint64_t seq, s0, s1;
	int idx, ret, e0, e1;

	ret = header_pick(header, slot_size, &rec, &seq, &idx);
	assert(ret == 0 || ret == -ENODATA || ret == -EBADMSG);
	e0 = slot_decode(header, slot_size, &rec2, &s0);
	e1 = slot_decode(header + slot_size, slot_size, &rec2, &s1);
	if (ret != 0) {
		assert(idx == -1);
		/* Refused only when no slot wins outright. */
		assert(!(e0 == 0 && (e1 != 0 || s0 > s1)));
		assert(!(e1 == 0 && (e0 != 0 || s1 > s0)));
		assert(ret != -ENODATA || (e0 == -ENODATA && e1 == -ENODATA));
		return;
	}
	assert(idx == 0 || idx == 1);
	assert(seq == (idx ? s1 : s0));
	assert((idx ? e1 : e0) == 0);
	if (slot_size <= sizeof(out)) {
		assert(slot_encode(&rec, seq, out, slot_size) == 0);
		assert(memcmp(out, header + idx * slot_size, slot_size) == 0);
	}
}

/* Overwrite the checksum of the @size-byte slot at @slot with the right one. */
static void fix_checksum(uint8_t *slot, size_t size)
{
	uint8_t d[SHA256_DIGEST_LENGTH];

	if (size < 16)
		return;
	SHA256(slot, size - 16, d);
	memcpy(slot + size - 16, d, 16);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy;

	check_record(data, size);
	check_slot(data, size);
	if (size % 2 == 0)
		check_header(data, size / 2);

	copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	fix_checksum(copy, size);
	check_slot(copy, size);
	if (size % 2 == 0) {
		memcpy(copy, data, size);
		fix_checksum(copy, size / 2);
		fix_checksum(copy + size / 2, size / 2);
		check_header(copy, size / 2);
	}
	free(copy);
	return 0;
}

static void write_seed(const char *dir, const char *name, const uint8_t *p, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f)
		return;
	fwrite(p, 1, len, f);
	fclose(f);
}

static void make_record(struct key_record *r, const char *ref, size_t wrapped_len)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	for (i = 0; i < 16; i++)
		r->file_id[i] = (uint8_t)(i * 17);
	r->key_version = 7;
	snprintf(r->key_ref, sizeof(r->key_ref), "%s", ref);
	r->wrapped_len = (uint16_t)wrapped_len;
	for (i = 0; i < wrapped_len; i++)
		r->wrapped[i] = (uint8_t)(i * 31 + 5);
	record_seal_mac(r, fuzz_dek, fuzz_uuid);
}

/* Valid records, slots and headers as seeds, written with our own encoders. */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const size_t wrapped[] = { 1, 60, 184, 600 };
	const char *dir = getenv("ENVELOPEFS_FUZZ_SEEDS");
	static uint8_t buf[2 * 8192];
	char name[64];
	size_t i, len, ss;

	(void)argc;
	(void)argv;
	if (!dir)
		return 0;
	for (i = 0; i < sizeof(wrapped) / sizeof(wrapped[0]); i++) {
		make_record(&rec, i % 2 ? "local:master" : "arn:aws:kms:eu-west-1:1:key/x", wrapped[i]);
		if (record_encode(&rec, buf, sizeof(buf), &len) == 0) {
			snprintf(name, sizeof(name), "record-%zu", i);
			write_seed(dir, name, buf, len);
		}
		ss = slot_size_for(strlen(rec.key_ref), wrapped[i]);
		if (slot_encode(&rec, i + 1, buf, ss) == 0) {
			snprintf(name, sizeof(name), "slot-%zu", i);
			write_seed(dir, name, buf, ss);
			memset(buf + ss, 0, ss);
			snprintf(name, sizeof(name), "header-one-%zu", i);
			write_seed(dir, name, buf, 2 * ss);
			if (slot_encode(&rec, i + 2, buf + ss, ss) == 0) {
				snprintf(name, sizeof(name), "header-two-%zu", i);
				write_seed(dir, name, buf, 2 * ss);
			}
		}
	}
	return 0;
}
