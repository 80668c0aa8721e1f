/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_CRC32C_H
#define ENVELOPEFS_KMS_CRC32C_H

/*
 * CRC-32C (Castagnoli, RFC 3720 appendix B.4): the checksum Google Cloud
 * KMS puts beside every plaintext, ciphertext and AAD it sends or receives
 * (kms/gcp.c).  It catches corruption on the way, not tampering: the
 * authentication is the KMS's own AEAD.  crc32c("123456789") = 0xe3069283.
 */

#include <stddef.h>
#include <stdint.h>

uint32_t crc32c(const void *data, size_t len);

#endif
