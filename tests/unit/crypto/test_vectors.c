// SPDX-License-Identifier: MIT
/*
 * Checks every ```vector block of docs/FORMAT.md against the implementation,
 * so the specification and the code cannot drift apart.  The vectors were
 * computed independently of this code (see the document).
 */

#include "vector.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "crypto/block.h"
#include "crypto/kdf.h"
#include "crypto/record.h"
#include "fs/volepoch.h"

static int n_block, n_record, n_slot, n_binding, n_other;

/* Decode field @name as hex into a fresh buffer; *@len gets its length.  NULL if absent or bad. */
static uint8_t *hex_field(const struct vector *v, const char *name, size_t *len)
{
	const char *hex = vector_field(v, name);
	size_t cap = hex ? strlen(hex) / 2 + 1 : 0;
	uint8_t *out = hex ? malloc(cap) : NULL;

	if (out && vector_hex(v, name, out, cap, 0, len) < 0) {
		free(out);
		out = NULL;
	}
	return out;
}

static int u64_field(const struct vector *v, const char *name, uint64_t *out)
{
	const char *s = vector_field(v, name);
	char *end;

	if (!s || !*s)
		return -1;
	errno = 0;
	*out = strtoull(s, &end, 10);
	return errno || *end ? -1 : 0;
}

static void check_block(const struct vector *v)
{
	size_t key_len = 0, vol_len = 0, fid_len = 0, nonce_len = 0, plain_len = 0, sealed_len = 0;
	uint8_t *key = hex_field(v, "key", &key_len);
	uint8_t *vol = hex_field(v, "volume_uuid", &vol_len);
	uint8_t *fid = hex_field(v, "file_id", &fid_len);
	uint8_t *nonce = hex_field(v, "nonce", &nonce_len);
	uint8_t *plain = hex_field(v, "plain", &plain_len);
	uint8_t *sealed = hex_field(v, "sealed", &sealed_len);
	uint8_t *got = NULL;
	uint64_t index;
	struct block_owner o;

	if (!key || !vol || !fid || !nonce || !plain || !sealed || u64_field(v, "index", &index) ||
	    key_len != 32 || vol_len != 16 || fid_len != 16 || nonce_len != 12 || !plain_len ||
	    sealed_len != plain_len + BLOCK_OVERHEAD) {
		fprintf(stderr, "FORMAT.md:%d: malformed block vector\n", v->line);
		CHECK(0);
		goto out;
	}
	o.key = key;
	o.volume_uuid = vol;
	o.file_id = fid;
	got = malloc(sealed_len);
	if (!got)
		goto out;
	CHECK_EQ_INT(block_seal_with_nonce(&o, index, nonce, plain, plain_len, got), 0);
	if (memcmp(got, sealed, sealed_len) != 0) {
		fprintf(stderr, "FORMAT.md:%d: block vector seals differently\n", v->line);
		CHECK(0);
	}
	CHECK_EQ_INT(block_open(&o, index, sealed, sealed_len, got), 0);
	CHECK(memcmp(got, plain, plain_len) == 0);
	n_block++;
out:
	free(key);
	free(vol);
	free(fid);
	free(nonce);
	free(plain);
	free(sealed);
	free(got);
}

/*
 * holes_field - the optional `holes` field ("FIRST-END,FIRST-END", decimal
 * block numbers) into @h.  0, or -1 when malformed.
 */
static int holes_field(const struct vector *v, struct record_holes *h)
{
	const char *p = vector_field(v, "holes");
	unsigned long long first, end;
	int used;

	memset(h, 0, sizeof(*h));
	while (p && *p) {
		if (h->n == RECORD_MAX_HOLES || sscanf(p, "%llu-%llu%n", &first, &end, &used) != 2)
			return -1;
		h->range[h->n].first = first;
		h->range[h->n++].end = end;
		p += used;
		if (*p == ',')
			p++;
	}
	return 0;
}

/*
 * bindings_field - the optional `bindings` field (comma-separated hex
 * bindings, ascending) into @b.  0, or -1 when malformed.
 */
static int bindings_field(const struct vector *v, struct record_bindings *b)
{
	const char *p = vector_field(v, "bindings");
	unsigned i, byte;

	memset(b, 0, sizeof(*b));
	while (p && *p) {
		if (b->n == RECORD_MAX_BINDINGS)
			return -1;
		for (i = 0; i < RECORD_BINDING_LEN; i++, p += 2)
			if (sscanf(p, "%2x", &byte) != 1)
				return -1;
			else
				b->id[b->n][i] = (uint8_t)byte;
		b->n++;
		if (*p == ',')
			p++;
		else if (*p)
			return -1;
	}
	return 0;
}

static void check_record(const struct vector *v)
{
	size_t fid_len = 0, ref_len = 0, wr_len = 0, dek_len = 0, vol_len = 0, mk_len = 0,
	       rec_len = 0, out_len = 0;
	uint8_t *fid = hex_field(v, "file_id", &fid_len);
	uint8_t *ref = hex_field(v, "key_ref", &ref_len);
	uint8_t *wrapped = hex_field(v, "wrapped", &wr_len);
	uint8_t *dek = hex_field(v, "dek", &dek_len);
	uint8_t *vol = hex_field(v, "volume_uuid", &vol_len);
	uint8_t *mac_key = hex_field(v, "mac_key", &mk_len);
	uint8_t *rec = hex_field(v, "record", &rec_len);
	static struct key_record r, back;
	static uint8_t out[RECORD_MAX_LEN];
	uint8_t k[32];
	uint64_t kv, flags = 0, version = 1, file_version = 0;
	struct record_holes holes;
	struct record_bindings bindings;

	/* flags and version are optional: absent means 0 and 1. */
	if (vector_field(v, "flags") && (u64_field(v, "flags", &flags) || flags > 255))
		flags = 256;
	if (vector_field(v, "version") &&
	    (u64_field(v, "version", &version) || version < 1 || version > 2))
		flags = 256;
	if (holes_field(v, &holes) < 0 || (holes.n && version != 2))
		flags = 256;
	/* Format-3 items: the file's version and its entry bindings. */
	if (vector_field(v, "file_version") &&
	    (u64_field(v, "file_version", &file_version) || version != 2))
		flags = 256;
	if (bindings_field(v, &bindings) < 0 || (bindings.n && version != 2))
		flags = 256;
	if (!fid || !ref || !wrapped || !dek || !vol || !mac_key || !rec || flags > 255 ||
	    u64_field(v, "key_version", &kv) || kv > UINT32_MAX || fid_len != 16 || dek_len != 32 ||
	    vol_len != 16 || mk_len != 32 || !ref_len || ref_len > RECORD_MAX_KEY_REF ||
	    !wr_len || wr_len > RECORD_MAX_WRAPPED) {
		fprintf(stderr, "FORMAT.md:%d: malformed record vector\n", v->line);
		CHECK(0);
		goto out;
	}
	memset(&r, 0, sizeof(r));
	r.version = (uint8_t)version;
	r.holes = holes;
	r.file_version = file_version;
	r.bindings = bindings;
	r.flags = (uint8_t)flags;
	memcpy(r.file_id, fid, 16);
	r.key_version = (uint32_t)kv;
	memcpy(r.key_ref, ref, ref_len);
	r.wrapped_len = (uint16_t)wr_len;
	memcpy(r.wrapped, wrapped, wr_len);

	/* The intermediate MAC key, to tell a KDF mismatch from an encoding one. */
	CHECK_EQ_INT(crypto_hkdf_sha256(dek, 32, vol, 16, "envelopefs v1 key-record mac", 28, k,
					32), 0);
	CHECK(memcmp(k, mac_key, 32) == 0);

	CHECK_EQ_INT(record_seal_mac(&r, dek, vol), 0);
	CHECK_EQ_INT(record_encode(&r, out, sizeof(out), &out_len), 0);
	if (out_len != rec_len || memcmp(out, rec, rec_len) != 0) {
		fprintf(stderr, "FORMAT.md:%d: record vector encodes differently\n", v->line);
		CHECK(0);
	}
	CHECK_EQ_INT(record_decode(rec, rec_len, &back), 0);
	CHECK(back.flags == flags && memcmp(back.file_id, fid, 16) == 0 && back.key_version == kv &&
	      strlen(back.key_ref) == ref_len && memcmp(back.key_ref, ref, ref_len) == 0 &&
	      back.wrapped_len == wr_len && memcmp(back.wrapped, wrapped, wr_len) == 0 &&
	      back.version == version && memcmp(&back.holes, &holes, sizeof(holes)) == 0 &&
	      back.file_version == file_version &&
	      memcmp(&back.bindings, &bindings, sizeof(bindings)) == 0);
	CHECK_EQ_INT(record_check_mac(&back, dek, vol), 0);
	n_record++;
out:
	memset(k, 0, sizeof(k));
	free(fid);
	free(ref);
	free(wrapped);
	free(dek);
	free(vol);
	free(mac_key);
	free(rec);
}

static void check_slot(const struct vector *v)
{
	size_t rec_len = 0, slot_len = 0;
	uint8_t *rec = hex_field(v, "record", &rec_len);
	uint8_t *slot = hex_field(v, "slot", &slot_len);
	uint8_t *header = NULL;
	static struct key_record r, back;
	uint64_t seq, slot_size, got_seq;
	int idx;

	if (!rec || !slot || u64_field(v, "seq", &seq) || u64_field(v, "slot_size", &slot_size) ||
	    slot_size != slot_len || record_decode(rec, rec_len, &r) != 0) {
		fprintf(stderr, "FORMAT.md:%d: malformed slot vector\n", v->line);
		CHECK(0);
		goto out;
	}
	header = calloc(2, slot_len);
	if (!header)
		goto out;
	CHECK_EQ_INT(slot_encode(&r, seq, header, slot_len), 0);
	if (memcmp(header, slot, slot_len) != 0) {
		fprintf(stderr, "FORMAT.md:%d: slot vector encodes differently\n", v->line);
		CHECK(0);
	}
	CHECK_EQ_INT(slot_decode(slot, slot_len, &back, &got_seq), 0);
	CHECK(got_seq == seq && memcmp(back.mac, r.mac, RECORD_MAC_LEN) == 0);

	/* As either slot of a header whose other slot is empty. */
	memset(header, 0, 2 * slot_len);
	memcpy(header, slot, slot_len);
	CHECK_EQ_INT(header_pick(header, slot_len, &back, &got_seq, &idx), 0);
	CHECK(idx == 0 && got_seq == seq);
	memset(header, 0, slot_len);
	memcpy(header + slot_len, slot, slot_len);
	CHECK_EQ_INT(header_pick(header, slot_len, &back, &got_seq, &idx), 0);
	CHECK(idx == 1 && got_seq == seq);
	n_slot++;
out:
	free(rec);
	free(slot);
	free(header);
}

/*
 * Vector types in the same document that other tests check
 * (tests/unit/kms/test_local_vector.c, test_pkcs11.c, test_cloud_vectors.c,
 * test_kmip_vector.c, tests/unit/fs/test_names.c).  Anything neither here nor handled below
 * fails, so no vector in the document goes unchecked.
 */
/* An entry binding (docs/FORMAT.md, "Entry bindings"): directory ID, name (hex), binding. */
static void check_binding(const struct vector *v)
{
	size_t dir_len = 0, name_len = 0, want_len = 0;
	uint8_t *dirid = hex_field(v, "dirid", &dir_len);
	uint8_t *name = hex_field(v, "name", &name_len);
	uint8_t *want = hex_field(v, "binding", &want_len);
	char text[256];
	uint8_t got[RECORD_BINDING_LEN];

	if (!dirid || !name || !want || dir_len != RECORD_BINDING_LEN || !name_len ||
	    name_len > 255 || want_len != RECORD_BINDING_LEN) {
		fprintf(stderr, "FORMAT.md:%d: malformed binding vector\n", v->line);
		CHECK(0);
	} else {
		memcpy(text, name, name_len);
		text[name_len] = '\0';
		CHECK_EQ_INT(record_binding_of(dirid, text, got), 0);
		CHECK(memcmp(got, want, RECORD_BINDING_LEN) == 0);
		n_binding++;
	}
	free(dirid);
	free(name);
	free(want);
}

static int n_epoch;

/*
 * The volume epoch file (docs/FORMAT.md, "Volume epoch"): volume key,
 * UUID, epoch (decimal), K and the file.
 */
static void check_epoch(const struct vector *v)
{
	size_t vk_len = 0, uuid_len = 0, key_len = 0, file_len = 0;
	uint8_t *vk = hex_field(v, "volume_key", &vk_len);
	uint8_t *uuid = hex_field(v, "volume_uuid", &uuid_len);
	uint8_t *want_key = hex_field(v, "epoch_key", &key_len);
	uint8_t *file = hex_field(v, "file", &file_len);
	uint8_t key[32], out[VOLEPOCH_LEN];
	uint64_t epoch = 0, back = 0;

	if (!vk || !uuid || !want_key || !file || vk_len != 32 || uuid_len != 16 ||
	    key_len != 32 || file_len != VOLEPOCH_LEN || u64_field(v, "epoch", &epoch)) {
		fprintf(stderr, "FORMAT.md:%d: malformed volume_epoch vector\n", v->line);
		CHECK(0);
	} else {
		CHECK_EQ_INT(volepoch_key(vk, uuid, key), 0);
		CHECK(memcmp(key, want_key, 32) == 0);
		CHECK_EQ_INT(volepoch_encode(key, epoch, out), 0);
		CHECK(memcmp(out, file, VOLEPOCH_LEN) == 0);
		CHECK_EQ_INT(volepoch_decode(key, file, file_len, &back), 0);
		CHECK(back == epoch);
		file[VOLEPOCH_LEN - 1] ^= 1; /* one bit of the MAC */
		CHECK_EQ_INT(volepoch_decode(key, file, file_len, &back), -EBADMSG);
		n_epoch++;
	}
	free(vk);
	free(uuid);
	free(want_key);
	free(file);
}

static const char *const checked_elsewhere[] = { "local_wrap", "keyring_file", "pkcs11_wrap",
						 "aws_blob", "vault_wrap", "names_keys", "name",
						 "dirid", "symlink", "xattr", "rekey_journal",
						 "symlink2", "azure_wrap", "crc32c", "gcp_wrap", "kmip_wrap",
						 "config_mac" /* tests/unit/fs/test_confmac.c */,
						 "scope" /* tests/unit/fs/test_scope.c */ };

static int is_checked_elsewhere(const char *type)
{
	size_t i;

	for (i = 0; i < sizeof(checked_elsewhere) / sizeof(checked_elsewhere[0]); i++)
		if (strcmp(type, checked_elsewhere[i]) == 0)
			return 1;
	return 0;
}

static void check_vector(const struct vector *v, const char *type)
{
	if (!type) {
		fprintf(stderr, "FORMAT.md:%d: vector without a type\n", v->line);
		CHECK(0);
	} else if (strcmp(type, "block") == 0) {
		check_block(v);
	} else if (strcmp(type, "record") == 0) {
		check_record(v);
	} else if (strcmp(type, "slot") == 0) {
		check_slot(v);
	} else if (strcmp(type, "binding") == 0) {
		check_binding(v);
	} else if (strcmp(type, "volume_epoch") == 0) {
		check_epoch(v);
	} else if (is_checked_elsewhere(type)) {
		n_other++;
	} else {
		fprintf(stderr, "FORMAT.md:%d: unknown vector type '%s'\n", v->line, type);
		CHECK(0);
	}
}

static void test_format_md_vectors(void)
{
	/* Every block: one of a type nobody checks fails. */
	vector_scan("FORMAT.md", NULL, check_vector);
	printf("checked %d block, %d record, %d slot, %d binding and %d volume epoch vectors (%d "
	       "left to other tests)\n",
	       n_block, n_record, n_slot, n_binding, n_epoch, n_other);
	CHECK(n_epoch > 0);
	CHECK(n_block > 0);
	CHECK(n_record > 0);
	CHECK(n_slot > 0);
	CHECK(n_binding > 0);
}

int main(void)
{
	RUN(test_format_md_vectors);
	block_thread_wipe();
	return check_summary();
}
