/*-------------------------------------------------------------------------
 *
 * http_template.h
 *	  {{...}} placeholders of HTTP activities (http_template.c).
 *
 * IDENTIFICATION
 *	  src/http_template.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_HTTP_TEMPLATE_H
#define BATCHFLOW_HTTP_TEMPLATE_H

#include "postgres.h"

#include "utils/jsonb.h"

typedef struct BfTemplateContext
{
	Jsonb	   *item;			/* NULL for SQL NULL */
	int32		index;
	int64		run_id;
} BfTemplateContext;

extern char *bf_template_text(const char *tmpl, const BfTemplateContext *ctx,
							  bool encode, char **error);
extern Jsonb *bf_template_json(Jsonb *body, const BfTemplateContext *ctx,
							   char **error);

#endif							/* BATCHFLOW_HTTP_TEMPLATE_H */
