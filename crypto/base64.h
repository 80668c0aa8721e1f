/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_BASE64_H
#define ENVELOPEFS_CRYPTO_BASE64_H

/*
 * The two base64 forms of RFC 4648, one codec:
 *  - base64_*: standard base64 (section 4, '=' padding), as the remote KMS
 *    APIs carry keys, blobs and contexts in JSON;
 *  - base64url_*: base64url without padding (section 5), the text form of
 *    encrypted names, symlink targets and xattr names on disk
 *    (docs/FORMAT.md).
 * The decoders are strict: no whitespace, padding (standard form only) only
 * at the end and only as much as the length needs, and the unused bits of
 * the last symbol must be zero, so every byte string has exactly one
 * accepted encoding.  Nothing allocates: callers holding a DEK pass secmem
 * buffers.
 */

#include <stddef.h>
#include <stdint.h>

/* BASE64_ENCODED_LEN - characters base64_encode() writes for @n bytes (no NUL). */
#define BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

/* BASE64URL_ENCODED_LEN - characters base64url_encode() writes for @n bytes (no NUL). */
#define BASE64URL_ENCODED_LEN(n) (((n) * 4 + 2) / 3)

/*
 * base64_encode - encode @len bytes of @in into @out (@cap bytes, room for
 * BASE64_ENCODED_LEN(@len) + 1 with the NUL).  Returns 0, or -ENOSPC.
 */
int base64_encode(const uint8_t *in, size_t len, char *out, size_t cap);

/*
 * base64_decode - decode @len characters of @in into @out (@cap bytes);
 * *@out_len gets the byte count.  Returns 0, -EBADMSG for anything but
 * canonical base64, or -ENOSPC.  On error @out may hold partial output,
 * which a caller decoding a secret wipes.
 */
int base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

/*
 * base64url_encode - encode @len bytes of @in into @out, which has room for
 * BASE64URL_ENCODED_LEN(@len) + 1 with the NUL.  Returns the character count.
 */
size_t base64url_encode(const uint8_t *in, size_t len, char *out);

/* base64url_span - how many characters at the start of @s are base64url symbols. */
size_t base64url_span(const char *s);

/* base64url_decode - as base64_decode(), for unpadded base64url. */
int base64url_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len);

#endif
