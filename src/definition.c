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


#include "batchflow.h"
#include "activity_workflow.h"
#include "deps.h"
#include "definition.h"
#include "definition_json.h"
#include "bigbatch.h"

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

static bool
list_has_string(List *list, const char *s)
{
	ListCell   *lc;

	foreach(lc, list)
		if (strcmp((char *) lfirst(lc), s) == 0)
			return true;
	return false;
}

/* An optional "description": a string when present. */
static void
check_description(JsonbContainer *obj, const char *what, const char *noun)
{
	JsonbValue	v;

	if (bf_def_get(obj, "description", &v) && v.type != jbvString)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"description\" must be a string", what),
				 errdetail("Found %s.", bf_def_describe(&v)),
				 errhint("Describe the %s in words, or leave \"description\" out.", noun)));
}

/* A required array property ("nodes", "children"); its container. */
static JsonbContainer *
get_array(JsonbContainer *obj, const char *what, const char *key, const char *hint)
{
	JsonbValue	v;

	if (!bf_def_get(obj, key, &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: missing property \"%s\"", what, key),
				 errhint("%s", hint)));
	if (!bf_def_is_container(&v, false))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"%s\" must be an array", what, key),
				 errdetail("Found %s.", bf_def_describe(&v)),
				 errhint("%s", hint)));
	return v.val.binary.data;
}

/*
 * What every node starts with, top-level or a loop's child: an object with
 * a valid "id" that no node before it has (remembered in walk->ids), and a
 * "type".  position names the node for errors until its id is known
 * ("node 2", "node \"each\", child 1"); returns its name from then on
 * ("node \"id\"").
 */
static char *
node_head(JsonbValue *v, const char *position, const char *object_hint,
		  const char *type_hint, DefWalk *walk, char **id, char **type)
{
	char	   *what;

	if (!bf_def_is_container(v, true))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: must be an object", position),
				 errdetail("Found %s.", bf_def_describe(v)),
				 errhint("%s", object_hint)));
	*id = bf_def_get_string(v->val.binary.data, position, "id", true,
							"Give every node a unique \"id\".");
	if (!bf_def_valid_name(*id))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: \"%s\" is not a valid node id", position, *id),
				 errhint("Use at most %d letters, digits, \"_\" or \"-\", starting with a letter or \"_\".",
						 BF_MAX_ID_LEN)));
	what = psprintf("node \"%s\"", *id);
	if (list_has_string(walk->ids, *id))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("%s: duplicate node id", what),
				 errdetail("Another node already has the id \"%s\".", *id),
				 errhint("Node ids must be unique within a workflow, children included.")));
	walk->ids = lappend(walk->ids, *id);
	*type = bf_def_get_string(v->val.binary.data, what, "type", true, type_hint);
	return what;
}

/* An SQL activity's text: exactly one statement that parses. */
static void
check_sql_text(const char *what, const char *sql)
{
	List	   *stmts;

	stmts = bf_def_parse_sql(what, "property \"sql\"", sql,
							 "Write one SQL statement; the item is $1 (jsonb), its index $2 (int) and the context $3 (jsonb).");
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

	kind = bf_def_get_string(node, what, "activity", true,
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
		bf_def_check_keys(node, what, strcmp(kind, "sql") == 0 ? sql_keys : http_keys);

	check_description(node, what, "node");

	if (bf_def_get(node, "output", &v))
	{
		char	   *name;

		if (in_loop)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"output\" is not allowed on a loop's child", what),
					 errdetail("A child runs once per item; its result is the next child's \"prev\" and is kept in the item's output."),
					 errhint("Only top-level activities can save their result in a variable.")));
		name = bf_def_get_string(node, what, "output", false,
						  "Name the variable like an identifier, e.g. \"users\".");
		if (!bf_def_valid_name(name))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"output\" is not a valid variable name", what),
					 errdetail("Found \"%s\".", name),
					 errhint("Use at most %d letters, digits, \"_\" or \"-\", starting with a letter or \"_\".",
							 BF_MAX_ID_LEN)));
	}

	bf_def_get_int(node, what, "timeoutMs", 1, BF_MAX_TIMEOUT_MS, false,
			"Give the timeout in milliseconds, e.g. 5000, at most one day; leave it out for no timeout.",
			&ival);
	if (strcmp(kind, "workflow") == 0)
		return;

	if (strcmp(kind, "sql") == 0)
	{
		char	   *sql = bf_def_get_string(node, what, "sql", true,
									 "Give the statement to run, e.g. \"sql\": \"INSERT INTO t VALUES ($1)\".");

		check_sql_text(what, sql);
		return;
	}

	/* http */
	{
		char	   *url = bf_def_get_string(node, what, "url", true,
									 "Give the address to call, e.g. \"url\": \"https://api.example.com/items/{{item.id}}\".");
		char	   *method;

		if (!http_scheme(url))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"url\" must start with http:// or https://", what),
					 errdetail("Found \"%s\".", url),
					 errhint("Only the http and https schemes are allowed; templates may fill in the rest of the address, not the scheme.")));

		method = bf_def_get_string(node, what, "method", false,
							"Set \"method\" to one of \"GET\", \"POST\", \"PUT\", \"PATCH\", \"DELETE\", \"HEAD\" or \"OPTIONS\".");
		if (method != NULL && !bf_def_in_list(method, strlen(method), http_methods))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: unknown HTTP method \"%s\"", what, method),
					 errhint("Set \"method\" to one of %s (upper case).", bf_def_word_list(http_methods))));

		if (bf_def_get(node, "headers", &v))
		{
			JsonbIterator *it;
			JsonbValue	hv;
			JsonbIteratorToken tok;
			char	   *name = NULL;

			it = JsonbIteratorInit(bf_def_object(&v, what, "property \"headers\"",
												 "Write the headers as {\"Name\": \"value\", ...}."));
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
							 errdetail("Found %s.", bf_def_describe(&hv)),
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

	if (!bf_def_get(node, "inputSource", &v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: loop has no input source", what),
				 errdetail("Property \"inputSource\" is missing."),
				 errhint("%s", hint)));
	src = bf_def_object(&v, what, "property \"inputSource\"", hint);
	bf_def_check_keys(src, psprintf("%s, inputSource", what), source_keys);

	for (int i = 0; source_keys[i] != NULL; i++)
		if (bf_def_get(src, source_keys[i], &v))
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

	if (bf_def_get(src, "query", &v))
		bf_check_query_source(src, what);
	else if (bf_def_get(src, "keyRanges", &v))
		bf_check_keyranges_source(src, what);
	else if (bf_def_get(src, "static", &v))
	{
		if (!bf_def_is_container(&v, false))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: inputSource \"static\" must be an array", what),
					 errdetail("Found %s.", bf_def_describe(&v)),
					 errhint("List the items, e.g. {\"static\": [1, 2, 3]}.")));
	}
	else if (bf_def_get(src, "variable", &v))
	{
		char	   *name = bf_def_get_string(src, what, "variable", true, hint);

		if (!bf_def_valid_name(name))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: inputSource variable \"%s\" is not a valid variable name", what, name),
					 errhint("Name a key of the run's input object or an earlier activity's \"output\".")));
	}
	else
	{
		char	   *id = bf_def_get_string(src, what, "activity", true, hint);

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

	bf_def_check_keys(node, what, loop_keys);

	check_description(node, what, "node");

	loop_type = bf_def_get_string(node, what, "loopType", true,
						   "Set \"loopType\" to \"sequential\" or \"parallel\".");
	if (strcmp(loop_type, "sequential") != 0 && strcmp(loop_type, "parallel") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown loopType \"%s\"", what, loop_type),
				 errhint("Set \"loopType\" to \"sequential\" or \"parallel\".")));

	hint = psprintf("\"concurrency\" is a whole number from 1 to batchflow.max_concurrency (currently %d); a superuser may raise batchflow.max_concurrency.",
					bf_max_concurrency);
	has_conc = bf_def_get_int(node, what, "concurrency", 1, bf_max_concurrency,
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

	strategy = bf_def_get_string(node, what, "errorStrategy", false,
						  "Set \"errorStrategy\" to \"fail-fast\", \"continue\" or \"retry\".");
	if (strategy != NULL && strcmp(strategy, "fail-fast") != 0 &&
		strcmp(strategy, "continue") != 0 && strcmp(strategy, "retry") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: unknown errorStrategy \"%s\"", what, strategy),
				 errhint("Set \"errorStrategy\" to \"fail-fast\" (the default), \"continue\" or \"retry\".")));

	if (strategy == NULL || strcmp(strategy, "retry") != 0)
	{
		if (bf_def_get(node, "maxRetries", &v) || bf_def_get(node, "retryDelayMs", &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"%s\" requires errorStrategy \"retry\"", what,
							bf_def_get(node, "maxRetries", &v) ? "maxRetries" : "retryDelayMs"),
					 errdetail("The loop's errorStrategy is \"%s\", which never retries.",
							   strategy ? strategy : "fail-fast"),
					 errhint("Set \"errorStrategy\": \"retry\", or remove the retry settings.")));
	}
	bf_def_get_int(node, what, "maxRetries", 0, BF_MAX_RETRIES_LIMIT, false,
			"\"maxRetries\" is how many times a failed item is tried again, from 0 to 100 (default 3).",
			&ival);
	bf_def_get_int(node, what, "retryDelayMs", 0, BF_MAX_RETRY_DELAY_MS, false,
			"\"retryDelayMs\" is the first retry's delay in milliseconds, from 0 to 3600000 (default 1000); it doubles on each retry.",
			&ival);

	/* children: one or more activities, no loops */
	it = JsonbIteratorInit(get_array(node, what, "children",
									 "List the activities to run for each item in \"children\"."));
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *child_what;
		char	   *id;
		char	   *type;

		if (tok != WJB_ELEM)
			continue;
		nchildren++;
		child_what = node_head(&v, psprintf("%s, child %d", what, nchildren),
							   "Write each child as {\"id\": ..., \"type\": \"activity\", ...}.",
							   "A loop's children are activities: set \"type\": \"activity\".",
							   walk, &id, &type);
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
	if (bf_def_get(node, "children", &v))
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
	bf_def_check_keys(root, "workflow definition", top_keys);

	check_description(root, "workflow definition", "workflow");

	it = JsonbIteratorInit(get_array(root, "workflow definition", "nodes", nodes_hint));
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *what;
		char	   *id;
		char	   *type;
		JsonbContainer *node;

		if (tok != WJB_ELEM)
			continue;
		n++;
		what = node_head(&v, psprintf("node %d", n),
						 "Write each node as {\"id\": ..., \"type\": \"activity\" or \"loop\", ...}.",
						 "Set \"type\" to \"activity\" or \"loop\".",
						 &walk, &id, &type);
		node = v.val.binary.data;
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
