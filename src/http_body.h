/*-------------------------------------------------------------------------
 *
 * http_body.h
 *	  An HTTP response body as jsonb, never raising an ERROR on what the
 *	  server sent (http_body.c).
 *
 * IDENTIFICATION
 *	  src/http_body.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_HTTP_BODY_H
#define BATCHFLOW_HTTP_BODY_H

#include "postgres.h"

extern bool bf_http_valid_text(const char *s, int len);
extern Datum bf_http_body_jsonb(const char *data, int len, bool maybe_json,
								bool *as_json);

#endif							/* BATCHFLOW_HTTP_BODY_H */
