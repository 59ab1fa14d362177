/*-------------------------------------------------------------------------
 *
 * activity_http.h
 *	  One HTTP request on a libcurl easy handle (activity_http.c) and the
 *	  HTTP settings.
 *
 * IDENTIFICATION
 *	  src/activity_http.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef BATCHFLOW_ACTIVITY_HTTP_H
#define BATCHFLOW_ACTIVITY_HTTP_H

#include "postgres.h"

#include "lib/stringinfo.h"

#include "http_template.h"
#include "item_result.h"
#include "loopcache.h"

typedef struct BfHttpRequest
{
	void	   *easy;			/* CURL * */
	struct curl_slist *headers;
	char	   *url;
	char	   *method;
	char	   *request_body;
	StringInfoData body;		/* response body, up to max_body bytes */
	StringInfoData headers_raw; /* header lines of the last response */
	int			max_body;
	bool		truncated;
	int			timeout_ms;
	char		errbuf[256];	/* CURL_ERROR_SIZE */
	void	   *owner;			/* the in-flight item (http_batch.c) */
} BfHttpRequest;

extern int	bf_http_timeout_ms;
extern int	bf_http_max_response_kb;
extern int	bf_http_max_redirects;
extern int	bf_http_max_inflight;
extern char *bf_http_allowed_hosts;
extern void bf_http_define_gucs(void);
extern BfHttpRequest *bf_http_prepare(BfChild *child, const BfTemplateContext *ctx,
									  const char *idempotency_key, char **error);
extern void bf_http_finish(BfHttpRequest *req, int code, BfItemResult *result);
extern void bf_http_release(BfHttpRequest *req);

#endif							/* BATCHFLOW_ACTIVITY_HTTP_H */
