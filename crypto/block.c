// SPDX-License-Identifier: MIT
/*
 * File content blocks: the hot path (see block.h, docs/FORMAT.md).
 *
 * Every thread owns one struct block_thread, created on its first block and
 * destroyed by a pthread key destructor at thread exit.  It holds an encrypt
 * and a decrypt context bound to AES-256-GCM once, so a block costs one IV
 * set-up, one pass over the data and one tag, and no allocation.
 *
 * The cached DEK copies and the nonce buffer live in secmem: locked, kept
 * out of core dumps and - what matters most here - wiped in a forked child.
 * A child that inherited the parent's unused nonce bytes and sealed under
 * the same DEK would repeat the parent's nonces, which in GCM gives away the
 * authentication key.  With MADV_WIPEONFORK the child finds an empty nonce
 * buffer and no valid key, and refills and re-keys on its first block.
 */

#include "crypto/block.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "crypto/random.h"
#include "crypto/secmem.h"

#define NONCE_BUF_LEN 4096
#define AAD_LEN (2 * BLOCK_ID_LEN + 8)

/* Everything in here reads as zero in a forked child (MADV_WIPEONFORK). */
struct block_secret {
	uint8_t enc_key[BLOCK_KEY_LEN]; /* key loaded into enc, if enc_valid */
	uint8_t dec_key[BLOCK_KEY_LEN]; /* key loaded into dec, if dec_valid */
	uint32_t enc_valid;
	uint32_t dec_valid;
	uint32_t nonce_left; /* unused bytes at the end of nonces[] */
	uint8_t nonces[NONCE_BUF_LEN];
};

struct block_thread {
	EVP_CIPHER_CTX *enc;
	EVP_CIPHER_CTX *dec;
	struct block_secret *s;
};

static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;
static int thread_key_err;

static void thread_free(struct block_thread *t)
{
	if (!t)
		return;
	/* EVP_CIPHER_CTX_free() cleanses the key schedule it held. */
	EVP_CIPHER_CTX_free(t->enc);
	EVP_CIPHER_CTX_free(t->dec);
	secmem_free(t->s, sizeof(*t->s));
	free(t);
}

static void thread_destructor(void *p)
{
	thread_free(p);
}

static void thread_key_create(void)
{
	thread_key_err = pthread_key_create(&thread_key, thread_destructor);
}

/*
 * thread_get - this thread's state, created on first use.  Binding the
 * contexts to the cipher here, once, is what lets the per-block path set
 * only the IV.
 */
static int thread_get(struct block_thread **out)
{
	struct block_thread *t;
	int err;

	pthread_once(&thread_key_once, thread_key_create);
	if (thread_key_err)
		return -thread_key_err;

	t = pthread_getspecific(thread_key);
	if (t) {
		*out = t;
		return 0;
	}

	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	err = -ENOMEM;
	t->s = secmem_alloc(sizeof(*t->s));
	if (!t->s)
		goto fail;
	t->enc = EVP_CIPHER_CTX_new();
	t->dec = EVP_CIPHER_CTX_new();
	if (!t->enc || !t->dec)
		goto fail;
	err = -EIO;
	if (EVP_EncryptInit_ex(t->enc, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex(t->dec, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1)
		goto fail;
	err = -pthread_setspecific(thread_key, t);
	if (err)
		goto fail;
	*out = t;
	return 0;

fail:
	thread_free(t);
	return err;
}

/* Hand out the next BLOCK_NONCE_LEN never-used bytes, refilling in bulk. */
static int next_nonce(struct block_secret *s, uint8_t nonce[BLOCK_NONCE_LEN])
{
	int err;

	if (s->nonce_left < BLOCK_NONCE_LEN || s->nonce_left > NONCE_BUF_LEN) {
		s->nonce_left = 0;
		err = crypto_random(s->nonces, NONCE_BUF_LEN);
		if (err)
			return err;
		s->nonce_left = NONCE_BUF_LEN;
	}
	memcpy(nonce, s->nonces + NONCE_BUF_LEN - s->nonce_left, BLOCK_NONCE_LEN);
	s->nonce_left -= BLOCK_NONCE_LEN;
	return 0;
}

/*
 * use_key - make sure @ctx holds @key, recomputing the key schedule only
 * when the thread switched DEKs.  The comparison is constant-time because
 * the cached copy is a secret.
 */
static int use_key(EVP_CIPHER_CTX *ctx, int enc, uint8_t cached[BLOCK_KEY_LEN],
		   uint32_t *valid, const uint8_t *key)
{
	if (*valid && CRYPTO_memcmp(cached, key, BLOCK_KEY_LEN) == 0)
		return 0;
	*valid = 0;
	if (EVP_CipherInit_ex(ctx, NULL, NULL, key, NULL, enc) != 1)
		return -EIO;
	memcpy(cached, key, BLOCK_KEY_LEN);
	*valid = 1;
	return 0;
}

static void build_aad(uint8_t aad[AAD_LEN], const struct block_owner *owner, uint64_t index)
{
	int i;

	memcpy(aad, owner->volume_uuid, BLOCK_ID_LEN);
	memcpy(aad + BLOCK_ID_LEN, owner->file_id, BLOCK_ID_LEN);
	for (i = 0; i < 8; i++)
		aad[2 * BLOCK_ID_LEN + i] = (uint8_t)(index >> (56 - 8 * i));
}

static bool owner_ok(const struct block_owner *owner)
{
	return owner && owner->key && owner->volume_uuid && owner->file_id;
}

static bool overlaps(const void *a, size_t a_len, const void *b, size_t b_len)
{
	uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;

	return pa < pb + b_len && pb < pa + a_len;
}

static int seal(struct block_thread *t, const struct block_owner *owner, uint64_t index,
		const uint8_t nonce[BLOCK_NONCE_LEN], const void *plain, size_t plain_len,
		uint8_t *sealed)
{
	uint8_t aad[AAD_LEN];
	uint8_t *ct = sealed + BLOCK_NONCE_LEN;
	int n, err;

	err = use_key(t->enc, 1, t->s->enc_key, &t->s->enc_valid, owner->key);
	if (err)
		goto fail;
	err = -EIO;
	build_aad(aad, owner, index);
	memcpy(sealed, nonce, BLOCK_NONCE_LEN);
	if (EVP_EncryptInit_ex(t->enc, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_EncryptUpdate(t->enc, NULL, &n, aad, AAD_LEN) != 1 ||
	    EVP_EncryptUpdate(t->enc, ct, &n, plain, (int)plain_len) != 1 ||
	    n != (int)plain_len || EVP_EncryptFinal_ex(t->enc, ct + plain_len, &n) != 1 ||
	    EVP_CIPHER_CTX_ctrl(t->enc, EVP_CTRL_GCM_GET_TAG, BLOCK_TAG_LEN, ct + plain_len) != 1)
		goto fail_ctx;
	return 0;

fail_ctx:
	/* The context is in an unknown state: force a fresh key set-up next time. */
	t->s->enc_valid = 0;
fail:
	OPENSSL_cleanse(sealed, plain_len + BLOCK_OVERHEAD);
	return err;
}

/* seal_start - check a seal's arguments, then *@t is this thread's state. */
static int seal_start(const struct block_owner *owner, const void *plain, size_t plain_len,
		      void *sealed, struct block_thread **t)
{
	if (!owner_ok(owner) || !plain || !sealed)
		return -EINVAL;
	if (plain_len == 0 || plain_len > INT_MAX - BLOCK_OVERHEAD)
		return -EINVAL;
	if (overlaps(plain, plain_len, sealed, plain_len + BLOCK_OVERHEAD))
		return -EINVAL;
	return thread_get(t);
}

/**
 * block_seal - see block.h.
 */
int block_seal(const struct block_owner *owner, uint64_t index, const void *plain,
	       size_t plain_len, void *sealed)
{
	struct block_thread *t;
	uint8_t nonce[BLOCK_NONCE_LEN];
	int err;

	err = seal_start(owner, plain, plain_len, sealed, &t);
	if (err)
		return err;
	err = next_nonce(t->s, nonce);
	if (err)
		return err;
	return seal(t, owner, index, nonce, plain, plain_len, sealed);
}

/**
 * block_seal_with_nonce - see block.h.
 */
int block_seal_with_nonce(const struct block_owner *owner, uint64_t index,
			  const uint8_t nonce[BLOCK_NONCE_LEN], const void *plain, size_t plain_len,
			  void *sealed)
{
	struct block_thread *t;
	int err;

	if (!nonce)
		return -EINVAL;
	err = seal_start(owner, plain, plain_len, sealed, &t);
	if (err)
		return err;
	return seal(t, owner, index, nonce, plain, plain_len, sealed);
}

/**
 * block_open - see block.h.  GCM decrypts before it can tell whether the
 * tag is good, so @plain holds unauthenticated bytes until
 * EVP_DecryptFinal_ex() succeeds; every failure after the update wipes it.
 */
int block_open(const struct block_owner *owner, uint64_t index, const void *sealed,
	       size_t sealed_len, void *plain)
{
	struct block_thread *t;
	const uint8_t *nonce, *ct;
	uint8_t aad[AAD_LEN], tag[BLOCK_TAG_LEN];
	size_t plain_len;
	int n, err;

	if (!owner_ok(owner) || !sealed || !plain)
		return -EINVAL;
	if (sealed_len <= BLOCK_OVERHEAD || sealed_len > INT_MAX)
		return -EINVAL;
	plain_len = sealed_len - BLOCK_OVERHEAD;
	if (overlaps(plain, plain_len, sealed, sealed_len))
		return -EINVAL;
	nonce = sealed;
	ct = nonce + BLOCK_NONCE_LEN;
	err = thread_get(&t);
	if (err)
		return err;

	err = use_key(t->dec, 0, t->s->dec_key, &t->s->dec_valid, owner->key);
	if (err)
		goto fail;
	build_aad(aad, owner, index);
	/* The ctrl wants a writable buffer; the caller's may be read-only. */
	memcpy(tag, ct + plain_len, BLOCK_TAG_LEN);
	err = -EIO;
	if (EVP_DecryptInit_ex(t->dec, NULL, NULL, NULL, nonce) != 1 ||
	    EVP_DecryptUpdate(t->dec, NULL, &n, aad, AAD_LEN) != 1 ||
	    EVP_DecryptUpdate(t->dec, plain, &n, ct, (int)plain_len) != 1 ||
	    n != (int)plain_len ||
	    EVP_CIPHER_CTX_ctrl(t->dec, EVP_CTRL_GCM_SET_TAG, BLOCK_TAG_LEN, tag) != 1) {
		t->s->dec_valid = 0;
		goto fail;
	}
	if (EVP_DecryptFinal_ex(t->dec, tag, &n) != 1) {
		err = -EBADMSG;
		goto fail;
	}
	return 0;

fail:
	OPENSSL_cleanse(plain, plain_len);
	return err;
}

/**
 * block_thread_wipe - see block.h.  Frees the whole per-thread state; the
 * next block on this thread builds it afresh.
 */
void block_thread_wipe(void)
{
	struct block_thread *t;

	pthread_once(&thread_key_once, thread_key_create);
	if (thread_key_err)
		return;
	t = pthread_getspecific(thread_key);
	if (!t)
		return;
	pthread_setspecific(thread_key, NULL);
	thread_free(t);
}
