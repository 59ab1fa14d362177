/*-------------------------------------------------------------------------
 *
 * definition_json.h
 *	  Reading the properties of a workflow definition, each with its
 *	  error in the style of definition errors (definition_json.c).
 *
 * IDENTIFICATION
 *	  src/definition_json.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DEFINITION_JSON_H
#define BATCHFLOW_DEFINITION_JSON_H

#include "postgres.h"

#include "nodes/pg_list.h"
#include "utils/jsonb.h"

/* Longest node id and variable name accepted. */
#define BF_MAX_ID_LEN			63

extern char *bf_def_describe(JsonbValue *v);
extern bool bf_def_is_container(JsonbValue *v, bool object);
extern char *bf_def_word_list(const char *const *words);
extern bool bf_def_in_list(const char *word, int len, const char *const *words);
extern bool bf_def_get(JsonbContainer *obj, const char *key, JsonbValue *out);
extern JsonbContainer *bf_def_object(JsonbValue *v, const char *what,
									 const char *label, const char *hint);
extern void bf_def_check_keys(JsonbContainer *obj, const char *what,
							  const char *const *allowed);
extern void bf_def_missing(const char *what, const char *key, const char *hint);
extern char *bf_def_get_string(JsonbContainer *obj, const char *what,
							   const char *key, bool required, const char *hint);
extern bool bf_def_get_int(JsonbContainer *obj, const char *what, const char *key,
						   int64 min, int64 max, bool required, const char *hint,
						   int64 *result);
extern bool bf_def_valid_name(const char *s);
extern List *bf_def_parse_sql(const char *what, const char *label,
							  const char *sql, const char *hint);

#endif							/* BATCHFLOW_DEFINITION_JSON_H */
