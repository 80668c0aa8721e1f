// SPDX-License-Identifier: MIT
/*
 * libFuzzer target for volume_config_load(): the configuration file is the
 * first thing read from a backing directory someone else may control.
 *
 * The input is written to a memfd and loaded through /proc/self/fd/N, so
 * the loader sees a real path.  A configuration that loads must satisfy the
 * documented invariants (fs/volume.h); a refusal must come with a message.
 *
 * Seeds: ENVELOPEFS_FUZZ_SEEDS=DIR ./fuzz_config -runs=0 writes valid
 * configurations to DIR.
 */

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "volume.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static int write_all(int fd, const uint8_t *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct volume_config cfg;
	char path[64], err[512];
	int fd, ret;

	fd = memfd_create("envelopefs.conf", MFD_CLOEXEC);
	if (fd < 0)
		return 0;
	if (write_all(fd, data, size) != 0)
		goto out;
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);

	memset(&cfg, 0, sizeof(cfg));
	err[0] = '\0';
	ret = volume_config_load(path, &cfg, err, sizeof(err));
	assert(strnlen(err, sizeof(err)) < sizeof(err));
	if (ret != 0) {
		assert(ret == -EINVAL || ret == -EPROTONOSUPPORT || ret == -ENOENT ||
		       ret == -ENOMEM || ret == -EIO);
		assert(err[0] != '\0');
		goto out;
	}
	assert(cfg.format_version >= VOLUME_FORMAT_MIN &&
	       cfg.format_version <= VOLUME_FORMAT_VERSION);
	assert(cfg.block_size >= VOLUME_MIN_BLOCK && cfg.block_size <= VOLUME_MAX_BLOCK);
	assert((cfg.block_size & (cfg.block_size - 1)) == 0);
	if (cfg.placement == PLACEMENT_HEADER)
		assert(cfg.header_size > 0 && cfg.header_size % 2 == 0);
	else
		assert(cfg.placement == PLACEMENT_XATTR && cfg.header_size == 0);
	assert(cfg.ini != NULL);
	volume_config_free(&cfg);
out:
	close(fd);
	return 0;
}

static const char *const seeds[] = {
	"[volume]\n"
	"format_version = 1\n"
	"uuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	"block_size = 4096\n"
	"key_records = header\n"
	"header_size = 512\n"
	"[kms]\n"
	"provider = local\n"
	"keyring = /etc/envelopefs/keyring\n",

	"[volume]\n"
	"format_version = 1\n"
	"uuid = 00000000-0000-4000-8000-000000000001\n"
	"block_size = 65536\n"
	"key_records = xattr\n"
	"[kms]\n"
	"provider = aws\n"
	"key_id = arn:aws:kms:eu-west-1:111122223333:key/1234abcd\n"
	"region = eu-west-1\n",

	"; a comment\n"
	"[volume]\n"
	"format_version=1\n"
	"uuid=ffffffff-ffff-ffff-ffff-ffffffffffff\n"
	"block_size=16384\n"
	"key_records=header\n"
	"header_size=13056\n"
	"[kms]\n"
	"provider=vault\n",

	"[volume]\n"
	"format_version = 2\n"
	"uuid = 6f1c2b7e-4a9d-4e21-b3c5-d8e9f0a1b2c3\n"
	"block_size = 8192\n"
	"key_records = header\n"
	"header_size = 256\n",
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *dir = getenv("ENVELOPEFS_FUZZ_SEEDS");
	char path[4096];
	size_t i;

	(void)argc;
	(void)argv;
	if (!dir)
		return 0;
	for (i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/config-%zu", dir, i);
		f = fopen(path, "w");
		if (!f)
			continue;
		fputs(seeds[i], f);
		fclose(f);
	}
	return 0;
}
