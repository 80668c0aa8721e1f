/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_FS_VOLEPOCH_H
#define ENVELOPEFS_FS_VOLEPOCH_H

/*
 * The volume epoch (docs/FORMAT.md, "Volume epoch"; docs/THREAT-MODEL.md,
 * "Rollback"): a counter in BACKING/VOLEPOCH_NAME, MACed under a key derived
 * from the volume key, raised at every mount and every clean unmount of a
 * format-3 volume that has a volume key.  Each host keeps the highest epoch
 * it raised the volume to (ROOT/<uuid>/VOLEPOCH_HOST_NAME, hoststate.h),
 * noted only once the file holding it is durable.  A volume whose epoch is
 * below that, or whose epoch file is gone or invalid where this host saw
 * one, was put back from an older copy: the mount is refused, unless the
 * user accepts it (-o accept_rollback), which starts this host's knowledge
 * over.
 *
 *   file = "EFEP" ‖ 0x01 ‖ epoch (8, big endian) ‖ MAC (32)
 *   K    = HKDF-SHA256(IKM = volume key, salt = volume UUID,
 *                      info = VOLEPOCH_INFO, L = 32)
 *   MAC  = HMAC-SHA256(K, file bytes [0, 13))
 *
 * The file is replaced crash-safely (VOLEPOCH_TMP written, fsynced,
 * renamed, directory fsynced) under an OFD lock on the volume key file,
 * which a raise never replaces: two hosts' raises never lose one, and
 * neither do an unmount's raise still running and the next mount's.
 *
 * Nothing here knows FUSE; the daemon and envelopefsctl share it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VOLEPOCH_NAME "envelopefs.epoch"
#define VOLEPOCH_TMP VOLEPOCH_NAME ".tmp"
#define VOLEPOCH_HOST_NAME "epoch"
#define VOLEPOCH_INFO "envelopefs v3 volume epoch"
#define VOLEPOCH_MAGIC "EFEP"
#define VOLEPOCH_HEAD_LEN 13
#define VOLEPOCH_LEN (VOLEPOCH_HEAD_LEN + 32)

/* volepoch_key - K of the volume with @volume_key (32 bytes) and @uuid.  0 or -EIO. */
int volepoch_key(const uint8_t *volume_key, const uint8_t uuid[16], uint8_t key[32]);

/* volepoch_encode - the file holding @epoch under @key.  0 or -EIO. */
int volepoch_encode(const uint8_t key[32], uint64_t epoch, uint8_t out[VOLEPOCH_LEN]);

/* volepoch_decode - the epoch of @len bytes @buf: 0, or -EBADMSG (malformed, MAC wrong). */
int volepoch_decode(const uint8_t key[32], const uint8_t *buf, size_t len, uint64_t *epoch);

/* volepoch_read - the epoch in @backing_fd's file: 0, -ENOENT, -EBADMSG, -errno. */
int volepoch_read(int backing_fd, const uint8_t key[32], uint64_t *epoch);

/*
 * volepoch_host_seen - the epoch this host noted for volume @uuid under
 * @state_root: 0, -ENOENT (none), -EBADMSG (not ours), -errno.
 */
int volepoch_host_seen(const char *state_root, const uint8_t uuid[16], uint64_t *seen);

struct volepoch;

/*
 * volepoch_open - the epoch of the volume at @backing (uuid @uuid, volume
 * key @volume_key, only K is kept, in locked memory) for this host's
 * state root @state_root; @lock: the OFD lock around raises is required
 * (several daemons on the volume), else taken where the backing has it.
 * 0 or -errno.
 */
int volepoch_open(const char *backing, const uint8_t uuid[16], const uint8_t *volume_key,
		  const char *state_root, bool lock, struct volepoch **out);

enum volepoch_raise {
	VOLEPOCH_MOUNT,	  /* refuse an epoch older than this host's */
	VOLEPOCH_ACCEPT,  /* -o accept_rollback: this host's epoch starts over */
	VOLEPOCH_UNMOUNT, /* a clean unmount */
};

/*
 * volepoch_raise - raise the volume's epoch by one (past this host's too)
 * and note it on this host once durable.  VOLEPOCH_MOUNT: -ESTALE, with
 * the reason in @err, when the volume looks restored from an older copy.
 * 0 or -errno (@err says what failed).
 */
int volepoch_raise(struct volepoch *e, enum volepoch_raise how, char *err, size_t err_len);

/* volepoch_close - wipe K.  NULL is a no-op. */
void volepoch_close(struct volepoch *e);

#endif
