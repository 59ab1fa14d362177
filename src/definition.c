/*-------------------------------------------------------------------------
 *
 * definition.c
 *	  Validation of workflow definitions, as bf_register receives them.
 *
 *	  A definition is checked completely before it is stored, so that the
 *	  engine can later trust every property it reads.  The first problem
 *	  found is reported with an ereport that names the node (by id, or by
 *	  its position when it has no usable id) and the property, says what was
 *	  found, and hints at what is allowed.  Unknown properties are rejected:
 *	  a misspelt "concurency" must not silently mean "no cap".
 *
 *	  The format is documented in docs/workflow-definition.md; keep the two
 *	  in step.
 *
 * IDENTIFICATION
 *	  src/definition.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "nodes/pg_list.h"
#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "batchflow.h"
#include "activity_workflow.h"
#include "deps.h"
#include "definition.h"
#include "bigbatch.h"

/* Longest node id and variable name accepted. */
#define BF_MAX_ID_LEN			63
/* Bounds of the per-activity timeout, in milliseconds (one day). */
#define BF_MAX_TIMEOUT_MS		86400000
#define BF_MAX_RETRIES_LIMIT	100
#define BF_MAX_RETRY_DELAY_MS	3600000

/* What the walk remembers while it goes through the nodes. */
typedef struct DefWalk
{
	List	   *ids;			/* every node id seen so far (char *) */
	List	   *activities;		/* ids of earlier top-level activities */
} DefWalk;

static const char *const top_keys[] = {"nodes", "description", NULL};
static const char *const sql_keys[] = {"id", "type", "activity", "description",
"output", "sql", "timeoutMs", NULL};
static const char *const http_keys[] = {"id", "type", "activity", "description",
"output", "url", "method", "headers", "body", "timeoutMs", NULL};
static const char *const loop_keys[] = {"id", "type", "description", "loopType",
	"concurrency", "inputSource", "errorStrategy", "maxRetries", "retryDelayMs",
"maxItemsPerSecond", "maxReplicationLag", "children", "dependsOn", NULL};
static const char *const source_keys[] = {"variable", "activity", "static",
"query", "keyRanges", NULL};
static const char *const http_methods[] = {"GET", "POST", "PUT", "PATCH",
"DELETE", "HEAD", "OPTIONS", NULL};

/* Describe a JSON value for an error detail: "the string "4"", "an array". */
static char *
describe(JsonbValue *v)
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
static bool
is_container(JsonbValue *v, bool object)
{
	if (v->type != jbvBinary)
		return false;
	return object ? JsonContainerIsObject(v->val.binary.data)
		: JsonContainerIsArray(v->val.binary.data);
}

/* "a", "b" and "c": the allowed words, for hints. */
static char *
word_list(const char *const *words)
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

static bool
in_list(const char *word, int len, const char *const *words)
{
	for (int i = 0; words[i] != NULL; i++)
		if ((int) strlen(words[i]) == len && strncmp(words[i], word, len) == 0)
			return true;
	return false;
}

/* The property "key" of an object, or false when it is absent. */
static bool
get_key(JsonbContainer *obj, const char *key, JsonbValue *out)
{
	return getKeyJsonValueFromContainer(obj, key, strlen(key), out) != NULL;
}

/* Report the first property of obj that is not in allowed. */
static void
check_keys(JsonbContainer *obj, const char *what, const char *const *allowed)
{
	JsonbIterator *it = JsonbIteratorInit(obj);
	JsonbValue	v;
	JsonbIteratorToken tok;

	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok != WJB_KEY)
			continue;
		if (!in_list(v.val.string.val, v.val.string.len, allowed))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown property \"%.*s\"", what,
							v.val.string.len, v.val.string.val),
					 errdetail("Unknown properties are rejected so that a misspelt one is not silently ignored."),
					 errhint("Allowed properties here are %s.", word_list(allowed))));
	}
}

/* Refuse a definition that lacks the required property key. */
static void
missing_property(const char *what, const char *key, const char *hint)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("%s: missing property \"%s\"", what, key),
			 errdetail("\"%s\" is required here.", key),
			 errhint("%s", hint)));
}

/* A required or optional string property; NULL when absent and optional. */
static char *
get_string(JsonbContainer *obj, const char *what, const char *key,
		   bool required, const char *hint)
{
	JsonbValue	v;

	if (!get_key(obj, key, &v))
	{
		if (required)
			missing_property(what, key, hint);
		return NULL;
	}
	if (v.type != jbvString || v.val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"%s\" must be a non-empty string", what, key),
				 errdetail("Found %s.", describe(&v)),
				 errhint("%s", hint)));
	return pnstrdup(v.val.string.val, v.val.string.len);
}

/*
 * An integer property within [min, max].  Returns false when absent (and
 * not required).  Strings such as "4" and fractions such as 2.5 are refused.
 */
static bool
get_int(JsonbContainer *obj, const char *what, const char *key,
		int64 min, int64 max, bool required, const char *hint, int64 *result)
{
	JsonbValue	v;
	Numeric		num;
	char	   *text;
	bool		integral;

	if (!get_key(obj, key, &v))
	{
		if (required)
			missing_property(what, key, hint);
		return false;
	}
	if (v.type != jbvNumeric)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"%s\" must be an integer from " INT64_FORMAT " to " INT64_FORMAT,
						what, key, min, max),
				 errdetail("Found %s; write the number without quotes.", describe(&v)),
				 errhint("%s", hint)));

	num = v.val.numeric;
	integral = DatumGetBool(DirectFunctionCall2(numeric_eq, NumericGetDatum(num),
												DirectFunctionCall2(numeric_trunc,
																	NumericGetDatum(num),
																	Int32GetDatum(0))));
	text = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(num)));
	if (!integral || strlen(text) > 18 ||
		strtoll(text, NULL, 10) < min || strtoll(text, NULL, 10) > max)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"%s\" must be an integer from " INT64_FORMAT " to " INT64_FORMAT,
						what, key, min, max),
				 errdetail("Found %s.", describe(&v)),
				 errhint("%s", hint)));
	*result = strtoll(text, NULL, 10);
	return true;
}

/* Names: ids and variables start with a letter or _, then letters, digits, _ or -. */
static bool
valid_name(const char *s)
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

static bool
list_has_string(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	return false;
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
 * Check that an SQL activity's text is exactly one statement that parses.
 * Parse errors are reported as a definition problem of this node, with the
 * parser's message as the detail; any other error raised while parsing (a
 * query cancel, say) is re-thrown as it is.
 */
static void
check_sql_text(const char *what, const char *sql)
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
				 errmsg("%s: property \"sql\" is not a valid SQL statement", what),
				 errdetail("%s", edata->message),
				 errhint("Write one SQL statement; the item is $1 (jsonb), its index $2 (int) and the context $3 (jsonb).")));
	}
	PG_END_TRY();

	if (list_length(stmts) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"sql\" must contain exactly one statement", what),
				 errdetail("Found %d statements.", list_length(stmts)),
				 errhint("Split the work into several activities, or wrap it in a function and call that.")));
}

/* Does a URL start with http:// or https:// (any case)? */
static bool
http_scheme(const char *url)
{
	return pg_strncasecmp(url, "http://", 7) == 0 ||
		pg_strncasecmp(url, "https://", 8) == 0;
}

/* The properties of an activity node other than id and type. */
static void
check_activity(JsonbContainer *node, const char *what, bool in_loop)
{
	char	   *kind;
	int64		ival;
	JsonbValue	v;

	kind = get_string(node, what, "activity", true,
					  "Set \"activity\" to \"sql\", \"http\" or \"workflow\".");
	if (strcmp(kind, "sql") != 0 && strcmp(kind, "http") != 0 &&
		strcmp(kind, "workflow") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown activity \"%s\"", what, kind),
				 errhint("Set \"activity\" to \"sql\", \"http\" or \"workflow\".")));
	if (strcmp(kind, "workflow") == 0)
		bf_check_workflow_activity(node, what);

	if (strcmp(kind, "workflow") != 0)
		check_keys(node, what, strcmp(kind, "sql") == 0 ? sql_keys : http_keys);

	if (get_key(node, "description", &v) && v.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"description\" must be a string", what),
				 errdetail("Found %s.", describe(&v)),
				 errhint("Describe the node in words, or leave \"description\" out.")));

	if (get_key(node, "output", &v))
	{
		char	   *name;

		if (in_loop)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"output\" is not allowed on a loop's child", what),
					 errdetail("A child runs once per item; its result is the next child's \"prev\" and is kept in the item's output."),
					 errhint("Only top-level activities can save their result in a variable.")));
		name = get_string(node, what, "output", false,
						  "Name the variable like an identifier, e.g. \"users\".");
		if (!valid_name(name))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"output\" is not a valid variable name", what),
					 errdetail("Found \"%s\".", name),
					 errhint("Use at most %d letters, digits, \"_\" or \"-\", starting with a letter or \"_\".",
							 BF_MAX_ID_LEN)));
	}

	get_int(node, what, "timeoutMs", 1, BF_MAX_TIMEOUT_MS, false,
			"Give the timeout in milliseconds, e.g. 5000, at most one day; leave it out for no timeout.",
			&ival);
	if (strcmp(kind, "workflow") == 0)
		return;

	if (strcmp(kind, "sql") == 0)
	{
		char	   *sql = get_string(node, what, "sql", true,
									 "Give the statement to run, e.g. \"sql\": \"INSERT INTO t VALUES ($1)\".");

		check_sql_text(what, sql);
		return;
	}

	/* http */
	{
		char	   *url = get_string(node, what, "url", true,
									 "Give the address to call, e.g. \"url\": \"https://api.example.com/items/{{item.id}}\".");
		char	   *method;

		if (!http_scheme(url))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"url\" must start with http:// or https://", what),
					 errdetail("Found \"%s\".", url),
					 errhint("Only the http and https schemes are allowed; templates may fill in the rest of the address, not the scheme.")));

		method = get_string(node, what, "method", false,
							"Set \"method\" to one of \"GET\", \"POST\", \"PUT\", \"PATCH\", \"DELETE\", \"HEAD\" or \"OPTIONS\".");
		if (method != NULL && !in_list(method, strlen(method), http_methods))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown HTTP method \"%s\"", what, method),
					 errhint("Set \"method\" to one of %s (upper case).", word_list(http_methods))));

		if (get_key(node, "headers", &v))
		{
			JsonbIterator *it;
			JsonbValue	hv;
			JsonbIteratorToken tok;
			char	   *name = NULL;

			if (!is_container(&v, true))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("%s: property \"headers\" must be an object", what),
						 errdetail("Found %s.", describe(&v)),
						 errhint("Write the headers as {\"Name\": \"value\", ...}.")));
			it = JsonbIteratorInit(v.val.binary.data);
			while ((tok = JsonbIteratorNext(&it, &hv, true)) != WJB_DONE)
			{
				if (tok == WJB_KEY)
				{
					name = pnstrdup(hv.val.string.val, hv.val.string.len);
					for (const char *p = name; *p; p++)
						if (*p <= ' ' || *p == ':' || *p >= 127)
							ereport(ERROR,
									(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
									 errmsg("%s: header name \"%s\" is not valid", what, name),
									 errhint("Header names are printable ASCII without spaces or colons.")));
					if (*name == '\0')
						ereport(ERROR,
								(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
								 errmsg("%s: a header name is empty", what),
								 errhint("Give every header a name.")));
				}
				else if (tok == WJB_VALUE && hv.type != jbvString)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
							 errmsg("%s: header \"%s\" must have a string value", what, name),
							 errdetail("Found %s.", describe(&hv)),
							 errhint("Quote the value, e.g. \"%s\": \"42\".", name)));
			}
		}
	}
}

/* A loop's inputSource: exactly one of variable, activity, static. */
static void
check_input_source(JsonbContainer *node, const char *what, DefWalk *walk)
{
	JsonbValue	v;
	JsonbContainer *src;
	int			found = 0;
	const char *hint = "Use exactly one of {\"variable\": \"name\"}, {\"activity\": \"earlier_node_id\"}, {\"static\": [...]}, {\"query\": \"SELECT ...\"} or {\"keyRanges\": {...}}.";

	if (!get_key(node, "inputSource", &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: loop has no input source", what),
				 errdetail("Property \"inputSource\" is missing."),
				 errhint("%s", hint)));
	if (!is_container(&v, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"inputSource\" must be an object", what),
				 errdetail("Found %s.", describe(&v)),
				 errhint("%s", hint)));
	src = v.val.binary.data;
	check_keys(src, psprintf("%s, inputSource", what), source_keys);

	for (int i = 0; source_keys[i] != NULL; i++)
		if (get_key(src, source_keys[i], &v))
			found++;
	if (found == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: loop has no input source", what),
				 errdetail("\"inputSource\" is empty."),
				 errhint("%s", hint)));
	if (found > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: loop has %d input sources", what, found),
				 errdetail("\"inputSource\" names more than one of \"variable\", \"activity\", \"static\", \"query\" and \"keyRanges\"."),
				 errhint("%s", hint)));

	if (get_key(src, "query", &v))
		bf_check_query_source(src, what);
	else if (get_key(src, "keyRanges", &v))
		bf_check_keyranges_source(src, what);
	else if (get_key(src, "static", &v))
	{
		if (!is_container(&v, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: inputSource \"static\" must be an array", what),
					 errdetail("Found %s.", describe(&v)),
					 errhint("List the items, e.g. {\"static\": [1, 2, 3]}.")));
	}
	else if (get_key(src, "variable", &v))
	{
		char	   *name = get_string(src, what, "variable", true, hint);

		if (!valid_name(name))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: inputSource variable \"%s\" is not a valid variable name", what, name),
					 errhint("Name a key of the run's input object or an earlier activity's \"output\".")));
	}
	else
	{
		char	   *id = get_string(src, what, "activity", true, hint);

		if (!list_has_string(walk->activities, id))
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("%s: inputSource activity \"%s\" is not an earlier top-level activity", what, id),
					 errdetail(list_has_string(walk->ids, id)
							   ? "Node \"%s\" exists but is not a top-level activity that runs before this loop."
							   : "No node \"%s\" comes before this loop.", id),
					 errhint("Name the id of a top-level \"activity\" node listed before the loop.")));
	}
}

/* The properties of a loop node other than id and type. */
static void
check_loop(JsonbContainer *node, const char *what, DefWalk *walk)
{
	char	   *loop_type;
	char	   *strategy;
	int64		conc;
	int64		ival;
	bool		has_conc;
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	int			nchildren = 0;
	char	   *hint;

	check_keys(node, what, loop_keys);

	if (get_key(node, "description", &v) && v.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"description\" must be a string", what),
				 errdetail("Found %s.", describe(&v)),
				 errhint("Describe the node in words, or leave \"description\" out.")));

	loop_type = get_string(node, what, "loopType", true,
						   "Set \"loopType\" to \"sequential\" or \"parallel\".");
	if (strcmp(loop_type, "sequential") != 0 && strcmp(loop_type, "parallel") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown loopType \"%s\"", what, loop_type),
				 errhint("Set \"loopType\" to \"sequential\" or \"parallel\".")));

	hint = psprintf("\"concurrency\" is a whole number from 1 to batchflow.max_concurrency (currently %d); a superuser may raise batchflow.max_concurrency.",
					bf_max_concurrency);
	has_conc = get_int(node, what, "concurrency", 1, bf_max_concurrency,
					   strcmp(loop_type, "parallel") == 0, hint, &conc);
	if (has_conc && conc != 1 && strcmp(loop_type, "sequential") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: a sequential loop cannot have concurrency " INT64_FORMAT, what, conc),
				 errdetail("A sequential loop runs one item at a time, in index order."),
				 errhint("Use \"loopType\": \"parallel\" to run items concurrently, or leave \"concurrency\" out.")));

	check_input_source(node, what, walk);
	bf_check_depends_on(node, what);
	bf_check_throttles(node, what);

	strategy = get_string(node, what, "errorStrategy", false,
						  "Set \"errorStrategy\" to \"fail-fast\", \"continue\" or \"retry\".");
	if (strategy != NULL && strcmp(strategy, "fail-fast") != 0 &&
		strcmp(strategy, "continue") != 0 && strcmp(strategy, "retry") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown errorStrategy \"%s\"", what, strategy),
				 errhint("Set \"errorStrategy\" to \"fail-fast\" (the default), \"continue\" or \"retry\".")));

	if (strategy == NULL || strcmp(strategy, "retry") != 0)
	{
		if (get_key(node, "maxRetries", &v) || get_key(node, "retryDelayMs", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"%s\" requires errorStrategy \"retry\"", what,
							get_key(node, "maxRetries", &v) ? "maxRetries" : "retryDelayMs"),
					 errdetail("The loop's errorStrategy is \"%s\", which never retries.",
							   strategy ? strategy : "fail-fast"),
					 errhint("Set \"errorStrategy\": \"retry\", or remove the retry settings.")));
	}
	get_int(node, what, "maxRetries", 0, BF_MAX_RETRIES_LIMIT, false,
			"\"maxRetries\" is how many times a failed item is tried again, from 0 to 100 (default 3).",
			&ival);
	get_int(node, what, "retryDelayMs", 0, BF_MAX_RETRY_DELAY_MS, false,
			"\"retryDelayMs\" is the first retry's delay in milliseconds, from 0 to 3600000 (default 1000); it doubles on each retry.",
			&ival);

	/* children: one or more activities, no loops */
	if (!get_key(node, "children", &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: missing property \"children\"", what),
				 errhint("List the activities to run for each item in \"children\".")));
	if (!is_container(&v, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"children\" must be an array", what),
				 errdetail("Found %s.", describe(&v)),
				 errhint("List the activities to run for each item in \"children\".")));

	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *child_what;
		char	   *id;
		char	   *type;
		if (tok != WJB_ELEM)
			continue;
		child_what = psprintf("%s, child %d", what, nchildren + 1);
		nchildren++;
		if (!is_container(&v, true))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be an object", child_what),
					 errdetail("Found %s.", describe(&v)),
					 errhint("Write each child as {\"id\": ..., \"type\": \"activity\", ...}.")));

		id = get_string(v.val.binary.data, child_what, "id", true,
						"Give every node a unique \"id\".");
		if (!valid_name(id))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: \"%s\" is not a valid node id", child_what, id),
					 errhint("Use at most %d letters, digits, \"_\" or \"-\", starting with a letter or \"_\".",
							 BF_MAX_ID_LEN)));
		child_what = psprintf("node \"%s\"", id);
		if (list_has_string(walk->ids, id))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("%s: duplicate node id", child_what),
					 errdetail("Another node already has the id \"%s\".", id),
					 errhint("Node ids must be unique within a workflow, children included.")));
		walk->ids = lappend(walk->ids, id);

		type = get_string(v.val.binary.data, child_what, "type", true,
						  "A loop's children are activities: set \"type\": \"activity\".");
		if (strcmp(type, "loop") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
					 errmsg("%s: loops may not be nested", child_what),
					 errdetail("Node \"%s\" is a loop inside %s.", id, what),
					 errhint("Move the inner loop to the top level and feed it with an \"output\" variable.")));
		if (strcmp(type, "activity") != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown type \"%s\"", child_what, type),
					 errhint("A loop's children are activities: set \"type\": \"activity\".")));
		check_activity(v.val.binary.data, child_what, true);
	}
	if (nchildren == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"children\" is empty", what),
				 errdetail("A loop needs at least one activity to run for each item."),
				 errhint("List the activities to run for each item in \"children\".")));
	if (get_key(node, "children", &v))
		bf_check_loop_workflow_child(v.val.binary.data, what);
}

/*
 * bf_validate_definition
 *	  Check a whole definition; ereport ERROR on the first problem.
 */
void
bf_validate_definition(Jsonb *definition)
{
	DefWalk		walk = {NIL, NIL};
	JsonbContainer *root = &definition->root;
	JsonbValue	v;
	JsonbIterator *it;
	JsonbIteratorToken tok;
	int			n = 0;
	const char *nodes_hint = "A definition is {\"nodes\": [ ... ]}, with at least one node of \"type\" \"activity\" or \"loop\".";

	if (!JB_ROOT_IS_OBJECT(definition) || JB_ROOT_IS_SCALAR(definition))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow definition must be a JSON object"),
				 errdetail("Found %s.", JB_ROOT_IS_SCALAR(definition) ? "a scalar" : "an array"),
				 errhint("%s", nodes_hint)));
	check_keys(root, "workflow definition", top_keys);

	if (get_key(root, "description", &v) && v.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow definition: property \"description\" must be a string"),
				 errdetail("Found %s.", describe(&v)),
				 errhint("Describe the workflow in words, or leave \"description\" out.")));

	if (!get_key(root, "nodes", &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow definition: missing property \"nodes\""),
				 errhint("%s", nodes_hint)));
	if (!is_container(&v, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow definition: property \"nodes\" must be an array"),
				 errdetail("Found %s.", describe(&v)),
				 errhint("%s", nodes_hint)));

	it = JsonbIteratorInit(v.val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *what;
		char	   *id;
		char	   *type;
		JsonbContainer *node;

		if (tok != WJB_ELEM)
			continue;
		what = psprintf("node %d", n + 1);
		n++;
		if (!is_container(&v, true))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: must be an object", what),
					 errdetail("Found %s.", describe(&v)),
					 errhint("Write each node as {\"id\": ..., \"type\": \"activity\" or \"loop\", ...}.")));
		node = v.val.binary.data;

		id = get_string(node, what, "id", true, "Give every node a unique \"id\".");
		if (!valid_name(id))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: \"%s\" is not a valid node id", what, id),
					 errhint("Use at most %d letters, digits, \"_\" or \"-\", starting with a letter or \"_\".",
							 BF_MAX_ID_LEN)));
		what = psprintf("node \"%s\"", id);
		if (list_has_string(walk.ids, id))
			ereport(ERROR,
					(errcode(ERRCODE_DUPLICATE_OBJECT),
					 errmsg("%s: duplicate node id", what),
					 errdetail("Another node already has the id \"%s\".", id),
					 errhint("Node ids must be unique within a workflow, children included.")));
		walk.ids = lappend(walk.ids, id);

		type = get_string(node, what, "type", true,
						  "Set \"type\" to \"activity\" or \"loop\".");
		if (strcmp(type, "activity") == 0)
		{
			check_activity(node, what, false);
			walk.activities = lappend(walk.activities, id);
		}
		else if (strcmp(type, "loop") == 0)
			check_loop(node, what, &walk);
		else
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown type \"%s\"", what, type),
					 errhint("Set \"type\" to \"activity\" or \"loop\".")));
	}
	if (n == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("workflow definition: property \"nodes\" is empty"),
				 errhint("%s", nodes_hint)));
}

/* Describe a JSON value for an error detail (for definition_bigbatch.c). */
char *
bf_describe_json(JsonbValue *v)
{
	return describe(v);
}
