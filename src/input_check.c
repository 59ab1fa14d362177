/*-------------------------------------------------------------------------
 *
 * input_check.c
 *	  bf_start's checks of its input, made before anything is created.
 *
 *	  The input of a run is one JSON object whose keys are the run's
 *	  variables.  Anything else (an array, a string, a number, a boolean or
 *	  JSON null) is refused with SQLSTATE 22023 naming the JSON type found;
 *	  SQL NULL counts as {}.  When the first node of the workflow is a loop
 *	  over a variable, that variable must be an array or null: another type
 *	  is refused the same way.  A variable that is missing stays an empty
 *	  loop, as before, but a NOTICE names it, since a misspelt key would
 *	  otherwise look like a run that succeeded with nothing to do.
 *
 *	  Later nodes read variables that earlier activities may still set, so
 *	  they are checked when the run reaches them (batchflow._advance).
 *
 * IDENTIFICATION
 *	  src/input_check.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/jsonb.h"

#include "batchflow.h"
#include "input_check.h"

static const char *bf_jsonb_value_type(const JsonbValue *v);
static const char *bf_with_article(const char *type);

/* The name jsonb_typeof gives to a JSON value. */
static const char *
bf_jsonb_value_type(const JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return "null";
		case jbvString:
			return "string";
		case jbvNumeric:
			return "number";
		case jbvBool:
			return "boolean";
		case jbvArray:
			return "array";
		case jbvObject:
			return "object";
		case jbvBinary:
			return JsonContainerIsArray(v->val.binary.data) ? "array" : "object";
		default:
			return "unknown";
	}
}

/* "an array", "a string", ..., "null": the type as the messages name it. */
static const char *
bf_with_article(const char *type)
{
	if (strcmp(type, "null") == 0)
		return "null";
	return psprintf("%s %s", (type[0] == 'a' || type[0] == 'o') ? "an" : "a", type);
}

/* The name jsonb_typeof gives to a whole jsonb document. */
const char *
bf_jsonb_type(Jsonb *jb)
{
	JsonbValue	v;

	if (JB_ROOT_IS_SCALAR(jb))
	{
		(void) JsonbExtractScalar(&jb->root, &v);
		return bf_jsonb_value_type(&v);
	}
	return JB_ROOT_IS_ARRAY(jb) ? "array" : "object";
}

/*
 * Check the input of a run of workflow `workflow` whose definition is
 * `definition`; ERROR (22023) if it cannot be started with it.
 */
void
bf_check_start_input(const char *workflow, Jsonb *definition, Jsonb *input)
{
	JsonbValue *nodes;
	JsonbValue *first;
	JsonbValue *type;
	JsonbValue *source;
	JsonbValue *variable;
	JsonbValue *id;
	JsonbValue *value;
	char	   *varname;
	char	   *node_id;

	if (!JB_ROOT_IS_OBJECT(input))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("input of workflow \"%s\" must be a JSON object, not %s",
						workflow, bf_with_article(bf_jsonb_type(input))),
				 errdetail("The keys of the input object are the run's variables."),
				 errhint("Pass an object such as '{\"items\": [1, 2, 3]}', or NULL for no variables.")));

	/* Is the first node a loop over a variable? */
	nodes = getKeyJsonValueFromContainer(&definition->root, "nodes", 5, NULL);
	if (nodes == NULL || nodes->type != jbvBinary ||
		!JsonContainerIsArray(nodes->val.binary.data))
		return;
	first = getIthJsonbValueFromContainer(nodes->val.binary.data, 0);
	if (first == NULL || first->type != jbvBinary ||
		!JsonContainerIsObject(first->val.binary.data))
		return;
	type = getKeyJsonValueFromContainer(first->val.binary.data, "type", 4, NULL);
	if (type == NULL || type->type != jbvString ||
		type->val.string.len != 4 || strncmp(type->val.string.val, "loop", 4) != 0)
		return;
	source = getKeyJsonValueFromContainer(first->val.binary.data, "inputSource", 11, NULL);
	if (source == NULL || source->type != jbvBinary ||
		!JsonContainerIsObject(source->val.binary.data))
		return;
	variable = getKeyJsonValueFromContainer(source->val.binary.data, "variable", 8, NULL);
	if (variable == NULL || variable->type != jbvString)
		return;
	varname = pnstrdup(variable->val.string.val, variable->val.string.len);
	id = getKeyJsonValueFromContainer(first->val.binary.data, "id", 2, NULL);
	node_id = (id != NULL && id->type == jbvString)
		? pnstrdup(id->val.string.val, id->val.string.len) : pstrdup("?");

	value = getKeyJsonValueFromContainer(&input->root, varname, strlen(varname), NULL);
	if (value == NULL)
	{
		ereport(NOTICE,
				(errmsg("input of workflow \"%s\" has no variable \"%s\": loop \"%s\" will have no items",
						workflow, varname, node_id),
				 errdetail("The first node, loop \"%s\", takes its items from variable \"%s\".",
						   node_id, varname),
				 errhint("Check the spelling of the key, or pass '{\"%s\": []}' to start a run with an empty loop on purpose.",
						 varname)));
		return;
	}
	if (value->type == jbvNull ||
		(value->type == jbvBinary && JsonContainerIsArray(value->val.binary.data)))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("variable \"%s\" of workflow \"%s\" must be a JSON array, not %s",
					varname, workflow, bf_with_article(bf_jsonb_value_type(value))),
			 errdetail("The first node, loop \"%s\", takes its items from variable \"%s\": one item per element of the array.",
					   node_id, varname),
			 errhint("Pass the items as an array, such as '{\"%s\": [1, 2, 3]}'.", varname)));
}
