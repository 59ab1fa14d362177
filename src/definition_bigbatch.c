/*-------------------------------------------------------------------------
 *
 * definition_bigbatch.c
 *	  Validation of the big-batch properties of a loop, as bf_register
 *	  receives them: the input sources {"query": ...} and
 *	  {"keyRanges": {...}}, and the throttles "maxItemsPerSecond" and
 *	  "maxReplicationLag".
 *
 *	  Called from definition.c; reports the first problem with an ereport in
 *	  the style of the other definition errors (the node, the property, what
 *	  was found, what is allowed).  Things that can only be checked when the
 *	  loop starts (the table exists, the key has an index, the query plans)
 *	  are checked by batchflow._lazy_loop then.
 *
 * IDENTIFICATION
 *	  src/definition_bigbatch.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "parser/parser.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "batchflow.h"
#include "bigbatch.h"
#include "definition_json.h"

#define BF_MAX_RANGE_SIZE 1000000
#define BF_MAX_ITEMS_PER_SECOND 1000000

static const char *const keyranges_keys[] = {"table", "key", "size", NULL};

/* The numeric value of v as a double, or false if v is not a number. */
static bool
bb_number(JsonbValue *v, double *out)
{
	if (v->type != jbvNumeric)
		return false;
	*out = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											  NumericGetDatum(v->val.numeric)));
	return true;
}

/* {"query": "SELECT ..."}: one SELECT statement that parses. */
void
bf_check_query_source(JsonbContainer *src, const char *what)
{
	JsonbValue	v;
	char	   *sql;
	List	   *stmts;
	const char *hint = "Write one SELECT statement; each row it returns becomes an item, and $1 is the run's variables (jsonb).";
	Node	   *stmt;

	(void) bf_def_get(src, "query", &v);
	if (v.type != jbvString || v.val.string.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: inputSource \"query\" must be a non-empty string", what),
				 errdetail("Found %s.", bf_def_describe(&v)),
				 errhint("%s", hint)));
	sql = pnstrdup(v.val.string.val, v.val.string.len);
	stmts = bf_def_parse_sql(what, "inputSource \"query\"", sql, hint);

	if (list_length(stmts) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: inputSource \"query\" must contain exactly one statement", what),
				 errdetail("Found %d statements.", list_length(stmts)),
				 errhint("%s", hint)));
	stmt = linitial_node(RawStmt, stmts)->stmt;
	if (!IsA(stmt, SelectStmt) || ((SelectStmt *) stmt)->intoClause != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: inputSource \"query\" must be a SELECT statement", what),
				 errdetail("The statement is not a plain SELECT, VALUES or WITH ... SELECT."),
				 errhint("%s", hint)));
}

/* {"keyRanges": {"table": "schema.name", "key": "column", "size": n}} */
void
bf_check_keyranges_source(JsonbContainer *src, const char *what)
{
	JsonbValue	v;
	JsonbContainer *kr;
	const char *hint = "Write {\"keyRanges\": {\"table\": \"schema.name\", \"key\": \"column\", \"size\": 1000}}.";
	double		size;

	(void) bf_def_get(src, "keyRanges", &v);
	kr = bf_def_object(&v, what, "inputSource \"keyRanges\"", hint);
	bf_def_check_keys(kr, psprintf("%s, inputSource keyRanges", what), keyranges_keys);

	for (int i = 0; keyranges_keys[i] != NULL; i++)
	{
		const char *key = keyranges_keys[i];

		if (!bf_def_get(kr, key, &v))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s, inputSource keyRanges: missing property \"%s\"", what, key),
					 errdetail("\"table\", \"key\" and \"size\" are all required."),
					 errhint("%s", hint)));
		if (strcmp(key, "size") != 0 && (v.type != jbvString || v.val.string.len == 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s, inputSource keyRanges: property \"%s\" must be a non-empty string", what, key),
					 errdetail("Found %s.", bf_def_describe(&v)),
					 errhint("%s", hint)));
	}

	(void) bf_def_get(kr, "size", &v);
	if (!bb_number(&v, &size) || size != floor(size) ||
		size < 1 || size > BF_MAX_RANGE_SIZE)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s, inputSource keyRanges: property \"size\" must be an integer from 1 to %d",
						what, BF_MAX_RANGE_SIZE),
				 errdetail("Found %s.", bf_def_describe(&v)),
				 errhint("\"size\" is about how many rows of the table each item covers.")));
}

/* "maxItemsPerSecond": a number > 0; "maxReplicationLag": an interval > 0. */
void
bf_check_throttles(JsonbContainer *node, const char *what)
{
	JsonbValue	v;
	double		rate;

	if (bf_def_get(node, "maxItemsPerSecond", &v) &&
		(!bb_number(&v, &rate) || !(rate > 0) || rate > BF_MAX_ITEMS_PER_SECOND))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s: property \"maxItemsPerSecond\" must be a number greater than 0 and at most %d",
						what, BF_MAX_ITEMS_PER_SECOND),
				 errdetail("Found %s.", bf_def_describe(&v)),
				 errhint("\"maxItemsPerSecond\" is the most items the loop starts in any second, e.g. 50 or 0.5.")));

	if (bf_def_get(node, "maxReplicationLag", &v))
	{
		int64		usecs = -1;

		if (v.type == jbvString)
			usecs = bf_interval_usecs(pnstrdup(v.val.string.val, v.val.string.len));
		if (usecs <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s: property \"maxReplicationLag\" must be a positive interval such as \"10s\"", what),
					 errdetail("Found %s.", bf_def_describe(&v)),
					 errhint("Write a duration as text: \"500ms\", \"10s\", \"2min\".")));
	}
}

/*
 * An interval's text ("10s", "2 minutes") in microseconds, or -1 when the
 * text is not an interval.  Months count 30 days, days 24 hours.
 */
int64
bf_interval_usecs(const char *text)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	Interval   *iv = NULL;

	PG_TRY();
	{
		iv = DatumGetIntervalP(DirectFunctionCall3(interval_in, CStringGetDatum(text),
												   ObjectIdGetDatum(InvalidOid),
												   Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		return -1;
	}
	PG_END_TRY();
	return iv->time + (int64) iv->day * USECS_PER_DAY +
		(int64) iv->month * DAYS_PER_MONTH * USECS_PER_DAY;
}
