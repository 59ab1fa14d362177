/*-------------------------------------------------------------------------
 *
 * http_body.c
 *	  An HTTP response body as the item's output: JSON when the response
 *	  says it is JSON and jsonb takes it, text otherwise.
 *
 *	  A response is read outside any transaction (http_batch.c), where an
 *	  ERROR abandons the worker's whole HTTP batch: its items go back to
 *	  the queue and are sent again, and a body that raised once raises
 *	  again, so the run never finishes.  PostgreSQL 15 has no soft input
 *	  errors, and no subtransaction can catch one there.  So nothing here
 *	  may raise an ERROR on what a server sends: every body that jsonb_in,
 *	  or the JSON lexer it uses, would refuse with an ERROR is found first
 *	  (bf_http_jsonb_accepts) and kept as text.  TAP 083 and 084 send such
 *	  bodies.
 *
 * IDENTIFICATION
 *	  src/http_body.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/jsonfuncs.h"

#include "http_body.h"

/* Is s (len bytes) valid text in the database encoding, without NULs? */
bool
bf_http_valid_text(const char *s, int len)
{
	return pg_verify_mbstr(GetDatabaseEncoding(), s, len, true);
}

/*
 * Limits of numeric's storage format that numeric_in enforces with an
 * ERROR (numeric.c: the display scale is 14 bits, the weight an int16 in
 * base-10000 digits), and the exponent bound it checks first.
 */
#define BF_NUMERIC_DSCALE_MAX	0x3FFF
#define BF_NUMERIC_WEIGHT_MAX	PG_INT16_MAX
#define BF_NUMERIC_WEIGHT_MIN	PG_INT16_MIN
#define BF_NUMERIC_EXP_LIMIT	(INT_MAX / 2)

/* Deepest nesting of arrays and objects parsed (the parsers recurse). */
#define BF_HTTP_JSON_MAX_DEPTH	1000

/*
 * Would numeric_in accept this JSON number token (-?int(.frac)?(e[+-]?exp)?)
 * without an ERROR?  jsonb stores every number as numeric, whose format
 * holds a display scale of at most 16383 digits and a leading digit at most
 * 10^131071: JSON allows "1e131072", numeric_in refuses it.
 */
static bool
bf_http_numeric_fits(const char *token)
{
	const char *p = token;
	int			intlen = 0;
	int			fraclen = 0;
	int			lead = INT_MIN;		/* decimal position of the first non-zero digit */
	int64		exp = 0;
	int64		scale;
	int64		pos;

	if (*p == '-')
		p++;
	for (; *p >= '0' && *p <= '9'; p++, intlen++)
		if (lead == INT_MIN && *p != '0')
			lead = intlen;		/* made a position below */
	if (lead != INT_MIN)
		lead = intlen - 1 - lead;
	if (*p == '.')
		for (p++; *p >= '0' && *p <= '9'; p++)
		{
			fraclen++;
			if (lead == INT_MIN && *p != '0')
				lead = -fraclen;
		}
	if (*p == 'e' || *p == 'E')
	{
		bool		neg = false;

		p++;
		if (*p == '+' || *p == '-')
			neg = (*p++ == '-');
		for (; *p >= '0' && *p <= '9'; p++)
		{
			exp = exp * 10 + (*p - '0');
			if (exp >= BF_NUMERIC_EXP_LIMIT)
				return false;
		}
		if (neg)
			exp = -exp;
	}
	scale = Max((int64) fraclen - exp, 0);
	if (scale > BF_NUMERIC_DSCALE_MAX)
		return false;
	if (lead == INT_MIN)
		return true;			/* zero */
	pos = lead + exp;
	/* floor(pos / 4): the base-10000 digit the leading digit falls in */
	pos = pos >= 0 ? pos / 4 : -((-pos + 3) / 4);
	return pos <= BF_NUMERIC_WEIGHT_MAX && pos >= BF_NUMERIC_WEIGHT_MIN;
}

/* Semantic action of the check: every number must fit numeric. */
static void
bf_http_check_scalar(void *state, char *token, JsonTokenType tokentype)
{
	if (tokentype == JSON_TOKEN_NUMBER && !bf_http_numeric_fits(token))
		*(bool *) state = false;
}

/* How deeply arrays and objects nest in JSON text s (strings skipped). */
static int
bf_http_json_depth(const char *s, int len)
{
	int			depth = 0;
	int			deepest = 0;
	bool		in_string = false;

	for (int i = 0; i < len; i++)
	{
		char		c = s[i];

		if (in_string)
		{
			if (c == '\\')
				i++;
			else if (c == '"')
				in_string = false;
		}
		else if (c == '"')
			in_string = true;
		else if (c == '[' || c == '{')
		{
			depth++;
			deepest = Max(deepest, depth);
		}
		else if (c == ']' || c == '}')
			depth--;
	}
	return deepest;
}

/*
 * Will jsonb_in accept this text without an ERROR?  PostgreSQL 15 has no
 * soft input errors, and a response is read outside any transaction, where
 * no subtransaction can catch an error; so everything jsonb_in refuses
 * with an ERROR is found first, and such a body is kept as text:
 *	- text that is not valid in the database encoding;
 *	- JSON that jsonb refuses: \u0000 (the lexer jsonb_in uses, de-escaping
 *	  strings as it does, says so), and numbers that numeric cannot hold
 *	  ("1e131072": each number is checked as the parse meets it);
 *	- in a database whose encoding is not UTF8, any \u escape: one naming a
 *	  character the encoding lacks makes the lexer itself raise an ERROR;
 *	- nesting deeper than BF_HTTP_JSON_MAX_DEPTH: the parsers recurse, and
 *	  a deep enough body raises "stack depth limit exceeded".
 * Anything jsonb_in could still refuse (a string over 256 MB) cannot arrive
 * under batchflow.http_max_response_size.
 */
static bool
bf_http_jsonb_accepts(const char *s, int len)
{
	JsonLexContext *lex;
	JsonSemAction sem = {0};
	bool		numbers_fit = true;

	if (!bf_http_valid_text(s, len))
		return false;
	if (GetDatabaseEncoding() != PG_UTF8 && strstr(s, "\\u") != NULL)
		return false;
	if (bf_http_json_depth(s, len) > BF_HTTP_JSON_MAX_DEPTH)
		return false;
	sem.semstate = &numbers_fit;
	sem.scalar = bf_http_check_scalar;
	lex = makeJsonLexContextCstringLen((char *) s, len, GetDatabaseEncoding(), true);
	return pg_parse_json(lex, &sem) == JSON_SUCCESS && numbers_fit;
}

/*
 * A response body as jsonb: parsed when maybe_json (the response says it
 * is JSON and is complete) and jsonb_in accepts it, else a JSON string of
 * its text (or a note of its size when it is not valid text).
 */
Datum
bf_http_body_jsonb(const char *data, int len, bool maybe_json, bool *as_json)
{
	JsonbValue	v;

	*as_json = false;
	if (maybe_json && bf_http_jsonb_accepts(data, len))
	{
		*as_json = true;
		return DirectFunctionCall1(jsonb_in, CStringGetDatum(data));
	}

	v.type = jbvString;
	if (bf_http_valid_text(data, len))
	{
		v.val.string.val = (char *) data;
		v.val.string.len = len;
	}
	else
	{
		v.val.string.val = psprintf("(%d bytes of binary or invalid text)", len);
		v.val.string.len = strlen(v.val.string.val);
	}
	return PointerGetDatum(JsonbValueToJsonb(&v));
}
