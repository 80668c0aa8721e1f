/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_KMS_JSON_H
#define ENVELOPEFS_KMS_JSON_H

/*
 * A small strict JSON reader and writer for KMS request and response bodies.
 *
 * Reader: json_parse() checks a whole document against RFC 8259 (UTF-8 only,
 * no trailing commas, no leading zeros, no control characters in strings,
 * valid escapes and surrogate pairs, nothing after the value) and refuses
 * objects with a repeated name, so no two readers can disagree on what a
 * body says.  It does not recurse: nesting is tracked on a fixed stack of
 * JSON_MAX_DEPTH levels, and a document has at most JSON_MAX_TOKENS values
 * and JSON_MAX_LEN bytes.
 *
 * The parsed document keeps offsets into the caller's text, which must stay
 * alive and unchanged until json_free().  Nothing is copied: a string is
 * unescaped only when asked for, into the caller's buffer, so a response
 * holding a plaintext DEK leaves copies only where the caller puts them
 * (secmem).
 *
 * Paths name a value from the root: "data.plaintext",
 * "data.batch_results[3].ciphertext", "[0]" (root array), "" (the root).
 * Names containing '.', '[' or ']' cannot be addressed.
 *
 * Writer: struct json_writer fills a caller-supplied buffer (so a body that
 * holds secrets can live in secmem) and escapes every string it is given.
 * The first error sticks; json_writer_finish() reports it.
 *
 * Errors (negative errnos): -EBADMSG malformed text, -E2BIG a limit
 * exceeded, -ENOENT no value at the path, -EPROTO the value has another
 * type, -ENOSPC the caller's buffer is too small, -ERANGE a number does not
 * fit, -EINVAL bad arguments or a bad path, -ENOMEM.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 32
#define JSON_MAX_TOKENS 65536
#define JSON_MAX_LEN (4u << 20)

enum json_type {
	JSON_NULL,
	JSON_FALSE,
	JSON_TRUE,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

struct json_doc;

/* json_parse - validate @text (@len bytes, need not be NUL-terminated). 0 and *@out, or -errno. */
int json_parse(const char *text, size_t len, struct json_doc **out);
void json_free(struct json_doc *doc);

/* json_type_at - the type of the value at @path; -ENOENT if there is none. */
int json_type_at(const struct json_doc *doc, const char *path, enum json_type *type);

/*
 * json_get_string - unescape the string at @path into @buf (@cap bytes) and
 * NUL-terminate it; *@len (may be NULL) gets its length without the NUL.
 * A string holding U+0000 is refused (-EPROTO): callers use C strings.
 */
int json_get_string(const struct json_doc *doc, const char *path, char *buf, size_t cap,
		    size_t *len);

/* json_get_int - the integer at @path (no fraction or exponent); -ERANGE beyond int64. */
int json_get_int(const struct json_doc *doc, const char *path, int64_t *out);

/* json_get_bool - true/false at @path. */
int json_get_bool(const struct json_doc *doc, const char *path, bool *out);

/* json_array_len - number of elements of the array at @path. */
int json_array_len(const struct json_doc *doc, const char *path, size_t *n);

struct json_writer {
	char *buf;
	size_t cap;
	size_t len;
	int err;
	unsigned depth;
	bool need_comma[JSON_MAX_DEPTH + 1]; /* per level: an element was written */
	bool is_object[JSON_MAX_DEPTH + 1];  /* per level: members need a key */
	bool after_key;
};

/* json_writer_init - write into @buf (@cap bytes, NUL-terminated at the end). */
void json_writer_init(struct json_writer *w, char *buf, size_t cap);
void json_write_object_begin(struct json_writer *w);
void json_write_object_end(struct json_writer *w);
void json_write_array_begin(struct json_writer *w);
void json_write_array_end(struct json_writer *w);
/* json_write_key - a member name inside an object; the next write is its value. */
void json_write_key(struct json_writer *w, const char *key);
void json_write_string(struct json_writer *w, const char *s);
void json_write_string_n(struct json_writer *w, const char *s, size_t n);
void json_write_int(struct json_writer *w, int64_t v);
void json_write_bool(struct json_writer *w, bool v);
/*
 * json_writer_finish - 0 and *@len (may be NULL) when a complete document
 * was written, else the first error (-ENOSPC, -EINVAL for misuse: unbalanced
 * nesting, a value without a key in an object, a string that is not UTF-8).
 */
int json_writer_finish(struct json_writer *w, size_t *len);

#endif
