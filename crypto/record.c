// SPDX-License-Identifier: MIT
/*
 * Key records and header slots (see record.h, docs/FORMAT.md).
 *
 * The decoders read bytes that anyone with write access to the backing
 * store controls, so they are strict in one direction only: every length is
 * checked against what is left of the buffer before it is used, and there
 * is exactly one accepted encoding of each record (re-encoding a decoded
 * record reproduces the input), which the fuzz target asserts.
 */

#include "crypto/record.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <openssl/crypto.h>

#include "crypto/bigendian.h"
#include "crypto/kdf.h"

#define MAC_INFO "envelopefs v1 key-record mac"
#define MAC_KEY_LEN 32
#define SLOT_CHECKSUM_LEN 16
#define SLOT_HDR_LEN 14 /* magic, sequence, record length */

static bool ref_char_ok(uint8_t c)
{
	return c >= 0x21 && c <= 0x7e;
}

/* Length of r->key_ref, or 0 when it is empty, unterminated or not printable. */
static size_t key_ref_len(const struct key_record *r)
{
	size_t n = strnlen(r->key_ref, sizeof(r->key_ref));
	size_t i;

	if (n == 0 || n > RECORD_MAX_KEY_REF)
		return 0;
	for (i = 0; i < n; i++)
		if (!ref_char_ok((uint8_t)r->key_ref[i]))
			return 0;
	return n;
}

/* The version-2 extension's length for @r's items (0 without any). */
static size_t ext_len(const struct key_record *r)
{
	size_t h = r->holes.n > RECORD_MAX_HOLES ? RECORD_MAX_HOLES : r->holes.n;
	size_t b = r->bindings.n > RECORD_MAX_BINDINGS ? RECORD_MAX_BINDINGS : r->bindings.n;

	return (h ? 2 + 16 * h : 0) + (r->file_version ? 2 + 8 : 0) +
	       (b ? 2 + RECORD_BINDING_LEN * b : 0);
}

static bool is_v2(const struct key_record *r)
{
	return r->version == 2;
}

/**
 * record_encoded_len - see record.h.  For a record whose fields are out of
 * range (which record_encode() refuses) the result is still the length the
 * fields describe, never more than the largest valid record.
 */
size_t record_encoded_len(const struct key_record *r)
{
	size_t n = strnlen(r->key_ref, RECORD_MAX_KEY_REF);
	size_t w = r->wrapped_len > RECORD_MAX_WRAPPED ? RECORD_MAX_WRAPPED : r->wrapped_len;

	return RECORD_FIXED_LEN + n + w + (is_v2(r) ? 1 + ext_len(r) : 0);
}

/*
 * holes_ok - @h is canonical: at most RECORD_MAX_HOLES non-empty ranges,
 * ascending, neither overlapping nor touching.
 */
static bool holes_ok(const struct record_holes *h)
{
	unsigned i;

	if (h->n > RECORD_MAX_HOLES)
		return false;
	for (i = 0; i < h->n; i++)
		if (h->range[i].first >= h->range[i].end ||
		    (i > 0 && h->range[i].first <= h->range[i - 1].end))
			return false;
	return true;
}

/* bindings_ok - @b is canonical: at most RECORD_MAX_BINDINGS, strictly ascending. */
static bool bindings_ok(const struct record_bindings *b)
{
	unsigned i;

	if (b->n > RECORD_MAX_BINDINGS)
		return false;
	for (i = 1; i < b->n; i++)
		if (memcmp(b->id[i - 1], b->id[i], RECORD_BINDING_LEN) >= 0)
			return false;
	return true;
}

/* has_items - does @r carry any version-2 extension item? */
static bool has_items(const struct key_record *r)
{
	return r->holes.n || r->file_version || r->bindings.n;
}

/* encodable - the fields record_encode() checks; the key reference's length or 0. */
static size_t encodable(const struct key_record *r)
{
	size_t n = key_ref_len(r);

	if (!n || r->wrapped_len == 0 || r->wrapped_len > RECORD_MAX_WRAPPED ||
	    r->version > 2 || (!is_v2(r) && has_items(r)) || !holes_ok(&r->holes) ||
	    !bindings_ok(&r->bindings))
		return 0;
	return n;
}

/* Serialise everything but the MAC; returns the MAC's offset. */
static size_t encode_body(const struct key_record *r, size_t n, uint8_t *out)
{
	size_t off = 0;
	unsigned i;

	memcpy(out, RECORD_MAGIC, 4);
	out[4] = is_v2(r) ? 2 : RECORD_FORMAT_VERSION;
	out[5] = r->flags;
	memcpy(out + 6, r->file_id, RECORD_FILE_ID_LEN);
	put_be32(out + 22, r->key_version);
	out[26] = (uint8_t)n;
	off = 27;
	memcpy(out + off, r->key_ref, n);
	off += n;
	put_be16(out + off, r->wrapped_len);
	off += 2;
	memcpy(out + off, r->wrapped, r->wrapped_len);
	off += r->wrapped_len;
	if (!is_v2(r))
		return off;
	out[off++] = (uint8_t)ext_len(r);
	if (r->holes.n) {
		out[off++] = RECORD_TAG_HOLES;
		out[off++] = (uint8_t)(16 * r->holes.n);
		for (i = 0; i < r->holes.n; i++) {
			put_be64(out + off, r->holes.range[i].first);
			put_be64(out + off + 8, r->holes.range[i].end);
			off += 16;
		}
	}
	if (r->file_version) {
		out[off++] = RECORD_TAG_VERSION;
		out[off++] = 8;
		put_be64(out + off, r->file_version);
		off += 8;
	}
	if (r->bindings.n) {
		out[off++] = RECORD_TAG_BINDINGS;
		out[off++] = (uint8_t)(RECORD_BINDING_LEN * r->bindings.n);
		memcpy(out + off, r->bindings.id, RECORD_BINDING_LEN * (size_t)r->bindings.n);
		off += RECORD_BINDING_LEN * (size_t)r->bindings.n;
	}
	return off;
}

/**
 * record_encode - see record.h.
 */
int record_encode(const struct key_record *r, uint8_t *out, size_t cap, size_t *out_len)
{
	size_t n, len, off;

	if (!r || !out || !out_len)
		return -EINVAL;
	n = encodable(r);
	if (!n)
		return -EINVAL;
	len = record_encoded_len(r);
	if (cap < len)
		return -ENOSPC;
	off = encode_body(r, n, out);
	memcpy(out + off, r->mac, RECORD_MAC_LEN);
	*out_len = len;
	return 0;
}

/* decode_holes - a holes item of @item bytes at @p into @r.  0 or -EBADMSG. */
static int decode_holes(const uint8_t *p, size_t item, struct key_record *r)
{
	unsigned i;

	if (item == 0 || item % 16 || item / 16 > RECORD_MAX_HOLES)
		return -EBADMSG;
	r->holes.n = (uint8_t)(item / 16);
	for (i = 0; i < r->holes.n; i++) {
		r->holes.range[i].first = get_be64(p + 16 * i);
		r->holes.range[i].end = get_be64(p + 16 * i + 8);
	}
	return holes_ok(&r->holes) ? 0 : -EBADMSG;
}

/* decode_item - one item of tag @tag, @item bytes at @p, into @r.  0 or -EBADMSG. */
static int decode_item(int tag, const uint8_t *p, size_t item, struct key_record *r)
{
	switch (tag) {
	case RECORD_TAG_HOLES:
		return decode_holes(p, item, r);
	case RECORD_TAG_VERSION:
		/* Version 0 is "no item": it has no encoding of its own. */
		if (item != 8 || (r->file_version = get_be64(p)) == 0)
			return -EBADMSG;
		return 0;
	case RECORD_TAG_BINDINGS:
		if (item == 0 || item % RECORD_BINDING_LEN ||
		    item / RECORD_BINDING_LEN > RECORD_MAX_BINDINGS)
			return -EBADMSG;
		r->bindings.n = (uint8_t)(item / RECORD_BINDING_LEN);
		memcpy(r->bindings.id, p, item);
		return bindings_ok(&r->bindings) ? 0 : -EBADMSG;
	default:
		return -EBADMSG;
	}
}

/*
 * decode_ext - the version-2 extension: exactly @len bytes, its length byte
 * first, into @r's items.  0 or -EBADMSG.
 */
static int decode_ext(const uint8_t *p, size_t len, struct key_record *r)
{
	size_t e, off = 1;
	int last_tag = 0;

	if (len < 1 || (e = p[0]) > RECORD_V3_EXT_MAX || len != 1 + e)
		return -EBADMSG;
	while (off < len) {
		size_t item;
		int tag;

		if (len - off < 2)
			return -EBADMSG;
		tag = p[off];
		item = p[off + 1];
		off += 2;
		if (tag <= last_tag || len - off < item)
			return -EBADMSG;
		last_tag = tag;
		if (decode_item(tag, p + off, item, r) < 0)
			return -EBADMSG;
		off += item;
	}
	return 0;
}

/**
 * record_decode - see record.h.  @r is cleared first, so on failure it
 * holds no half-parsed fields.
 */
int record_decode(const uint8_t *buf, size_t len, struct key_record *r)
{
	size_t n, w, off;
	size_t i;

	if (!r)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	if (!buf)
		return -EBADMSG;
	/* Smallest record: one reference byte, one wrapped byte. */
	if (len < RECORD_FIXED_LEN + 2 || len > RECORD_MAX_LEN)
		return -EBADMSG;
	if (memcmp(buf, RECORD_MAGIC, 4) != 0 || (buf[4] != 1 && buf[4] != 2) ||
	    (buf[5] & ~RECORD_FLAGS_KNOWN) != 0)
		return -EBADMSG;

	n = buf[26];
	if (n == 0)
		return -EBADMSG;
	/* Reference plus the wrapped-length field must fit. */
	if (len - 27 < n + 2)
		return -EBADMSG;
	for (i = 0; i < n; i++)
		if (!ref_char_ok(buf[27 + i]))
			return -EBADMSG;
	off = 27 + n;
	w = get_be16(buf + off);
	off += 2;
	if (w == 0 || w > RECORD_MAX_WRAPPED)
		return -EBADMSG;
	/* Exactly the wrapped DEK, a version 2 extension and the MAC may
	 * remain: no trailing bytes. */
	if (len - off < w + RECORD_MAC_LEN)
		return -EBADMSG;
	if (buf[4] == 2 && decode_ext(buf + off + w, len - off - w - RECORD_MAC_LEN, r) < 0)
		return -EBADMSG;
	if (buf[4] == 1 && len - off != w + RECORD_MAC_LEN)
		return -EBADMSG;

	r->version = buf[4];
	r->flags = buf[5];
	memcpy(r->file_id, buf + 6, RECORD_FILE_ID_LEN);
	r->key_version = get_be32(buf + 22);
	memcpy(r->key_ref, buf + 27, n);
	r->key_ref[n] = '\0';
	r->wrapped_len = (uint16_t)w;
	memcpy(r->wrapped, buf + off, w);
	memcpy(r->mac, buf + len - RECORD_MAC_LEN, RECORD_MAC_LEN);
	return 0;
}

/*
 * compute_mac - HMAC-SHA256 over the encoded record minus its MAC, under a
 * key derived from the DEK.  The derived key never leaves this function.
 */
static int compute_mac(const struct key_record *r, const uint8_t dek[32],
		       const uint8_t volume_uuid[16], uint8_t mac[RECORD_MAC_LEN])
{
	uint8_t body[RECORD_MAX_LEN];
	uint8_t k_mac[MAC_KEY_LEN];
	size_t n, len;
	int err;

	if (!r || !dek || !volume_uuid)
		return -EINVAL;
	n = encodable(r);
	if (!n)
		return -EINVAL;
	len = encode_body(r, n, body);

	err = crypto_hkdf_sha256(dek, 32, volume_uuid, 16, MAC_INFO, strlen(MAC_INFO), k_mac,
				 sizeof(k_mac));
	if (err)
		goto out;
	err = crypto_hmac_sha256(k_mac, sizeof(k_mac), body, len, mac);
out:
	OPENSSL_cleanse(k_mac, sizeof(k_mac));
	return err;
}

/**
 * record_seal_mac - see record.h.  Also -EINVAL for a record that cannot be
 * encoded.
 */
int record_seal_mac(struct key_record *r, const uint8_t dek[32], const uint8_t volume_uuid[16])
{
	uint8_t mac[RECORD_MAC_LEN];
	int err;

	err = compute_mac(r, dek, volume_uuid, mac);
	if (err)
		return err;
	memcpy(r->mac, mac, RECORD_MAC_LEN);
	return 0;
}

/**
 * record_check_mac - see record.h.  A record that cannot be encoded cannot
 * carry a valid MAC either: -EBADMSG.
 */
int record_check_mac(const struct key_record *r, const uint8_t dek[32],
		     const uint8_t volume_uuid[16])
{
	uint8_t mac[RECORD_MAC_LEN];
	int err;

	if (!r || !dek || !volume_uuid)
		return -EINVAL;
	err = compute_mac(r, dek, volume_uuid, mac);
	if (err == -EINVAL)
		return -EBADMSG;
	if (err)
		return err;
	return CRYPTO_memcmp(mac, r->mac, RECORD_MAC_LEN) == 0 ? 0 : -EBADMSG;
}

/**
 * slot_size_for - see record.h.  Returns 0 for arguments no record can
 * have (a reference longer than 255 bytes or wrapped DEKs over the limit).
 */
size_t slot_size_for(size_t key_ref_len, size_t max_wrapped)
{
	size_t need;

	if (key_ref_len > RECORD_MAX_KEY_REF || max_wrapped > RECORD_MAX_WRAPPED)
		return 0;
	need = SLOT_OVERHEAD + RECORD_FIXED_LEN + key_ref_len + max_wrapped;
	return (need + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
}

size_t slot_size_for_version(unsigned version, size_t key_ref_len, size_t max_wrapped)
{
	size_t need;

	if (key_ref_len > RECORD_MAX_KEY_REF || max_wrapped > RECORD_MAX_WRAPPED)
		return 0;
	need = SLOT_OVERHEAD + RECORD_FIXED_LEN + key_ref_len + max_wrapped +
	       (version == 2 ? RECORD_V2_EXTRA : version >= 3 ? RECORD_V3_EXTRA : 0);
	return (need + SLOT_ALIGN - 1) / SLOT_ALIGN * SLOT_ALIGN;
}

bool record_holes_cover(const struct record_holes *h, uint64_t first, uint64_t end)
{
	unsigned i;

	for (i = 0; i < h->n; i++)
		if (h->range[i].first <= first && end <= h->range[i].end)
			return true;
	return false;
}

void record_holes_add(struct record_holes *h, uint64_t first, uint64_t end)
{
	struct {
		uint64_t first, end;
	} all[RECORD_MAX_HOLES + 1];
	unsigned n = 0, i, j, closest;

	/* Insert in order, merging every range the new one overlaps or touches. */
	for (i = 0; i < h->n; i++) {
		if (h->range[i].end < first || h->range[i].first > end) {
			all[n].first = h->range[i].first;
			all[n++].end = h->range[i].end;
			continue;
		}
		if (h->range[i].first < first)
			first = h->range[i].first;
		if (h->range[i].end > end)
			end = h->range[i].end;
	}
	for (i = n; i > 0 && all[i - 1].first > first; i--)
		all[i] = all[i - 1];
	all[i].first = first;
	all[i].end = end;
	n++;
	if (n > RECORD_MAX_HOLES) {
		/* One too many: merge the pair with the smallest gap. */
		for (closest = 0, i = 1; i + 1 < n; i++)
			if (all[i + 1].first - all[i].end < all[closest + 1].first - all[closest].end)
				closest = i;
		all[closest].end = all[closest + 1].end;
		for (j = closest + 1; j + 1 < n; j++)
			all[j] = all[j + 1];
		n--;
	}
	h->n = (uint8_t)n;
	for (i = 0; i < n; i++) {
		h->range[i].first = all[i].first;
		h->range[i].end = all[i].end;
	}
}

#define BINDING_INFO "envelopefs v3 entry binding"

int record_binding_of(const uint8_t dirid[RECORD_BINDING_LEN], const char *name,
		      uint8_t out[RECORD_BINDING_LEN])
{
	uint8_t buf[sizeof(BINDING_INFO) - 1 + RECORD_BINDING_LEN + 255];
	uint8_t digest[SHA256_LEN];
	size_t info = sizeof(BINDING_INFO) - 1, n = strnlen(name, 256);
	int err;

	if (n == 0 || n > 255)
		return -EINVAL;
	memcpy(buf, BINDING_INFO, info);
	memcpy(buf + info, dirid, RECORD_BINDING_LEN);
	memcpy(buf + info + RECORD_BINDING_LEN, name, n);
	err = crypto_sha256(buf, info + RECORD_BINDING_LEN + n, digest);
	if (err == 0)
		memcpy(out, digest, RECORD_BINDING_LEN);
	return err;
}

bool record_bindings_has(const struct record_bindings *b, const uint8_t id[RECORD_BINDING_LEN])
{
	unsigned i;

	for (i = 0; i < b->n; i++)
		if (memcmp(b->id[i], id, RECORD_BINDING_LEN) == 0)
			return true;
	return false;
}

int record_bindings_add(struct record_bindings *b, const uint8_t id[RECORD_BINDING_LEN])
{
	unsigned i;

	if (record_bindings_has(b, id))
		return 0;
	if (b->n >= RECORD_MAX_BINDINGS)
		return -ENOSPC;
	for (i = b->n; i > 0 && memcmp(b->id[i - 1], id, RECORD_BINDING_LEN) > 0; i--)
		memcpy(b->id[i], b->id[i - 1], RECORD_BINDING_LEN);
	memcpy(b->id[i], id, RECORD_BINDING_LEN);
	b->n++;
	return 0;
}

static int slot_checksum(const uint8_t *slot, size_t slot_size, uint8_t out[SLOT_CHECKSUM_LEN])
{
	uint8_t digest[SHA256_LEN];
	int err;

	err = crypto_sha256(slot, slot_size - SLOT_CHECKSUM_LEN, digest);
	if (err)
		return err;
	memcpy(out, digest, SLOT_CHECKSUM_LEN);
	return 0;
}

/**
 * slot_encode - see record.h.  @seq 0 is reserved for "no record yet" and
 * refused with -EINVAL.
 */
int slot_encode(const struct key_record *r, uint64_t seq, uint8_t *slot, size_t slot_size)
{
	size_t len;
	int err;

	if (!r || !slot || seq == 0 || slot_size < SLOT_OVERHEAD)
		return -EINVAL;
	memset(slot, 0, slot_size);
	memcpy(slot, SLOT_MAGIC, 4);
	put_be64(slot + 4, seq);
	err = record_encode(r, slot + SLOT_HDR_LEN, slot_size - SLOT_OVERHEAD, &len);
	if (err)
		goto fail;
	put_be16(slot + 12, (uint16_t)len);
	err = slot_checksum(slot, slot_size, slot + slot_size - SLOT_CHECKSUM_LEN);
	if (err)
		goto fail;
	return 0;

fail:
	memset(slot, 0, slot_size);
	return err;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	uint8_t acc = 0;
	size_t i;

	for (i = 0; i < len; i++)
		acc |= p[i];
	return acc == 0;
}

/**
 * slot_decode - see record.h.  The checksum is checked before anything is
 * parsed: it is what tells a torn write from a complete slot.  A slot too
 * small to hold any record is -EBADMSG.
 */
int slot_decode(const uint8_t *slot, size_t slot_size, struct key_record *r, uint64_t *seq)
{
	uint8_t sum[SLOT_CHECKSUM_LEN];
	size_t len;
	uint64_t s;
	int err;

	if (!slot || !r || !seq)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	*seq = 0;
	if (slot_size < SLOT_OVERHEAD + RECORD_FIXED_LEN + 2)
		return -EBADMSG;
	if (all_zero(slot, slot_size))
		return -ENODATA;
	err = slot_checksum(slot, slot_size, sum);
	if (err)
		return err;
	if (memcmp(sum, slot + slot_size - SLOT_CHECKSUM_LEN, SLOT_CHECKSUM_LEN) != 0)
		return -EBADMSG;
	if (memcmp(slot, SLOT_MAGIC, 4) != 0)
		return -EBADMSG;
	s = get_be64(slot + 4);
	if (s == 0)
		return -EBADMSG;
	len = get_be16(slot + 12);
	if (len > slot_size - SLOT_OVERHEAD)
		return -EBADMSG;
	if (!all_zero(slot + SLOT_HDR_LEN + len, slot_size - SLOT_OVERHEAD - len))
		return -EBADMSG;
	err = record_decode(slot + SLOT_HDR_LEN, len, r);
	if (err)
		return err;
	*seq = s;
	return 0;
}

/**
 * header_pick - see record.h.  Two valid slots with the same sequence
 * number cannot come from the replacement protocol; rather than guess which
 * one is current, that header is -EBADMSG.
 */
int header_pick(const uint8_t *header, size_t slot_size, struct key_record *r, uint64_t *seq,
		int *slot_index)
{
	struct key_record other;
	uint64_t seq0, seq1;
	int e0, e1;

	if (!header || !r || !seq || !slot_index)
		return -EINVAL;
	*slot_index = -1;
	*seq = 0;
	e0 = slot_decode(header, slot_size, r, &seq0);
	e1 = slot_decode(header + slot_size, slot_size, &other, &seq1);
	if (e0 == -EINVAL || e1 == -EINVAL || e0 == -EIO || e1 == -EIO) {
		memset(r, 0, sizeof(*r));
		return e0 ? e0 : e1;
	}

	if (e0 == 0 && (e1 != 0 || seq0 > seq1)) {
		*seq = seq0;
		*slot_index = 0;
		return 0;
	}
	if (e1 == 0 && (e0 != 0 || seq1 > seq0)) {
		memcpy(r, &other, sizeof(*r));
		*seq = seq1;
		*slot_index = 1;
		return 0;
	}
	memset(r, 0, sizeof(*r));
	if (e0 == -ENODATA && e1 == -ENODATA)
		return -ENODATA;
	return -EBADMSG;
}
