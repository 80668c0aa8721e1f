// SPDX-License-Identifier: MIT
/*
 * Strict JSON (RFC 8259) for KMS bodies: an iterative validating parser that
 * records one token per value, path lookups over those tokens, and a writer
 * into a caller-supplied buffer.  See kms/json.h for the contract.
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "kms/json.h"

/*
 * Objects with more members are refused: the repeated-name check compares
 * each name with the earlier ones of its object, and this bound keeps that
 * quadratic work small whatever a peer sends.
 */
#define JSON_MAX_MEMBERS 1024

/*
 * One parsed value.  For strings [start, end) is the raw text between the
 * quotes; for other scalars the literal itself.  Containers are followed by
 * their children in document order (objects: name token, value token,
 * name, value, ...), and @next is the index just past the whole subtree, so
 * walking siblings never recurses.
 */
struct json_tok {
	uint8_t type;
	uint8_t escaped; /* string contains a backslash: compare after unescaping */
	uint32_t start;
	uint32_t end;
	uint32_t next;
	uint32_t count; /* array elements or object members */
};

struct json_doc {
	const char *text;
	size_t len;
	struct json_tok *toks;
	uint32_t ntok;
	uint32_t cap;
};

/* ---- UTF-8 ---- */

/* utf8_seq_len - length of the valid UTF-8 sequence at @p (at most @n bytes), or 0. */
static size_t utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char c = p[0];
	size_t len, i;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF) {
		len = 2;
		cp = c & 0x1F;
	} else if (c >= 0xE0 && c <= 0xEF) {
		len = 3;
		cp = c & 0x0F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		len = 4;
		cp = c & 0x07;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((p[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3F);
	}
	/* Overlong forms, UTF-16 surrogates and code points past U+10FFFF are not UTF-8. */
	if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
	    (cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return len;
}

static size_t utf8_put(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xC0 | (cp >> 6));
		out[1] = (char)(0x80 | (cp & 0x3F));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xE0 | (cp >> 12));
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
		out[2] = (char)(0x80 | (cp & 0x3F));
		return 3;
	}
	out[0] = (char)(0xF0 | (cp >> 18));
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
	out[3] = (char)(0x80 | (cp & 0x3F));
	return 4;
}

/* ---- parser ---- */

static int hex4(const char *p, uint32_t *v)
{
	uint32_t r = 0;
	int i;

	for (i = 0; i < 4; i++) {
		char c = p[i];

		r <<= 4;
		if (c >= '0' && c <= '9')
			r |= (uint32_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			r |= (uint32_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			r |= (uint32_t)(c - 'A' + 10);
		else
			return -1;
	}
	*v = r;
	return 0;
}

/*
 * read_escape - decode the escape at @p (just after the backslash, @n bytes
 * left) into a code point; *@used gets the bytes consumed after the
 * backslash.  Surrogate pairs must come as two \u escapes.
 */
static int read_escape(const char *p, size_t n, uint32_t *cp, size_t *used)
{
	uint32_t hi, lo;

	if (n < 1)
		return -EBADMSG;
	*used = 1;
	switch (p[0]) {
	case '"': *cp = '"'; return 0;
	case '\\': *cp = '\\'; return 0;
	case '/': *cp = '/'; return 0;
	case 'b': *cp = '\b'; return 0;
	case 'f': *cp = '\f'; return 0;
	case 'n': *cp = '\n'; return 0;
	case 'r': *cp = '\r'; return 0;
	case 't': *cp = '\t'; return 0;
	case 'u': break;
	default: return -EBADMSG;
	}
	if (n < 5 || hex4(p + 1, &hi) < 0)
		return -EBADMSG;
	*used = 5;
	if (hi >= 0xDC00 && hi <= 0xDFFF)
		return -EBADMSG; /* a low surrogate with no high one before it */
	if (hi < 0xD800 || hi > 0xDBFF) {
		*cp = hi;
		return 0;
	}
	if (n < 11 || p[5] != '\\' || p[6] != 'u' || hex4(p + 7, &lo) < 0 || lo < 0xDC00 ||
	    lo > 0xDFFF)
		return -EBADMSG;
	*used = 11;
	*cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
	return 0;
}

static int add_tok(struct json_doc *doc, enum json_type type, size_t start, uint32_t *idx)
{
	struct json_tok *t;

	if (doc->ntok == doc->cap) {
		uint32_t ncap = doc->cap ? doc->cap * 2 : 64;
		struct json_tok *n;

		if (doc->cap >= JSON_MAX_TOKENS)
			return -E2BIG;
		if (ncap > JSON_MAX_TOKENS)
			ncap = JSON_MAX_TOKENS;
		n = realloc(doc->toks, ncap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		doc->toks = n;
		doc->cap = ncap;
	}
	*idx = doc->ntok++;
	t = &doc->toks[*idx];
	memset(t, 0, sizeof(*t));
	t->type = (uint8_t)type;
	t->start = (uint32_t)start;
	t->end = (uint32_t)start;
	t->next = *idx + 1;
	return 0;
}

static int parse_string(struct json_doc *doc, size_t *pos)
{
	const char *s = doc->text;
	size_t p = *pos + 1, n = doc->len;
	uint32_t idx, cp;
	bool escaped = false;
	int rc;

	rc = add_tok(doc, JSON_STRING, p, &idx);
	if (rc < 0)
		return rc;
	while (p < n && s[p] != '"') {
		unsigned char c = (unsigned char)s[p];
		size_t used;

		if (c < 0x20)
			return -EBADMSG;
		if (c == '\\') {
			rc = read_escape(s + p + 1, n - p - 1, &cp, &used);
			if (rc < 0)
				return rc;
			escaped = true;
			p += 1 + used;
			continue;
		}
		used = utf8_seq_len((const unsigned char *)s + p, n - p);
		if (!used)
			return -EBADMSG;
		p += used;
	}
	if (p >= n)
		return -EBADMSG;
	doc->toks[idx].end = (uint32_t)p;
	doc->toks[idx].escaped = escaped;
	*pos = p + 1;
	return 0;
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static int parse_number(struct json_doc *doc, size_t *pos)
{
	const char *s = doc->text;
	size_t p = *pos, n = doc->len;
	uint32_t idx;
	int rc;

	if (p < n && s[p] == '-')
		p++;
	if (p < n && s[p] == '0') {
		p++;
	} else if (p < n && s[p] >= '1' && s[p] <= '9') {
		while (p < n && is_digit(s[p]))
			p++;
	} else {
		return -EBADMSG;
	}
	if (p < n && s[p] == '.') {
		p++;
		if (p >= n || !is_digit(s[p]))
			return -EBADMSG;
		while (p < n && is_digit(s[p]))
			p++;
	}
	if (p < n && (s[p] == 'e' || s[p] == 'E')) {
		p++;
		if (p < n && (s[p] == '+' || s[p] == '-'))
			p++;
		if (p >= n || !is_digit(s[p]))
			return -EBADMSG;
		while (p < n && is_digit(s[p]))
			p++;
	}
	rc = add_tok(doc, JSON_NUMBER, *pos, &idx);
	if (rc < 0)
		return rc;
	doc->toks[idx].end = (uint32_t)p;
	*pos = p;
	return 0;
}

static int parse_literal(struct json_doc *doc, size_t *pos)
{
	static const struct {
		const char *word;
		enum json_type type;
	} lits[] = { { "true", JSON_TRUE }, { "false", JSON_FALSE }, { "null", JSON_NULL } };
	size_t i;

	for (i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
		size_t wl = strlen(lits[i].word);
		uint32_t idx;
		int rc;

		if (doc->len - *pos >= wl && memcmp(doc->text + *pos, lits[i].word, wl) == 0) {
			rc = add_tok(doc, lits[i].type, *pos, &idx);
			if (rc < 0)
				return rc;
			doc->toks[idx].end = (uint32_t)(*pos + wl);
			*pos += wl;
			return 0;
		}
	}
	return -EBADMSG;
}

static void skip_ws(const struct json_doc *doc, size_t *pos)
{
	while (*pos < doc->len) {
		char c = doc->text[*pos];

		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		(*pos)++;
	}
}

/*
 * decode_string - unescape string token @t into @out (room for the raw
 * length, which is never shorter than the decoded one).  Returns the decoded
 * length.  The token was validated by parse_string, so escapes are sound.
 */
static size_t decode_string(const struct json_doc *doc, const struct json_tok *t, char *out)
{
	const char *s = doc->text;
	size_t p = t->start, o = 0;

	while (p < t->end) {
		uint32_t cp = 0;
		size_t used = 1;

		if (s[p] != '\\') {
			out[o++] = s[p++];
			continue;
		}
		read_escape(s + p + 1, t->end - p - 1, &cp, &used);
		o += utf8_put(cp, out + o);
		p += 1 + used;
	}
	return o;
}

static bool same_name(const struct json_doc *doc, const struct json_tok *a,
		      const struct json_tok *b, int *err)
{
	size_t la = a->end - a->start, lb = b->end - b->start, da, db;
	char *ba, *bb;
	bool same;

	if (!a->escaped && !b->escaped)
		return la == lb && memcmp(doc->text + a->start, doc->text + b->start, la) == 0;
	ba = malloc(la + 1);
	bb = malloc(lb + 1);
	if (!ba || !bb) {
		free(ba);
		free(bb);
		*err = -ENOMEM;
		return false;
	}
	da = decode_string(doc, a, ba);
	db = decode_string(doc, b, bb);
	same = da == db && memcmp(ba, bb, da) == 0;
	free(ba);
	free(bb);
	return same;
}

/* check_new_name - refuse a member name that @obj already has. */
static int check_new_name(const struct json_doc *doc, uint32_t obj, uint32_t name)
{
	uint32_t i = obj + 1;
	int err = 0;

	while (i < name) {
		if (same_name(doc, &doc->toks[i], &doc->toks[name], &err))
			return -EBADMSG;
		if (err)
			return err;
		i = doc->toks[i + 1].next;
	}
	return 0;
}

/*
 * parse_all - the iterative parser.  @stack holds the open containers; the
 * loop alternates between reading a value (or, in an object, a name and a
 * colon first) and reading what may follow a value: a comma, a closing
 * bracket, or the end of the text.
 */
static int parse_all(struct json_doc *doc)
{
	uint32_t stack[JSON_MAX_DEPTH];
	unsigned depth = 0;
	size_t pos = 0;
	int rc;

	skip_ws(doc, &pos);
	for (;;) {
		bool closed = false;
		uint32_t idx;
		char c;

		/* In an object a value is preceded by its name and a colon. */
		if (depth && doc->toks[stack[depth - 1]].type == JSON_OBJECT) {
			uint32_t obj = stack[depth - 1];

			if (pos >= doc->len || doc->text[pos] != '"')
				return -EBADMSG;
			if (doc->toks[obj].count >= JSON_MAX_MEMBERS)
				return -E2BIG;
			rc = parse_string(doc, &pos);
			if (rc < 0)
				return rc;
			rc = check_new_name(doc, obj, doc->ntok - 1);
			if (rc < 0)
				return rc;
			skip_ws(doc, &pos);
			if (pos >= doc->len || doc->text[pos] != ':')
				return -EBADMSG;
			pos++;
			skip_ws(doc, &pos);
		}
		if (depth)
			doc->toks[stack[depth - 1]].count++;
		if (pos >= doc->len)
			return -EBADMSG;
		c = doc->text[pos];
		if (c == '{' || c == '[') {
			if (depth == JSON_MAX_DEPTH)
				return -E2BIG;
			rc = add_tok(doc, c == '{' ? JSON_OBJECT : JSON_ARRAY, pos, &idx);
			if (rc < 0)
				return rc;
			stack[depth++] = idx;
			pos++;
			skip_ws(doc, &pos);
			if (pos < doc->len && doc->text[pos] == (c == '{' ? '}' : ']')) {
				pos++;
				closed = true;
			} else {
				continue;
			}
		} else if (c == '"') {
			rc = parse_string(doc, &pos);
		} else if (c == '-' || is_digit(c)) {
			rc = parse_number(doc, &pos);
		} else {
			rc = parse_literal(doc, &pos);
		}
		if (rc < 0)
			return rc;

		/* After a value: close containers until a comma starts the next value. */
		for (;;) {
			struct json_tok *top;

			if (closed) {
				top = &doc->toks[stack[--depth]];
				top->next = doc->ntok;
				top->end = (uint32_t)pos;
				closed = false;
			}
			skip_ws(doc, &pos);
			if (depth == 0)
				return pos == doc->len ? 0 : -EBADMSG;
			if (pos >= doc->len)
				return -EBADMSG;
			top = &doc->toks[stack[depth - 1]];
			c = doc->text[pos++];
			if (c == ',') {
				skip_ws(doc, &pos);
				break;
			}
			if (c != (top->type == JSON_OBJECT ? '}' : ']'))
				return -EBADMSG;
			closed = true;
		}
	}
}

int json_parse(const char *text, size_t len, struct json_doc **out)
{
	struct json_doc *doc;
	int rc;

	if (!text || !out)
		return -EINVAL;
	if (len > JSON_MAX_LEN)
		return -E2BIG;
	doc = calloc(1, sizeof(*doc));
	if (!doc)
		return -ENOMEM;
	doc->text = text;
	doc->len = len;
	rc = parse_all(doc);
	if (rc < 0) {
		json_free(doc);
		return rc;
	}
	*out = doc;
	return 0;
}

void json_free(struct json_doc *doc)
{
	if (!doc)
		return;
	free(doc->toks);
	free(doc);
}

/* ---- lookup ---- */

static bool name_is(const struct json_doc *doc, const struct json_tok *t, const char *name,
		    size_t n)
{
	char small[256];
	char *buf;
	size_t len;
	bool same;

	if (!t->escaped)
		return (size_t)(t->end - t->start) == n &&
		       memcmp(doc->text + t->start, name, n) == 0;
	len = t->end - t->start;
	buf = len < sizeof(small) ? small : malloc(len + 1);
	if (!buf)
		return false;
	same = decode_string(doc, t, buf) == n && memcmp(buf, name, n) == 0;
	if (buf != small)
		free(buf);
	return same;
}

/* find - the token index at @path, or -ENOENT / -EINVAL (bad path syntax). */
static int find(const struct json_doc *doc, const char *path, uint32_t *out)
{
	uint32_t cur = 0;
	const char *p = path;

	if (!doc || !path || doc->ntok == 0)
		return -EINVAL;
	while (*p) {
		const struct json_tok *t = &doc->toks[cur];
		uint32_t i;

		if (*p == '[') {
			char *end;
			unsigned long k;

			if (!is_digit(p[1]))
				return -EINVAL;
			k = strtoul(p + 1, &end, 10);
			if (*end != ']')
				return -EINVAL;
			p = end + 1;
			if (t->type != JSON_ARRAY || k >= t->count)
				return -ENOENT;
			for (i = cur + 1; k > 0; k--)
				i = doc->toks[i].next;
			cur = i;
		} else {
			size_t n;

			if (*p == '.' && p != path)
				p++;
			n = strcspn(p, ".[");
			if (n == 0 || strchr(p, ']') == p)
				return -EINVAL;
			if (t->type != JSON_OBJECT)
				return -ENOENT;
			for (i = cur + 1; i < t->next; i = doc->toks[i + 1].next)
				if (name_is(doc, &doc->toks[i], p, n))
					break;
			if (i >= t->next)
				return -ENOENT;
			cur = i + 1;
			p += n;
		}
	}
	*out = cur;
	return 0;
}

int json_type_at(const struct json_doc *doc, const char *path, enum json_type *type)
{
	uint32_t i;
	int rc = find(doc, path, &i);

	if (rc < 0)
		return rc;
	*type = (enum json_type)doc->toks[i].type;
	return 0;
}

int json_get_string(const struct json_doc *doc, const char *path, char *buf, size_t cap,
		    size_t *len)
{
	const struct json_tok *t;
	size_t raw, n;
	uint32_t i;
	int rc;

	if (!buf || cap == 0)
		return -EINVAL;
	rc = find(doc, path, &i);
	if (rc < 0)
		return rc;
	t = &doc->toks[i];
	if (t->type != JSON_STRING)
		return -EPROTO;
	raw = t->end - t->start;
	if (!t->escaped) {
		if (raw + 1 > cap)
			return -ENOSPC;
		memcpy(buf, doc->text + t->start, raw);
		n = raw;
	} else {
		/* The decoded form is never longer than the raw one; decode in place only if it fits. */
		char *tmp;

		if (raw + 1 <= cap) {
			n = decode_string(doc, t, buf);
		} else {
			tmp = malloc(raw);
			if (!tmp)
				return -ENOMEM;
			n = decode_string(doc, t, tmp);
			if (n + 1 <= cap)
				memcpy(buf, tmp, n);
			/* Escaped strings in KMS bodies can be secrets: wipe the scratch copy. */
			OPENSSL_cleanse(tmp, raw);
			free(tmp);
			if (n + 1 > cap)
				return -ENOSPC;
		}
		if (memchr(buf, '\0', n))
			return -EPROTO;
	}
	buf[n] = '\0';
	if (len)
		*len = n;
	return 0;
}

int json_get_int(const struct json_doc *doc, const char *path, int64_t *out)
{
	const struct json_tok *t;
	int64_t v = 0;
	bool neg;
	uint32_t i, p;
	int rc;

	rc = find(doc, path, &i);
	if (rc < 0)
		return rc;
	t = &doc->toks[i];
	if (t->type != JSON_NUMBER)
		return -EPROTO;
	p = t->start;
	neg = doc->text[p] == '-';
	if (neg)
		p++;
	for (; p < t->end; p++) {
		int d;

		if (!is_digit(doc->text[p]))
			return -EPROTO; /* a fraction or an exponent */
		d = doc->text[p] - '0';
		/* Accumulate negatively so INT64_MIN fits. */
		if (v < (INT64_MIN + d) / 10)
			return -ERANGE;
		v = v * 10 - d;
	}
	if (!neg && v == INT64_MIN)
		return -ERANGE;
	*out = neg ? v : -v;
	return 0;
}

int json_get_bool(const struct json_doc *doc, const char *path, bool *out)
{
	uint32_t i;
	int rc = find(doc, path, &i);

	if (rc < 0)
		return rc;
	if (doc->toks[i].type != JSON_TRUE && doc->toks[i].type != JSON_FALSE)
		return -EPROTO;
	*out = doc->toks[i].type == JSON_TRUE;
	return 0;
}

int json_array_len(const struct json_doc *doc, const char *path, size_t *n)
{
	uint32_t i;
	int rc = find(doc, path, &i);

	if (rc < 0)
		return rc;
	if (doc->toks[i].type != JSON_ARRAY)
		return -EPROTO;
	*n = doc->toks[i].count;
	return 0;
}

/* ---- writer ---- */

void json_writer_init(struct json_writer *w, char *buf, size_t cap)
{
	memset(w, 0, sizeof(*w));
	w->buf = buf;
	w->cap = cap;
	if (!buf || cap == 0)
		w->err = -EINVAL;
	else
		buf[0] = '\0';
}

static void put(struct json_writer *w, const char *s, size_t n)
{
	if (w->err)
		return;
	if (w->len + n + 1 > w->cap) {
		w->err = -ENOSPC;
		return;
	}
	memcpy(w->buf + w->len, s, n);
	w->len += n;
	w->buf[w->len] = '\0';
}

/*
 * begin_value - the separator before a value: a comma after an earlier
 * sibling, nothing after a key.  Inside an object only json_write_key may
 * start an element.
 */
static void begin_value(struct json_writer *w, bool is_key)
{
	if (w->err)
		return;
	if (!is_key && !w->after_key && w->is_object[w->depth]) {
		w->err = -EINVAL; /* an object member without a name */
		return;
	}
	if (is_key && !w->is_object[w->depth]) {
		w->err = -EINVAL;
		return;
	}
	if (w->after_key) {
		if (is_key)
			w->err = -EINVAL;
		w->after_key = false;
		return;
	}
	if (w->depth == 0 && w->len > 0) {
		w->err = -EINVAL; /* a second top-level value */
		return;
	}
	if (w->need_comma[w->depth])
		put(w, ",", 1);
	w->need_comma[w->depth] = true;
}

static void write_escaped(struct json_writer *w, const char *s, size_t n)
{
	size_t i = 0;

	put(w, "\"", 1);
	while (i < n && !w->err) {
		unsigned char c = (unsigned char)s[i];
		size_t used;
		char esc[8];

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(w, esc, 2);
			i++;
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(w, esc, 6);
			i++;
		} else {
			used = utf8_seq_len((const unsigned char *)s + i, n - i);
			if (!used) {
				w->err = -EINVAL;
				return;
			}
			put(w, s + i, used);
			i += used;
		}
	}
	put(w, "\"", 1);
}

static void container_begin(struct json_writer *w, char open, bool object)
{
	begin_value(w, false);
	if (w->err)
		return;
	if (w->depth == JSON_MAX_DEPTH) {
		w->err = -E2BIG;
		return;
	}
	put(w, &open, 1);
	w->depth++;
	w->need_comma[w->depth] = false;
	w->is_object[w->depth] = object;
}

static void container_end(struct json_writer *w, char close)
{
	if (w->err)
		return;
	if (w->depth == 0 || w->after_key) {
		w->err = -EINVAL;
		return;
	}
	w->depth--;
	put(w, &close, 1);
}

void json_write_object_begin(struct json_writer *w)
{
	container_begin(w, '{', true);
}

void json_write_object_end(struct json_writer *w)
{
	container_end(w, '}');
}

void json_write_array_begin(struct json_writer *w)
{
	container_begin(w, '[', false);
}

void json_write_array_end(struct json_writer *w)
{
	container_end(w, ']');
}

void json_write_key(struct json_writer *w, const char *key)
{
	if (!key) {
		w->err = w->err ? w->err : -EINVAL;
		return;
	}
	begin_value(w, true);
	write_escaped(w, key, strlen(key));
	put(w, ":", 1);
	w->after_key = true;
}

void json_write_string_n(struct json_writer *w, const char *s, size_t n)
{
	if (!s) {
		w->err = w->err ? w->err : -EINVAL;
		return;
	}
	begin_value(w, false);
	write_escaped(w, s, n);
}

void json_write_string(struct json_writer *w, const char *s)
{
	json_write_string_n(w, s, s ? strlen(s) : 0);
}

void json_write_int(struct json_writer *w, int64_t v)
{
	char num[24];
	int n = snprintf(num, sizeof(num), "%" PRId64, v);

	begin_value(w, false);
	put(w, num, (size_t)n);
}

void json_write_bool(struct json_writer *w, bool v)
{
	begin_value(w, false);
	put(w, v ? "true" : "false", v ? 4 : 5);
}

int json_writer_finish(struct json_writer *w, size_t *len)
{
	if (w->err)
		return w->err;
	if (w->depth != 0 || w->after_key || w->len == 0)
		return -EINVAL;
	if (len)
		*len = w->len;
	return 0;
}
