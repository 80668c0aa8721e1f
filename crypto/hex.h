/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_CRYPTO_HEX_H
#define ENVELOPEFS_CRYPTO_HEX_H

/* Lowercase hexadecimal, the one text form of IDs in files, xattrs and output. */

#include <stddef.h>
#include <stdint.h>

/* hex_encode - @len bytes as 2 * @len lowercase digits plus a NUL in @out. */
void hex_encode(const uint8_t *in, size_t len, char *out);

/*
 * hex_decode - exactly 2 * @len lowercase hex digits, NUL-terminated, into
 * @out.  Returns 0 or -EINVAL (another length or character).
 */
int hex_decode(const char *hex, uint8_t *out, size_t len);

#endif
