/*-------------------------------------------------------------------------
 *
 * http_template.c
 *	  Filling in {{...}} placeholders of HTTP activities.
 *
 *	  An HTTP activity's url, header values and body may contain
 *	  placeholders: {{item}} (the whole item), {{item.a.b}} (a field of the
 *	  item, following object keys and array indexes), {{index}} (the item's
 *	  0-based index) and {{run}} (the run id).  Spaces inside the braces are
 *	  allowed.  What a placeholder becomes depends on where it is:
 *
 *	  - in the url, its text form is percent-encoded (RFC 3986: everything
 *		but A-Z a-z 0-9 - . _ ~), so item data can never change the
 *		address's structure;
 *	  - in a header value, its text form is used as is, but a result with a
 *		CR or LF is refused (no header injection);
 *	  - in a JSON body, a string that is exactly one placeholder is replaced
 *		by the JSON value itself ("{{item}}" becomes 42, or an object); a
 *		placeholder inside a longer string is replaced by its text form and
 *		the whole string stays a JSON string, escaped when the body is
 *		serialised.  A body that is a plain JSON string is sent as text.
 *
 *	  The text form of a JSON string is the string itself, of JSON null or
 *	  a missing field the empty string, of anything else its JSON text.
 *	  An unknown placeholder fails the attempt with an error naming it.
 *
 *	  Nothing here touches the database: the worker calls it between
 *	  transactions, right before a request is sent.
 *
 * IDENTIFICATION
 *	  src/http_template.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "batchflow.h"
#include "http_template.h"

static bool bf_tmpl_lookup(const char *name, int len, const BfTemplateContext *ctx,
						   JsonbValue *out, char **error);
static char *bf_tmpl_text_of(JsonbValue *v);
static void bf_tmpl_urlencode(StringInfo buf, const char *s);
static const char *bf_tmpl_find(const char *s, const char **name, int *len,
								const char **end);

/*
 * Find the next placeholder in s.  Returns a pointer to its "{{", with
 * *name and *len its trimmed name and *end just after its "}}"; NULL if none.
 */
static const char *
bf_tmpl_find(const char *s, const char **name, int *len, const char **end)
{
	const char *open = strstr(s, "{{");
	const char *close;
	const char *n;
	const char *e;

	if (open == NULL)
		return NULL;
	close = strstr(open + 2, "}}");
	if (close == NULL)
		return NULL;
	n = open + 2;
	e = close;
	while (n < e && *n == ' ')
		n++;
	while (e > n && e[-1] == ' ')
		e--;
	*name = n;
	*len = (int) (e - n);
	*end = close + 2;
	return open;
}

/*
 * The value of placeholder "name" (len bytes).  A missing item field is
 * JSON null.  False, with *error set, for an unknown placeholder.
 */
static bool
bf_tmpl_lookup(const char *name, int len, const BfTemplateContext *ctx,
			   JsonbValue *out, char **error)
{
	if (len == 5 && strncmp(name, "index", 5) == 0)
	{
		out->type = jbvNumeric;
		out->val.numeric = int64_to_numeric(ctx->index);
		return true;
	}
	if (len == 3 && strncmp(name, "run", 3) == 0)
	{
		out->type = jbvNumeric;
		out->val.numeric = int64_to_numeric(ctx->run_id);
		return true;
	}
	if (len >= 4 && strncmp(name, "item", 4) == 0 && (len == 4 || name[4] == '.'))
	{
		JsonbContainer *cur;
		const char *p = name + 4;
		const char *stop = name + len;

		out->type = jbvNull;
		if (ctx->item == NULL)
			return true;
		if (len == 4)
		{
			if (JB_ROOT_IS_SCALAR(ctx->item))
			{
				(void) JsonbExtractScalar(&ctx->item->root, out);
				return true;
			}
			out->type = jbvBinary;
			out->val.binary.data = &ctx->item->root;
			out->val.binary.len = VARSIZE(ctx->item) - VARHDRSZ;
			return true;
		}

		/* Follow .key or .N steps through objects and arrays. */
		cur = JB_ROOT_IS_SCALAR(ctx->item) ? NULL : &ctx->item->root;
		while (p < stop && *p == '.')
		{
			const char *key = ++p;
			int			klen;
			JsonbValue *next = NULL;

			while (p < stop && *p != '.')
				p++;
			klen = (int) (p - key);
			if (cur == NULL || klen == 0)
			{
				out->type = jbvNull;
				return true;
			}
			if (JsonContainerIsObject(cur))
				next = getKeyJsonValueFromContainer(cur, key, klen, NULL);
			else if (JsonContainerIsArray(cur) && strspn(key, "0123456789") >= (size_t) klen)
				next = getIthJsonbValueFromContainer(cur, (uint32) strtoul(pnstrdup(key, klen), NULL, 10));
			if (next == NULL)
			{
				out->type = jbvNull;
				return true;
			}
			*out = *next;
			cur = next->type == jbvBinary ? next->val.binary.data : NULL;
		}
		return true;
	}
	*error = psprintf("unknown placeholder {{%.*s}}: use {{item}}, {{item.field}}, {{index}} or {{run}}",
					  len, name);
	return false;
}

/* The text form of a value: strings as they are, null as "", else JSON. */
static char *
bf_tmpl_text_of(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "";
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out,
													   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return v->val.boolean ? "true" : "false";
		case jbvBinary:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
		default:
			return JsonbToCString(NULL, &JsonbValueToJsonb(v)->root, 0);
	}
}

/* Append s percent-encoded: only RFC 3986's unreserved characters stay. */
static void
bf_tmpl_urlencode(StringInfo buf, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
	{
		if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '-' || *p == '.' ||
			*p == '_' || *p == '~')
			appendStringInfoChar(buf, (char) *p);
		else
		{
			appendStringInfoChar(buf, '%');
			appendStringInfoChar(buf, hex[*p >> 4]);
			appendStringInfoChar(buf, hex[*p & 15]);
		}
	}
}

/*
 * Fill in the placeholders of a url (encode = true) or header value.
 * Returns NULL with *error set when a placeholder is unknown.
 */
char *
bf_template_text(const char *tmpl, const BfTemplateContext *ctx, bool encode,
				 char **error)
{
	StringInfoData buf;
	const char *s = tmpl;
	const char *at;
	const char *name;
	const char *end;
	int			len;

	initStringInfo(&buf);
	while ((at = bf_tmpl_find(s, &name, &len, &end)) != NULL)
	{
		JsonbValue	v;
		char	   *text;

		appendBinaryStringInfo(&buf, s, (int) (at - s));
		if (!bf_tmpl_lookup(name, len, ctx, &v, error))
			return NULL;
		text = bf_tmpl_text_of(&v);
		if (encode)
			bf_tmpl_urlencode(&buf, text);
		else
			appendStringInfoString(&buf, text);
		s = end;
	}
	appendStringInfoString(&buf, s);
	return buf.data;
}

/*
 * Fill in the placeholders of a JSON body (an object or an array).
 * Returns NULL with *error set when a placeholder is unknown.
 */
Jsonb *
bf_template_json(Jsonb *body, const BfTemplateContext *ctx, char **error)
{
	JsonbIterator *it = JsonbIteratorInit(&body->root);
	JsonbParseState *state = NULL;
	JsonbValue	v;
	JsonbValue *res = NULL;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, false)) != WJB_DONE)
	{
		if ((tok == WJB_VALUE || tok == WJB_ELEM) && v.type == jbvString)
		{
			char	   *str = pnstrdup(v.val.string.val, v.val.string.len);
			const char *name;
			const char *end;
			int			len;
			const char *at = bf_tmpl_find(str, &name, &len, &end);

			if (at == str && *end == '\0')
			{
				/* The whole string is one placeholder: the value itself. */
				JsonbValue	val;

				if (!bf_tmpl_lookup(name, len, ctx, &val, error))
					return NULL;
				/* pushJsonbValue unpacks a container given as jbvBinary. */
				res = pushJsonbValue(&state, tok, &val);
				continue;
			}
			if (at != NULL)
			{
				char	   *filled = bf_template_text(str, ctx, false, error);

				if (filled == NULL)
					return NULL;
				v.val.string.val = filled;
				v.val.string.len = strlen(filled);
			}
		}
		res = pushJsonbValue(&state, tok,
							 tok < WJB_BEGIN_ARRAY ? &v : NULL);
	}
	return JsonbValueToJsonb(res);
}
