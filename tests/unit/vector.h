/* SPDX-License-Identifier: MIT */
#ifndef ENVELOPEFS_TESTS_VECTOR_H
#define ENVELOPEFS_TESTS_VECTOR_H

/*
 * Reading the ```vector blocks of a document under docs/ (format in
 * docs/FORMAT.md, "Test vectors"), for the unit tests of every module: each
 * block is `name = value` lines, byte strings in lowercase hex.  A line that
 * is not of that form, or does not fit, fails the running test.
 */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* unhex - @hex into @out (at most @cap bytes), *@len its length.  0, or -1 for bad hex. */
__attribute__((unused)) static int unhex(const char *hex, uint8_t *out, size_t cap, size_t *len)
{
	size_t n = strlen(hex), i;

	if (n % 2 || n / 2 > cap)
		return -1;
	for (i = 0; i < n / 2; i++) {
		unsigned x;

		if (sscanf(hex + 2 * i, "%2x", &x) != 1)
			return -1;
		out[i] = (uint8_t)x;
	}
	*len = n / 2;
	return 0;
}

#define VECTOR_MAX_FIELDS 16
#define VECTOR_MAX_VALUE 1024

struct vector {
	const char *doc;
	int line; /* of the opening fence */
	int n;
	char name[VECTOR_MAX_FIELDS][32];
	char value[VECTOR_MAX_FIELDS][VECTOR_MAX_VALUE];
};

/* vector_field - the value of @name, or NULL. */
__attribute__((unused)) static const char *vector_field(const struct vector *v, const char *name)
{
	int i;

	for (i = 0; i < v->n; i++)
		if (strcmp(v->name[i], name) == 0)
			return v->value[i];
	return NULL;
}

/* vector_hex - field @name decoded into @out, exactly @want bytes (0: any, length in *@len).  0 or -1. */
__attribute__((unused)) static int vector_hex(const struct vector *v, const char *name,
					      uint8_t *out, size_t cap, size_t want, size_t *len)
{
	const char *s = vector_field(v, name);
	size_t got = 0;

	if (!s || unhex(s, out, cap, &got) < 0 || (want && got != want))
		return -1;
	if (len)
		*len = got;
	return 0;
}

/*
 * vector_scan - call @check(v, @type) for every block of docs/@doc whose
 * `type` is one of the NULL-terminated @types, or for every block when
 * @types is NULL (@type is then NULL for a block without one).  The document
 * is found under $ENVELOPEFS_SOURCE_ROOT (else the current directory); an
 * unreadable one fails the test.
 */
__attribute__((unused)) static void vector_scan(const char *doc, const char *const *types,
						void (*check)(const struct vector *v,
							      const char *type))
{
	const char *root = getenv("ENVELOPEFS_SOURCE_ROOT");
	char path[1024], line[4096];
	struct vector *v = calloc(1, sizeof(*v));
	int in = 0, lineno = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/docs/%s", root ? root : ".", doc);
	f = fopen(path, "r");
	if (!v || !f) {
		fprintf(stderr, "cannot read %s\n", path);
		CHECK(0);
		free(v);
		if (f)
			fclose(f);
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		char *eq;

		line[strcspn(line, "\r\n")] = '\0';
		lineno++;
		if (!in) {
			if (strcmp(line, "```vector") == 0) {
				memset(v, 0, sizeof(*v));
				v->doc = doc;
				v->line = lineno;
				in = 1;
			}
			continue;
		}
		if (strncmp(line, "```", 3) == 0) {
			const char *type = vector_field(v, "type");
			const char *const *t;

			if (!types)
				check(v, type);
			for (t = types; t && type && *t; t++)
				if (strcmp(type, *t) == 0)
					check(v, type);
			in = 0;
			continue;
		}
		eq = strstr(line, " = ");
		if (!eq || v->n == VECTOR_MAX_FIELDS || (size_t)(eq - line) >= sizeof(v->name[0]) ||
		    strlen(eq + 3) >= VECTOR_MAX_VALUE) {
			fprintf(stderr, "%s:%d: bad vector line\n", doc, lineno);
			CHECK(0);
			continue;
		}
		*eq = '\0';
		memcpy(v->name[v->n], line, (size_t)(eq - line) + 1);
		memcpy(v->value[v->n], eq + 3, strlen(eq + 3) + 1);
		v->n++;
	}
	CHECK(!in);
	fclose(f);
	free(v);
}

#endif
