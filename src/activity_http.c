/*-------------------------------------------------------------------------
 *
 * activity_http.c
 *	  One HTTP request of an http activity, on a libcurl easy handle: build
 *	  it from the child's definition and the item (url, method, headers,
 *	  body, timeout, safety options), collect the response, and turn the
 *	  outcome into an item result.
 *
 *	  The requests themselves are driven, many at a time, by the curl multi
 *	  handle in http_batch.c; nothing here waits on the network or touches
 *	  the database.
 *
 *	  Output of a successful (2xx) request:
 *		{"status": 200, "headers": {"content-type": "..."}, "body": ...}
 *	  where body is JSON when the response says it is JSON and jsonb takes
 *	  it (http_body.c), text otherwise, and null when empty.  Header names
 *	  are lower case; repeated headers are joined with ", ".  A body longer than
 *	  batchflow.http_max_response_size is cut there (the transfer stops) and
 *	  the output says "truncated": true.
 *
 *	  Any other status, a connection error or a timeout fails the attempt;
 *	  its error says what happened.  For 429 and 503, a Retry-After header
 *	  (seconds or an HTTP date) sets the earliest retry.
 *
 * IDENTIFICATION
 *	  src/activity_http.c
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/varlena.h"
#include "utils/memutils.h"

#include "batchflow.h"
#include "activity_http.h"
#include "http_body.h"

#define BF_DEFAULT_HTTP_TIMEOUT_MS	30000
#define BF_DEFAULT_HTTP_MAX_RESPONSE_KB	1024
#define BF_MAX_HTTP_MAX_RESPONSE_KB	(256 * 1024)
#define BF_DEFAULT_HTTP_MAX_REDIRECTS 5
#define BF_DEFAULT_HTTP_MAX_INFLIGHT 100
#define BF_ERROR_SNIPPET			200

int			bf_http_timeout_ms = BF_DEFAULT_HTTP_TIMEOUT_MS;
int			bf_http_max_response_kb = BF_DEFAULT_HTTP_MAX_RESPONSE_KB;
int			bf_http_max_redirects = BF_DEFAULT_HTTP_MAX_REDIRECTS;
int			bf_http_max_inflight = BF_DEFAULT_HTTP_MAX_INFLIGHT;
char	   *bf_http_allowed_hosts = NULL;

static size_t bf_http_on_body(char *data, size_t size, size_t n, void *arg);
static size_t bf_http_on_header(char *data, size_t size, size_t n, void *arg);
static bool bf_http_host_allowed(const char *url, char **error);
static Jsonb *bf_http_output(BfHttpRequest *req, long status);
static Datum bf_http_body_value(BfHttpRequest *req, bool *as_json);
static long bf_http_retry_after(BfHttpRequest *req);
static bool bf_http_add_headers(BfHttpRequest *req, JsonbContainer *node,
								const BfTemplateContext *ctx, bool *has_content_type,
								bool *has_idempotency, char **error);
static bool bf_http_set_body(BfHttpRequest *req, JsonbContainer *node,
							 const BfTemplateContext *ctx, bool has_content_type,
							 char **error);
static void bf_http_set_options(BfHttpRequest *req);

/* Declare the HTTP settings (called from _PG_init). */
void
bf_http_define_gucs(void)
{
	DefineCustomIntVariable("batchflow.http_timeout",
							"Default timeout of an HTTP request, when its activity sets no timeoutMs.",
							NULL,
							&bf_http_timeout_ms,
							BF_DEFAULT_HTTP_TIMEOUT_MS, 1, 86400000,
							PGC_SIGHUP, GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomIntVariable("batchflow.http_max_response_size",
							"Largest HTTP response body kept; longer bodies are cut off here.",
							"The transfer stops at this size and the item's output is marked \"truncated\".",
							&bf_http_max_response_kb,
							BF_DEFAULT_HTTP_MAX_RESPONSE_KB, 1, BF_MAX_HTTP_MAX_RESPONSE_KB,
							PGC_SIGHUP, GUC_UNIT_KB,
							NULL, NULL, NULL);
	DefineCustomIntVariable("batchflow.http_max_redirects",
							"How many redirects an HTTP request follows (0 follows none).",
							"Redirects are only followed to http and https addresses, and not at all while batchflow.http_allowed_hosts is set.",
							&bf_http_max_redirects,
							BF_DEFAULT_HTTP_MAX_REDIRECTS, 0, 50,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomIntVariable("batchflow.http_max_inflight",
							"How many HTTP requests one worker keeps in flight at once.",
							"The per-loop concurrency cap still holds across all workers.",
							&bf_http_max_inflight,
							BF_DEFAULT_HTTP_MAX_INFLIGHT, 1, 10000,
							PGC_SIGHUP, 0,
							NULL, NULL, NULL);
	DefineCustomStringVariable("batchflow.http_allowed_hosts",
							   "Comma-separated host names HTTP activities may call; empty allows every host.",
							   "Set by a superuser. A request to any other host fails before it is sent.",
							   &bf_http_allowed_hosts,
							   "",
							   PGC_SUSET, GUC_LIST_INPUT,
							   NULL, NULL, NULL);
}

/* libcurl write callback: keep the body up to the size limit. */
static size_t
bf_http_on_body(char *data, size_t size, size_t n, void *arg)
{
	BfHttpRequest *req = (BfHttpRequest *) arg;
	size_t		len = size * n;
	size_t		room = (size_t) req->max_body - (size_t) req->body.len;

	if (len > room)
	{
		appendBinaryStringInfo(&req->body, data, (int) room);
		req->truncated = true;
		return 0;				/* stops the transfer: CURLE_WRITE_ERROR */
	}
	appendBinaryStringInfo(&req->body, data, (int) len);
	return len;
}

/*
 * libcurl header callback: keep the header lines of the last response
 * (a new status line, after a redirect or a 100 Continue, starts over).
 */
static size_t
bf_http_on_header(char *data, size_t size, size_t n, void *arg)
{
	BfHttpRequest *req = (BfHttpRequest *) arg;
	size_t		len = size * n;

	if (len >= 5 && strncmp(data, "HTTP/", 5) == 0)
		resetStringInfo(&req->headers_raw);
	else if (req->headers_raw.len + len < 65536)
		appendBinaryStringInfo(&req->headers_raw, data, (int) len);
	return len;
}

/* Is the url's host in batchflow.http_allowed_hosts (or is the list empty)? */
static bool
bf_http_host_allowed(const char *url, char **error)
{
	CURLU	   *u;
	char	   *host = NULL;
	char	   *list;
	List	   *hosts;
	ListCell   *lc;
	bool		ok = false;

	if (bf_http_allowed_hosts == NULL || bf_http_allowed_hosts[0] == '\0')
		return true;

	u = curl_url();
	if (u == NULL)
	{
		*error = pstrdup("out of memory parsing the url");
		return false;
	}
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK)
	{
		curl_url_cleanup(u);
		*error = psprintf("invalid url \"%s\"", url);
		return false;
	}

	list = pstrdup(bf_http_allowed_hosts);
	if (!SplitGUCList(list, ',', &hosts))
	{
		curl_free(host);
		curl_url_cleanup(u);
		*error = pstrdup("batchflow.http_allowed_hosts is not a valid list");
		return false;
	}
	foreach(lc, hosts)
	{
		if (pg_strcasecmp((char *) lfirst(lc), host) == 0)
		{
			ok = true;
			break;
		}
	}
	if (!ok)
		*error = psprintf("host \"%s\" is not in batchflow.http_allowed_hosts", host);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/*
 * The definition's headers, templated, onto req->headers; notes whether
 * Content-Type and Idempotency-Key were among them.  False (with *error)
 * when a header cannot be built.
 */
static bool
bf_http_add_headers(BfHttpRequest *req, JsonbContainer *node,
					const BfTemplateContext *ctx, bool *has_content_type,
					bool *has_idempotency, char **error)
{
	JsonbValue *v = getKeyJsonValueFromContainer(node, "headers", 7, NULL);
	JsonbIterator *it;
	JsonbValue	k;
	JsonbValue	hv;
	JsonbIteratorToken tok;

	*has_content_type = *has_idempotency = false;
	if (v == NULL || v->type != jbvBinary)
		return true;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &k, true)) != WJB_DONE)
	{
		char	   *name;
		char	   *value;
		char	   *tmpl;
		struct curl_slist *l;

		if (tok != WJB_KEY)
			continue;
		tok = JsonbIteratorNext(&it, &hv, true);
		name = pnstrdup(k.val.string.val, k.val.string.len);
		tmpl = hv.type == jbvString ? pnstrdup(hv.val.string.val, hv.val.string.len) : "";
		value = bf_template_text(tmpl, ctx, false, error);
		if (value == NULL)
			return false;
		if (strpbrk(name, "\r\n:") != NULL || strpbrk(value, "\r\n") != NULL)
		{
			*error = psprintf("header \"%s\" would contain a line break or colon after templating", name);
			return false;
		}
		if (pg_strcasecmp(name, "content-type") == 0)
			*has_content_type = true;
		if (pg_strcasecmp(name, "idempotency-key") == 0)
			*has_idempotency = true;
		/* libcurl sends "Name;" as a header with an empty value. */
		l = curl_slist_append(req->headers, value[0]
							  ? psprintf("%s: %s", name, value)
							  : psprintf("%s;", name));
		if (l == NULL)
		{
			*error = pstrdup("out of memory building headers");
			return false;
		}
		req->headers = l;
	}
	return true;
}

/*
 * The request body, templated (JSON containers as JSON, strings as text),
 * into req->request_body, with a Content-Type unless the definition gave
 * one.  False (with *error) when templating fails.
 */
static bool
bf_http_set_body(BfHttpRequest *req, JsonbContainer *node,
				 const BfTemplateContext *ctx, bool has_content_type,
				 char **error)
{
	JsonbValue *v = getKeyJsonValueFromContainer(node, "body", 4, NULL);
	const char *content_type;

	if (v == NULL || v->type == jbvNull)
		return true;
	if (v->type == jbvString)
	{
		req->request_body = bf_template_text(pnstrdup(v->val.string.val, v->val.string.len),
											 ctx, false, error);
		if (req->request_body == NULL)
			return false;
		content_type = "Content-Type: text/plain; charset=utf-8";
	}
	else
	{
		Jsonb	   *body;

		if (v->type == jbvBinary)
		{
			body = bf_template_json(JsonbValueToJsonb(v), ctx, error);
			if (body == NULL)
				return false;
		}
		else
			body = JsonbValueToJsonb(v);
		req->request_body = JsonbToCString(NULL, &body->root, VARSIZE(body));
		content_type = "Content-Type: application/json";
	}
	if (!has_content_type)
		req->headers = curl_slist_append(req->headers, content_type);
	return true;
}

/* The libcurl options of a request whose url, headers and body are set. */
static void
bf_http_set_options(BfHttpRequest *req)
{
	CURL	   *easy = req->easy;

	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	if (bf_http_max_redirects > 0 &&
		(bf_http_allowed_hosts == NULL || bf_http_allowed_hosts[0] == '\0'))
	{
		curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
		curl_easy_setopt(easy, CURLOPT_MAXREDIRS, (long) bf_http_max_redirects);
	}
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, (long) req->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, (long) req->timeout_ms);
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(easy, CURLOPT_USERAGENT, "batchflow/" BF_VERSION);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, bf_http_on_body);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, bf_http_on_header);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_ACCEPT_ENCODING, "");
	if (req->request_body != NULL)
	{
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE, (long) strlen(req->request_body));
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->request_body);
	}
	/* POSTFIELDS alone would make any method a POST: name it explicitly. */
	if (strcmp(req->method, "HEAD") == 0)
		curl_easy_setopt(easy, CURLOPT_NOBODY, 1L);
	else if (strcmp(req->method, "GET") != 0 || req->request_body != NULL)
		curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, req->method);
}

/*
 * Build the request for one http child and one item, in the current
 * memory context.  Returns NULL with *error set when the request cannot
 * be made (bad template, host not allowed); the attempt then fails.
 */
BfHttpRequest *
bf_http_prepare(BfChild *child, const BfTemplateContext *ctx,
				const char *idempotency_key, char **error)
{
	BfHttpRequest *req = palloc0(sizeof(BfHttpRequest));
	JsonbValue *v;
	JsonbContainer *node = &child->node->root;
	bool		has_content_type;
	bool		has_idempotency;

	v = getKeyJsonValueFromContainer(node, "url", 3, NULL);
	req->url = bf_template_text(pnstrdup(v->val.string.val, v->val.string.len),
								ctx, true, error);
	if (req->url == NULL)
		return NULL;
	/* Templates fill in values, never the scheme; check it again anyway. */
	if (pg_strncasecmp(req->url, "http://", 7) != 0 &&
		pg_strncasecmp(req->url, "https://", 8) != 0)
	{
		*error = psprintf("url \"%s\" is not http or https", req->url);
		return NULL;
	}
	if (!bf_http_host_allowed(req->url, error))
		return NULL;

	v = getKeyJsonValueFromContainer(node, "method", 6, NULL);
	req->method = v ? pnstrdup(v->val.string.val, v->val.string.len) : "GET";

	/* Headers: the definition's, templated, then our own. */
	if (!bf_http_add_headers(req, node, ctx, &has_content_type, &has_idempotency, error) ||
		!bf_http_set_body(req, node, ctx, has_content_type, error))
	{
		bf_http_release(req);	/* the headers built so far */
		return NULL;
	}
	if (!has_idempotency)
		req->headers = curl_slist_append(req->headers,
										 psprintf("Idempotency-Key: %s", idempotency_key));
	req->headers = curl_slist_append(req->headers, "Expect:");
	if (req->headers == NULL)
	{
		*error = pstrdup("out of memory building headers");
		return NULL;
	}

	req->easy = curl_easy_init();
	if (req->easy == NULL)
	{
		bf_http_release(req);
		*error = pstrdup("curl_easy_init failed");
		return NULL;
	}
	initStringInfo(&req->body);
	initStringInfo(&req->headers_raw);
	req->max_body = bf_http_max_response_kb * 1024;
	req->timeout_ms = child->timeout_ms > 0 ? child->timeout_ms : bf_http_timeout_ms;
	bf_http_set_options(req);
	return req;
}

/* Free a request's libcurl resources (its memory goes with its context). */
void
bf_http_release(BfHttpRequest *req)
{
	if (req == NULL)
		return;
	if (req->easy)
		curl_easy_cleanup(req->easy);
	req->easy = NULL;
	if (req->headers)
		curl_slist_free_all(req->headers);
	req->headers = NULL;
}

/* The body as jsonb (http_body.c): JSON when it says and is JSON, else text. */
static Datum
bf_http_body_value(BfHttpRequest *req, bool *as_json)
{
	char	   *ctype = NULL;

	curl_easy_getinfo(req->easy, CURLINFO_CONTENT_TYPE, &ctype);
	return bf_http_body_jsonb(req->body.data, req->body.len,
							  !req->truncated && ctype != NULL && strstr(ctype, "json") != NULL,
							  as_json);
}

/* The output document of a finished request. */
static Jsonb *
bf_http_output(BfHttpRequest *req, long status)
{
	JsonbParseState *state = NULL;
	JsonbValue	k;
	JsonbValue	v;
	JsonbValue *res;
	char	   *line;
	char	   *save = NULL;
	bool		as_json;

	pushJsonbValue(&state, WJB_BEGIN_OBJECT, NULL);

	k.type = jbvString;
	k.val.string.val = "status";
	k.val.string.len = 6;
	pushJsonbValue(&state, WJB_KEY, &k);
	v.type = jbvNumeric;
	v.val.numeric = int64_to_numeric(status);
	pushJsonbValue(&state, WJB_VALUE, &v);

	/* Headers: one object, names lower case, repeats joined. */
	k.val.string.val = "headers";
	k.val.string.len = 7;
	pushJsonbValue(&state, WJB_KEY, &k);
	{
		Jsonb	   *empty = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
		Jsonb	   *hdrs = empty;
		char	   *raw = pstrdup(req->headers_raw.data);

		for (line = strtok_r(raw, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save))
		{
			char	   *colon = strchr(line, ':');
			char	   *name;
			char	   *value;
			JsonbValue *prev;
			JsonbParseState *hs = NULL;
			JsonbValue	hk;
			JsonbValue	hv;

			if (colon == NULL || colon == line)
				continue;
			name = pnstrdup(line, colon - line);
			for (char *p = name; *p; p++)
				*p = pg_ascii_tolower((unsigned char) *p);
			value = colon + 1;
			while (*value == ' ' || *value == '\t')
				value++;
			if (!bf_http_valid_text(name, strlen(name)) || !bf_http_valid_text(value, strlen(value)))
				continue;
			prev = getKeyJsonValueFromContainer(&hdrs->root, name, strlen(name), NULL);
			if (prev != NULL && prev->type == jbvString)
				value = psprintf("%.*s, %s", prev->val.string.len, prev->val.string.val, value);

			/* hdrs || {name: value} */
			pushJsonbValue(&hs, WJB_BEGIN_OBJECT, NULL);
			hk.type = jbvString;
			hk.val.string.val = name;
			hk.val.string.len = strlen(name);
			pushJsonbValue(&hs, WJB_KEY, &hk);
			hv.type = jbvString;
			hv.val.string.val = value;
			hv.val.string.len = strlen(value);
			pushJsonbValue(&hs, WJB_VALUE, &hv);
			hdrs = DatumGetJsonbP(DirectFunctionCall2(jsonb_concat, JsonbPGetDatum(hdrs),
													  JsonbPGetDatum(JsonbValueToJsonb(pushJsonbValue(&hs, WJB_END_OBJECT, NULL)))));
		}
		v.type = jbvBinary;
		v.val.binary.data = &hdrs->root;
		v.val.binary.len = VARSIZE(hdrs) - VARHDRSZ;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}

	k.val.string.val = "body";
	k.val.string.len = 4;
	pushJsonbValue(&state, WJB_KEY, &k);
	if (req->body.len == 0)
	{
		v.type = jbvNull;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	else
	{
		Jsonb	   *body = DatumGetJsonbP(bf_http_body_value(req, &as_json));

		if (JB_ROOT_IS_SCALAR(body))
			(void) JsonbExtractScalar(&body->root, &v);
		else
		{
			v.type = jbvBinary;
			v.val.binary.data = &body->root;
			v.val.binary.len = VARSIZE(body) - VARHDRSZ;
		}
		pushJsonbValue(&state, WJB_VALUE, &v);
	}

	if (req->truncated)
	{
		k.val.string.val = "truncated";
		k.val.string.len = 9;
		pushJsonbValue(&state, WJB_KEY, &k);
		v.type = jbvBool;
		v.val.boolean = true;
		pushJsonbValue(&state, WJB_VALUE, &v);
	}
	res = pushJsonbValue(&state, WJB_END_OBJECT, NULL);
	return JsonbValueToJsonb(res);
}

/* Retry-After of a 429 or 503 response, in milliseconds (0 if none). */
static long
bf_http_retry_after(BfHttpRequest *req)
{
	char	   *raw = pstrdup(req->headers_raw.data);
	char	   *save = NULL;

	for (char *line = strtok_r(raw, "\r\n", &save); line; line = strtok_r(NULL, "\r\n", &save))
	{
		char	   *value;

		if (pg_strncasecmp(line, "retry-after:", 12) != 0)
			continue;
		value = line + 12;
		while (*value == ' ' || *value == '\t')
			value++;
		if (*value >= '0' && *value <= '9')
			return Min(strtol(value, NULL, 10), 3600L) * 1000L;
		else
		{
			time_t		when = curl_getdate(value, NULL);
			time_t		now = time(NULL);

			if (when > now)
				return Min((long) (when - now), 3600L) * 1000L;
		}
		return 0;
	}
	return 0;
}

/*
 * Turn a finished request (curl's result code) into the attempt's result.
 * Call in a memory context that lives as long as the result.
 */
void
bf_http_finish(BfHttpRequest *req, int code, BfItemResult *result)
{
	long		status = 0;

	memset(result, 0, sizeof(*result));
	result->output_isnull = true;
	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);

	if (code != CURLE_OK && !(code == CURLE_WRITE_ERROR && req->truncated))
	{
		result->ok = false;
		result->sqlstate = pstrdup(code == CURLE_OPERATION_TIMEDOUT ? "57014" : "08000");
		result->error = psprintf("%s %s failed: %s",
								 req->method, req->url,
								 req->errbuf[0] ? req->errbuf : curl_easy_strerror((CURLcode) code));
		return;
	}

	if (status >= 200 && status < 300)
	{
		result->ok = true;
		result->output = PointerGetDatum(bf_http_output(req, status));
		result->output_isnull = false;
		return;
	}

	result->ok = false;
	result->sqlstate = pstrdup("08000");
	{
		int			n = Min(req->body.len, BF_ERROR_SNIPPET);
		char	   *snippet;

		/* Cut on a character boundary, and only show valid text. */
		n = pg_mbcliplen(req->body.data, req->body.len, n);
		snippet = bf_http_valid_text(req->body.data, n) ? pnstrdup(req->body.data, n) : "";
		result->error = psprintf("%s %s returned HTTP status %ld%s%s%s",
								 req->method, req->url, status,
								 snippet[0] ? ": " : "", snippet,
								 req->body.len > n ? "..." : "");
	}
	if (status == 429 || status == 503)
		result->retry_after_ms = bf_http_retry_after(req);
}
