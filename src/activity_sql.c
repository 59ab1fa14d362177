/*-------------------------------------------------------------------------
 *
 * activity_sql.c
 *	  Executing one attempt of an item: its children in order, each SQL
 *	  statement run with SPI as the role that started the run, in a
 *	  security-restricted operation (see bf_become_run_owner in security.c).
 *
 *	  The attempt runs in a subtransaction of the item's transaction, so a
 *	  failing child rolls back every child's effects and nothing else: the
 *	  caller then records the failure in the same transaction.  On success
 *	  the effects commit together with the item's completion, which is what
 *	  makes SQL items exactly-once.
 *
 *	  Item data reaches SQL only as parameters: $1 jsonb (the item), $2 int
 *	  (its index) and $3 jsonb (the context: run, index, total, vars and the
 *	  previous child's output as prev).
 *
 * IDENTIFICATION
 *	  src/activity_sql.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timeout.h"

#include "batchflow.h"
#include "activity_sql.h"
#include "run_control.h"
#include "security.h"
#include "spi_util.h"

static Jsonb *bf_build_context(BfClaim *claim, Datum prev, bool prev_isnull);
static void bf_push_jsonb(JsonbParseState **state, Jsonb *value);
static void bf_push_key(JsonbParseState **state, const char *key);
static void bf_push_int(JsonbParseState **state, int64 value);
static Datum bf_run_child(BfClaim *claim, BfChild *child, Datum prev,
						  bool prev_isnull, bool *isnull);

/* Push an object key. */
static void
bf_push_key(JsonbParseState **state, const char *key)
{
	JsonbValue	v;

	v.type = jbvString;
	v.val.string.val = (char *) key;
	v.val.string.len = strlen(key);
	pushJsonbValue(state, WJB_KEY, &v);
}

/* Push an integer value. */
static void
bf_push_int(JsonbParseState **state, int64 value)
{
	JsonbValue	v;

	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(value);
	pushJsonbValue(state, WJB_VALUE, &v);
}

/* Push a whole jsonb document (or JSON null for NULL) as an object value. */
static void
bf_push_jsonb(JsonbParseState **state, Jsonb *value)
{
	JsonbValue	v;

	if (value == NULL)
	{
		v.type = jbvNull;
		pushJsonbValue(state, WJB_VALUE, &v);
	}
	else if (JB_ROOT_IS_SCALAR(value))
	{
		if (!JsonbExtractScalar(&value->root, &v))
			elog(ERROR, "could not extract jsonb scalar");
		pushJsonbValue(state, WJB_VALUE, &v);
	}
	else
	{
		v.type = jbvBinary;
		v.val.binary.data = &value->root;
		v.val.binary.len = VARSIZE(value) - VARHDRSZ;
		pushJsonbValue(state, WJB_VALUE, &v);
	}
}

/* The $3 context of an item: {run, index, total, vars, prev}. */
static Jsonb *
bf_build_context(BfClaim *claim, Datum prev, bool prev_isnull)
{
	JsonbParseState *state = NULL;
	JsonbValue *res;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);
	bf_push_key(&state, "run");
	bf_push_int(&state, claim->loop->run_id);
	bf_push_key(&state, "index");
	bf_push_int(&state, claim->idx);
	bf_push_key(&state, "total");
	bf_push_int(&state, claim->loop->total);
	bf_push_key(&state, "vars");
	bf_push_jsonb(&state, claim->loop->vars);
	bf_push_key(&state, "prev");
	bf_push_jsonb(&state, prev_isnull ? NULL : DatumGetJsonbP(prev));
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/*
 * The first column of the first row of the last SPI result, as jsonb: json
 * and jsonb as they are, numbers and booleans as JSON numbers and booleans,
 * anything else as a JSON string of its text form.  No row or a NULL gives
 * SQL NULL.
 */
Datum
bf_first_column_as_jsonb(bool *isnull)
{
	Oid			type;
	Datum		value;
	char	   *text;

	*isnull = true;
	if (SPI_tuptable == NULL || SPI_processed == 0 ||
		SPI_tuptable->tupdesc->natts < 1)
		return (Datum) 0;

	value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull);
	if (*isnull)
		return (Datum) 0;
	type = SPI_gettypeid(SPI_tuptable->tupdesc, 1);
	if (type == JSONBOID)
		return PointerGetDatum(DatumGetJsonbPCopy(value));

	text = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	switch (type)
	{
		case JSONOID:
			return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case NUMERICOID:
		case FLOAT4OID:
		case FLOAT8OID:
			/* NaN and Infinity are not JSON numbers: keep them as strings. */
			if (strspn(text, "0123456789.-+eE") == strlen(text))
				return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
			break;
		case BOOLOID:
			return DirectFunctionCall1(jsonb_in,
									   CStringGetDatum(DatumGetBool(value) ? "true" : "false"));
		default:
			break;
	}
	{
		JsonbValue	v;

		v.type = jbvString;
		v.val.string.val = text;
		v.val.string.len = strlen(text);
		return PointerGetDatum(JsonbValueToJsonb(&v));
	}
}

/* Run one SQL child for the claimed item; returns its output. */
static Datum
bf_run_child(BfClaim *claim, BfChild *child, Datum prev, bool prev_isnull,
			 bool *isnull)
{
	static const Oid child_arg_types[3] = {JSONBOID, INT4OID, JSONBOID};
	Datum		args[3];
	char		nulls[3] = {' ', ' ', ' '};
	int			rc;

	bf_keep_plan(&child->plan, child->sql, 3, child_arg_types);

	args[0] = claim->item;
	nulls[0] = claim->item_isnull ? 'n' : ' ';
	args[1] = Int32GetDatum(claim->idx);
	/* Building the context costs a copy of the run's variables: skip it
	 * for statements that cannot refer to it. */
	if (child->uses_context)
		args[2] = PointerGetDatum(bf_build_context(claim, prev, prev_isnull));
	else
	{
		args[2] = (Datum) 0;
		nulls[2] = 'n';
	}

	pgstat_report_activity(STATE_RUNNING, child->sql);
	if (child->timeout_ms > 0)
		enable_timeout_after(STATEMENT_TIMEOUT, child->timeout_ms);
	rc = SPI_execute_plan(child->plan, args, nulls, false, 0);
	if (child->timeout_ms > 0)
		disable_timeout(STATEMENT_TIMEOUT, false);
	if (rc < 0)
		elog(ERROR, "SPI_execute_plan failed: %s", SPI_result_code_string(rc));

	return bf_first_column_as_jsonb(isnull);
}

/*
 * Execute one attempt of the claimed item: every child in order, as the
 * run's owner, in a subtransaction.  Fills *result; never throws for an
 * error raised by the item's own SQL.
 */
void
bf_execute_item(BfClaim *claim, BfItemResult *result)
{
	bf_execute_children(claim, 0, claim->loop->nchildren, (Datum) 0, true, result);
}

/*
 * Execute children first .. stop-1 of the claimed item, all SQL, starting
 * from prev (the output of child first-1), as bf_execute_item does.  An
 * HTTP batch (http_batch.c) runs the SQL stretches of mixed items this way.
 */
void
bf_execute_children(BfClaim *claim, int first, int stop, Datum prev_in,
					bool prev_in_isnull, BfItemResult *result)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	BfLoopInfo *loop = claim->loop;
	volatile int current = -1;

	memset(result, 0, sizeof(*result));
	result->output_isnull = true;

	/*
	 * Never run as anyone else: a role dropped since bf_start fails the
	 * whole run (result->fatal), whatever the loop's error strategy.
	 */
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(loop->owner)))
	{
		result->ok = false;
		result->fatal = true;
		result->error = psprintf("role with OID %u that started run " INT64_FORMAT " no longer exists",
								 loop->owner, loop->run_id);
		result->sqlstate = pstrdup("42704");
		return;
	}

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);

	PG_TRY();
	{
		BfSavedUser saved;
		Datum		prev = prev_in;
		bool		prev_isnull = prev_in_isnull;

		bf_become_run_owner(loop->owner, loop->run_id, &saved);
		bf_cancel_window_open(loop->run_id);

		for (int i = first; i < stop; i++)
		{
			BfChild    *child = &loop->children[i];

			current = i;
			CHECK_FOR_INTERRUPTS();
			if (strcmp(child->activity, "sql") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("activity \"%s\" of type \"%s\" cannot run in a SQL transaction",
								child->id, child->activity)));
			prev = bf_run_child(claim, child, prev, prev_isnull, &prev_isnull);
		}

		bf_cancel_window_close(true);
		bf_restore_after_activity(&saved);

		/* Keep the output beyond the subtransaction. */
		MemoryContextSwitchTo(oldcxt);
		if (!prev_isnull)
			prev = PointerGetDatum(DatumGetJsonbPCopy(prev));
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		result->ok = true;
		result->output = prev;
		result->output_isnull = prev_isnull;
	}
	PG_CATCH();
	{
		disable_timeout(STATEMENT_TIMEOUT, false);
		bf_cancel_window_close(false);
		bf_result_from_error(result, oldcxt, oldowner,
							 current >= 0 ? loop->children[current].id : NULL);
		result->cancelled = bf_cancel_requested(loop->run_id);
	}
	PG_END_TRY();
	pgstat_report_activity(STATE_RUNNING, "batchflow: recording item");
}
