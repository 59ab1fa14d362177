/*-------------------------------------------------------------------------
 *
 * definition_json.c
 *	  Reading the properties of a workflow definition: the primitives
 *	  that every definition check is written with (definition.c for
 *	  nodes and loops, definition_bigbatch.c for big-batch sources and
 *	  throttles, activity_workflow.c for workflow activities).
 *
 *	  Each primitive either returns a value the caller may trust (a
 *	  string that is non-empty, an integer within its bounds, an object
 *	  with no unknown property, SQL text that parses) or ereports ERROR
 *	  in the one style of definition errors: the node and the property in
 *	  the message, what was found in the detail (bf_def_describe), what is
 *	  allowed in the hint.  So the checks built on them read as a list of
 *	  rules, and an error text is written in one place.
 *
 *	  Nothing here keeps state; everything is palloc'd in the caller's
 *	  memory context.
 *
 * IDENTIFICATION
 *	  src/definition_json.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "parser/parser.h"
#include "utils/builtins.h"

#include "definition_json.h"

/* Describe a JSON value for an error detail: "the string "4"", "an array". */
char *
bf_def_describe(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvBool:
			return v->val.boolean ? "true" : "false";
		case jbvString:
			{
				/* At most 40 bytes, never cutting a multibyte character. */
				int			len = pg_mbcliplen(v->val.string.val, v->val.string.len, 40);

				return psprintf("the string \"%.*s\"%s", len, v->val.string.val,
								v->val.string.len > len ? "..." : "");
			}
		case jbvNumeric:
			return psprintf("the number %s",
							DatumGetCString(DirectFunctionCall1(numeric_out,
																NumericGetDatum(v->val.numeric))));
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "an array" : "an object";
		default:
			return "a JSON value";
	}
}

/* Is v a JSON object (or array)? */
bool
bf_def_is_container(JsonbValue *v, bool object)
{
	if (v->type != jbvBinary)
		return false;
	return object ? JsonContainerIsObject(v->val.binary.data)
		: JsonContainerIsArray(v->val.binary.data);
}

/* "a", "b" and "c": the allowed words, for hints. */
char *
bf_def_word_list(const char *const *words)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; words[i] != NULL; i++)
	{
		if (i > 0)
			appendStringInfoString(&buf, words[i + 1] == NULL ? " and " : ", ");
		appendStringInfo(&buf, "\"%s\"", words[i]);
	}
	return buf.data;
}

/* Is word (len bytes, not terminated) one of words? */
bool
bf_def_in_list(const char *word, int len, const char *const *words)
{
	for (int i = 0; words[i] != NULL; i++)
		if ((int) strlen(words[i]) == len && strncmp(words[i], word, len) == 0)
			return true;
	return false;
}

/* The property "key" of an object, or false when it is absent. */
bool
bf_def_get(JsonbContainer *obj, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), out) != NULL;
}

/*
 * v, the value of label ("property \"headers\"", "inputSource \"keyRanges\""),
 * must be an object: its container.
 */
JsonbContainer *
bf_def_object(JsonbValue *v, const char *what, const char *label, const char *hint)
{
	if (!bf_def_is_container(v, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s must be an object", what, label),
				 errdetail("Found %s.", bf_def_describe(v)),
				 errhint("%s", hint)));
	return v->val.binary.data;
}

/* Report the first property of obj that is not in allowed. */
void
bf_def_check_keys(JsonbContainer *obj, const char *what, const char *const *allowed)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (!bf_def_in_list(v.val.string.val, v.val.string.len, allowed))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown property \"%.*s\"", what,
							v.val.string.len, v.val.string.val),
					 errdetail("Unknown properties are rejected so that a misspelt one is not silently ignored."),
					 errhint("Allowed properties here are %s.", bf_def_word_list(allowed))));
	}
}

/* Refuse a definition that lacks the required property key. */
void
bf_def_missing(const char *what, const char *key, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: missing property \"%s\"", what, key),
			 errdetail("\"%s\" is required here.", key),
			 errhint("%s", hint)));
}

/* A required or optional string property; NULL when absent and optional. */
char *
bf_def_get_string(JsonbContainer *obj, const char *what, const char *key,
		   bool required, const char *hint)
{
	JsonbValue	v;

	if (!bf_def_get(obj, key, &v))
	{
		if (required)
			bf_def_missing(what, key, hint);
		return NULL;
	}
	if (v.type != jbvString || v.val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"%s\" must be a non-empty string", what, key),
				 errdetail("Found %s.", bf_def_describe(&v)),
				 errhint("%s", hint)));
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * An integer property within [min, max].  Returns false when absent (and
 * not required).  Strings such as "4" and fractions such as 2.5 are refused.
 */
bool
bf_def_get_int(JsonbContainer *obj, const char *what, const char *key,
			   int64 min, int64 max, bool required, const char *hint, int64 *result)
{
	JsonbValue	v;
	char	   *text = NULL;
	bool		ok;

	if (!bf_def_get(obj, key, &v))
	{
		if (required)
			bf_def_missing(what, key, hint);
		return false;
	}
	ok = v.type == jbvNumeric;
	if (ok)
	{
		Numeric		num = v.val.numeric;
		bool		integral;

		integral = DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(num),
													DirectFunctionCall2(numeric_trunc,
																		NumericGetDatum(num),
																		Int32GetDatum(0))));
		text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
		ok = integral && strlen(text) <= 18 &&
			strtoll(text, NULL, 10) >= min && strtoll(text, NULL, 10) <= max;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"%s\" must be an integer from " INT64_FORMAT " to " INT64_FORMAT,
						what, key, min, max),
				 errdetail(v.type == jbvNumeric ? "Found %s." : "Found %s; write the number without quotes.",
						   bf_def_describe(&v)),
				 errhint("%s", hint)));
	*result = strtoll(text, NULL, 10);
	return true;
}

/* Names: ids and variables start with a letter or _, then letters, digits, _ or -. */
bool
bf_def_valid_name(const char *s)
{
	if (s == NULL || strlen(s) > BF_MAX_ID_LEN)
		return false;
	if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z') || s[0] == '_'))
		return false;
	for (const char *p = s + 1; *p; p++)
		if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			  (*p >= '0' && *p <= '9') || *p == '_' || *p == '-'))
			return false;
	return true;
}

/*
 * Is an error raised by the parser a fault of the SQL text it was given?
 * The scanner and grammar report what they reject with SQLSTATEs of class
 * 42 (syntax error or access rule violation: 42601 syntax_error and its
 * kin), 22 (data exception: a bad escape or character in a literal) or 0A
 * (feature not supported).  Anything else (query_canceled,
 * statement_too_complex / stack depth, out_of_memory, internal errors) is
 * not about the text, and must reach the caller with its own SQLSTATE.
 */
static bool
is_sql_text_error(int sqlerrcode)
{
	int			class = ERRCODE_TO_CATEGORY(sqlerrcode);

	return class == ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION ||
		class == ERRCODE_DATA_EXCEPTION ||
		class == ERRCODE_FEATURE_NOT_SUPPORTED;
}

/*
 * Parse SQL text given in a definition; returns the raw statements.  A
 * parse error is reported as a problem of this node's property label
 * ("property \"sql\"", "inputSource \"query\""), with the parser's message
 * as the detail and hint as the hint; any other error raised while
 * parsing (a query cancel, say) is re-thrown as it is.
 */
List *
bf_def_parse_sql(const char *what, const char *label, const char *sql,
				 const char *hint)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	List	   *stmts = NIL;

	PG_TRY();
	{
		stmts = raw_parser(sql, RAW_PARSE_DEFAULT);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (!is_sql_text_error(edata->sqlerrcode))
		{
			FreeErrorData(edata);
			PG_RE_THROW();
		}
		FlushErrorState();
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: %s is not a valid SQL statement", what, label),
				 errdetail("%s", edata->message),
				 errhint("%s", hint)));
	}
	PG_END_TRY();
	return stmts;
}
