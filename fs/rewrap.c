/* SPDX-License-Identifier: MIT */
/* Re-wrapping one key record: see rewrap.h. */
#include "rewrap.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/secmem.h"

struct kms *kms_pair_for(const struct kms_pair *p, const char *key_ref)
{
	if (p->current && strcmp(key_ref, p->current->key_ref) == 0)
		return p->current;
	if (p->previous && strcmp(key_ref, p->previous->key_ref) == 0)
		return p->previous;
	return NULL;
}

/*
 * fits - does @rec fit a slot of @l (always, with xattr placement)?  A
 * version-2 record needs the room of every item its volume's format allows.
 */
static bool fits(const struct layout *l, const struct key_record *rec)
{
	unsigned sized_as = rec->version == 2 ? l->format_version : 1;

	return l->placement != PLACEMENT_HEADER ||
	       slot_size_for_version(sized_as, strlen(rec->key_ref), rec->wrapped_len) <=
		       l->slot_size;
}

int rewrap_file(const struct layout *l, const struct kms_pair *keys,
		const uint8_t volume_uuid[16], int fd, const uint8_t *dek,
		struct rewrap_result *res)
{
	struct key_record *rec = malloc(sizeof(*rec));
	struct kms *from, *to = keys->current;
	struct record_pos pos;
	struct kms_context ctx;
	uint8_t *own_dek = NULL;
	size_t blob_len;
	uint32_t current;
	int ret;

	if (!rec)
		return -ENOMEM;
	ret = layout_read_record(l, fd, rec, &pos);
	if (ret < 0)
		goto out;
	memcpy(res->file_id, rec->file_id, sizeof(res->file_id));
	res->old_version = res->new_version = rec->key_version;
	res->moved = false;
	from = kms_pair_for(keys, rec->key_ref);
	if (!from) {
		ret = -ENOKEY;
		goto out;
	}
	if (from == to) {
		ret = kms_current_version(to, &current);
		if (ret < 0)
			goto out;
		if (rec->key_version == current) {
			ret = 1;
			goto out;
		}
	}

	memcpy(ctx.volume_uuid, volume_uuid, sizeof(ctx.volume_uuid));
	memcpy(ctx.file_id, rec->file_id, sizeof(ctx.file_id));
	if (!dek) {
		own_dek = secmem_alloc(KMS_DEK_LEN);
		if (!own_dek) {
			ret = -ENOMEM;
			goto out;
		}
		ret = kms_unwrap(from, &ctx, rec->wrapped, rec->wrapped_len, own_dek);
		if (ret < 0)
			goto out;
		dek = own_dek;
	}
	/* The old record must be authentic before its DEK is vouched for anew. */
	if (record_check_mac(rec, dek, volume_uuid) != 0) {
		ret = -EBADMSG;
		goto out;
	}
	/* Within one KMS the blob moves inside it; between two, the DEK is wrapped anew. */
	if (from == to)
		ret = kms_rewrap(to, &ctx, rec->wrapped, rec->wrapped_len, rec->wrapped,
				 sizeof(rec->wrapped), &blob_len, &rec->key_version);
	else
		ret = kms_wrap(to, &ctx, dek, rec->wrapped, sizeof(rec->wrapped), &blob_len,
			       &rec->key_version);
	if (ret < 0)
		goto out;
	rec->wrapped_len = (uint16_t)blob_len;
	snprintf(rec->key_ref, sizeof(rec->key_ref), "%s", to->key_ref);
	/* The header was sized for the old provider's records at init. */
	if (!fits(l, rec)) {
		ret = -EOVERFLOW;
		goto out;
	}
	ret = record_seal_mac(rec, dek, volume_uuid);
	if (ret == 0)
		ret = layout_write_record(l, fd, rec, &pos);
	if (ret == 0) {
		res->new_version = rec->key_version;
		res->moved = from != to;
	}
out:
	secmem_free(own_dek, KMS_DEK_LEN);
	free(rec);
	return ret;
}
