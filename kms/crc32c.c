// SPDX-License-Identifier: MIT
/* CRC-32C, bitwise over a 256-entry table built once (kms/crc32c.h). */

#include "kms/crc32c.h"

#include <pthread.h>

/* The reflected Castagnoli polynomial. */
#define POLY 0x82f63b78u

static uint32_t table[256];
static pthread_once_t table_once = PTHREAD_ONCE_INIT;

static void table_init(void)
{
	uint32_t i, c;
	int k;

	for (i = 0; i < 256; i++) {
		c = i;
		for (k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
		table[i] = c;
	}
}

uint32_t crc32c(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint32_t c = 0xffffffffu;

	pthread_once(&table_once, table_init);
	while (len--)
		c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
	return c ^ 0xffffffffu;
}
