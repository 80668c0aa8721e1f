// SPDX-License-Identifier: MIT
/*
 * The `local` provider: master keys from a keyring file (keyring.c), DEKs
 * wrapped with AES-256-GCM bound to the keyring, the key version, the
 * volume and the file (blob layout in keyring.h and docs/FORMAT.md).
 *
 * Settings, section [kms]:
 *   provider        = local
 *   keyring         = /absolute/path/to/file.keyring
 *   keyring_id      = 32 hex digits (the ID inside that file)
 *   passphrase_file = /path   (optional; see keyring_passphrase())
 *
 * The keyring stays loaded in secmem.  Another process may rotate it: at most
 * once a second, and whenever a blob names a version we do not hold, the
 * file's identity is compared with what was loaded and the keyring re-read
 * if it was replaced.  A rwlock lets wraps and unwraps run in parallel with
 * each other but not with a reload.
 */

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crypto/aead.h"
#include "crypto/bigendian.h"
#include "crypto/hex.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/keyring.h"

#define WRAP_LABEL "envelopefs local wrap v1"
#define WRAP_LABEL_LEN (sizeof(WRAP_LABEL) - 1)
#define WRAP_AAD_LEN (WRAP_LABEL_LEN + KEYRING_ID_LEN + 4 + 16 + 16)
#define BLOB_NONCE 4
#define BLOB_CIPHER (BLOB_NONCE + AEAD_NONCE_LEN)
#define BLOB_TAG (BLOB_CIPHER + KMS_DEK_LEN)

struct local_kms {
	pthread_rwlock_t lock; /* guards kr */
	struct keyring *kr;
	uint8_t id[KEYRING_ID_LEN];
	int64_t last_check; /* CLOCK_MONOTONIC seconds of the last reload check */
};

static const char *const known_settings[] = { "kms:provider", "kms:keyring", "kms:keyring_id",
					      "kms:passphrase_file" };

static void make_aad(uint8_t aad[WRAP_AAD_LEN], const uint8_t keyring_id[KEYRING_ID_LEN],
		     uint32_t version, const struct kms_context *ctx)
{
	uint8_t *p = aad;

	memcpy(p, WRAP_LABEL, WRAP_LABEL_LEN);
	p += WRAP_LABEL_LEN;
	memcpy(p, keyring_id, KEYRING_ID_LEN);
	p += KEYRING_ID_LEN;
	put_be32(p, version);
	p += 4;
	memcpy(p, ctx->volume_uuid, 16);
	memcpy(p + 16, ctx->file_id, 16);
}

int local_wrap_with_nonce(const uint8_t kek[KEYRING_KEY_LEN],
			  const uint8_t keyring_id[KEYRING_ID_LEN], uint32_t version,
			  const uint8_t nonce[AEAD_NONCE_LEN], const struct kms_context *ctx,
			  const uint8_t dek[KMS_DEK_LEN], uint8_t blob[KMS_LOCAL_BLOB_LEN])
{
	uint8_t aad[WRAP_AAD_LEN];
	int rc;

	make_aad(aad, keyring_id, version, ctx);
	put_be32(blob, version);
	memcpy(blob + BLOB_NONCE, nonce, AEAD_NONCE_LEN);
	rc = aead_seal(kek, nonce, aad, sizeof(aad), dek, KMS_DEK_LEN, blob + BLOB_CIPHER,
		       blob + BLOB_TAG);
	if (rc < 0)
		secmem_wipe(blob, KMS_LOCAL_BLOB_LEN);
	return rc;
}

int local_unwrap_with_key(const uint8_t kek[KEYRING_KEY_LEN],
			  const uint8_t keyring_id[KEYRING_ID_LEN], const struct kms_context *ctx,
			  const uint8_t *blob, size_t blob_len, uint8_t dek[KMS_DEK_LEN])
{
	uint8_t aad[WRAP_AAD_LEN];

	if (blob_len != KMS_LOCAL_BLOB_LEN)
		return -EBADMSG;
	make_aad(aad, keyring_id, get_be32(blob), ctx);
	return aead_open(kek, blob + BLOB_NONCE, aad, sizeof(aad), blob + BLOB_CIPHER,
			 KMS_DEK_LEN, blob + BLOB_TAG, dek);
}

/*
 * maybe_reload - re-read the keyring file if it was replaced.  Unforced
 * checks happen at most once a second.  A failed reload keeps the keyring
 * already held, which still wraps and unwraps everything it did before.
 */
static void maybe_reload(struct local_kms *lk, bool force)
{
	struct timespec ts;
	bool changed;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	if (!force && __atomic_load_n(&lk->last_check, __ATOMIC_RELAXED) == ts.tv_sec)
		return;
	__atomic_store_n(&lk->last_check, (int64_t)ts.tv_sec, __ATOMIC_RELAXED);

	pthread_rwlock_rdlock(&lk->lock);
	changed = keyring_changed(lk->kr);
	pthread_rwlock_unlock(&lk->lock);
	if (!changed)
		return;
	pthread_rwlock_wrlock(&lk->lock);
	keyring_reload(lk->kr, NULL, NULL, 0);
	pthread_rwlock_unlock(&lk->lock);
}

/* wrap_current - wrap @dek under the current version.  Caller holds the read lock. */
static int wrap_current(struct local_kms *lk, const struct kms_context *ctx, const uint8_t *dek,
			uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	uint8_t nonce[AEAD_NONCE_LEN];
	uint32_t v = keyring_current(lk->kr);
	int rc;

	if (blob_cap < KMS_LOCAL_BLOB_LEN)
		return -EINVAL;
	rc = crypto_random(nonce, sizeof(nonce));
	if (rc < 0)
		return -EIO;
	rc = local_wrap_with_nonce(keyring_key(lk->kr, v), lk->id, v, nonce, ctx, dek, blob);
	if (rc < 0)
		return -EIO;
	*blob_len = KMS_LOCAL_BLOB_LEN;
	*version = v;
	return 0;
}

static int local_wrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *dek,
		      uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	struct local_kms *lk = kms->priv;
	int rc;

	maybe_reload(lk, false);
	pthread_rwlock_rdlock(&lk->lock);
	rc = wrap_current(lk, ctx, dek, blob, blob_cap, blob_len, version);
	pthread_rwlock_unlock(&lk->lock);
	return rc;
}

static int local_generate(struct kms *kms, const struct kms_context *ctx, uint8_t *dek,
			  uint8_t *blob, size_t blob_cap, size_t *blob_len, uint32_t *version)
{
	int rc;

	if (crypto_random(dek, KMS_DEK_LEN) < 0)
		return -EIO;
	rc = local_wrap(kms, ctx, dek, blob, blob_cap, blob_len, version);
	if (rc < 0)
		secmem_wipe(dek, KMS_DEK_LEN);
	return rc;
}

/* unwrap_locked - unwrap; on return the read lock is held if and only if 0 is returned. */
static int unwrap_locked(struct local_kms *lk, const struct kms_context *ctx,
			 const uint8_t *blob, size_t blob_len, uint8_t *dek)
{
	const uint8_t *kek;
	int rc;

	if (blob_len != KMS_LOCAL_BLOB_LEN)
		return -EBADMSG;
	pthread_rwlock_rdlock(&lk->lock);
	kek = keyring_key(lk->kr, get_be32(blob));
	if (!kek) {
		/* Maybe another process rotated the keyring since we loaded it. */
		pthread_rwlock_unlock(&lk->lock);
		maybe_reload(lk, true);
		pthread_rwlock_rdlock(&lk->lock);
		kek = keyring_key(lk->kr, get_be32(blob));
	}
	rc = kek ? local_unwrap_with_key(kek, lk->id, ctx, blob, blob_len, dek) : -ENOENT;
	if (rc < 0)
		pthread_rwlock_unlock(&lk->lock);
	return rc;
}

static int local_unwrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
			size_t blob_len, uint8_t *dek)
{
	struct local_kms *lk = kms->priv;
	int rc;

	rc = unwrap_locked(lk, ctx, blob, blob_len, dek);
	if (rc == 0)
		pthread_rwlock_unlock(&lk->lock);
	return rc;
}

static int local_rewrap(struct kms *kms, const struct kms_context *ctx, const uint8_t *blob,
			size_t blob_len, uint8_t *out, size_t out_cap, size_t *out_len,
			uint32_t *version)
{
	struct local_kms *lk = kms->priv;
	uint8_t *dek;
	int rc;

	maybe_reload(lk, false);
	dek = secmem_alloc(KMS_DEK_LEN);
	if (!dek)
		return -ENOMEM;
	rc = unwrap_locked(lk, ctx, blob, blob_len, dek);
	if (rc == 0) {
		rc = wrap_current(lk, ctx, dek, out, out_cap, out_len, version);
		pthread_rwlock_unlock(&lk->lock);
	}
	secmem_free(dek, KMS_DEK_LEN);
	return rc;
}

static int local_blob_version(struct kms *kms, const uint8_t *blob, size_t blob_len,
			      uint32_t *version)
{
	(void)kms;
	if (blob_len != KMS_LOCAL_BLOB_LEN)
		return -EBADMSG;
	*version = get_be32(blob);
	return 0;
}

static int local_current_version(struct kms *kms, uint32_t *version)
{
	struct local_kms *lk = kms->priv;

	/* Asked by rotation and status, never per block: always look at the
	 * file, so that a rotation started right after `keyring rotate`
	 * targets the new version. */
	maybe_reload(lk, true);
	pthread_rwlock_rdlock(&lk->lock);
	*version = keyring_current(lk->kr);
	pthread_rwlock_unlock(&lk->lock);
	return 0;
}

static void local_close(struct kms *kms)
{
	struct local_kms *lk = kms->priv;

	if (!lk)
		return;
	keyring_free(lk->kr);
	pthread_rwlock_destroy(&lk->lock);
	free(lk);
	kms->priv = NULL;
}

static int local_destroy(struct kms *kms, char *err, size_t err_len)
{
	struct local_kms *lk = kms->priv;
	int rc;

	pthread_rwlock_wrlock(&lk->lock);
	rc = keyring_shred(lk->kr, err, err_len);
	pthread_rwlock_unlock(&lk->lock);
	return rc;
}

static int local_open(struct kms *kms, const dictionary *ini, char *err, size_t err_len)
{
	const char *path = iniparser_getstring(ini, "kms:keyring", NULL);
	const char *id_hex = iniparser_getstring(ini, "kms:keyring_id", NULL);
	const char *pass_file = iniparser_getstring(ini, "kms:passphrase_file", NULL);
	char want[2 * KEYRING_ID_LEN + 1], have[2 * KEYRING_ID_LEN + 1];
	struct local_kms *lk;
	size_t pass_len = 0;
	char *pass = NULL;
	int rc;

	rc = config_refuse_unknown(ini, "kms", known_settings,
				   sizeof(known_settings) / sizeof(known_settings[0]),
				   "the local provider", err, err_len);
	if (rc < 0)
		return rc;
	if (!path || path[0] != '/')
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:keyring must be the absolute path of the keyring "
				"file");
	lk = calloc(1, sizeof(*lk));
	if (!lk)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	if (!id_hex || hex_decode(id_hex, lk->id, KEYRING_ID_LEN) < 0) {
		free(lk);
		return kms_errf(err, err_len, -EINVAL,
				"setting kms:keyring_id must be the 32 lowercase hex digits of the "
				"keyring's ID (see 'envelopefsctl keyring list %s')",
				path);
	}
	rc = keyring_passphrase(pass_file && *pass_file ? pass_file : NULL, &pass, &pass_len, err,
				err_len);
	if (rc == 0)
		rc = keyring_load(path, pass, pass_len, &lk->kr, err, err_len);
	keyring_passphrase_free(pass);
	if (rc < 0) {
		free(lk);
		return rc;
	}
	if (memcmp(keyring_id(lk->kr), lk->id, KEYRING_ID_LEN) != 0) {
		hex_encode(lk->id, KEYRING_ID_LEN, want);
		hex_encode(keyring_id(lk->kr), KEYRING_ID_LEN, have);
		keyring_free(lk->kr);
		free(lk);
		return kms_errf(err, err_len, -ENOENT,
				"keyring %s is not the keyring of this volume (the volume wants "
				"keyring ID %s, the file has %s): set kms:keyring to the right file",
				path, want, have);
	}
	rc = pthread_rwlock_init(&lk->lock, NULL);
	if (rc) {
		keyring_free(lk->kr);
		free(lk);
		return kms_errf(err, err_len, -rc, "cannot create a lock");
	}
	hex_encode(lk->id, KEYRING_ID_LEN, want);
	snprintf(kms->key_ref, sizeof(kms->key_ref), "%s%s", KMS_LOCAL_REF_PREFIX, want);
	kms->max_blob_len = KMS_LOCAL_BLOB_LEN;
	kms->priv = lk;
	return 0;
}

const struct kms_ops kms_local_ops = {
	.name = "local",
	.open = local_open,
	.generate = local_generate,
	.unwrap = local_unwrap,
	.wrap = local_wrap,
	.rewrap = local_rewrap,
	.blob_version = local_blob_version,
	.current_version = local_current_version,
	.close = local_close,
	.destroy = local_destroy,
};
