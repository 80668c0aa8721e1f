// SPDX-License-Identifier: MIT
/*
 * The local keyring file (layout in keyring.h and docs/FORMAT.md).
 *
 * A keyring is read whole into secmem, verified (SHA-256 for a plaintext
 * keyring, the GCM tag for a passphrase keyring) and only then decoded, so a
 * damaged file can never yield a key.  Updates never modify the file in
 * place: a temporary file is written, fsynced and renamed over it, and the
 * directory fsynced, so a crash leaves either the old or the new keyring.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/aead.h"
#include "crypto/bigendian.h"
#include "crypto/kdf.h"
#include "crypto/random.h"
#include "crypto/secmem.h"
#include "kms/config.h"
#include "kms/envsecret.h"
#include "kms/keyring.h"

#define KEYRING_SHA_TRAILER SHA256_LEN
#define KEYRING_TAG_TRAILER AEAD_TAG_LEN
#define KEYRING_MAX_FILE                                                                     \
	(KEYRING_HEADER_LEN + (size_t)KEYRING_MAX_VERSIONS * KEYRING_ENTRY_LEN + SHA256_LEN)
#define PASS_BUF_LEN (KEYRING_MAX_PASSPHRASE + 2)

struct keyring_entry {
	uint32_t version;
	uint8_t key[KEYRING_KEY_LEN];
};

struct keyring {
	char *path;
	uint16_t flags;
	uint8_t id[KEYRING_ID_LEN];
	uint32_t current;
	uint32_t count;
	struct keyring_entry *entries; /* secmem, count entries, ascending versions */
	struct keyring_kdf kdf;	       /* passphrase keyrings only */
	uint8_t salt[KEYRING_SALT_LEN];
	uint8_t *pkey;		       /* secmem: scrypt output, or NULL */
	struct keyring_stamp stamp;
};

static size_t entries_size(uint32_t count)
{
	return (size_t)count * sizeof(struct keyring_entry);
}

static size_t file_len(uint32_t count, uint16_t flags)
{
	return KEYRING_HEADER_LEN + (size_t)count * KEYRING_ENTRY_LEN +
	       ((flags & KEYRING_FLAG_PASSPHRASE) ? KEYRING_TAG_TRAILER : KEYRING_SHA_TRAILER);
}

static void stamp_of(const struct stat *st, struct keyring_stamp *out)
{
	out->dev = st->st_dev;
	out->ino = st->st_ino;
	out->size = st->st_size;
	out->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

static bool stamp_eq(const struct keyring_stamp *a, const struct keyring_stamp *b)
{
	return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
	       a->mtime_ns == b->mtime_ns;
}

static bool kdf_valid(const struct keyring_kdf *k)
{
	if (k->log2_n < KEYRING_SCRYPT_MIN_LOG2N || k->log2_n > KEYRING_SCRYPT_MAX_LOG2N)
		return false;
	if (k->r < 1 || k->r > KEYRING_SCRYPT_MAX_R || k->p < 1 || k->p > KEYRING_SCRYPT_MAX_P)
		return false;
	return ((uint64_t)128 * k->r << k->log2_n) <= KEYRING_SCRYPT_MAX_MEM;
}

static void release_fields(struct keyring *kr)
{
	secmem_free(kr->entries, entries_size(kr->count));
	kr->entries = NULL;
	kr->count = 0;
	secmem_free(kr->pkey, AEAD_KEY_LEN);
	kr->pkey = NULL;
}

void keyring_free(struct keyring *kr)
{
	if (!kr)
		return;
	release_fields(kr);
	free(kr->path);
	secmem_wipe(kr, sizeof(*kr));
	free(kr);
}

/*
 * read_file - read the keyring at @path into a secmem buffer after checking
 * that it is a regular file nobody but its owner may touch.
 */
static int read_file(const char *path, uint8_t **out, size_t *out_len, struct keyring_stamp *st,
		     char *err, size_t err_len)
{
	struct stat sb;
	uint8_t *buf = NULL;
	size_t len, done = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		if (rc == -ENOENT)
			return kms_errf(err, err_len, rc,
					"keyring %s does not exist: check the path, or create it "
					"with 'envelopefsctl keyring create %s'",
					path, path);
		return kms_errf(err, err_len, rc, "cannot open keyring %s: %s", path,
				strerror(-rc));
	}
	if (fstat(fd, &sb) < 0) {
		rc = kms_errf(err, err_len, -errno, "cannot stat keyring %s: %s", path,
			      strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = kms_errf(err, err_len, -EINVAL, "keyring %s is not a regular file", path);
		goto out;
	}
	if (sb.st_mode & 077) {
		rc = kms_errf(err, err_len, -EPERM,
			      "keyring %s is accessible by group or others (mode %04o): "
			      "run 'chmod 600 %s'",
			      path, (unsigned)(sb.st_mode & 07777), path);
		goto out;
	}
	if (sb.st_size < (off_t)file_len(1, KEYRING_FLAG_PASSPHRASE) ||
	    sb.st_size > (off_t)KEYRING_MAX_FILE) {
		rc = kms_errf(err, err_len, -EBADMSG,
			      "keyring %s is truncated or corrupt (%lld bytes): restore it "
			      "from backup",
			      path, (long long)sb.st_size);
		goto out;
	}
	len = (size_t)sb.st_size;
	buf = secmem_alloc(len);
	if (!buf) {
		rc = kms_errf(err, err_len, -ENOMEM, "no locked memory to read keyring %s", path);
		goto out;
	}
	while (done < len) {
		ssize_t n = read(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = kms_errf(err, err_len, -errno, "cannot read keyring %s: %s", path,
				      strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	if (done != len) {
		rc = kms_errf(err, err_len, -EBADMSG,
			      "keyring %s changed size while being read: retry", path);
		goto out;
	}
	stamp_of(&sb, st);
	*out = buf;
	*out_len = len;
	buf = NULL;
	rc = 0;
out:
	if (buf)
		secmem_free(buf, (size_t)sb.st_size);
	close(fd);
	return rc;
}

/*
 * decode_entries - turn verified plaintext entries into @kr->entries,
 * checking ascending versions and that the current version is present.
 */
static int decode_entries(const char *path, const uint8_t *p, struct keyring *kr, char *err,
			  size_t err_len)
{
	bool have_current = false;
	uint32_t i, prev = 0;

	kr->entries = secmem_alloc(entries_size(kr->count));
	if (!kr->entries)
		return kms_errf(err, err_len, -ENOMEM, "no locked memory for keyring %s", path);
	for (i = 0; i < kr->count; i++, p += KEYRING_ENTRY_LEN) {
		uint32_t v = get_be32(p);

		if (v <= prev) {
			secmem_free(kr->entries, entries_size(kr->count));
			kr->entries = NULL;
			return kms_errf(err, err_len, -EBADMSG,
					"keyring %s is corrupt (versions out of order): restore "
					"it from backup",
					path);
		}
		kr->entries[i].version = v;
		memcpy(kr->entries[i].key, p + 4, KEYRING_KEY_LEN);
		have_current |= v == kr->current;
		prev = v;
	}
	if (!have_current) {
		secmem_free(kr->entries, entries_size(kr->count));
		kr->entries = NULL;
		return kms_errf(err, err_len, -EBADMSG,
				"keyring %s is corrupt (current version %u missing): restore it "
				"from backup",
				path, kr->current);
	}
	return 0;
}

/*
 * parse - verify and decode the file image @buf into @kr (whose path is
 * set).  A passphrase keyring is opened with @reuse_pkey if @reuse matches the
 * file's salt and scrypt parameters (a reload), else with @pass.
 */
static int parse(struct keyring *kr, const uint8_t *buf, size_t len, const char *pass,
		 size_t pass_len, const struct keyring *reuse, char *err, size_t err_len)
{
	const char *path = kr->path;
	uint8_t digest[SHA256_LEN];
	uint8_t *plain = NULL;
	size_t body;
	uint16_t fver;
	int rc;

	if (len < KEYRING_HEADER_LEN || memcmp(buf, KEYRING_MAGIC, 8) != 0)
		return kms_errf(err, err_len, -EBADMSG,
				"%s is not an envelopefs keyring (bad magic) or is corrupt: "
				"restore it from backup",
				path);
	fver = get_be16(buf + 8);
	if (fver > KEYRING_FORMAT_VERSION)
		return kms_errf(err, err_len, -EPROTONOSUPPORT,
				"keyring %s has format version %u, newer than this envelopefs "
				"supports (%u): upgrade envelopefs",
				path, fver, KEYRING_FORMAT_VERSION);
	kr->flags = get_be16(buf + 10);
	memcpy(kr->id, buf + 12, KEYRING_ID_LEN);
	kr->current = get_be32(buf + 28);
	kr->count = get_be32(buf + 32);
	kr->kdf.log2_n = get_be32(buf + 36);
	kr->kdf.r = get_be32(buf + 40);
	kr->kdf.p = get_be32(buf + 44);
	memcpy(kr->salt, buf + 48, KEYRING_SALT_LEN);
	if (fver != KEYRING_FORMAT_VERSION || (kr->flags & ~KEYRING_FLAG_PASSPHRASE) ||
	    kr->count < 1 || kr->count > KEYRING_MAX_VERSIONS || len != file_len(kr->count, kr->flags))
		goto corrupt;
	body = (size_t)kr->count * KEYRING_ENTRY_LEN;

	if (!(kr->flags & KEYRING_FLAG_PASSPHRASE)) {
		static const uint8_t zero[KEYRING_HEADER_LEN - 36];

		rc = crypto_sha256(buf, KEYRING_HEADER_LEN + body, digest);
		if (rc < 0)
			return kms_errf(err, err_len, rc, "cannot hash keyring %s", path);
		if (!crypto_memeq(digest, buf + KEYRING_HEADER_LEN + body, SHA256_LEN) ||
		    memcmp(buf + 36, zero, sizeof(zero)) != 0)
			goto corrupt;
		kr->kdf = (struct keyring_kdf){ 0 };
		return decode_entries(path, buf + KEYRING_HEADER_LEN, kr, err, err_len);
	}

	if (!kdf_valid(&kr->kdf))
		return kms_errf(err, err_len, -EBADMSG,
				"keyring %s asks for scrypt parameters outside the accepted "
				"range (log2 N %u, r %u, p %u): the file is corrupt or hostile; "
				"restore it from backup",
				path, kr->kdf.log2_n, kr->kdf.r, kr->kdf.p);
	kr->pkey = secmem_alloc(AEAD_KEY_LEN);
	plain = secmem_alloc(body);
	if (!kr->pkey || !plain) {
		rc = kms_errf(err, err_len, -ENOMEM, "no locked memory for keyring %s", path);
		goto out;
	}
	if (reuse && reuse->pkey && reuse->kdf.log2_n == kr->kdf.log2_n &&
	    reuse->kdf.r == kr->kdf.r && reuse->kdf.p == kr->kdf.p &&
	    memcmp(reuse->salt, kr->salt, KEYRING_SALT_LEN) == 0) {
		memcpy(kr->pkey, reuse->pkey, AEAD_KEY_LEN);
	} else if (pass) {
		rc = crypto_scrypt(pass, pass_len, kr->salt, KEYRING_SALT_LEN, kr->kdf.log2_n,
				   kr->kdf.r, kr->kdf.p, kr->pkey, AEAD_KEY_LEN);
		if (rc < 0) {
			kms_errf(err, err_len, rc, "cannot derive the key of keyring %s: %s", path,
				 strerror(-rc));
			goto out;
		}
	} else {
		rc = kms_errf(err, err_len, reuse ? -EKEYREJECTED : -ENOKEY,
			      reuse ? "keyring %s was re-encrypted under new passphrase "
				      "parameters: restart with the passphrase"
				    : "keyring %s is passphrase-protected: give the passphrase in "
				      "ENVELOPEFS_PASSPHRASE, or in a file named by "
				      "ENVELOPEFS_PASSPHRASE_FILE, --passphrase-file or "
				      "kms:passphrase_file",
			      path);
		goto out;
	}
	rc = aead_open(kr->pkey, buf + 64, buf, KEYRING_HEADER_LEN, buf + KEYRING_HEADER_LEN, body,
		       buf + KEYRING_HEADER_LEN + body, plain);
	if (rc == -EBADMSG) {
		kms_errf(err, err_len, -EKEYREJECTED,
			 "cannot decrypt keyring %s: wrong passphrase, or the file was "
			 "modified (if the passphrase is right, restore the keyring from "
			 "backup)",
			 path);
		rc = -EKEYREJECTED;
		goto out;
	}
	if (rc < 0) {
		kms_errf(err, err_len, rc, "cannot decrypt keyring %s: %s", path, strerror(-rc));
		goto out;
	}
	rc = decode_entries(path, plain, kr, err, err_len);
out:
	secmem_free(plain, body);
	if (rc < 0) {
		secmem_free(kr->pkey, AEAD_KEY_LEN);
		kr->pkey = NULL;
	}
	return rc;
corrupt:
	return kms_errf(err, err_len, -EBADMSG,
			"keyring %s is truncated or corrupt (integrity check failed): restore "
			"it from backup",
			path);
}

/* encode - the file image of @kr, in secmem (*@len bytes). */
static int encode(const struct keyring *kr, uint8_t **out, size_t *out_len)
{
	size_t len = file_len(kr->count, kr->flags);
	size_t body = (size_t)kr->count * KEYRING_ENTRY_LEN;
	uint8_t *buf, *p;
	uint32_t i;
	int rc;

	buf = secmem_alloc(len);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, KEYRING_MAGIC, 8);
	put_be16(buf + 8, KEYRING_FORMAT_VERSION);
	put_be16(buf + 10, kr->flags);
	memcpy(buf + 12, kr->id, KEYRING_ID_LEN);
	put_be32(buf + 28, kr->current);
	put_be32(buf + 32, kr->count);
	p = buf + KEYRING_HEADER_LEN;
	for (i = 0; i < kr->count; i++, p += KEYRING_ENTRY_LEN) {
		put_be32(p, kr->entries[i].version);
		memcpy(p + 4, kr->entries[i].key, KEYRING_KEY_LEN);
	}
	if (kr->flags & KEYRING_FLAG_PASSPHRASE) {
		put_be32(buf + 36, kr->kdf.log2_n);
		put_be32(buf + 40, kr->kdf.r);
		put_be32(buf + 44, kr->kdf.p);
		memcpy(buf + 48, kr->salt, KEYRING_SALT_LEN);
		rc = crypto_random(buf + 64, AEAD_NONCE_LEN);
		if (rc == 0)
			rc = aead_seal(kr->pkey, buf + 64, buf, KEYRING_HEADER_LEN,
				       buf + KEYRING_HEADER_LEN, body, buf + KEYRING_HEADER_LEN,
				       buf + KEYRING_HEADER_LEN + body);
	} else {
		rc = crypto_sha256(buf, KEYRING_HEADER_LEN + body, buf + KEYRING_HEADER_LEN + body);
	}
	if (rc < 0) {
		secmem_free(buf, len);
		return rc;
	}
	*out = buf;
	*out_len = len;
	return 0;
}


/*
 * write_file - put @kr's image at kr->path via a temporary file in the same
 * directory.  @replace: rename over the old file; otherwise the file must
 * not exist yet (RENAME_NOREPLACE, or link() where that is unsupported).
 */
static int write_file(struct keyring *kr, bool replace, char *err, size_t err_len)
{
	const char *path = kr->path;
	uint8_t *buf = NULL;
	size_t len = 0, done = 0;
	struct stat sb;
	char *tmp;
	int fd = -1, rc;

	if (asprintf(&tmp, "%s.tmp-XXXXXX", path) < 0)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	rc = encode(kr, &buf, &len);
	if (rc < 0) {
		kms_errf(err, err_len, rc, "cannot encode keyring %s: %s", path, strerror(-rc));
		goto out_free;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = kms_errf(err, err_len, -errno, "cannot create a temporary file next to %s: %s",
			      path, strerror(errno));
		goto out_free;
	}
	if (fchmod(fd, 0600) < 0)
		goto io_error;
	while (done < len) {
		ssize_t n = write(fd, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto io_error;
		done += (size_t)n;
	}
	if (fsync(fd) < 0 || fstat(fd, &sb) < 0)
		goto io_error;
	if (replace) {
		if (rename(tmp, path) < 0)
			goto io_error;
	} else if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0) {
		if (errno != EINVAL && errno != ENOSYS)
			goto io_error;
		if (link(tmp, path) < 0)
			goto io_error;
		unlink(tmp);
	}
	stamp_of(&sb, &kr->stamp);
	rc = config_fsync_dir_of(path);
	if (rc < 0)
		kms_errf(err, err_len, rc, "keyring %s written, but its directory could not be "
			 "synced: %s", path, strerror(-rc));
	close(fd);
	fd = -1;
	goto out_free;
io_error:
	rc = -errno;
	if (rc == -EEXIST)
		kms_errf(err, err_len, rc, "keyring %s already exists: load it, or choose another "
			 "path", path);
	else
		kms_errf(err, err_len, rc, "cannot write keyring %s: %s", path, strerror(-rc));
	unlink(tmp);
out_free:
	if (fd >= 0)
		close(fd);
	secmem_free(buf, len);
	free(tmp);
	return rc;
}

static struct keyring *keyring_new(const char *path)
{
	struct keyring *kr = calloc(1, sizeof(*kr));

	if (!kr)
		return NULL;
	kr->path = strdup(path);
	if (!kr->path) {
		free(kr);
		return NULL;
	}
	return kr;
}

int keyring_create(const char *path, const char *pass, size_t pass_len,
		   const struct keyring_kdf *kdf, struct keyring **out, char *err, size_t err_len)
{
	static const struct keyring_kdf defaults = { KEYRING_SCRYPT_LOG2N, KEYRING_SCRYPT_R,
						     KEYRING_SCRYPT_P };
	struct keyring *kr;
	int rc;

	if (!path || !*path || (pass && !pass_len))
		return kms_errf(err, err_len, -EINVAL, "keyring_create: bad arguments");
	if (kdf && !kdf_valid(kdf))
		return kms_errf(err, err_len, -EINVAL,
				"scrypt parameters out of range (log2 N %u..%u, r <= %u, p <= %u, "
				"at most %u MiB)",
				KEYRING_SCRYPT_MIN_LOG2N, KEYRING_SCRYPT_MAX_LOG2N,
				KEYRING_SCRYPT_MAX_R, KEYRING_SCRYPT_MAX_P,
				KEYRING_SCRYPT_MAX_MEM >> 20);
	kr = keyring_new(path);
	if (!kr)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	kr->count = 1;
	kr->current = 1;
	kr->entries = secmem_alloc(entries_size(1));
	if (!kr->entries) {
		rc = kms_errf(err, err_len, -ENOMEM, "no locked memory for keyring %s", path);
		goto fail;
	}
	kr->entries[0].version = 1;
	rc = crypto_random(kr->id, KEYRING_ID_LEN);
	if (rc == 0)
		rc = crypto_random(kr->entries[0].key, KEYRING_KEY_LEN);
	if (rc == 0 && pass) {
		kr->flags = KEYRING_FLAG_PASSPHRASE;
		kr->kdf = kdf ? *kdf : defaults;
		kr->pkey = secmem_alloc(AEAD_KEY_LEN);
		rc = kr->pkey ? crypto_random(kr->salt, KEYRING_SALT_LEN) : -ENOMEM;
		if (rc == 0)
			rc = crypto_scrypt(pass, pass_len, kr->salt, KEYRING_SALT_LEN,
					   kr->kdf.log2_n, kr->kdf.r, kr->kdf.p, kr->pkey,
					   AEAD_KEY_LEN);
	}
	if (rc < 0) {
		kms_errf(err, err_len, rc, "cannot create keyring %s: %s", path, strerror(-rc));
		goto fail;
	}
	rc = write_file(kr, false, err, err_len);
	if (rc < 0)
		goto fail;
	if (out)
		*out = kr;
	else
		keyring_free(kr);
	return 0;
fail:
	keyring_free(kr);
	return rc;
}

int keyring_load(const char *path, const char *pass, size_t pass_len, struct keyring **out,
		 char *err, size_t err_len)
{
	struct keyring *kr;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	if (!path || !*path || !out)
		return kms_errf(err, err_len, -EINVAL, "keyring_load: bad arguments");
	kr = keyring_new(path);
	if (!kr)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	rc = read_file(path, &buf, &len, &kr->stamp, err, err_len);
	if (rc == 0)
		rc = parse(kr, buf, len, pass, pass_len, NULL, err, err_len);
	secmem_free(buf, len);
	if (rc < 0) {
		keyring_free(kr);
		return rc;
	}
	*out = kr;
	return 0;
}

int keyring_reload(struct keyring *kr, bool *changed, char *err, size_t err_len)
{
	struct keyring *fresh;
	struct keyring_stamp now;
	struct stat sb;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	if (changed)
		*changed = false;
	if (stat(kr->path, &sb) < 0)
		return kms_errf(err, err_len, -errno, "cannot stat keyring %s: %s", kr->path,
				strerror(errno));
	stamp_of(&sb, &now);
	if (stamp_eq(&now, &kr->stamp))
		return 0;
	fresh = keyring_new(kr->path);
	if (!fresh)
		return kms_errf(err, err_len, -ENOMEM, "out of memory");
	rc = read_file(kr->path, &buf, &len, &fresh->stamp, err, err_len);
	if (rc == 0)
		rc = parse(fresh, buf, len, NULL, 0, kr, err, err_len);
	secmem_free(buf, len);
	if (rc == 0 && memcmp(fresh->id, kr->id, KEYRING_ID_LEN) != 0)
		rc = kms_errf(err, err_len, -EINVAL,
			      "keyring %s was replaced by a different keyring: put the volume's "
			      "keyring back",
			      kr->path);
	if (rc < 0) {
		keyring_free(fresh);
		return rc;
	}
	release_fields(kr);
	kr->flags = fresh->flags;
	kr->current = fresh->current;
	kr->count = fresh->count;
	kr->entries = fresh->entries;
	kr->kdf = fresh->kdf;
	memcpy(kr->salt, fresh->salt, KEYRING_SALT_LEN);
	kr->pkey = fresh->pkey;
	kr->stamp = fresh->stamp;
	fresh->entries = NULL;
	fresh->count = 0;
	fresh->pkey = NULL;
	keyring_free(fresh);
	if (changed)
		*changed = true;
	return 0;
}

/*
 * Replace @kr's entries by @entries (@count of them, secmem, ownership taken
 * on success) with @current as the current version, and the file with them:
 * under an exclusive flock on the file, after making sure it is still the
 * one at the path and the one we loaded.  On failure @kr is unchanged and
 * @entries is left to the caller.
 */
static int replace_entries(struct keyring *kr, struct keyring_entry *entries, uint32_t count,
			   uint32_t current, char *err, size_t err_len)
{
	struct keyring_entry *old = kr->entries;
	uint32_t old_count = kr->count, old_current = kr->current;
	struct keyring_stamp held, at_path;
	struct stat sb;
	int fd, rc;

	fd = open(kr->path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kms_errf(err, err_len, -errno, "cannot open keyring %s: %s", kr->path,
				strerror(errno));
	if (flock(fd, LOCK_EX) < 0) {
		rc = kms_errf(err, err_len, -errno, "cannot lock keyring %s: %s", kr->path,
			      strerror(errno));
		goto out;
	}
	if (fstat(fd, &sb) < 0) {
		rc = kms_errf(err, err_len, -errno, "cannot stat keyring %s: %s", kr->path,
			      strerror(errno));
		goto out;
	}
	stamp_of(&sb, &held);
	if (stat(kr->path, &sb) < 0) {
		rc = kms_errf(err, err_len, -errno, "cannot stat keyring %s: %s", kr->path,
			      strerror(errno));
		goto out;
	}
	stamp_of(&sb, &at_path);
	if (!stamp_eq(&held, &kr->stamp) || !stamp_eq(&at_path, &kr->stamp)) {
		rc = kms_errf(err, err_len, -ESTALE,
			      "keyring %s changed since it was loaded (another rotation?): retry",
			      kr->path);
		goto out;
	}

	kr->entries = entries;
	kr->count = count;
	kr->current = current;
	rc = write_file(kr, true, err, err_len);
	if (rc < 0 && stamp_eq(&kr->stamp, &held)) {
		/* Nothing reached the path: keep the old state. */
		kr->entries = old;
		kr->count = old_count;
		kr->current = old_current;
		goto out;
	}
	/* Written (perhaps only the directory sync failed, which rc reports):
	 * the file now holds the new state, and so do we. */
	secmem_free(old, entries_size(old_count));
out:
	close(fd); /* drops the lock */
	return rc;
}

int keyring_rotate(struct keyring *kr, uint32_t *version, char *err, size_t err_len)
{
	uint32_t count = kr->count, next;
	struct keyring_entry *grown;
	int rc;

	if (count >= KEYRING_MAX_VERSIONS)
		return kms_errf(err, err_len, -ENOSPC, "keyring %s already holds %u versions",
				kr->path, KEYRING_MAX_VERSIONS);
	next = kr->entries[count - 1].version + 1;
	if (next == 0)
		return kms_errf(err, err_len, -EOVERFLOW, "keyring %s: no version number left",
				kr->path);
	grown = secmem_alloc(entries_size(count + 1));
	if (!grown)
		return kms_errf(err, err_len, -ENOMEM, "no locked memory for keyring %s", kr->path);
	memcpy(grown, kr->entries, entries_size(count));
	grown[count].version = next;
	rc = crypto_random(grown[count].key, KEYRING_KEY_LEN);
	if (rc < 0)
		kms_errf(err, err_len, rc, "cannot draw a new key: %s", strerror(-rc));
	else
		rc = replace_entries(kr, grown, count + 1, next, err, err_len);
	if (rc < 0 && kr->entries != grown)
		secmem_free(grown, entries_size(count + 1));
	else if (version)
		*version = next;
	return rc;
}

int keyring_retire(struct keyring *kr, uint32_t version, char *err, size_t err_len)
{
	uint32_t count = kr->count, kept = 0;
	struct keyring_entry *shrunk;
	int rc;

	if (!keyring_key(kr, version))
		return kms_errf(err, err_len, -ENOENT, "keyring %s holds no version %u", kr->path,
				version);
	if (version == kr->current)
		return kms_errf(err, err_len, -EBUSY,
				"version %u is the current version of keyring %s: rotate first",
				version, kr->path);
	shrunk = secmem_alloc(entries_size(count - 1));
	if (!shrunk)
		return kms_errf(err, err_len, -ENOMEM, "no locked memory for keyring %s", kr->path);
	for (uint32_t i = 0; i < count; i++)
		if (kr->entries[i].version != version)
			shrunk[kept++] = kr->entries[i];
	rc = replace_entries(kr, shrunk, kept, kr->current, err, err_len);
	if (rc < 0 && kr->entries != shrunk)
		secmem_free(shrunk, entries_size(count - 1));
	return rc;
}

/* dir_fsync - fsync the directory holding @path. */
static int dir_fsync(const char *path)
{
	char *dir = strdup(path), *slash;
	int fd, rc = 0;

	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		rc = -errno;
	if (fd >= 0)
		close(fd);
	free(dir);
	return rc;
}

int keyring_shred(struct keyring *kr, char *err, size_t err_len)
{
	uint8_t noise[4096], id[KEYRING_ID_LEN];
	int fd = open(kr->path, O_RDWR | O_NOFOLLOW | O_CLOEXEC), rc = 0;
	struct stat st;

	if (fd < 0)
		return kms_errf(err, err_len, -errno, "cannot open keyring %s: %s", kr->path,
				strerror(errno));
	/* Exclusive, as a rotation holds it: no replacement slips in meanwhile. */
	if (flock(fd, LOCK_EX) < 0 || fstat(fd, &st) < 0)
		rc = -errno;
	/* The keyring ID sits at offset 12 (keyring.h). */
	if (rc == 0 && pread(fd, id, sizeof(id), 12) != (ssize_t)sizeof(id))
		rc = -EIO;
	if (rc == 0 && memcmp(id, kr->id, sizeof(id)) != 0)
		rc = kms_errf(err, err_len, -ESTALE, "%s is not the keyring to shred (another "
			      "keyring ID): left alone", kr->path);
	for (off_t off = 0; rc == 0 && off < st.st_size; off += (off_t)sizeof(noise)) {
		size_t n = (size_t)(st.st_size - off) < sizeof(noise) ? (size_t)(st.st_size - off)
								      : sizeof(noise);

		rc = crypto_random(noise, n);
		if (rc == 0 && pwrite(fd, noise, n, off) != (ssize_t)n)
			rc = -EIO;
	}
	if (rc == 0 && fsync(fd) < 0)
		rc = -errno;
	if (rc == 0 && unlink(kr->path) < 0)
		rc = -errno;
	close(fd);
	if (rc == 0)
		rc = dir_fsync(kr->path);
	if (rc < 0 && rc != -ESTALE)
		kms_errf(err, err_len, rc, "cannot shred keyring %s: %s", kr->path, strerror(-rc));
	return rc;
}

const uint8_t *keyring_key(const struct keyring *kr, uint32_t version)
{
	uint32_t lo = 0, hi = kr->count;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (kr->entries[mid].version == version)
			return kr->entries[mid].key;
		if (kr->entries[mid].version < version)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

uint32_t keyring_current(const struct keyring *kr)
{
	return kr->current;
}

const uint8_t *keyring_id(const struct keyring *kr)
{
	return kr->id;
}

bool keyring_has_passphrase(const struct keyring *kr)
{
	return kr->flags & KEYRING_FLAG_PASSPHRASE;
}

const char *keyring_path(const struct keyring *kr)
{
	return kr->path;
}

size_t keyring_versions(const struct keyring *kr, uint32_t *versions, size_t cap)
{
	size_t i;

	for (i = 0; i < kr->count && i < cap; i++)
		versions[i] = kr->entries[i].version;
	return kr->count;
}

bool keyring_changed(const struct keyring *kr)
{
	struct keyring_stamp now;
	struct stat sb;

	if (stat(kr->path, &sb) < 0)
		return true;
	stamp_of(&sb, &now);
	return !stamp_eq(&now, &kr->stamp);
}

/* read_passphrase_file - @path's content minus one trailing newline. */
static int read_passphrase_file(const char *path, char *buf, size_t *len, char *err,
				size_t err_len)
{
	size_t done = 0;

	struct stat sb;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kms_errf(err, err_len, -errno, "cannot open passphrase file %s: %s", path,
				strerror(errno));
	/* The rule of the PIN, token and credentials files: a secret others may
	 * read is refused.  A pipe (--passphrase-file <(pass show ...)) is
	 * this process's alone. */
	if (fstat(fd, &sb) < 0 || !(S_ISREG(sb.st_mode) || S_ISFIFO(sb.st_mode))) {
		close(fd);
		return kms_errf(err, err_len, -EINVAL,
				"passphrase file %s is neither a regular file nor a pipe", path);
	}
	if (S_ISREG(sb.st_mode) && (sb.st_mode & (S_IRWXG | S_IRWXO))) {
		close(fd);
		return kms_errf(err, err_len, -EACCES,
				"passphrase file %s may be read by group or others: chmod 600 %s", path,
				path);
	}
	/* Read one byte more than a passphrase plus newline may take. */
	while (done < PASS_BUF_LEN) {
		ssize_t n = read(fd, buf + done, PASS_BUF_LEN - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int rc = -errno;

			close(fd);
			return kms_errf(err, err_len, rc, "cannot read passphrase file %s: %s",
					path, strerror(-rc));
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	close(fd);
	if (done && buf[done - 1] == '\n')
		done--;
	if (done > KEYRING_MAX_PASSPHRASE)
		return kms_errf(err, err_len, -EINVAL,
				"passphrase file %s is longer than %d bytes: is it the right file?",
				path, KEYRING_MAX_PASSPHRASE);
	if (!done)
		return kms_errf(err, err_len, -EINVAL, "passphrase file %s is empty", path);
	buf[done] = '\0';
	*len = done;
	return 0;
}

int keyring_passphrase(const char *file, char **pass, size_t *pass_len, char *err,
		       size_t err_len)
{
	char *buf;
	int rc = 0;

	*pass = NULL;
	*pass_len = 0;
	if (!file || !*file) {
		file = getenv("ENVELOPEFS_PASSPHRASE_FILE");
		if (file && !*file)
			file = NULL;
	}
	buf = secmem_alloc(PASS_BUF_LEN + 1);
	if (!buf)
		return kms_errf(err, err_len, -ENOMEM, "no locked memory for the passphrase");
	if (file) {
		rc = read_passphrase_file(file, buf, pass_len, err, err_len);
	} else {
		rc = envsecret_copy("ENVELOPEFS_PASSPHRASE", buf, KEYRING_MAX_PASSPHRASE + 1,
				    pass_len);
		if (rc == -ENOENT) {
			/* No passphrase anywhere: a keyring without one. */
			secmem_free(buf, PASS_BUF_LEN + 1);
			*pass_len = 0;
			return 0;
		}
		if (rc == -E2BIG)
			rc = kms_errf(err, err_len, -EINVAL,
				      "ENVELOPEFS_PASSPHRASE is longer than %d bytes",
				      KEYRING_MAX_PASSPHRASE);
		else if (rc < 0)
			rc = kms_errf(err, err_len, rc, "no locked memory for the passphrase");
	}
	if (rc < 0) {
		secmem_free(buf, PASS_BUF_LEN + 1);
		*pass_len = 0;
		return rc;
	}
	*pass = buf;
	return 0;
}

void keyring_passphrase_free(char *pass)
{
	secmem_free(pass, PASS_BUF_LEN + 1);
}
