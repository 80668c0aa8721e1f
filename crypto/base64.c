// SPDX-License-Identifier: MIT
/* Strict base64 and base64url: see base64.h. */

#include "crypto/base64.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* The two alphabets differ only in their last two symbols. */
static const char std_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* encode - @len bytes in @alphabet, '='-padded to whole quads when @pad; the character count. */
static size_t encode(const char *alphabet, bool pad, const uint8_t *in, size_t len, char *out)
{
	size_t i, o = 0;

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
		if (i + 1 < len)
			out[o++] = alphabet[(v >> 6) & 63];
		else if (pad)
			out[o++] = '=';
		if (pad)
			out[o++] = '=';
	}
	out[o] = '\0';
	return o;
}

/* The 6-bit value of @c in @alphabet, or -1 if it is not in it. */
static int sextet(const char *alphabet, char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == alphabet[62])
		return 62;
	if (c == alphabet[63])
		return 63;
	return -1;
}

/* decode - @len unpadded characters in @alphabet: see base64_decode(). */
static int decode(const char *alphabet, const char *in, size_t len, uint8_t *out, size_t cap,
		  size_t *out_len)
{
	size_t i, o = 0, rest = len % 4;
	uint32_t acc = 0;
	int bits = 0;

	/* One leftover character carries only 6 bits: never a whole byte. */
	if (rest == 1)
		return -EBADMSG;
	if (len / 4 * 3 + (rest ? rest - 1 : 0) > cap)
		return -ENOSPC;
	for (i = 0; i < len; i++) {
		int v = sextet(alphabet, in[i]);

		if (v < 0)
			return -EBADMSG;
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	/* Canonical form: the bits the last character does not carry into a byte are zero. */
	if (acc & ((1u << bits) - 1))
		return -EBADMSG;
	*out_len = o;
	return 0;
}

int base64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	if (cap < BASE64_ENCODED_LEN(len) + 1)
		return -ENOSPC;
	encode(std_alphabet, true, in, len, out);
	return 0;
}

int base64_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
	size_t pad = 0;

	if (len % 4)
		return -EBADMSG;
	/* At most two '=', at the very end: any other '=' is not in the alphabet. */
	while (pad < 2 && pad < len && in[len - 1 - pad] == '=')
		pad++;
	return decode(std_alphabet, in, len - pad, out, cap, out_len);
}

size_t base64url_encode(const uint8_t *in, size_t len, char *out)
{
	return encode(url_alphabet, false, in, len, out);
}

size_t base64url_span(const char *s)
{
	return strspn(s, url_alphabet);
}

int base64url_decode(const char *in, size_t len, uint8_t *out, size_t cap, size_t *out_len)
{
	return decode(url_alphabet, in, len, out, cap, out_len);
}
