/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_BASE64_H
#define ENVELOPEFS_KMS_BASE64_H

/*
 * Standard base64 (RFC 4648 section 4, with '=' padding), as the remote KMS
 * APIs carry keys, blobs and contexts in JSON.  The decoder is strict: no
 * whitespace, padding only at the end and only as much as the length needs,
 * and the unused bits of the last symbol must be zero, so every byte string
 * has exactly one accepted encoding.  Neither function allocates: callers
 * holding a DEK pass secmem buffers.
 */

#include <stddef.h>
#include <stdint.h>

/* BASE64_ENCODED_LEN - characters base64_encode() writes for @n bytes (no NUL). */
#define BASE64_ENCODED_LEN(n) (((n) + 2) / 3 * 4)

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

#endif
