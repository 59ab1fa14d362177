/*-------------------------------------------------------------------------
 *
 * definition.h
 *	  Parsing and validating workflow definitions (definition.c).
 *	  bf_validate_definition ereports ERROR on the first problem found.
 *
 * IDENTIFICATION
 *	  src/definition.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_DEFINITION_H
#define BATCHFLOW_DEFINITION_H

#include "postgres.h"

#include "utils/jsonb.h"

extern void bf_validate_definition(Jsonb *definition);

#endif							/* BATCHFLOW_DEFINITION_H */
