/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_NAMES_H
#define ENVELOPEFS_FS_NAMES_H

/*
 * The metadata codec: how names, symlink targets and user xattrs look on
 * the backing store (docs/FORMAT.md, "Names, symlink targets and xattrs").
 * Every name the daemon or the offline tools hand to the backing filesystem
 * goes through names_encode(), every backing name they show through
 * names_decode().  Nothing here knows about FUSE; the daemon and
 * envelopefsctl share it.
 *
 * Two modes, fixed per volume (volume.h, names = encrypted | plain):
 *
 *  - plain: identity names, targets and xattrs; only the volume's own
 *    files in the backing root (envelopefs.conf, the re-key journals in
 *    envelopefs.rekey) can be neither seen nor created.
 *  - encrypted: keys derived from the volume key (volkey.h):
 *      K_name   = HKDF-SHA256(volume key, salt = UUID, "envelopefs v1 names")
 *      K_link   = HKDF-SHA256(volume key, salt = UUID, "envelopefs v1 symlink targets")
 *      K_xattr  = HKDF-SHA256(volume key, salt = UUID, "envelopefs v1 xattrs")
 *      K_target = HKDF-SHA256(volume key, salt = UUID, "envelopefs v2 symlink targets")
 *    (64 bytes each, AES-256-SIV keys).  A name is
 *      base64url(SIV(K_name, AD = [directory ID], name))      (unpadded)
 *    and, when that is longer than NAMES_MAX, the entry is
 *      NAMES_LONG_PREFIX base64url(SHA-256(full encoded name))
 *    with a side record ENTRY NAMES_SIDE_SUFFIX, a symlink whose target is
 *    the full encoded name.  Every directory holds its random ID as the
 *    symlink NAMES_DIRID_ENTRY -> base64url(16 bytes).
 *
 * Invariant: in an encrypted directory every name the volume itself uses
 * contains a '.', which base64url never does, so no user name can collide
 * with one; and every such name is hidden from listings.
 *
 * Keys live in secmem and are wiped by names_destroy().
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NAMES_MAX 255
#define NAMES_DIRID_LEN 16
#define NAMES_KEY_LEN 32
/* base64url of SIV_TAG_LEN + NAMES_MAX bytes */
#define NAMES_FULL_MAX 362
#define NAMES_DIRID_ENTRY "envelopefs.dirid"
#define NAMES_LONG_PREFIX "envelopefs.long."
#define NAMES_SIDE_SUFFIX ".name"
/* Directories being made or removed: hidden, so a crash leaves no half. */
#define NAMES_TEMP_PREFIX "envelopefs.tmp."
/* Longest symlink target a backing filesystem stores, NUL excluded. */
#define NAMES_TARGET_MAX 4095
/* A version-2 symlink's random ID, and its base64url form (the store's file name). */
#define NAMES_LINK_ID_LEN 16
#define NAMES_LINK_ID_TEXT 22
/* The reserved directory in the backing root holding the sealed targets
 * that do not fit in their link (version 2): one file per link ID. */
#define NAMES_LINK_STORE "envelopefs.links"
/* Longest version-2 target stored in the link itself: ID "." b64(tag ‖ target) fits 4095. */
#define NAMES_TARGET_INLINE_MAX 3038
/* A sealed version-2 target: SIV tag, then the target. */
#define NAMES_TARGET_TAG 16
#define NAMES_TARGET_SEALED_MAX (NAMES_TARGET_TAG + NAMES_TARGET_MAX)
#define NAMES_XATTR_NAME_MAX 255
#define NAMES_XATTR_VALUE_MAX 65536
/* A sealed xattr value: SIV tag, a format byte, then the value. */
#define NAMES_XATTR_OVERHEAD 17

struct names;

/*
 * names_create - a codec.  @encrypted: derive the keys from @volume_key
 * (NAMES_KEY_LEN bytes) and @uuid (a scope's codec: @volume_key NULL, see
 * names_set_key); otherwise both may be NULL.
 * Returns 0 or -ENOMEM / -EIO.
 */
int names_create(bool encrypted, const uint8_t *volume_key, const uint8_t *uuid,
		 struct names **out);
void names_destroy(struct names *n);

/*
 * A key scope's codec (scopes.h) is made with @volume_key NULL: encrypted,
 * but without keys until names_set_key() derives them from the scope key,
 * exactly as from a volume key; names_forget_keys() wipes them again (the
 * scope is locked).  Both may run while other threads use the codec: a
 * seal or open meanwhile either sees the whole keys or none, and without
 * keys fails with -EACCES (an open: -EBADMSG, as for a forged name).
 * names_set_key returns 0 or -EIO.
 */
int names_set_key(struct names *n, const uint8_t *key, const uint8_t *uuid);
void names_forget_keys(struct names *n);

/*
 * A converting scope's codec (scope_convert.h): names_set_fallback makes
 * every open (names, targets, xattr names and values) that fails under @n's
 * keys try @fallback's (the volume's codec, which has none of its own), so
 * what the conversion has not reached yet still reads; seals stay @n's.
 * NULL ends it.  names_fallback - the codec set, or NULL.
 */
void names_set_fallback(struct names *n, const struct names *fallback);
const struct names *names_fallback(const struct names *n);
bool names_encrypted(const struct names *n);

/* The backing form of one plaintext name in one directory. */
struct backing_name {
	char entry[NAMES_MAX + 1];     /* the directory entry */
	char full[NAMES_FULL_MAX + 1]; /* long names: the side record's content; else "" */
};

static inline bool backing_name_is_long(const struct backing_name *b)
{
	return b->full[0] != '\0';
}

/*
 * names_encode - the backing form of @name in a directory with ID @dirid
 * (NULL in plain mode), @in_root telling whether it is the backing root.
 * Returns 0, -ENAMETOOLONG, -EINVAL (empty, or holds '/'), or -EPERM for a
 * name the volume reserves (plain mode: its own files in the root).
 */
int names_encode(const struct names *n, const uint8_t *dirid, bool in_root, const char *name,
		 struct backing_name *out);

/* What a backing entry is. */
enum names_entry {
	NAMES_ENTRY_SHORT,  /* an entry whose name is its own */
	NAMES_ENTRY_LONG,   /* a long-name entry: its name is in its side record */
	NAMES_ENTRY_HIDDEN, /* the volume's own (or "." and ".."): never shown */
};

enum names_entry names_classify(const struct names *n, bool in_root, const char *entry);

/*
 * names_decode - the plaintext name of backing entry @entry (@full: the
 * side record of a long entry, else NULL) into @out (NAMES_MAX + 1 bytes).
 * Returns 0, -ENOENT for a hidden entry, or -EBADMSG when the name (or the
 * side record) is not authentic for this directory.
 */
int names_decode(const struct names *n, const uint8_t *dirid, bool in_root, const char *entry,
		 const char *full, char *out);

/*
 * Per-directory IDs (encrypted mode).  names_dirid_read - the ID of the
 * directory @dirfd: -EIO when missing or malformed.  names_dirid_make -
 * give the directory @dirfd a fresh random ID (-EEXIST if it has one).
 */
int names_dirid_read(int dirfd, uint8_t id[NAMES_DIRID_LEN]);
int names_dirid_make(int dirfd);

/*
 * Long-name side records.  names_side_read - the side record of entry
 * @entry in @dirfd into @full (NAMES_FULL_MAX + 1): -EIO when missing or
 * malformed.  names_side_write - make it hold @b->full, durably (the
 * directory is fsynced) before the caller creates the entry, so that an
 * entry never exists without its record.  names_side_remove - remove it
 * (after its entry is gone); a missing record is not an error.
 */
int names_side_read(int dirfd, const char *entry, char *full);
int names_side_write(int dirfd, const struct backing_name *b);
void names_side_remove(int dirfd, const char *entry);

/*
 * Version-1 symlink targets: bound to the link's directory ID and plaintext
 * name.  names_link_seal - @stored (NAMES_TARGET_MAX + 1 bytes) for
 * @target; -ENAMETOOLONG when it would not fit.  names_link_open - the
 * target back into @target (NAMES_TARGET_MAX + 1); -EBADMSG when not
 * authentic.  In plain mode both copy.
 */
int names_link_seal(const struct names *n, const uint8_t *dirid, const char *name,
		    const char *target, char *stored);
int names_link_open(const struct names *n, const uint8_t *dirid, const char *name,
		    const char *stored, char *target);
/* names_link_size - the plaintext length of a version-1 target stored in @stored_len bytes. */
size_t names_link_size(const struct names *n, size_t stored_len);

/*
 * Version-2 symlink targets (encrypted names on a volume of format 2): bound
 * to a random link ID carried in the stored target, not to the link's name,
 * so the link renames and hard-links like any file.  With
 * S = SIV(K_target, AD = [ID], target) the stored target is
 *     b64(ID) "." b64(S)              inline, when at most NAMES_TARGET_MAX
 *     b64(ID) ".." decimal(length)    external: S is the file
 *                                     NAMES_LINK_STORE/b64(ID)
 * A version-1 target is pure base64url: the '.' tells them apart.
 */
enum names_target_form {
	NAMES_TARGET_V1,       /* bound to its name: names_link_open() */
	NAMES_TARGET_INLINE,   /* version 2, sealed in the link */
	NAMES_TARGET_EXTERNAL, /* version 2, sealed in the link store */
};

struct names_target {
	enum names_target_form form;
	uint8_t id[NAMES_LINK_ID_LEN]; /* version 2 */
	size_t len;                    /* the plaintext target's length */
	const char *sealed;            /* inline: b64(S), inside the parsed text */
};

/*
 * names_target_parse - what the stored target @stored (encrypted names) is;
 * @out->sealed points into @stored.  -EBADMSG for a version-2 form that is
 * malformed (not canonical, or a length out of range).
 */
int names_target_parse(const char *stored, struct names_target *out);

/*
 * names_target_seal - seal @target for link @id: @sealed (NAMES_TARGET_SEALED_MAX
 * bytes) gets S and *@sealed_len its length, @stored (NAMES_TARGET_MAX + 1)
 * the inline form when @target is at most NAMES_TARGET_INLINE_MAX bytes,
 * else the external one (the caller then stores @sealed first).
 * -ENOENT for an empty target, -ENAMETOOLONG past NAMES_TARGET_MAX.
 */
int names_target_seal(const struct names *n, const uint8_t *id, const char *target,
		      char *stored, uint8_t *sealed, size_t *sealed_len);

/*
 * names_target_open - the plaintext of parsed target @t into @target
 * (NAMES_TARGET_MAX + 1): an inline one from itself, an external one from
 * @side (@side_len bytes, its link-store file).  -EBADMSG when not authentic
 * or not of the length the link says.
 */
int names_target_open(const struct names *n, const struct names_target *t, const uint8_t *side,
		      size_t side_len, char *target);

/* names_link_store_name - the link-store file name of link @id (NAMES_LINK_ID_TEXT + 1). */
void names_link_store_name(const uint8_t *id, char *out);

/*
 * names_fsync_dir - fsync the directory @dirfd (which may be O_PATH, so it is
 * reopened): an entry just made in it is durable before anything needs it.
 */
int names_fsync_dir(int dirfd);

/*
 * Extended attributes.  Only the "user." namespace is encrypted; every
 * other name (system.posix_acl_*, security.*, trusted.*) passes through.
 * @owner is the ID of the file the attribute belongs to (a directory's ID,
 * a regular file's key-record file ID), so that a name or value copied
 * onto another file does not decrypt.
 *
 * names_xattr_is_user - true for a name this codec encrypts.
 * names_xattr_name_seal / _open - @out holds NAMES_XATTR_NAME_MAX + 1;
 *   -ERANGE when the sealed name would be too long, -EBADMSG when the
 *   stored one is not authentic.
 * names_xattr_value_seal - @out (@len + NAMES_XATTR_OVERHEAD bytes).
 * names_xattr_value_open - @out (@len - NAMES_XATTR_OVERHEAD bytes), bound
 *   to the plaintext attribute name @name; -EBADMSG when not authentic.
 */
bool names_xattr_is_user(const struct names *n, const char *name);
int names_xattr_name_seal(const struct names *n, const uint8_t *owner, const char *name,
			  char *out);
int names_xattr_name_open(const struct names *n, const uint8_t *owner, const char *stored,
			  char *out);
int names_xattr_value_seal(const struct names *n, const uint8_t *owner, const char *name,
			   const void *value, size_t len, uint8_t *out);
int names_xattr_value_open(const struct names *n, const uint8_t *owner, const char *name,
			   const uint8_t *stored, size_t len, void *out);

/*
 * The text form of sealed names, targets and xattr names: base64url without
 * padding (crypto/base64.h); @out holds 4 * ceil(@len / 3) + 1 bytes.
 */
size_t names_b64_encode(const uint8_t *in, size_t len, char *out);
/* Strict decode of the string @in (canonical only); returns the byte count or -EINVAL. */
long names_b64_decode(const char *in, uint8_t *out, size_t cap);

#endif
