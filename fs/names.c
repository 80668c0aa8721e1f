/* SPDX-License-Identifier: MIT */
/* The metadata codec: see names.h and docs/FORMAT.md. */
#include "names.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crypto/base64.h"
#include "crypto/kdf.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "crypto/siv.h"
#include "volume.h"

#define HASH_B64_LEN 43 /* base64url of a SHA-256 */
#define XATTR_USER "user."
#define XATTR_VALUE_FORMAT 1

static const char label_names[] = "envelopefs v1 names";
static const char label_links[] = "envelopefs v1 symlink targets";
static const char label_xattrs[] = "envelopefs v1 xattrs";
static const char label_targets[] = "envelopefs v2 symlink targets";

#define N_KEYS 4

/*
 * A key scope's codec (names_forget_keys) can lose its keys and get them
 * again while in use: every use of the keys holds @lock shared, a change
 * holds it exclusively, so a name is never sealed under half-wiped keys.
 * Invariant: @keyed is true exactly while @keys holds the derived keys.
 */
struct names {
	bool encrypted;
	pthread_rwlock_t lock;
	bool keyed;
	uint8_t *keys; /* secmem: K_name ‖ K_link ‖ K_xattr ‖ K_target */
	/* A converting scope's (names_set_fallback): what does not open under
	 * @keys is tried under its keys; guarded by @lock.  Never chained. */
	const struct names *fallback;
};

enum names_key { K_NAME, K_LINK, K_XATTR, K_TARGET };

/* key_seal / key_open - siv_seal / siv_open under key @k of @n; -EACCES without keys. */
static int key_seal(const struct names *n, enum names_key k, const struct siv_ad *ad, size_t n_ad,
		    const void *in, size_t len, uint8_t *out)
{
	struct names *m = (struct names *)n; /* the lock is not part of the codec's value */
	int ret = -EACCES;

	pthread_rwlock_rdlock(&m->lock);
	if (m->keyed)
		ret = siv_seal(m->keys + (size_t)k * SIV_KEY_LEN, ad, n_ad, in, len, out);
	pthread_rwlock_unlock(&m->lock);
	return ret;
}

static int key_open(const struct names *n, enum names_key k, const struct siv_ad *ad, size_t n_ad,
		    const uint8_t *in, size_t len, void *out)
{
	struct names *m = (struct names *)n;
	const struct names *fallback;
	int ret = -EACCES;

	pthread_rwlock_rdlock(&m->lock);
	if (m->keyed)
		ret = siv_open(m->keys + (size_t)k * SIV_KEY_LEN, ad, n_ad, in, len, out);
	fallback = m->keyed ? m->fallback : NULL;
	pthread_rwlock_unlock(&m->lock);
	/* SIV authenticates: a text opens under at most one of the two keys. */
	return ret < 0 && fallback ? key_open(fallback, k, ad, n_ad, in, len, out) : ret;
}

/* derive - the four keys from @key into n->keys.  Write lock held (or not yet shared). */
static int derive(struct names *n, const uint8_t *key, const uint8_t *uuid)
{
	static const char *const labels[N_KEYS] = {label_names, label_links, label_xattrs,
						   label_targets};
	int ret = 0;

	for (size_t i = 0; ret == 0 && i < N_KEYS; i++)
		ret = crypto_hkdf_sha256(key, NAMES_KEY_LEN, uuid, 16, labels[i], strlen(labels[i]),
					 n->keys + i * SIV_KEY_LEN, SIV_KEY_LEN);
	n->keyed = ret == 0;
	if (ret < 0)
		secmem_wipe(n->keys, N_KEYS * SIV_KEY_LEN);
	return ret;
}

int names_create(bool encrypted, const uint8_t *volume_key, const uint8_t *uuid,
		 struct names **out)
{
	struct names *n = calloc(1, sizeof(*n));
	int ret = 0;

	if (!n)
		return -ENOMEM;
	n->encrypted = encrypted;
	pthread_rwlock_init(&n->lock, NULL);
	if (encrypted) {
		n->keys = secmem_alloc(N_KEYS * SIV_KEY_LEN);
		if (!n->keys) {
			names_destroy(n);
			return -ENOMEM;
		}
		if (volume_key)
			ret = derive(n, volume_key, uuid);
		if (ret < 0) {
			names_destroy(n);
			return ret;
		}
	}
	*out = n;
	return 0;
}

int names_set_key(struct names *n, const uint8_t *key, const uint8_t *uuid)
{
	int ret;

	pthread_rwlock_wrlock(&n->lock);
	ret = derive(n, key, uuid);
	pthread_rwlock_unlock(&n->lock);
	return ret;
}

void names_forget_keys(struct names *n)
{
	pthread_rwlock_wrlock(&n->lock);
	secmem_wipe(n->keys, N_KEYS * SIV_KEY_LEN);
	n->keyed = false;
	pthread_rwlock_unlock(&n->lock);
}

void names_set_fallback(struct names *n, const struct names *fallback)
{
	pthread_rwlock_wrlock(&n->lock);
	n->fallback = fallback;
	pthread_rwlock_unlock(&n->lock);
}

const struct names *names_fallback(const struct names *n)
{
	struct names *m = (struct names *)n;
	const struct names *fallback;

	pthread_rwlock_rdlock(&m->lock);
	fallback = m->fallback;
	pthread_rwlock_unlock(&m->lock);
	return fallback;
}

void names_destroy(struct names *n)
{
	if (!n)
		return;
	secmem_free(n->keys, N_KEYS * SIV_KEY_LEN);
	pthread_rwlock_destroy(&n->lock);
	free(n);
}

bool names_encrypted(const struct names *n)
{
	return n->encrypted;
}

size_t names_b64_encode(const uint8_t *in, size_t len, char *out)
{
	return base64url_encode(in, len, out);
}

long names_b64_decode(const char *in, uint8_t *out, size_t cap)
{
	size_t len;

	return base64url_decode(in, strlen(in), out, cap, &len) < 0 ? -EINVAL : (long)len;
}

static bool plain_reserved(bool in_root, const char *name)
{
	return in_root &&
	       (strcmp(name, VOLUME_CONFIG_NAME) == 0 || strcmp(name, VOLUME_REKEY_DIR) == 0 ||
		strcmp(name, VOLUME_PROBE_DIR) == 0 ||
		strcmp(name, VOLUME_CONFIG_NAME VOLUME_CONFIG_TMP_SUFFIX) == 0);
}

/* Long entry name for the full encoded name @full. */
static int long_entry(const char *full, char *entry)
{
	uint8_t hash[SHA256_LEN];
	int ret = crypto_sha256(full, strlen(full), hash);

	if (ret < 0)
		return ret;
	memcpy(entry, NAMES_LONG_PREFIX, strlen(NAMES_LONG_PREFIX));
	names_b64_encode(hash, sizeof(hash), entry + strlen(NAMES_LONG_PREFIX));
	return 0;
}

int names_encode(const struct names *n, const uint8_t *dirid, bool in_root, const char *name,
		 struct backing_name *out)
{
	uint8_t sealed[SIV_TAG_LEN + NAMES_MAX];
	struct siv_ad ad = {dirid, NAMES_DIRID_LEN};
	size_t len = strlen(name);
	int ret;

	if (len > NAMES_MAX)
		return -ENAMETOOLONG;
	if (len == 0 || strchr(name, '/'))
		return -EINVAL;
	out->full[0] = '\0';
	if (!n->encrypted) {
		if (plain_reserved(in_root, name))
			return -EPERM;
		memcpy(out->entry, name, len + 1);
		return 0;
	}
	ret = key_seal(n, K_NAME, &ad, 1, name, len, sealed);
	if (ret < 0)
		return ret;
	if ((SIV_TAG_LEN + len) * 4 <= 3 * NAMES_MAX) {
		names_b64_encode(sealed, SIV_TAG_LEN + len, out->entry);
		return 0;
	}
	names_b64_encode(sealed, SIV_TAG_LEN + len, out->full);
	return long_entry(out->full, out->entry);
}

static bool is_long_entry(const char *entry)
{
	size_t plen = strlen(NAMES_LONG_PREFIX);

	return strlen(entry) == plen + HASH_B64_LEN && strncmp(entry, NAMES_LONG_PREFIX, plen) == 0 &&
	       base64url_span(entry + plen) == HASH_B64_LEN;
}

enum names_entry names_classify(const struct names *n, bool in_root, const char *entry)
{
	if (strcmp(entry, ".") == 0 || strcmp(entry, "..") == 0)
		return NAMES_ENTRY_HIDDEN;
	if (!n->encrypted)
		return plain_reserved(in_root, entry) ? NAMES_ENTRY_HIDDEN : NAMES_ENTRY_SHORT;
	if (is_long_entry(entry))
		return NAMES_ENTRY_LONG;
	return strchr(entry, '.') ? NAMES_ENTRY_HIDDEN : NAMES_ENTRY_SHORT;
}

/* Decrypt the encoded name @text into @out and check it is a legal name. */
static int open_name(const struct names *n, const uint8_t *dirid, const char *text, char *out)
{
	uint8_t sealed[SIV_TAG_LEN + NAMES_MAX];
	struct siv_ad ad = {dirid, NAMES_DIRID_LEN};
	long len = names_b64_decode(text, sealed, sizeof(sealed));

	if (len <= SIV_TAG_LEN)
		return -EBADMSG;
	if (key_open(n, K_NAME, &ad, 1, sealed, (size_t)len, out) < 0)
		return -EBADMSG;
	len -= SIV_TAG_LEN;
	out[len] = '\0';
	/* Only a forger with the key could seal these; refuse them anyway. */
	if (memchr(out, '\0', (size_t)len) || memchr(out, '/', (size_t)len))
		return -EBADMSG;
	return 0;
}

int names_decode(const struct names *n, const uint8_t *dirid, bool in_root, const char *entry,
		 const char *full, char *out)
{
	char expect[NAMES_MAX + 1];

	switch (names_classify(n, in_root, entry)) {
	case NAMES_ENTRY_HIDDEN:
		return -ENOENT;
	case NAMES_ENTRY_SHORT:
		if (!n->encrypted) {
			memcpy(out, entry, strlen(entry) + 1);
			return 0;
		}
		/* A name short enough to be stored as itself never appears long. */
		if (strlen(entry) > NAMES_MAX)
			return -EBADMSG;
		return open_name(n, dirid, entry, out);
	case NAMES_ENTRY_LONG:
		/* The side record must be the one this entry's name was made from,
		 * and long: a swapped or shortened record is not authentic. */
		if (!full || strlen(full) <= NAMES_MAX || long_entry(full, expect) < 0 ||
		    strcmp(expect, entry) != 0)
			return -EBADMSG;
		return open_name(n, dirid, full, out);
	}
	return -ENOENT;
}

/* readlinkat() of @name into @buf (@cap bytes with its NUL): -EIO if not a fitting link. */
static int read_link_text(int dirfd, const char *name, char *buf, size_t cap)
{
	ssize_t len = readlinkat(dirfd, name, buf, cap);

	if (len < 0)
		return errno == ENOENT || errno == EINVAL ? -EIO : -errno;
	if ((size_t)len >= cap)
		return -EIO;
	buf[len] = '\0';
	return 0;
}

int names_dirid_read(int dirfd, uint8_t id[NAMES_DIRID_LEN])
{
	char text[32];
	uint8_t raw[NAMES_DIRID_LEN + 2];
	int ret = read_link_text(dirfd, NAMES_DIRID_ENTRY, text, sizeof(text));

	if (ret < 0)
		return ret;
	if (names_b64_decode(text, raw, sizeof(raw)) != NAMES_DIRID_LEN)
		return -EIO;
	memcpy(id, raw, NAMES_DIRID_LEN);
	return 0;
}

int names_dirid_make(int dirfd)
{
	uint8_t id[NAMES_DIRID_LEN];
	char text[32];
	int ret = crypto_random(id, sizeof(id));

	if (ret < 0)
		return ret;
	names_b64_encode(id, sizeof(id), text);
	/* A symlink: its target is written with the entry, in one journaled
	 * metadata operation, so a crash leaves the ID whole or absent. */
	return symlinkat(text, dirfd, NAMES_DIRID_ENTRY) < 0 ? -errno : 0;
}

static void side_name(const char *entry, char *out)
{
	memcpy(out, entry, strlen(entry));
	strcpy(out + strlen(entry), NAMES_SIDE_SUFFIX);
}

int names_side_read(int dirfd, const char *entry, char *full)
{
	char side[NAMES_MAX + 1];

	side_name(entry, side);
	return read_link_text(dirfd, side, full, NAMES_FULL_MAX + 1);
}

int names_side_write(int dirfd, const struct backing_name *b)
{
	char side[NAMES_MAX + 1], have[NAMES_FULL_MAX + 1];

	side_name(b->entry, side);
	if (symlinkat(b->full, dirfd, side) < 0) {
		if (errno != EEXIST)
			return -errno;
		/* The same name's record (entry being replaced or relinked),
		 * or debris: keep the first, replace the second. */
		if (read_link_text(dirfd, side, have, sizeof(have)) == 0 &&
		    strcmp(have, b->full) == 0)
			return 0;
		if (unlinkat(dirfd, side, 0) < 0 || symlinkat(b->full, dirfd, side) < 0)
			return -errno;
	}
	/* The record is durable before the entry that needs it exists. */
	return names_fsync_dir(dirfd);
}

int names_fsync_dir(int dirfd)
{
	/* @dirfd may be O_PATH, which cannot be synced. */
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret = 0;

	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	return ret;
}

void names_side_remove(int dirfd, const char *entry)
{
	char side[NAMES_MAX + 1];

	side_name(entry, side);
	/* An orphan record left by a failure here is hidden and harmless. */
	(void)unlinkat(dirfd, side, 0);
}

int names_link_seal(const struct names *n, const uint8_t *dirid, const char *name,
		    const char *target, char *stored)
{
	struct siv_ad ad[2] = {{dirid, NAMES_DIRID_LEN}, {name, strlen(name)}};
	size_t len = strlen(target);
	uint8_t *sealed;
	int ret;

	if (!n->encrypted) {
		if (len > NAMES_TARGET_MAX)
			return -ENAMETOOLONG;
		memcpy(stored, target, len + 1);
		return 0;
	}
	if (len == 0)
		return -ENOENT; /* as symlink(2) says of an empty target */
	if ((4 * (SIV_TAG_LEN + len) + 2) / 3 > NAMES_TARGET_MAX)
		return -ENAMETOOLONG;
	sealed = malloc(SIV_TAG_LEN + len);
	if (!sealed)
		return -ENOMEM;
	ret = key_seal(n, K_LINK, ad, 2, target, len, sealed);
	if (ret == 0)
		names_b64_encode(sealed, SIV_TAG_LEN + len, stored);
	free(sealed);
	return ret;
}

int names_link_open(const struct names *n, const uint8_t *dirid, const char *name,
		    const char *stored, char *target)
{
	struct siv_ad ad[2] = {{dirid, NAMES_DIRID_LEN}, {name, strlen(name)}};
	uint8_t *sealed;
	long len;
	int ret = -EBADMSG;

	if (!n->encrypted) {
		memcpy(target, stored, strlen(stored) + 1);
		return 0;
	}
	sealed = malloc(NAMES_TARGET_MAX);
	if (!sealed)
		return -ENOMEM;
	len = names_b64_decode(stored, sealed, NAMES_TARGET_MAX);
	if (len > SIV_TAG_LEN && key_open(n, K_LINK, ad, 2, sealed, (size_t)len, target) == 0) {
		target[len - SIV_TAG_LEN] = '\0';
		ret = memchr(target, '\0', (size_t)len - SIV_TAG_LEN) ? -EBADMSG : 0;
	}
	free(sealed);
	return ret;
}

size_t names_link_size(const struct names *n, size_t stored_len)
{
	size_t sealed = stored_len * 3 / 4;

	if (!n->encrypted)
		return stored_len;
	return sealed > SIV_TAG_LEN ? sealed - SIV_TAG_LEN : 0;
}

/* Version-2 separators: b64(ID) TARGET_SEP b64(S), or b64(ID) TARGET_SEP TARGET_SEP length. */
#define TARGET_SEP '.'

void names_link_store_name(const uint8_t *id, char *out)
{
	names_b64_encode(id, NAMES_LINK_ID_LEN, out);
}

/* The decimal length of an external target: 1 .. NAMES_TARGET_MAX, no leading zero. */
static int parse_length(const char *text, size_t *out)
{
	size_t v = 0, i;

	for (i = 0; i < 4 && text[i] >= '0' && text[i] <= '9'; i++)
		v = v * 10 + (size_t)(text[i] - '0');
	if (i == 0 || text[i] != '\0' || text[0] == '0' || v > NAMES_TARGET_MAX)
		return -EBADMSG;
	*out = v;
	return 0;
}

int names_target_parse(const char *stored, struct names_target *out)
{
	const char *sep = strchr(stored, TARGET_SEP);
	uint8_t id[NAMES_LINK_ID_LEN + 2];
	char id_text[NAMES_LINK_ID_TEXT + 1];
	size_t sealed_chars;

	memset(out, 0, sizeof(*out));
	if (!sep) {
		out->form = NAMES_TARGET_V1;
		return 0;
	}
	/* A version-2 target: the ID first, in its one canonical form. */
	if (sep - stored != NAMES_LINK_ID_TEXT)
		return -EBADMSG;
	memcpy(id_text, stored, NAMES_LINK_ID_TEXT);
	id_text[NAMES_LINK_ID_TEXT] = '\0';
	if (names_b64_decode(id_text, id, sizeof(id)) != NAMES_LINK_ID_LEN)
		return -EBADMSG;
	memcpy(out->id, id, NAMES_LINK_ID_LEN);
	if (sep[1] == TARGET_SEP) {
		out->form = NAMES_TARGET_EXTERNAL;
		return parse_length(sep + 2, &out->len);
	}
	sealed_chars = strlen(sep + 1);
	/* Whole base64url, and the length of a sealed 1 .. NAMES_TARGET_MAX bytes. */
	if (base64url_span(sep + 1) != sealed_chars ||
	    sealed_chars < BASE64URL_ENCODED_LEN(SIV_TAG_LEN + 1) ||
	    sealed_chars > BASE64URL_ENCODED_LEN(NAMES_TARGET_SEALED_MAX))
		return -EBADMSG;
	out->form = NAMES_TARGET_INLINE;
	out->len = sealed_chars * 3 / 4 - SIV_TAG_LEN;
	out->sealed = sep + 1;
	return 0;
}

int names_target_seal(const struct names *n, const uint8_t *id, const char *target,
		      char *stored, uint8_t *sealed, size_t *sealed_len)
{
	struct siv_ad ad = {id, NAMES_LINK_ID_LEN};
	size_t len = strlen(target);
	int ret;

	if (len == 0)
		return -ENOENT; /* as symlink(2) says of an empty target */
	if (len > NAMES_TARGET_MAX)
		return -ENAMETOOLONG;
	ret = key_seal(n, K_TARGET, &ad, 1, target, len, sealed);
	if (ret < 0)
		return ret;
	*sealed_len = SIV_TAG_LEN + len;
	names_link_store_name(id, stored);
	stored[NAMES_LINK_ID_TEXT] = TARGET_SEP;
	if (len <= NAMES_TARGET_INLINE_MAX)
		names_b64_encode(sealed, *sealed_len, stored + NAMES_LINK_ID_TEXT + 1);
	else
		snprintf(stored + NAMES_LINK_ID_TEXT + 1, NAMES_TARGET_MAX - NAMES_LINK_ID_TEXT,
			 "%c%zu", TARGET_SEP, len);
	return 0;
}

int names_target_open(const struct names *n, const struct names_target *t, const uint8_t *side,
		      size_t side_len, char *target)
{
	struct siv_ad ad = {t->id, NAMES_LINK_ID_LEN};
	uint8_t *sealed = NULL;
	const uint8_t *in = side;
	long len = (long)side_len;
	int ret = -EBADMSG;

	if (t->form == NAMES_TARGET_INLINE) {
		sealed = malloc(NAMES_TARGET_SEALED_MAX);
		if (!sealed)
			return -ENOMEM;
		len = names_b64_decode(t->sealed, sealed, NAMES_TARGET_SEALED_MAX);
		in = sealed;
	}
	/* The link says how long its target is (stat shows it): the store must agree. */
	if (t->form != NAMES_TARGET_V1 && len > SIV_TAG_LEN && (size_t)len == SIV_TAG_LEN + t->len &&
	    key_open(n, K_TARGET, &ad, 1, in, (size_t)len, target) == 0) {
		target[t->len] = '\0';
		ret = memchr(target, '\0', t->len) ? -EBADMSG : 0;
	}
	free(sealed);
	return ret;
}

bool names_xattr_is_user(const struct names *n, const char *name)
{
	return n->encrypted && strncmp(name, XATTR_USER, strlen(XATTR_USER)) == 0;
}

int names_xattr_name_seal(const struct names *n, const uint8_t *owner, const char *name,
			  char *out)
{
	struct siv_ad ad = {owner, NAMES_DIRID_LEN};
	const char *suffix = name + strlen(XATTR_USER);
	uint8_t sealed[SIV_TAG_LEN + NAMES_XATTR_NAME_MAX];
	size_t len = strlen(suffix);
	int ret;

	if (len == 0)
		return -EINVAL;
	if (strlen(XATTR_USER) + (4 * (SIV_TAG_LEN + len) + 2) / 3 > NAMES_XATTR_NAME_MAX)
		return -ERANGE;
	ret = key_seal(n, K_XATTR, &ad, 1, suffix, len, sealed);
	if (ret < 0)
		return ret;
	strcpy(out, XATTR_USER);
	names_b64_encode(sealed, SIV_TAG_LEN + len, out + strlen(XATTR_USER));
	return 0;
}

int names_xattr_name_open(const struct names *n, const uint8_t *owner, const char *stored,
			  char *out)
{
	struct siv_ad ad = {owner, NAMES_DIRID_LEN};
	uint8_t sealed[SIV_TAG_LEN + NAMES_XATTR_NAME_MAX];
	long len = names_b64_decode(stored + strlen(XATTR_USER), sealed, sizeof(sealed));
	size_t plen = strlen(XATTR_USER);

	if (len <= SIV_TAG_LEN || (size_t)len - SIV_TAG_LEN + plen > NAMES_XATTR_NAME_MAX)
		return -EBADMSG;
	strcpy(out, XATTR_USER);
	if (key_open(n, K_XATTR, &ad, 1, sealed, (size_t)len, out + plen) < 0)
		return -EBADMSG;
	out[plen + (size_t)len - SIV_TAG_LEN] = '\0';
	return memchr(out + plen, '\0', (size_t)len - SIV_TAG_LEN) ? -EBADMSG : 0;
}

int names_xattr_value_seal(const struct names *n, const uint8_t *owner, const char *name,
			   const void *value, size_t len, uint8_t *out)
{
	struct siv_ad ad[2] = {{owner, NAMES_DIRID_LEN}, {name, strlen(name)}};
	uint8_t *plain = malloc(len + 1);
	int ret;

	if (!plain)
		return -ENOMEM;
	/* The format byte keeps an empty value a non-empty, sealed message. */
	plain[0] = XATTR_VALUE_FORMAT;
	if (len)
		memcpy(plain + 1, value, len);
	ret = key_seal(n, K_XATTR, ad, 2, plain, len + 1, out);
	secmem_wipe(plain, len + 1);
	free(plain);
	return ret;
}

int names_xattr_value_open(const struct names *n, const uint8_t *owner, const char *name,
			   const uint8_t *stored, size_t len, void *out)
{
	struct siv_ad ad[2] = {{owner, NAMES_DIRID_LEN}, {name, strlen(name)}};
	uint8_t *plain;
	int ret = -EBADMSG;

	if (len < NAMES_XATTR_OVERHEAD)
		return -EBADMSG;
	plain = malloc(len - SIV_TAG_LEN);
	if (!plain)
		return -ENOMEM;
	if (key_open(n, K_XATTR, ad, 2, stored, len, plain) == 0 &&
	    plain[0] == XATTR_VALUE_FORMAT) {
		memcpy(out, plain + 1, len - NAMES_XATTR_OVERHEAD);
		ret = 0;
	}
	secmem_wipe(plain, len - SIV_TAG_LEN);
	free(plain);
	return ret;
}
