/*-------------------------------------------------------------------------
 *
 * register.c
 *	  bf_register(name, definition): validate a workflow and store it as the
 *	  workflow's next version.
 *
 *	  The first registration of a name creates the workflow and makes the
 *	  caller its owner; later registrations by the owner (or a role with its
 *	  privileges, a superuser, or a member of batchflow_admin) add versions.
 *	  Runs already started keep the version they started with.  Versions are
 *	  numbered under a row lock on the workflow, so two sessions registering
 *	  the same name at once get versions n and n+1, never the same number.
 *
 * IDENTIFICATION
 *	  src/register.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"

#include "batchflow.h"
#include "definition.h"
#include "register.h"
#include "security.h"
#include "version_check.h"

PG_FUNCTION_INFO_V1(bf_register);

/* batchflow.max_definition_size, in kB */
int			bf_max_definition_kb = 1024;

/* Longest workflow name, as the workflow table's CHECK constraint allows. */
#define BF_MAX_WORKFLOW_NAME	128

void
bf_register_define_gucs(void)
{
	DefineCustomIntVariable("batchflow.max_definition_size",
							"Largest workflow definition bf_register accepts.",
							"Measured as the stored jsonb value.",
							&bf_max_definition_kb,
							1024, 1, 1024 * 1024,
							PGC_SUSET, GUC_UNIT_KB,
							NULL, NULL, NULL);
}

/* Workflow names: a letter or _, then letters, digits, _ . : or -. */
static void
check_workflow_name(const char *name)
{
	bool		ok = name[0] != '\0' && strlen(name) <= BF_MAX_WORKFLOW_NAME &&
		((name[0] >= 'A' && name[0] <= 'Z') || (name[0] >= 'a' && name[0] <= 'z') ||
		 name[0] == '_');

	for (const char *p = name + 1; ok && *p; p++)
		ok = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			(*p >= '0' && *p <= '9') || *p == '_' || *p == '.' || *p == ':' || *p == '-';
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid workflow name \"%s\"", name),
				 errdetail("A workflow name starts with a letter or \"_\" and has at most %d letters, digits, \"_\", \".\", \":\" or \"-\".",
						   BF_MAX_WORKFLOW_NAME),
				 errhint("Choose a name such as \"nightly_import\".")));
}

/* Error context: which workflow was being registered. */
static void
register_error_callback(void *arg)
{
	errcontext("while registering workflow \"%s\"", (const char *) arg);
}

/*
 * bf_register(name text, definition jsonb) returns int
 *
 * Returns the id of the new workflow_version row.
 */
Datum
bf_register(PG_FUNCTION_ARGS)
{
	char	   *name;
	Jsonb	   *definition;
	Size		size;
	ErrorContextCallback errcallback;
	BfSavedUser saved;
	Oid			caller = GetUserId();
	Oid			owner;
	Oid			argtypes[3] = {TEXTOID, OIDOID, JSONBOID};
	Datum		args[3];
	bool		isnull;
	int32		version_id;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow name must not be null"),
				 errhint("Pass a name such as \"nightly_import\".")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("workflow definition must not be null"),
				 errhint("Pass a JSON object such as {\"nodes\": [ ... ]}.")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	definition = PG_GETARG_JSONB_P(1);
	check_workflow_name(name);

	errcallback.callback = register_error_callback;
	errcallback.arg = name;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	size = VARSIZE(definition);
	if (size > (Size) bf_max_definition_kb * 1024)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("workflow definition is too large"),
				 errdetail("The definition takes %zu bytes; the limit batchflow.max_definition_size is %d kB.",
						   size, bf_max_definition_kb),
				 errhint("Pass large item lists as the run's input (bf_start's second argument) instead of inlining them, or have a superuser raise batchflow.max_definition_size.")));

	bf_validate_definition(definition);

	bf_check_sql_version();
	bf_become_admin(&saved);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	/* Create the workflow if it is new, then lock its row. */
	args[0] = CStringGetTextDatum(name);
	args[1] = ObjectIdGetDatum(caller);
	if (SPI_execute_with_args("INSERT INTO batchflow.workflow (name, owner) VALUES ($1, $2)"
							  " ON CONFLICT (name) DO NOTHING",
							  2, argtypes, args, NULL, false, 0) != SPI_OK_INSERT)
		elog(ERROR, "could not create workflow \"%s\"", name);
	if (SPI_execute_with_args("SELECT owner FROM batchflow.workflow WHERE name = $1 FOR UPDATE",
							  1, argtypes, args, NULL, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not lock workflow \"%s\"", name);
	owner = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
										   SPI_tuptable->tupdesc, 1, &isnull));

	/* The ownership check is made as the caller. */
	bf_restore_user(&saved);
	if (!bf_can_manage(owner))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for workflow \"%s\"", name),
				 errdetail("The workflow was registered by another role; only that role can add versions."),
				 errhint("Register your workflow under another name.")));
	bf_become_admin(&saved);

	args[2] = JsonbPGetDatum(definition);
	if (SPI_execute_with_args("INSERT INTO batchflow.workflow_version (workflow, version, definition, owner)"
							  " SELECT $1, coalesce(max(version), 0) + 1, $3, $2"
							  "   FROM batchflow.workflow_version WHERE workflow = $1"
							  " RETURNING id",
							  3, argtypes, args, NULL, false, 1) != SPI_OK_INSERT_RETURNING)
		elog(ERROR, "could not store workflow \"%s\"", name);
	version_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));

	SPI_finish();
	bf_restore_user(&saved);
	error_context_stack = errcallback.previous;
	PG_RETURN_INT32(version_id);
}
