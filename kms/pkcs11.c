// SPDX-License-Identifier: MIT
/*
 * The `pkcs11` provider: master keys are AES-256 secret-key objects on a
 * PKCS#11 token (an HSM, or SoftHSM2 in the tests) and never leave it.  A DEK
 * is wrapped by C_Encrypt with CKM_AES_GCM under the token's key, with the
 * volume UUID and the file ID in the AAD; it is unwrapped by C_Decrypt.
 *
 * Settings, section [kms]:
 *   provider    = pkcs11
 *   module      = /absolute/path/of/the/pkcs11-module.so
 *   token_label = the token's label (CKA_LABEL of the token, as C_GetTokenInfo shows it)
 *   key_label   = the master key's base label L: version N is the AES-256 secret
 *                 key labelled "L.N" (N decimal, 1 .. 4294967295, no leading zero)
 *   pin_file    = /path  (optional; else $ENVELOPEFS_PKCS11_PIN)
 *   sessions    = 1 .. 64 (optional, default 4)
 *
 * Why GCM and not CKM_AES_KEY_WRAP_PAD: RFC 5649 key wrap has no associated
 * data, so a wrapped DEK could not be bound to its volume and file (kms.h
 * demands it).  GCM gives that binding through its AAD, and C_Encrypt on a
 * key that is sensitive and never extractable keeps the master key inside
 * the token.  The DEK passes through the PKCS#11 call as data, which it also
 * would with C_WrapKey (the DEK has to become a token object first).
 *
 * Blob (docs/FORMAT.md, "PKCS#11 key wrapping"), P11_BLOB_LEN bytes:
 *   version (4, big-endian) || IV (12, random) || GCM ciphertext (32) || tag (16)
 * with AAD = P11_WRAP_LABEL || version (4) || volume UUID (16) || file ID (16).
 *
 * Sessions, login and recovery from lost sessions: kms/p11_token.h.  Every
 * operation here borrows a session of its own, so ops run in parallel.
 *
 * Versions: the table of "L.N" keys is searched at open, at most once a
 * second before a wrap, whenever a blob names a version not in the table or a
 * handle has gone stale, and on every current_version() (asked by rotation
 * and status, never per block), so a key added with pkcs11-tool becomes
 * current without a remount.
 */

#include <errno.h>
#include <p11-kit/pkcs11.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/bigendian.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/keyring.h"
#include "kms/p11_token.h"
#include "kms/fanout.h"

#define P11_WRAP_LABEL "envelopefs pkcs11 wrap v1"
#define P11_WRAP_LABEL_LEN (sizeof(P11_WRAP_LABEL) - 1)
#define P11_AAD_LEN (P11_WRAP_LABEL_LEN + 4 + 16 + 16)
#define P11_IV_LEN 12
#define P11_TAG_LEN 16
#define P11_BLOB_IV 4
#define P11_BLOB_CIPHER (P11_BLOB_IV + P11_IV_LEN)
#define P11_BLOB_LEN (P11_BLOB_CIPHER + KMS_DEK_LEN + P11_TAG_LEN)
#define P11_REF_PREFIX "pkcs11:"
#define P11_DEFAULT_SESSIONS 4
/* "L.N" must fit a label buffer: L up to 100 bytes, "." and 10 digits. */
#define P11_MAX_KEY_LABEL 100
#define P11_LABEL_BUF (P11_MAX_KEY_LABEL + 12)

struct p11_key {
	uint32_t version;
	CK_OBJECT_HANDLE handle;
};

struct p11_kms {
	struct p11_token *tok;
	unsigned sessions; /* the pool's size: how many unwraps can run at once */
	CK_FUNCTION_LIST_PTR f; /* the token's module */
	char key_label[P11_MAX_KEY_LABEL + 1];

	/* The master-key versions on the token, ascending; never empty after open. */
	pthread_rwlock_t keys_lock;
	struct p11_key *keys;
	size_t n_keys;
	int64_t last_search; /* CLOCK_MONOTONIC_COARSE second the last search started */
};

static const char *const known_settings[] = { "kms:provider",  "kms:module",
					      "kms:token_label", "kms:key_label",
					      "kms:pin_file", "kms:sessions" };

/* ---- master-key versions ------------------------------------------------- */

/* label_version - N if @label is "<key_label>.N" with N a canonical decimal in 1 .. 2^32-1, else 0. */
static uint32_t label_version(const struct p11_kms *pk, const char *label)
{
	size_t base = strlen(pk->key_label), i;
	const char *digits;
	uint64_t v = 0;

	if (strncmp(label, pk->key_label, base) != 0 || label[base] != '.')
		return 0;
	digits = label + base + 1;
	if (digits[0] == '0')
		return 0;
	for (i = 0; digits[i]; i++) {
		if (digits[i] < '0' || digits[i] > '9' || i == 10)
			return 0;
		v = v * 10 + (uint64_t)(digits[i] - '0');
	}
	return i && v <= UINT32_MAX ? (uint32_t)v : 0;
}

static int key_cmp(const void *a, const void *b)
{
	const struct p11_key *x = a, *y = b;

	return x->version < y->version ? -1 : x->version > y->version;
}

/*
 * search_keys_on - list the AES keys labelled "<key_label>.N" through session
 * @h, sorted by version, into a new array.  Returns the CK_RV; a label found
 * twice, or a key that is not 256 bits, is CKR_KEY_SIZE_RANGE / CKR_GENERAL_ERROR
 * with @why set, for the caller's message.
 */
static CK_RV search_keys_on(struct p11_kms *pk, CK_SESSION_HANDLE h, struct p11_key **out,
			    size_t *n_out, char *why, size_t why_len)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE type = CKK_AES;
	CK_ATTRIBUTE filter[] = { { CKA_CLASS, &cls, sizeof(cls) },
				  { CKA_KEY_TYPE, &type, sizeof(type) } };
	struct p11_key *keys = NULL, *grown;
	size_t n = 0, cap = 0, i;
	CK_OBJECT_HANDLE found[32];
	CK_ULONG got, k;
	CK_RV rv, fin;

	rv = pk->f->C_FindObjectsInit(h, filter, 2);
	if (rv != CKR_OK)
		return rv;
	do {
		rv = pk->f->C_FindObjects(h, found, 32, &got);
		for (k = 0; rv == CKR_OK && k < got; k++) {
			char label[P11_LABEL_BUF];
			CK_ULONG value_len = 0;
			CK_ATTRIBUTE attrs[] = { { CKA_LABEL, label, sizeof(label) - 1 },
						 { CKA_VALUE_LEN, &value_len, sizeof(value_len) } };
			uint32_t v;
			CK_RV arv = pk->f->C_GetAttributeValue(h, found[k], attrs, 2);

			/* A label too long for the buffer is longer than any of ours.  Some
			 * modules answer that with the needed length rather than
			 * CK_UNAVAILABLE_INFORMATION: never index with it unchecked. */
			if ((arv != CKR_OK && arv != CKR_BUFFER_TOO_SMALL) ||
			    attrs[0].ulValueLen >= sizeof(label))
				continue;
			label[attrs[0].ulValueLen] = '\0';
			v = label_version(pk, label);
			if (!v)
				continue;
			if (attrs[1].ulValueLen == CK_UNAVAILABLE_INFORMATION || value_len != 32) {
				snprintf(why, why_len,
					 "key '%s' is not an AES-256 key: envelopefs wants "
					 "256-bit master keys (pkcs11-tool --keygen --key-type AES:32)",
					 label);
				rv = CKR_KEY_SIZE_RANGE;
				break;
			}
			if (n == cap) {
				cap = cap ? 2 * cap : 8;
				grown = realloc(keys, cap * sizeof(*keys));
				if (!grown) {
					rv = CKR_HOST_MEMORY;
					break;
				}
				keys = grown;
			}
			keys[n++] = (struct p11_key){ .version = v, .handle = found[k] };
		}
	} while (rv == CKR_OK && got == 32);
	fin = pk->f->C_FindObjectsFinal(h);
	if (rv == CKR_OK)
		rv = fin;
	if (rv == CKR_OK && n > 1) {
		qsort(keys, n, sizeof(*keys), key_cmp);
		for (i = 1; i < n; i++)
			if (keys[i].version == keys[i - 1].version) {
				snprintf(why, why_len,
					 "two keys are labelled '%s.%u': a version must name one key",
					 pk->key_label, keys[i].version);
				rv = CKR_GENERAL_ERROR;
				break;
			}
	}
	if (rv != CKR_OK) {
		free(keys);
		return rv;
	}
	*out = keys;
	*n_out = n;
	return CKR_OK;
}

/*
 * search_keys - replace the version table with what the token holds now.
 * A failed search keeps the old table (it still unwraps what it did); an
 * empty result is -ENOENT and also keeps it, so a key deleted by mistake
 * does not stop the files already open.  0 or -errno, message in @err.
 */
static int search_keys(struct p11_kms *pk, char *err, size_t err_len)
{
	struct p11_key *keys = NULL, *old;
	char why[256] = "", name[24];
	CK_SESSION_HANDLE h;
	struct timespec ts;
	size_t n = 0;
	CK_RV rv;
	int attempt;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	__atomic_store_n(&pk->last_search, (int64_t)ts.tv_sec, __ATOMIC_RELAXED);

	for (attempt = 0; attempt < 2; attempt++) {
		rv = p11_session_get(pk->tok, &h);
		if (rv != CKR_OK)
			break;
		rv = search_keys_on(pk, h, &keys, &n, why, sizeof(why));
		p11_session_put(pk->tok, h, rv);
		if (!p11_session_lost(rv))
			break;
	}
	if (rv != CKR_OK) {
		if (why[0])
			return kms_errf(err, err_len, -EINVAL, "token '%s': %s", p11_token_label(pk->tok),
					why);
		return kms_errf(err, err_len, p11_errno(rv),
				"token '%s': cannot list its keys: %s", p11_token_label(pk->tok),
				p11_rv_name(rv, name));
	}
	if (!n) {
		free(keys);
		return kms_errf(err, err_len, -ENOENT,
				"token '%s' holds no AES key labelled '%s.N' (N = 1, 2, ...): "
				"create one, e.g. pkcs11-tool --module MODULE --token-label '%s' "
				"--login --keygen --key-type AES:32 --label '%s.1'",
				p11_token_label(pk->tok), pk->key_label, p11_token_label(pk->tok), pk->key_label);
	}
	pthread_rwlock_wrlock(&pk->keys_lock);
	old = pk->keys;
	pk->keys = keys;
	pk->n_keys = n;
	pthread_rwlock_unlock(&pk->keys_lock);
	free(old);
	return 0;
}

/*
 * maybe_search - search_keys() unless one started during this second.  The
 * exchange lets one thread of many arriving at once do it.
 */
static void maybe_search(struct p11_kms *pk)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	if (__atomic_exchange_n(&pk->last_search, (int64_t)ts.tv_sec, __ATOMIC_RELAXED) !=
	    ts.tv_sec)
		search_keys(pk, NULL, 0);
}

/* current_key - the newest version on the token (the table is never empty). */
static uint32_t current_key(struct p11_kms *pk)
{
	uint32_t v;

	pthread_rwlock_rdlock(&pk->keys_lock);
	v = pk->keys[pk->n_keys - 1].version;
	pthread_rwlock_unlock(&pk->keys_lock);
	return v;
}

/* key_handle - the handle of @version's key, or false if the table has no such version. */
static bool key_handle(struct p11_kms *pk, uint32_t version, CK_OBJECT_HANDLE *handle)
{
	size_t lo = 0, hi;
	bool found = false;

	pthread_rwlock_rdlock(&pk->keys_lock);
	hi = pk->n_keys;
	while (!found && lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (pk->keys[mid].version == version) {
			*handle = pk->keys[mid].handle;
			found = true;
		} else if (pk->keys[mid].version < version) {
			lo = mid + 1;
		} else {
			hi = mid;
		}
	}
	pthread_rwlock_unlock(&pk->keys_lock);
	return found;
}

/* ---- wrapping ------------------------------------------------------------ */

static void make_aad(uint8_t aad[P11_AAD_LEN], uint32_t version, const struct kms_context *ctx)
{
	memcpy(aad, P11_WRAP_LABEL, P11_WRAP_LABEL_LEN);
	put_be32(aad + P11_WRAP_LABEL_LEN, version);
	memcpy(aad + P11_WRAP_LABEL_LEN + 4, ctx->volume_uuid, 16);
	memcpy(aad + P11_WRAP_LABEL_LEN + 20, ctx->file_id, 16);
}

/* One GCM operation: encrypt @in into @out, or decrypt. */
struct gcm_op {
	bool decrypt;
	CK_OBJECT_HANDLE key;
	const uint8_t *iv;
	uint8_t aad[P11_AAD_LEN];
	const uint8_t *in;
	CK_ULONG in_len;
	uint8_t *out;
	CK_ULONG out_cap, out_len;
};

/*
 * handle_is - whether @handle still names the key labelled "<key_label>.@version".
 * A token may give a deleted object's handle to a new one; a wrap under the
 * wrong key would lose the file, so a wrap checks first (an unwrap under the
 * wrong key just fails its tag).
 */
static CK_RV handle_is(struct p11_kms *pk, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE handle,
		       uint32_t version)
{
	char label[P11_LABEL_BUF], want[P11_LABEL_BUF];
	CK_ATTRIBUTE attr = { CKA_LABEL, label, sizeof(label) - 1 };
	CK_RV rv = pk->f->C_GetAttributeValue(h, handle, &attr, 1);

	if (rv == CKR_BUFFER_TOO_SMALL)
		return CKR_KEY_HANDLE_INVALID;
	if (rv != CKR_OK)
		return rv;
	label[attr.ulValueLen] = '\0';
	snprintf(want, sizeof(want), "%s.%u", pk->key_label, version);
	return strcmp(label, want) == 0 ? CKR_OK : CKR_KEY_HANDLE_INVALID;
}

static CK_RV gcm_on(struct p11_kms *pk, CK_SESSION_HANDLE h, uint32_t version, struct gcm_op *op)
{
	CK_GCM_PARAMS params = {
		.pIv = (CK_BYTE_PTR)op->iv,
		.ulIvLen = P11_IV_LEN,
		.ulIvBits = P11_IV_LEN * 8,
		.pAAD = op->aad,
		.ulAADLen = P11_AAD_LEN,
		.ulTagBits = P11_TAG_LEN * 8,
	};
	CK_MECHANISM mech = { CKM_AES_GCM, &params, sizeof(params) };
	CK_RV rv;

	op->out_len = op->out_cap;
	if (op->decrypt) {
		rv = pk->f->C_DecryptInit(h, &mech, op->key);
		if (rv == CKR_OK)
			rv = pk->f->C_Decrypt(h, (CK_BYTE_PTR)op->in, op->in_len, op->out,
					      &op->out_len);
	} else {
		rv = handle_is(pk, h, op->key, version);
		if (rv == CKR_OK)
			rv = pk->f->C_EncryptInit(h, &mech, op->key);
		if (rv == CKR_OK)
			rv = pk->f->C_Encrypt(h, (CK_BYTE_PTR)op->in, op->in_len, op->out,
					      &op->out_len);
	}
	return rv;
}

/*
 * run_gcm - @op on a pooled session under key @version, retried once on a
 * fresh session when the session was lost and once after a new key search
 * when the key's handle went stale.  Returns 0 or a kms.h errno.
 */
static int run_gcm(struct p11_kms *pk, uint32_t version, struct gcm_op *op)
{
	bool searched = false, reopened = false;
	CK_SESSION_HANDLE h;
	CK_RV rv;

	for (;;) {
		if (!key_handle(pk, version, &op->key))
			return -ENOENT;
		rv = p11_session_get(pk->tok, &h);
		if (rv != CKR_OK)
			return p11_errno(rv);
		rv = gcm_on(pk, h, version, op);
		p11_session_put(pk->tok, h, rv);
		if (p11_session_lost(rv) && !reopened) {
			reopened = true;
			continue;
		}
		if ((rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID) &&
		    !searched) {
			searched = true;
			search_keys(pk, NULL, 0);
			continue;
		}
		break;
	}
	/* SoftHSM2 answers a failed GCM tag with CKR_GENERAL_ERROR. */
	if (op->decrypt && rv == CKR_GENERAL_ERROR)
		return -EBADMSG;
	return p11_errno(rv);
}

/* wrap_current - wrap @dek under the current version into @blob. */
static int wrap_current(struct p11_kms *pk, const struct kms_context *ctx, const uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct gcm_op op = { .decrypt = false };
	uint32_t v = current_key(pk);
	uint8_t *iv = blob + P11_BLOB_IV;
	int rc;

	if (blob_cap < P11_BLOB_LEN)
		return -EINVAL;
	if (crypto_random(iv, P11_IV_LEN) < 0)
		return -EIO;
	op.iv = iv;
	op.in = dek;
	op.in_len = KMS_DEK_LEN;
	op.out = blob + P11_BLOB_CIPHER;
	op.out_cap = KMS_DEK_LEN + P11_TAG_LEN;
	make_aad(op.aad, v, ctx);
	rc = run_gcm(pk, v, &op);
	if (rc == 0 && op.out_len != KMS_DEK_LEN + P11_TAG_LEN)
		rc = -EIO;
	if (rc < 0) {
		secmem_wipe(blob, P11_BLOB_LEN);
		return rc;
	}
	put_be32(blob, v);
	*blob_len = P11_BLOB_LEN;
	*version = v;
	return 0;
}

static int unwrap_blob(struct p11_kms *pk, const struct kms_context *ctx, const uint8_t *blob,
		       size_t blob_len, uint8_t *dek)
{
	struct gcm_op op = { .decrypt = true };
	CK_OBJECT_HANDLE handle;
	uint32_t version;
	uint8_t *plain;
	int rc;

	if (blob_len != P11_BLOB_LEN)
		return -EBADMSG;
	version = get_be32(blob);
	if (!version)
		return -EBADMSG;
	/* A version we do not know may have been added since the last search. */
	if (!key_handle(pk, version, &handle))
		search_keys(pk, NULL, 0);
	/* Some modules want room for the whole input even though the tag is not output. */
	plain = secmem_alloc(KMS_DEK_LEN + P11_TAG_LEN);
	if (!plain)
		return -ENOMEM;
	op.iv = blob + P11_BLOB_IV;
	op.in = blob + P11_BLOB_CIPHER;
	op.in_len = KMS_DEK_LEN + P11_TAG_LEN;
	op.out = plain;
	op.out_cap = KMS_DEK_LEN + P11_TAG_LEN;
	make_aad(op.aad, version, ctx);
	rc = run_gcm(pk, version, &op);
	if (rc == 0 && op.out_len != KMS_DEK_LEN)
		rc = -EBADMSG;
	if (rc == 0)
		memcpy(dek, plain, KMS_DEK_LEN);
	secmem_free(plain, KMS_DEK_LEN + P11_TAG_LEN);
	return rc;
}

/* ---- kms_ops ------------------------------------------------------------- */

static int p11_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct p11_kms *pk = kms->priv;
	int rc;

	maybe_search(pk);
	if (crypto_random(dek, KMS_DEK_LEN) < 0)
		return -EIO;
	rc = wrap_current(pk, ctx, dek, blob, blob_cap, blob_len, version);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

/* p11_wrap - the caller's DEK under the current version, as generate wraps its own. */
static int p11_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		    uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct p11_kms *pk = kms->priv;

	maybe_search(pk);
	return wrap_current(pk, ctx, dek, blob, blob_cap, blob_len, version);
}

static int p11_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *dek)
{
	return unwrap_blob(kms->priv, ctx, blob, blob_len, dek);
}

/* One unwrap per pooled session at once: the token works on them in parallel. */
static void p11_unwrap_many(struct kms *kms, struct kms_unwrap_item *items, size_t n)
{
	struct p11_kms *pk = kms->priv;

	fanout_unwrap(kms, items, n, pk->sessions);
}

static int p11_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
		      size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
		      uint32_t *version)
{
	struct p11_kms *pk = kms->priv;
	uint8_t *dek;
	int rc;

	maybe_search(pk);
	dek = secmem_alloc(KMS_DEK_LEN);
	if (!dek)
		return -ENOMEM;
	rc = unwrap_blob(pk, ctx, blob, blob_len, dek);
	if (rc == 0)
		rc = wrap_current(pk, ctx, dek, out, out_cap, out_len, version);
	secmem_free(dek, KMS_DEK_LEN);
	return rc;
}

static int p11_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			    uint32_t *version)
{
	(void)kms;
	if (blob_len != P11_BLOB_LEN || !get_be32(blob))
		return -EBADMSG;
	*version = get_be32(blob);
	return 0;
}

static int p11_current_version(struct kms *kms, uint32_t *version)
{
	struct p11_kms *pk = kms->priv;
	int rc;

	/* Rotation and status ask: look at the token, so a new key counts at once. */
	rc = search_keys(pk, NULL, 0);
	if (rc < 0 && rc != -ENOENT)
		return rc;
	*version = current_key(pk);
	return 0;
}

/*
 * destroy_on - destroy every "<key_label>.N" key object through the
 * read-write session @rw.  The CK_RV of the first failure, else CKR_OK.
 */
static CK_RV destroy_on(struct p11_kms *pk, CK_SESSION_HANDLE rw, char *why, size_t why_len)
{
	struct p11_key *keys = NULL;
	size_t n = 0;
	CK_RV rv = search_keys_on(pk, rw, &keys, &n, why, why_len);

	for (size_t i = 0; rv == CKR_OK && i < n; i++)
		rv = pk->f->C_DestroyObject(rw, keys[i].handle);
	free(keys);
	return rv;
}

/*
 * p11_destroy - destroy the key object of every version on the token.  The
 * pool's sessions are read-only: a read-write one is opened for it, logged
 * in by the pool session held meanwhile (a token shares its login among an
 * application's sessions).
 */
static int p11_destroy(struct kms *kms, char *err, size_t err_len)
{
	struct p11_kms *pk = kms->priv;
	CK_SESSION_HANDLE held, rw;
	char why[256] = "", name[24];
	CK_RV rv = p11_session_get(pk->tok, &held);

	if (rv == CKR_OK) {
		rv = pk->f->C_OpenSession(p11_token_slot(pk->tok), CKF_SERIAL_SESSION | CKF_RW_SESSION,
					  NULL, NULL, &rw);
		if (rv == CKR_OK) {
			rv = destroy_on(pk, rw, why, sizeof(why));
			pk->f->C_CloseSession(rw);
		}
		p11_session_put(pk->tok, held, CKR_OK);
	}
	if (rv != CKR_OK)
		return kms_errf(err, err_len, p11_errno(rv), "token '%s': cannot destroy the keys "
				"'%s.N': %s", p11_token_label(pk->tok), pk->key_label,
				why[0] ? why : p11_rv_name(rv, name));
	return 0;
}

static void p11_free(struct p11_kms *pk)
{
	p11_token_close(pk->tok);
	free(pk->keys);
	pthread_rwlock_destroy(&pk->keys_lock);
	free(pk);
}

static void p11_close(struct kms *kms)
{
	if (kms->priv)
		p11_free(kms->priv);
	kms->priv = NULL;
}

/* ---- open ---------------------------------------------------------------- */

/* parse_settings - key_label into @pk, and the pool size (default P11_DEFAULT_SESSIONS). */
static int parse_settings(struct p11_kms *pk, const dictionary *ini, unsigned *sessions,
			  char *err, size_t err_len)
{
	const char *key = iniparser_getstring(ini, "kms:key_label", NULL);
	const char *count = iniparser_getstring(ini, "kms:sessions", NULL);
	char *end;
	long n;

	if (!key || !*key || strlen(key) > P11_MAX_KEY_LABEL)
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:key_label must be the master key's base label (1 to "
				"%d bytes; version N is the key labelled '<key_label>.N')",
				P11_MAX_KEY_LABEL);
	snprintf(pk->key_label, sizeof(pk->key_label), "%s", key);
	*sessions = P11_DEFAULT_SESSIONS;
	if (count) {
		errno = 0;
		n = strtol(count, &end, 10);
		if (errno || end == count || *end || n < 1 || n > P11_MAX_SESSIONS)
			return kms_errf(err, err_len, -EINVAL,
					"setting kms:sessions must be a number from 1 to %d",
					P11_MAX_SESSIONS);
		*sessions = (unsigned)n;
	}
	return 0;
}

/* uri_encode - @s percent-encoded for a PKCS#11 URI (RFC 7512) path value, at @out. */
static size_t uri_encode(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t used = 0;

	for (; *s && used + 3 < cap; s++) {
		unsigned char c = (unsigned char)*s;

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '.' || c == '_' || c == '~') {
			out[used++] = (char)c;
		} else {
			out[used++] = '%';
			out[used++] = hex[c >> 4];
			out[used++] = hex[c & 15];
		}
	}
	out[used] = '\0';
	return *s ? cap : used;
}

/*
 * set_key_ref - "pkcs11:token=T;object=L", the PKCS#11 URI of the master key
 * (RFC 7512, without the version), which every key record of the volume names.
 */
static int set_key_ref(struct kms *kms, const struct p11_kms *pk, char *err, size_t err_len)
{
	char token[3 * P11_MAX_TOKEN_LABEL + 1], object[3 * P11_MAX_KEY_LABEL + 1];
	int n;

	uri_encode(p11_token_label(pk->tok), token, sizeof(token));
	uri_encode(pk->key_label, object, sizeof(object));
	n = snprintf(kms->key_ref, sizeof(kms->key_ref), "%stoken=%s;object=%s", P11_REF_PREFIX,
		     token, object);
	if (n < 0 || (size_t)n >= sizeof(kms->key_ref))
		return kms_errf(err, err_len, -EINVAL,
				"the key reference %stoken=%s;object=%s is longer than %d bytes: "
				"choose a shorter kms:key_label",
				P11_REF_PREFIX, token, object, KMS_MAX_REF);
	return 0;
}

/* check_mechanism - the token must do AES-GCM encryption and decryption. */
static int check_mechanism(struct p11_kms *pk, char *err, size_t err_len)
{
	CK_MECHANISM_INFO info;
	char name[24];
	CK_RV rv;

	rv = pk->f->C_GetMechanismInfo(p11_token_slot(pk->tok), CKM_AES_GCM, &info);
	if (rv == CKR_OK && (info.flags & (CKF_ENCRYPT | CKF_DECRYPT)) ==
				    (CKF_ENCRYPT | CKF_DECRYPT))
		return 0;
	return kms_errf(err, err_len, rv == CKR_OK || rv == CKR_MECHANISM_INVALID ? -EINVAL
									       : p11_errno(rv),
			"token '%s' does not offer AES-GCM encryption and decryption "
			"(CKM_AES_GCM: %s), which envelopefs wraps DEKs with",
			p11_token_label(pk->tok),
			rv == CKR_OK ? "no CKF_ENCRYPT|CKF_DECRYPT" : p11_rv_name(rv, name));
}

static int p11_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	const char *module = iniparser_getstring(ini, "kms:module", NULL);
	const char *token = iniparser_getstring(ini, "kms:token_label", NULL);
	const char *pin_file = iniparser_getstring(ini, "kms:pin_file", NULL);
	struct p11_kms *pk;
	unsigned sessions;
	int rc;

	rc = config_refuse_unknown(ini, "kms", known_settings,
				   sizeof(known_settings) / sizeof(known_settings[0]),
				   "the pkcs11 provider", err, err_len);
	if (rc < 0)
		return rc;
	pk = calloc(1, sizeof(*pk));
	if (!pk)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	pthread_rwlock_init(&pk->keys_lock, NULL);
	rc = parse_settings(pk, ini, &sessions, err, err_len);
	pk->sessions = sessions;
	if (rc == 0)
		rc = p11_token_open(module, token, pin_file && *pin_file ? pin_file : NULL,
				    sessions, &pk->tok, err, err_len);
	if (rc == 0) {
		pk->f = p11_token_functions(pk->tok);
		rc = set_key_ref(kms, pk, err, err_len);
	}
	if (rc == 0)
		rc = check_mechanism(pk, err, err_len);
	if (rc == 0)
		rc = search_keys(pk, err, err_len);
	if (rc < 0) {
		p11_free(pk);
		return rc;
	}
	kms->max_blob_len = P11_BLOB_LEN;
	kms->priv = pk;
	return 0;
}

const struct kms_ops kms_pkcs11_ops = {
	.name = "pkcs11",
	.open = p11_open,
	.generate = p11_generate,
	.wrap = p11_wrap,
	.unwrap = p11_unwrap,
	.unwrap_many = p11_unwrap_many,
	.rewrap = p11_rewrap,
	.blob_version = p11_blob_version,
	.current_version = p11_current_version,
	.close = p11_close,
	.destroy = p11_destroy,
};
