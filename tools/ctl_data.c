// SPDX-License-Identifier: MIT
/*
 * envelopefsctl encrypt|decrypt: one backing file, offline, through the same
 * layout, record and block code the daemon uses.
 *
 * decrypt streams block by block and never writes a byte of a block that
 * failed to authenticate; it stops at the first bad block, naming it.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/block.h"
#include "crypto/random.h"
#include "crypto/record.h"
#include "crypto/secmem.h"
#include "fs/hoststate.h"
#include "fs/rollback.h"
#include "tools/ctl.h"
#include "tools/ctl_scope_offline.h"

/* The options encrypt and decrypt share. */
#define DATA_OPTIONS_HELP "Options:\n" DATA_OPTIONS_LIST
#define DATA_OPTIONS_LIST                                                                    \
	"  --keyring PATH          use this keyring instead of the volume's kms:keyring\n"    \
	"  --passphrase-file FILE  read the keyring passphrase from FILE\n"                   \
	"  -h, --help              show this help\n"                                          \
	"\n" CTL_PASSPHRASE_HELP

static const char encrypt_usage[] =
	"Usage: envelopefsctl encrypt [OPTIONS] BACKING BACKING-FILE\n"
	"\n"
	"Read plaintext from stdin and write it as a new encrypted backing file\n"
	"BACKING-FILE (which must not exist) of the volume in BACKING, with a fresh\n"
	"data key from the volume's KMS.  For recovery and import.\n"
	"\n"
	DATA_OPTIONS_HELP;

static const char decrypt_usage[] =
	"Usage: envelopefsctl decrypt [OPTIONS] BACKING BACKING-FILE\n"
	"       envelopefsctl decrypt [OPTIONS] --path BACKING PATH\n"
	"\n"
	"Write the plaintext of the encrypted backing file BACKING-FILE of the volume\n"
	"in BACKING to stdout; with --path, of the file at PATH inside the volume (its\n"
	"plaintext path, e.g. docs/report.txt: encrypted names are resolved with the\n"
	"volume key).  Every block is authenticated before any of its bytes\n"
	"is written; at the first bad block decrypt stops with exit status 3, naming\n"
	"the block, and stdout holds exactly the blocks before it.\n"
	"\n"
	"On a format-3 volume a file older than this host saw (put back by the\n"
	"storage) is refused with exit status 3, as the daemon answers EIO.\n"
	"\n"
	"Options:\n"
	"  --path                  the second argument is a plaintext path in the volume\n"
	"  --accept-rollback       decrypt a file older than this host saw all the same\n"
	"                          (this host's state is left as it is)\n"
	"  --state-dir DIR         this host's state (the daemon's state_dir)\n"
	DATA_OPTIONS_LIST;

struct data_args {
	const char *keyring;
	const char *pass_file;
	const char *backing;
	const char *file;
	const char *state_dir;
	bool by_path;
	bool accept_rollback;
};

static int parse_args(int argc, char **argv, const char *usage, struct data_args *a)
{
	static const struct option opts[] = {
		{ "keyring", required_argument, NULL, 'k' },
		{ "passphrase-file", required_argument, NULL, 'p' },
		{ "path", no_argument, NULL, 'P' },
		{ "accept-rollback", no_argument, NULL, 'A' },
		{ "state-dir", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(a, 0, sizeof(*a));
	optind = 0;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			a->keyring = optarg;
			break;
		case 'p':
			a->pass_file = optarg;
			break;
		case 'P':
			if (usage != decrypt_usage)
				return ctl_usage(usage, false);
			a->by_path = true;
			break;
		case 'A':
		case 'S':
			if (usage != decrypt_usage)
				return ctl_usage(usage, false);
			if (c == 'A')
				a->accept_rollback = true;
			else
				a->state_dir = optarg;
			break;
		case 'h':
			ctl_usage(usage, true);
			return -1; /* help shown: stop, exit 0 */
		default:
			return ctl_usage(usage, false);
		}
	}
	if (argc - optind != 2)
		return ctl_usage(usage, false);
	a->backing = argv[optind];
	a->file = argv[optind + 1];
	return CTL_OK;
}

/* unwrap_under - the DEK of @rec through @kms, checked against the record's MAC.  A CTL_* code. */
static int unwrap_under(struct ctl_volume *v, struct kms *kms, const char *file,
			const struct key_record *rec, uint8_t *dek)
{
	struct kms_context ctx;
	uint32_t blob_version;
	int rc;

	rc = kms_blob_version(kms, rec->wrapped, rec->wrapped_len, &blob_version);
	if (rc < 0 || blob_version != rec->key_version)
		return ctl_err(CTL_INTEGRITY,
			       "%s: the key record is corrupt (its wrapped key does not match "
			       "its key version)",
			       file);
	memcpy(ctx.volume_uuid, v->cfg.uuid, sizeof(ctx.volume_uuid));
	memcpy(ctx.file_id, rec->file_id, sizeof(ctx.file_id));
	rc = kms_unwrap(kms, &ctx, rec->wrapped, rec->wrapped_len, dek);
	if (rc == -EBADMSG)
		return ctl_err(CTL_INTEGRITY,
			       "%s: the key record does not unwrap for this volume and file: it "
			       "was tampered with, or copied from another file or volume",
			       file);
	if (rc == -ENOENT)
		return ctl_err(CTL_KEY,
			       "%s: master-key version %u is not in the volume's keyring: use "
			       "the keyring (or a backup) that holds it",
			       file, rec->key_version);
	if (rc < 0)
		return ctl_err(CTL_KEY, "%s: cannot unwrap the file key: %s", file,
			       kms_strerror(rc));
	rc = record_check_mac(rec, dek, v->cfg.uuid);
	if (rc == -EBADMSG)
		return ctl_err(CTL_INTEGRITY, "%s: the key record failed its MAC: it was "
			       "tampered with", file);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "%s: cannot check the key record: %s", file,
			       strerror(-rc));
	return CTL_OK;
}

/*
 * unwrap_record - the DEK of @rec through the volume's KMS, or for a file in
 * a key scope through the scope's (ctl_scope_offline.h).  A CTL_* code.
 */
static int unwrap_record(struct ctl_volume *v, const char *file, const struct key_record *rec,
			 uint8_t *dek)
{
	struct kms_pair keys = ctl_volume_keys(v);
	struct kms *kms = kms_pair_for(&keys, rec->key_ref), *scope = NULL;
	char err[1024];
	int rc;

	if (!kms) {
		rc = ctl_scope_kms(v, rec->key_ref, &scope, err, sizeof(err));
		if (rc == -ESRCH)
			return ctl_err(CTL_KEY,
				       "%s: the key record names master key '%s', but this volume "
				       "uses '%s': decrypt it with the volume (and keyring) it "
				       "belongs to", file, rec->key_ref, v->kms->key_ref);
		if (rc < 0)
			return ctl_err(rc == -EBADMSG ? CTL_INTEGRITY : CTL_KEY,
				       "%s: the KMS of its key scope (master key '%s') cannot "
				       "unwrap it: %s", file, rec->key_ref, err);
		kms = scope;
	}
	rc = unwrap_under(v, kms, file, rec, dek);
	kms_close(scope);
	return rc;
}

/*
 * decrypt_blocks - every block of @file to stdout.  @holes: a version-2
 * record's hole ranges (an all-zero block outside them is tampering), or
 * NULL (version 1: every all-zero block is a hole).
 */
static int decrypt_blocks(const struct ctl_volume *v, const char *file, int fd,
			  uint64_t backing_size, const struct block_owner *owner,
			  const struct record_holes *holes)
{
	const struct layout *l = &v->layout;
	uint64_t plain = layout_plain_size(l, backing_size);
	uint64_t blocks = (plain + l->block_size - 1) / l->block_size, i;
	uint8_t *sealed = malloc(l->sealed_size), *out = malloc(l->block_size);
	int rc = CTL_OK;

	if (!sealed || !out) {
		rc = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	for (i = 0; i < blocks; i++) {
		uint64_t off = layout_block_offset(l, i);
		size_t len = backing_size - off < l->sealed_size ? (size_t)(backing_size - off)
								 : l->sealed_size;
		ssize_t n = pread(fd, sealed, len, (off_t)off);
		int err;

		if (n != (ssize_t)len) {
			rc = ctl_err(CTL_FAILED, "%s: cannot read block %llu: %s", file,
				     (unsigned long long)i, n < 0 ? strerror(errno) : "short read");
			goto out;
		}
		if (layout_is_hole(sealed, len) && holes && !record_holes_cover(holes, i, i + 1)) {
			rc = ctl_err(CTL_INTEGRITY,
				     "%s: block %llu (backing offset %llu) is all zeros where the file "
				     "has no hole: it was zeroed",
				     file, (unsigned long long)i, (unsigned long long)off);
			goto out;
		} else if (layout_is_hole(sealed, len)) {
			memset(out, 0, len - BLOCK_OVERHEAD);
			err = 0;
		} else {
			err = block_open(owner, i, sealed, len, out);
		}
		if (err == -EBADMSG) {
			rc = ctl_err(CTL_INTEGRITY,
				     "%s: block %llu (backing offset %llu) failed authentication: "
				     "the file is corrupt or was tampered with; the %llu bytes "
				     "before it were written",
				     file, (unsigned long long)i, (unsigned long long)off,
				     (unsigned long long)(i * l->block_size));
			goto out;
		}
		if (err < 0) {
			rc = ctl_err(CTL_FAILED, "%s: block %llu: %s", file, (unsigned long long)i,
				     strerror(-err));
			goto out;
		}
		err = ctl_write_full(STDOUT_FILENO, out, len - BLOCK_OVERHEAD);
		if (err < 0) {
			rc = ctl_err(CTL_FAILED, "cannot write to stdout: %s", strerror(-err));
			goto out;
		}
	}
out:
	if (out)
		secmem_wipe(out, l->block_size);
	free(out);
	free(sealed);
	return rc;
}

/* resolve_path - the backing file of the plaintext path a->file.  A CTL_* code. */
static int resolve_path(struct ctl_volume *v, const struct data_args *a, char *out, size_t cap)
{
	char backing[PATH_MAX];
	struct names *names = NULL;
	int rc;

	if (!realpath(a->backing, backing))
		return ctl_err(CTL_FAILED, "%s: %s", a->backing, strerror(errno));
	rc = ctl_volume_names(v, backing, &names);
	if (rc == CTL_OK)
		rc = ctl_resolve(v, &names, backing, a->file, out, cap);
	names_destroy(names);
	return rc;
}

/*
 * check_binding - on a format-3 volume, does the authenticated @rec of the
 * file at plaintext @path (backing file @file) list the entry @path names
 * (docs/FORMAT.md, "Entry bindings")?  A CTL_* code.
 */
static int check_binding(const struct ctl_volume *v, const char *path, const char *file,
			 const struct key_record *rec)
{
	uint8_t dirid[RECORD_BINDING_LEN] = {0}, entry[RECORD_BINDING_LEN];
	char parent[PATH_MAX];
	const char *name = strrchr(path, '/');
	char *slash;
	int dirfd, err = 0;

	if (!record_tags_v3(&v->cfg) || rec->bindings.n == 0)
		return CTL_OK;
	name = name ? name + 1 : path;
	snprintf(parent, sizeof(parent), "%s", file);
	slash = strrchr(parent, '/');
	if (slash)
		*slash = '\0';
	if (v->cfg.names_encrypted) {
		dirfd = open(slash ? parent : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		err = dirfd < 0 ? -errno : names_dirid_read(dirfd, dirid);
		if (dirfd >= 0)
			close(dirfd);
	}
	if (err == 0)
		err = record_binding_of(dirid, name, entry);
	if (err < 0)
		return ctl_err(CTL_INTEGRITY, "%s: cannot tell the entry it was reached by: %s",
			       path, strerror(-err));
	if (!record_bindings_has(&rec->bindings, entry))
		return ctl_err(CTL_INTEGRITY, "%s: its key record binds it to other names: the "
			       "backing file was moved, swapped or replaced", path);
	return CTL_OK;
}

/*
 * check_version - on a format-3 volume, is the authenticated @rec of @file
 * at least the version this host saw (docs/FORMAT.md, "File versions")?
 * The daemon answers EIO to one below: exit 3, unless --accept-rollback.
 * A CTL_* code.
 */
static int check_version(const struct ctl_volume *v, const struct data_args *a,
			 const char *file, const struct key_record *rec)
{
	struct rollback_table *t;
	char root[PATH_MAX];
	uint64_t seen;
	bool behind;

	if (!record_tags_v3(&v->cfg))
		return CTL_OK;
	if (hoststate_root(a->state_dir, root, sizeof(root)) < 0) {
		fprintf(stderr, "envelopefsctl decrypt: no state directory for this host (give "
			"--state-dir DIR): %s is not checked for a rollback\n", file);
		return CTL_OK;
	}
	t = malloc(sizeof(*t));
	if (!t || rollback_table_at(root, v->cfg.uuid, t) < 0) {
		free(t);
		return ctl_err(CTL_FAILED, "cannot name this host's file versions under %s", root);
	}
	behind = rollback_table_rolled_back(t, rec, &seen);
	free(t);
	if (!behind)
		return CTL_OK;
	if (a->accept_rollback) {
		fprintf(stderr, "envelopefsctl decrypt: %s: version %llu, older than the %llu this "
			"host saw: decrypted all the same (--accept-rollback)\n", file,
			(unsigned long long)rec->file_version, (unsigned long long)seen);
		return CTL_OK;
	}
	return ctl_err(CTL_INTEGRITY, "%s: the file is at version %llu and this host saw version "
		       "%llu: the storage put an older copy back (--accept-rollback decrypts it "
		       "all the same)", file, (unsigned long long)rec->file_version,
		       (unsigned long long)seen);
}

int cmd_decrypt(int argc, char **argv)
{
	const char *plain_path = NULL;
	char resolved[PATH_MAX];
	struct key_record *rec = NULL;
	struct block_owner owner;
	struct ctl_volume v;
	struct data_args a;
	uint8_t *dek = NULL;
	struct stat sb;
	uint64_t data, rest;
	int fd = -1, rc;

	rc = parse_args(argc, argv, decrypt_usage, &a);
	if (rc != CTL_OK)
		return rc < 0 ? CTL_OK : rc;
	rc = ctl_volume_open(a.backing, a.keyring, a.pass_file, true, &v);
	if (rc != CTL_OK)
		return rc;
	if (a.by_path) {
		rc = resolve_path(&v, &a, resolved, sizeof(resolved));
		if (rc != CTL_OK)
			goto out;
		plain_path = a.file;
		a.file = resolved;
	}
	fd = open(a.file, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0) {
		rc = ctl_err(CTL_FAILED, "cannot open %s: %s", a.file, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = ctl_err(CTL_FAILED, "%s is not a regular file", a.file);
		goto out;
	}
	if (sb.st_size == 0 && v.layout.placement == PLACEMENT_HEADER)
		goto out; /* a new, empty file: no record, no content */

	data = (uint64_t)sb.st_size > v.layout.data_offset ? (uint64_t)sb.st_size -
								     v.layout.data_offset
							   : 0;
	rest = data % v.layout.sealed_size;
	if (rest && rest <= BLOCK_OVERHEAD) {
		rc = ctl_err(CTL_INTEGRITY,
			     "%s: the last %llu bytes are too short to be a block: the file is "
			     "truncated or corrupt",
			     a.file, (unsigned long long)rest);
		goto out;
	}
	rec = malloc(sizeof(*rec));
	if (!rec) {
		rc = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	rc = layout_read_record(&v.layout, fd, rec, NULL);
	if (rc == -ENODATA && sb.st_size == 0) {
		rc = CTL_OK; /* xattr placement: an empty file without a record */
		goto out;
	}
	if (rc == -ENODATA || rc == -EBADMSG) {
		rc = ctl_err(CTL_INTEGRITY,
			     "%s: the key record is %s: the file is corrupt or was tampered "
			     "with",
			     a.file, rc == -ENODATA ? "missing" : "corrupt");
		goto out;
	}
	if (rc < 0) {
		rc = ctl_err(CTL_FAILED, "%s: cannot read the key record: %s", a.file,
			     strerror(-rc));
		goto out;
	}
	dek = secmem_alloc(KMS_DEK_LEN);
	if (!dek) {
		rc = ctl_err(CTL_FAILED, "no locked memory for the file key");
		goto out;
	}
	rc = unwrap_record(&v, a.file, rec, dek);
	if (rc == CTL_OK && plain_path)
		rc = check_binding(&v, plain_path, a.file, rec);
	if (rc == CTL_OK)
		rc = check_version(&v, &a, plain_path ? plain_path : a.file, rec);
	if (rc != CTL_OK)
		goto out;
	owner = (struct block_owner){ .key = dek, .volume_uuid = v.cfg.uuid,
				      .file_id = rec->file_id };
	rc = decrypt_blocks(&v, a.file, fd, (uint64_t)sb.st_size, &owner,
			    rec->version == 2 ? &rec->holes : NULL);
out:
	secmem_free(dek, KMS_DEK_LEN);
	block_thread_wipe();
	free(rec);
	if (fd >= 0)
		close(fd);
	ctl_volume_close(&v);
	return rc;
}

/* new_record - a fresh DEK and the key record that wraps it.  A CTL_* code. */
static int new_record(struct ctl_volume *v, const char *file, struct key_record *rec,
		      uint8_t *dek)
{
	struct kms_context ctx;
	size_t blob_len;
	int rc;

	memset(rec, 0, sizeof(*rec));
	rec->version = v->layout.record_version;
	rc = crypto_random(rec->file_id, sizeof(rec->file_id));
	if (rc < 0)
		return ctl_err(CTL_FAILED, "cannot draw a file ID: %s", strerror(-rc));
	memcpy(ctx.volume_uuid, v->cfg.uuid, sizeof(ctx.volume_uuid));
	memcpy(ctx.file_id, rec->file_id, sizeof(ctx.file_id));
	rc = kms_generate(v->kms, &ctx, dek, rec->wrapped, sizeof(rec->wrapped), &blob_len,
			  &rec->key_version);
	if (rc < 0)
		return ctl_err(CTL_KEY, "%s: cannot make a file key: %s", file, kms_strerror(rc));
	rec->wrapped_len = (uint16_t)blob_len;
	snprintf(rec->key_ref, sizeof(rec->key_ref), "%s", v->kms->key_ref);
	rc = record_seal_mac(rec, dek, v->cfg.uuid);
	if (rc < 0)
		return ctl_err(CTL_FAILED, "%s: cannot seal the key record: %s", file,
			       strerror(-rc));
	return CTL_OK;
}

static int encrypt_stream(struct ctl_volume *v, const char *file, int fd)
{
	const struct layout *l = &v->layout;
	struct record_pos pos = { .seq = 0, .slot = -1 };
	struct key_record *rec = malloc(sizeof(*rec));
	uint8_t *plain = malloc(l->block_size), *sealed = malloc(l->sealed_size);
	uint8_t *dek = secmem_alloc(KMS_DEK_LEN);
	struct block_owner owner;
	size_t got;
	uint64_t i;
	int rc, err;

	if (!rec || !plain || !sealed || !dek) {
		rc = ctl_err(CTL_FAILED, "out of memory");
		goto out;
	}
	err = ctl_read_full(STDIN_FILENO, plain, l->block_size, &got);
	if (err < 0) {
		rc = ctl_err(CTL_FAILED, "cannot read stdin: %s", strerror(-err));
		goto out;
	}
	if (got == 0) {
		rc = CTL_OK; /* an empty file has no record, as the daemon makes it */
		goto out;
	}
	rc = new_record(v, file, rec, dek);
	if (rc != CTL_OK)
		goto out;
	err = layout_write_record(l, fd, rec, &pos);
	if (err < 0) {
		rc = ctl_err(CTL_FAILED, "%s: cannot write the key record: %s", file,
			     strerror(-err));
		goto out;
	}
	owner = (struct block_owner){ .key = dek, .volume_uuid = v->cfg.uuid,
				      .file_id = rec->file_id };
	for (i = 0; got > 0; i++) {
		err = block_seal(&owner, i, plain, got, sealed);
		if (err == 0)
			err = pwrite(fd, sealed, got + BLOCK_OVERHEAD,
				     (off_t)layout_block_offset(l, i)) ==
					      (ssize_t)(got + BLOCK_OVERHEAD)
				      ? 0
				      : -EIO;
		if (err < 0) {
			rc = ctl_err(CTL_FAILED, "%s: cannot write block %llu: %s", file,
				     (unsigned long long)i, strerror(-err));
			goto out;
		}
		if (got < l->block_size)
			break;
		err = ctl_read_full(STDIN_FILENO, plain, l->block_size, &got);
		if (err < 0) {
			rc = ctl_err(CTL_FAILED, "cannot read stdin: %s", strerror(-err));
			goto out;
		}
	}
out:
	secmem_free(dek, KMS_DEK_LEN);
	block_thread_wipe();
	if (plain)
		secmem_wipe(plain, l->block_size);
	free(plain);
	free(sealed);
	free(rec);
	return rc;
}

int cmd_encrypt(int argc, char **argv)
{
	struct ctl_volume v;
	struct data_args a;
	int fd, rc;

	rc = parse_args(argc, argv, encrypt_usage, &a);
	if (rc != CTL_OK)
		return rc < 0 ? CTL_OK : rc;
	rc = ctl_volume_open(a.backing, a.keyring, a.pass_file, true, &v);
	if (rc != CTL_OK)
		return rc;
	fd = open(a.file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		rc = ctl_err(CTL_FAILED, "cannot create %s: %s%s", a.file, strerror(errno),
			     errno == EEXIST ? " (encrypt never overwrites a file)" : "");
		ctl_volume_close(&v);
		return rc;
	}
	rc = encrypt_stream(&v, a.file, fd);
	if (rc == CTL_OK && fsync(fd) < 0)
		rc = ctl_err(CTL_FAILED, "cannot sync %s: %s", a.file, strerror(errno));
	close(fd);
	if (rc != CTL_OK)
		unlink(a.file); /* ours, and incomplete */
	ctl_volume_close(&v);
	return rc;
}
