/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_KEYRING_H
#define ENVELOPEFS_KMS_KEYRING_H

/*
 * The local keyring file: numbered 256-bit master keys, one of them current
 * (docs/FORMAT.md, "Local keyring and local key wrapping").  All integers
 * big-endian.
 *
 *   off  len  field
 *   0    8    magic "EFSKEYRG"
 *   8    2    format version (1)
 *   10   2    flags: bit 0 = passphrase-protected; other bits must be 0
 *   12   16   keyring ID (random, fixed at creation)
 *   28   4    current version (one of the entries)
 *   32   4    entry count n (1 .. KEYRING_MAX_VERSIONS)
 *   36   4    scrypt log2 N  } passphrase keyrings only;
 *   40   4    scrypt r       } all zero in a plaintext keyring
 *   44   4    scrypt p       }
 *   48   16   scrypt salt    }
 *   64   12   GCM nonce      }
 *   76   36n  entries: version (4, strictly ascending, >= 1) || key (32)
 *             plaintext keyring: as is; passphrase keyring: AES-256-GCM
 *             ciphertext under scrypt(passphrase, salt, N, r, p), AAD =
 *             bytes [0, 76)
 *   76+36n    plaintext keyring: SHA-256 of bytes [0, 76+36n) (32 bytes)
 *             passphrase keyring: GCM tag (16 bytes)
 *
 * The file is exactly that long.  Every key, and the passphrase-derived key,
 * lives only in secmem; buffers that held them are wiped on every path.
 * Nothing here is thread-safe by itself: kms/local.c serialises access.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "kms/config.h" /* kms_errf(), which every kms/ module reaches through here */
#include "kms/kms.h"

#define KEYRING_MAGIC "EFSKEYRG"
#define KEYRING_FORMAT_VERSION 1
#define KEYRING_FLAG_PASSPHRASE 0x0001
#define KEYRING_KEY_LEN 32
#define KEYRING_ID_LEN 16
#define KEYRING_SALT_LEN 16
#define KEYRING_HEADER_LEN 76
#define KEYRING_ENTRY_LEN (4 + KEYRING_KEY_LEN)
#define KEYRING_MAX_VERSIONS 4096

/* scrypt defaults at creation, and the bounds a file must respect on load. */
#define KEYRING_SCRYPT_LOG2N 15
#define KEYRING_SCRYPT_R 8
#define KEYRING_SCRYPT_P 1
#define KEYRING_SCRYPT_MIN_LOG2N 10
#define KEYRING_SCRYPT_MAX_LOG2N 20
#define KEYRING_SCRYPT_MAX_R 32
#define KEYRING_SCRYPT_MAX_P 16
#define KEYRING_SCRYPT_MAX_MEM (256u << 20) /* 128 * r * N bytes */

/* Longest passphrase accepted from a file or the environment. */
#define KEYRING_MAX_PASSPHRASE 4096

struct keyring_kdf {
	uint32_t log2_n;
	uint32_t r;
	uint32_t p;
};

/* Identity of the file a keyring was read from, to notice a replacement. */
struct keyring_stamp {
	dev_t dev;
	ino_t ino;
	off_t size;
	int64_t mtime_ns;
};

struct keyring;

/*
 * keyring_create - create the keyring file @path (mode 0600, never replacing
 * an existing file: written to a temporary file, fsynced, then linked into
 * place and the directory fsynced) holding a fresh random key as version 1.
 * @pass/@pass_len: protect it with this passphrase, or NULL for a plaintext
 * keyring.  @kdf: scrypt parameters, NULL for the defaults.
 * Returns 0 and *@out (may be NULL if the caller only wants the file), or
 * -errno with a message in @err.
 */
int keyring_create(const char *path, const char *pass, size_t pass_len,
		   const struct keyring_kdf *kdf, struct keyring **out, char *err, size_t err_len);

/*
 * keyring_load - read and verify @path.  @pass is required for a
 * passphrase-protected keyring and ignored otherwise.  Returns 0 and *@out,
 * or -errno with a message naming the file and the fix:
 *   -ENOENT           no such file
 *   -EPERM            group or others may access it (chmod 600)
 *   -EBADMSG          truncated, corrupt, or hostile parameters
 *   -EPROTONOSUPPORT  written by a newer envelopefs
 *   -ENOKEY           passphrase-protected and no passphrase given
 *   -EKEYREJECTED     wrong passphrase (or a modified encrypted file)
 */
int keyring_load(const char *path, const char *pass, size_t pass_len, struct keyring **out,
		 char *err, size_t err_len);

/*
 * keyring_reload - re-read the file @kr was loaded from if it was replaced
 * (its struct keyring_stamp changed).  A passphrase keyring is decrypted
 * with the key derived at load time, so this works while the salt and scrypt
 * parameters are unchanged (keyring_rotate() keeps them).  The file must hold
 * the same keyring ID.  On failure @kr is left as it was.
 * *@changed (may be NULL) tells whether anything was re-read.
 * Returns 0 or -errno with a message in @err.
 */
int keyring_reload(struct keyring *kr, bool *changed, char *err, size_t err_len);

/*
 * keyring_rotate - add a fresh random key as version (highest + 1), make it
 * current, and replace the file atomically (temporary file, fsync, rename,
 * directory fsync) under an exclusive flock on the file.  Fails with
 * -ESTALE if the file changed since @kr was loaded: reload and retry.
 * *@version (may be NULL) receives the new version.  Returns 0 or -errno.
 */
int keyring_rotate(struct keyring *kr, uint32_t *version, char *err, size_t err_len);

/*
 * keyring_retire - remove @version (not the current one) from the keyring,
 * replacing the file as keyring_rotate() does.  Whatever is still wrapped
 * under that version can never be unwrapped again: the caller makes sure
 * nothing is.  Returns 0, -ENOENT (no such version), -EBUSY (the current
 * version), -ESTALE, or -errno; a message in @err.
 */
int keyring_retire(struct keyring *kr, uint32_t version, char *err, size_t err_len);

/*
 * keyring_shred - destroy the keyring file at @kr's path, every version in
 * it: overwrite it with random bytes, fsync, unlink, fsync its directory.
 * Refuses (-ESTALE) a file at that path that is not @kr's keyring (its ID).
 * @kr's keys in memory stay until keyring_free().  Copies elsewhere (a
 * backup), and blocks the file system or device keeps (copy-on-write,
 * journals, flash remapping), are beyond its reach.  0 or -errno, @err.
 */
int keyring_shred(struct keyring *kr, char *err, size_t err_len);

/* keyring_key - the key of @version, or NULL.  Valid until @kr changes. */
const uint8_t *keyring_key(const struct keyring *kr, uint32_t version);

uint32_t keyring_current(const struct keyring *kr);
const uint8_t *keyring_id(const struct keyring *kr);
bool keyring_has_passphrase(const struct keyring *kr);
const char *keyring_path(const struct keyring *kr);

/*
 * keyring_versions - copy up to @cap version numbers (ascending) to
 * @versions; returns how many the keyring holds (may exceed @cap).
 */
size_t keyring_versions(const struct keyring *kr, uint32_t *versions, size_t cap);

/*
 * keyring_changed - true when the file at @kr's path is no longer the one
 * last read or written (replaced, rewritten, or gone): time to reload.
 */
bool keyring_changed(const struct keyring *kr);

/* keyring_free - wipe and release (NULL is a no-op). */
void keyring_free(struct keyring *kr);

/*
 * keyring_passphrase - find the passphrase, first match wins:
 * @file (a --passphrase-file option or kms:passphrase_file setting, may be
 * NULL), the file named by $ENVELOPEFS_PASSPHRASE_FILE, $ENVELOPEFS_PASSPHRASE.
 * A file's content loses one trailing newline; $ENVELOPEFS_PASSPHRASE is
 * taken out of the environment (kms/envsecret.h).  Returns 0 with *@pass a
 * NUL-terminated secmem copy (free with keyring_passphrase_free()), or 0 with
 * *@pass NULL when no source is set, or -errno with a message.
 */
int keyring_passphrase(const char *file, char **pass, size_t *pass_len, char *err,
		       size_t err_len);
void keyring_passphrase_free(char *pass);

/*
 * Local key wrapping (kms/local.c).  Blob, KMS_LOCAL_BLOB_LEN bytes:
 *   version (4) || nonce (12) || AES-256-GCM(DEK) (32) || tag (16)
 * AAD = "envelopefs local wrap v1" || keyring ID (16) || version (4)
 *       || volume UUID (16) || file ID (16)
 */
#define KMS_LOCAL_BLOB_LEN (4 + 12 + KMS_DEK_LEN + 16)
#define KMS_LOCAL_REF_PREFIX "local:"

extern const struct kms_ops kms_local_ops;

/*
 * local_wrap_with_nonce - TEST-ONLY entry point for the docs/FORMAT.md test
 * vector: wrap @dek under @kek with a caller-chosen @nonce.  The provider
 * itself always draws a fresh random nonce.  Returns 0 or -errno.
 */
int local_wrap_with_nonce(const uint8_t kek[KEYRING_KEY_LEN],
			  const uint8_t keyring_id[KEYRING_ID_LEN], uint32_t version,
			  const uint8_t nonce[12], const struct kms_context *ctx,
			  const uint8_t dek[KMS_DEK_LEN], uint8_t blob[KMS_LOCAL_BLOB_LEN]);

/* local_unwrap_with_key - unwrap a blob under @kek.  0, -EBADMSG or -EINVAL. */
int local_unwrap_with_key(const uint8_t kek[KEYRING_KEY_LEN],
			  const uint8_t keyring_id[KEYRING_ID_LEN], const struct kms_context *ctx,
			  const uint8_t *blob, size_t blob_len, uint8_t dek[KMS_DEK_LEN]);

#endif
