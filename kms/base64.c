// SPDX-License-Identifier: MIT
/* Strict standard base64: see base64.h. */

#include "kms/base64.h"

#include <errno.h>

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	size_t i, o = 0;

	if (cap < BASE64_ENCODED_LEN(len) + 1)
		return -ENOSPC;
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		out[o++] = alphabet[v >> 18];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = alphabet[(v >> 6) & 63];
		out[o++] = alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);

		out[o++] = alphabet[v >> 18];
		out[o++] = alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < len ? alphabet[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	out[o] = '\0';
	return 0;
}

/* The 6-bit value of @c, or -1 if it is not in the alphabet. */
static int sextet(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
	size_t i, o = 0, pad = 0;

	if (len % 4)
		return -EBADMSG;
	if (len && in[len - 1] == '=')
		pad = len >= 2 && in[len - 2] == '=' ? 2 : 1;
	if (len / 4 * 3 - pad > cap)
		return -ENOSPC;
	for (i = 0; i < len; i += 4) {
		int s[4];
		uint32_t v;
		size_t k, last = i + 4 == len ? pad : 0;

		for (k = 0; k < 4; k++) {
			s[k] = k >= 4 - last ? 0 : sextet(in[i + k]);
			if (s[k] < 0)
				return -EBADMSG;
		}
		v = (uint32_t)s[0] << 18 | (uint32_t)s[1] << 12 | (uint32_t)s[2] << 6 | (uint32_t)s[3];
		/* Canonical form: the bits a padded group does not carry are zero. */
		if ((last == 1 && (v & 0xff)) || (last == 2 && (v & 0xffff)))
			return -EBADMSG;
		out[o++] = (uint8_t)(v >> 16);
		if (last < 2)
			out[o++] = (uint8_t)(v >> 8);
		if (last < 1)
			out[o++] = (uint8_t)v;
	}
	*out_len = o;
	return 0;
}
