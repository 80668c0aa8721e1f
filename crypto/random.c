// SPDX-License-Identifier: MIT
/* Kernel CSPRNG access (see random.h). */

#include "crypto/random.h"

#include <errno.h>
#include <stdint.h>
#include <sys/random.h>

/**
 * crypto_random - see random.h.  getrandom(2) may return fewer bytes than
 * asked (large requests, or a signal after the first 256 bytes) and may fail
 * with EINTR before the pool is ready; both are retried so the caller never
 * sees a partial fill.
 */
int crypto_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	ssize_t n;

	while (len > 0) {
		n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}
