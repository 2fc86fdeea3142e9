/*
 * The purchase: POST /v1/instances as a chain of small steps, each of
 * which starts the next or answers with an error.
 *
 *   check_media -> parse -> claim -+-> send -> on_sent -+-> record -> answer
 *                                  |                    +-> release -> answer
 *                                  +-> replay / 409 / 422 / 503
 *                                  +-> wait -> claim (Prefer: wait=N)
 *
 * The request context stays alive while a Redis or upstream callback is
 * pending (r->pending), even if the client has gone: a purchase that
 * reached the vendor is always recorded.
 */
#include <sys/queue.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/crypto.h>

#include "config.h"
#include "errors.h"
#include "idem.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "signer.h"
#include "upstream.h"
#include "util.h"
#include "vendor.h"

/* Tries to store a final result before giving up on Redis. */
#define RECORD_MAX_TRIES	3
#define RECORD_RETRY_MS		100
/* First pause before resending after IdempotentProcessing; doubles. */
#define RESEND_BASE_MS		250
/*
 * A waiter re-checks the record on a short, growing interval in case it
 * missed the announcement during a reconnect. (One that overtakes the
 * claim's reply that made us wait is caught by idem: is_stale.)
 */
#define WAIT_RECHECK_MIN_MS	25
#define WAIT_RECHECK_MAX_MS	1000

static void	claim(struct request *r);
static void	send_upstream(struct request *r);
static void	record(struct request *r);
static void	release(struct request *r);

static void
set_timer_ms(struct event *ev, int64_t ms)
{
	struct timeval	tv = { (time_t)(ms / 1000), (ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

/* application/json, with at most a charset=utf-8 parameter. */
static bool
is_json_media_type(const char *value)
{
	const char	*p, *semi;
	size_t		 len;

	if (value == NULL)
		return false;
	while (*value == ' ' || *value == '\t')
		value++;
	semi = strchr(value, ';');
	len = semi != NULL ? (size_t)(semi - value) : strlen(value);
	while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	if (len != strlen("application/json") ||
	    strncasecmp(value, "application/json", len) != 0)
		return false;
	if (semi == NULL)
		return true;

	p = semi + 1;
	while (*p == ' ' || *p == '\t')
		p++;
	if (strncasecmp(p, "charset=", 8) != 0)
		return false;
	p += 8;
	if (strcasecmp(p, "utf-8") == 0 || strcasecmp(p, "\"utf-8\"") == 0)
		return true;
	return false;
}

/*
 * Decodes a structured-field string (RFC 8941): DQUOTE, then printable
 * ASCII with only \" and \\ escaped, then DQUOTE. Returns a new string or
 * NULL when malformed.
 */
static char *
sf_string(const char *value)
{
	size_t	 len = strlen(value), i, n = 0;
	char	*out;

	if (len < 2 || value[0] != '"' || value[len - 1] != '"')
		return NULL;
	out = xmalloc(len);
	for (i = 1; i < len - 1; i++) {
		if (value[i] == '\\') {
			if (i + 1 >= len - 1 ||
			    (value[i + 1] != '"' && value[i + 1] != '\\'))
				goto fail;
			out[n++] = value[++i];
		} else if (value[i] == '"' || value[i] < 0x20 ||
		    value[i] > 0x7e) {
			goto fail;
		} else {
			out[n++] = value[i];
		}
	}
	out[n] = '\0';
	return out;

fail:
	free(out);
	return NULL;
}

/*
 * The Idempotency-Key header: the draft makes it a structured-field
 * string, so a quoted value is decoded as one; a bare token is taken as
 * it is, since most clients send that. Sets *token to a new string, or
 * NULL when the header is absent. Returns -1 for a malformed quoted value.
 */
static int
header_token(struct evkeyvalq *headers, char **token)
{
	const char	*value;

	*token = NULL;
	value = evhttp_find_header(headers, "Idempotency-Key");
	if (value == NULL)
		return 0;
	if (value[0] != '"') {
		*token = xstrdup(value);
		return 0;
	}
	*token = sf_string(value);
	return *token != NULL ? 0 : -1;
}

/* Prefer: wait=N in seconds, capped by config; 0 when absent. */
static int
preferred_wait_s(struct evkeyvalq *headers, int max_s)
{
	const char	*value, *p;
	long		 n;

	value = evhttp_find_header(headers, "Prefer");
	if (value == NULL)
		return 0;
	for (p = value; *p != '\0'; p++) {
		if ((p == value || p[-1] == ' ' || p[-1] == ',' ||
		    p[-1] == ';') && strncasecmp(p, "wait=", 5) == 0 &&
		    isdigit((unsigned char)p[5])) {
			n = strtol(p + 5, NULL, 10);
			return n > max_s ? max_s : (int)n;
		}
	}
	return 0;
}

static json_t *
validation_json(const struct validation *v)
{
	json_t	*list;
	size_t	 i;

	list = json_array();
	for (i = 0; i < v->count; i++)
		(void)json_array_append_new(list, json_pack("{s:s, s:s}",
		    "field", v->errors[i].field,
		    "message", v->errors[i].message));
	return json_pack("{s:o}", "errors", list);
}

void
purchase_create(struct request *r)
{
	struct evkeyvalq	*headers;
	struct evbuffer		*in;
	const struct config	*cfg = r->w->cfg;
	struct validation	 v = { 0 };
	size_t			 len;
	char			*token;
	int			 rc, wait_s;

	headers = evhttp_request_get_input_headers(r->req);
	in = evhttp_request_get_input_buffer(r->req);
	len = evbuffer_get_length(in);

	if (!is_json_media_type(evhttp_find_header(headers,
	    "Content-Type"))) {
		request_fail(r, &ERR_UNSUPPORTED_MEDIA_TYPE, NULL);
		return;
	}
	if (len > cfg->body_max_bytes) {
		request_fail(r, &ERR_PAYLOAD_TOO_LARGE, NULL);
		return;
	}

	if (header_token(headers, &token) != 0) {
		v.errors[0].field = "client_token";
		v.errors[0].message = "Idempotency-Key header must be a token "
		    "or a quoted structured-field string";
		v.count = 1;
		request_fail(r, &ERR_INVALID_REQUEST, validation_json(&v));
		return;
	}
	rc = vendor_parse_order((const char *)evbuffer_pullup(in, -1), len,
	    token, &r->order, &v);
	free(token);
	if (rc != 0) {
		request_fail(r, &ERR_INVALID_REQUEST, validation_json(&v));
		return;
	}

	vendor_fingerprint(&r->order, r->fingerprint);
	vendor_upstream_token(r->tenant->name, r->order.client_token,
	    r->upstream_token);
	r->key.tenant = r->tenant->name;
	r->key.client_token = r->order.client_token;
	r->key.fingerprint = r->fingerprint;
	r->key.upstream_token = r->upstream_token;
	r->key.attempt = r->id;
	wait_s = preferred_wait_s(headers, cfg->idem_wait_max_s);
	if (wait_s > 0)
		r->wait_deadline_ms = util_mono_ms() + (int64_t)wait_s * 1000;
	claim(r);
}

static void
answer(struct request *r)
{
	char	*body = r->body;

	r->body = NULL;
	request_respond(r, r->status, r->is_problem, body);
}

static void
set_answer(struct request *r, int status, bool is_problem, char *body)
{
	free(r->body);
	r->status = status;
	r->is_problem = is_problem;
	r->body = body;
}

static void
set_problem(struct request *r, const struct api_error *err, json_t *extra)
{
	set_answer(r, err->status, true, errors_problem_body(err, r->id,
	    extra));
}

static void
on_wake(void *arg)
{
	struct request	*r = arg;

	r->wait = NULL;
	claim(r);
}

/*
 * Another attempt holds the lease: wait for it, or say 409. is_stale: the
 * key was announced while our claim was out, so look again at once.
 */
static void
in_flight(struct request *r, int64_t lease_left_ms, bool is_stale)
{
	int64_t	left_ms = r->wait_deadline_ms - util_mono_ms();
	int64_t	timeout_ms;

	/* Draining: this worker will not be here when the answer comes. */
	if (r->wait_deadline_ms == 0 || left_ms <= 0 || r->w->is_draining) {
		r->retry_after_s = r->w->cfg->idem_retry_after_s;
		request_fail(r, &ERR_REQUEST_IN_PROGRESS, NULL);
		return;
	}
	if (is_stale) {
		claim(r);
		return;
	}

	/* Wake at the announcement, the lease's end, a recheck or the
	 * deadline, whichever comes first. */
	r->recheck_ms = r->recheck_ms == 0 ? WAIT_RECHECK_MIN_MS :
	    r->recheck_ms * 2;
	if (r->recheck_ms > WAIT_RECHECK_MAX_MS)
		r->recheck_ms = WAIT_RECHECK_MAX_MS;
	timeout_ms = lease_left_ms + 10;
	if (timeout_ms > r->recheck_ms)
		timeout_ms = r->recheck_ms;
	if (timeout_ms > left_ms)
		timeout_ms = left_ms;
	r->wait = idem_wait(r->w->idem, &r->key, timeout_ms, on_wake, r);
}

static void
on_claim(const struct idem_claim *c, void *arg)
{
	struct request	*r = arg;

	r->pending--;
	switch (c->outcome) {
	case IDEM_FRESH:
	case IDEM_TAKEOVER:
		r->idem_outcome = c->outcome == IDEM_FRESH ? "fresh" :
		    "takeover";
		r->epoch = c->epoch;
		r->lease_end_ms = util_mono_ms() + r->w->cfg->idem_lease_ms;
		send_upstream(r);
		break;
	case IDEM_REPLAYED:
		r->idem_outcome = "replayed";
		r->is_replay = true;
		request_respond(r, c->status, c->status >= 400,
		    xstrndup(c->body, c->body_len));
		break;
	case IDEM_MISMATCH:
		r->idem_outcome = "mismatch";
		request_fail(r, &ERR_IDEMPOTENCY_MISMATCH, NULL);
		break;
	case IDEM_IN_FLIGHT:
		r->idem_outcome = "in_flight";
		in_flight(r, c->lease_left_ms, c->is_stale);
		break;
	case IDEM_UNAVAILABLE:
		r->idem_outcome = "unavailable";
		r->retry_after_s = r->w->cfg->idem_retry_after_s;
		request_fail(r, &ERR_UNAVAILABLE, NULL);
		break;
	}
	metrics_idempotency(r->idem_outcome);
	request_release(r);
}

static void
claim(struct request *r)
{
	r->pending++;
	idem_claim(r->w->idem, &r->key, on_claim, r);
}

static void	on_sent(const struct upstream_result *res, void *arg);

static void
send_upstream(struct request *r)
{
	const struct config_account *account = r->tenant->account;
	char			*form;

	if (r->params == NULL)
		r->params = vendor_params(&r->order, account->site,
		    r->upstream_token);

	/* A new nonce, timestamp and signature for every attempt. */
	form = signer_sign_post(r->params, account->creds, time(NULL), NULL);
	if (form == NULL) {
		log_pack(LOG_ERROR, "purchase", "sign_failed", "{s:s}",
		    "req_id", r->id);
		set_problem(r, &ERR_INTERNAL, NULL);
		/* Nothing was sent: free the lease for the next retry. */
		r->retry_after_s = r->w->cfg->idem_retry_after_s;
		release(r);
		return;
	}
	r->attempts++;
	r->pending++;
	r->sent_ms = util_mono_ms();
	upstream_post(r->w->upstream, form, strlen(form), on_sent, r);
	OPENSSL_cleanse(form, strlen(form));
	free(form);
}

static void
on_resend_timer(evutil_socket_t fd, short what, void *arg)
{
	struct request	*r = arg;

	(void)fd;
	(void)what;
	r->pending--;
	send_upstream(r);
	request_release(r);
}

static int64_t
resend_delay_ms(const struct request *r)
{
	return (int64_t)RESEND_BASE_MS << (r->attempts - 1);
}

/*
 * The vendor is still processing this ClientToken: resend, but only while
 * another whole attempt fits in our lease, so no other node can take the
 * token over while we are still talking to the vendor about it.
 */
static bool
may_resend(const struct request *r)
{
	const struct config	*cfg = r->w->cfg;

	return r->attempts < cfg->upstream_max_attempts &&
	    util_mono_ms() + resend_delay_ms(r) + cfg->upstream_timeout_ms <
	    r->lease_end_ms;
}

/* The 201 body: what the client keeps. */
static char *
created_body(const struct request *r, const struct vendor_answer *va)
{
	json_t	*body;
	char	*text;

	body = json_pack("{s:s, s:s, s:s, s:s}",
	    "instance_id", va->instance_id, "order_id", va->order_id,
	    "client_token", r->order.client_token,
	    "upstream_request_id", va->request_id);
	text = json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(body);
	if (text == NULL)
		abort();
	return text;
}

static json_t *
vendor_extra(const struct vendor_answer *va)
{
	return json_pack("{s:s, s:s, s:i}", "vendor_code", va->code,
	    "vendor_request_id", va->request_id,
	    "upstream_status", va->http_status);
}

static const enum metrics_upstream answer_metric[] = {
	[VENDOR_CREATED] = METRICS_UPSTREAM_CREATED,
	[VENDOR_REJECTED] = METRICS_UPSTREAM_REJECTED,
	[VENDOR_RETRY] = METRICS_UPSTREAM_RETRY,
	[VENDOR_TRANSIENT] = METRICS_UPSTREAM_TRANSIENT,
	[VENDOR_GATEWAY_FAULT] = METRICS_UPSTREAM_GATEWAY_FAULT,
	[VENDOR_MALFORMED] = METRICS_UPSTREAM_MALFORMED,
};

/*
 * After an unknown outcome the token stays ours until the lease ends, and
 * a retry before then only gets 409: say when it is worth coming back.
 */
static int
lease_retry_after_s(const struct request *r)
{
	int64_t	left_ms = r->lease_end_ms - util_mono_ms();
	int	min_s = r->w->cfg->idem_retry_after_s;

	if (left_ms <= (int64_t)min_s * 1000)
		return min_s;
	return (int)((left_ms + 999) / 1000);
}

/* What the vendor said decides what is stored and what the client sees. */
static void
on_answered(struct request *r, const struct upstream_result *res)
{
	const struct config	*cfg = r->w->cfg;
	struct vendor_answer	 va;

	vendor_parse_answer(res->http_status, res->body, res->body_len, &va);
	metrics_upstream(answer_metric[va.outcome],
	    util_mono_ms() - r->sent_ms);
	r->upstream_status = res->http_status;
	(void)snprintf(r->upstream_request_id, sizeof(r->upstream_request_id),
	    "%s", va.request_id);
	(void)snprintf(r->vendor_code, sizeof(r->vendor_code), "%s", va.code);

	switch (va.outcome) {
	case VENDOR_CREATED:
		set_answer(r, 201, false, created_body(r, &va));
		record(r);
		return;
	case VENDOR_REJECTED:
		set_problem(r, &ERR_UPSTREAM_REJECTED, vendor_extra(&va));
		r->is_final_failure = true;
		record(r);
		return;
	case VENDOR_RETRY:
		if (may_resend(r)) {
			r->pending++;
			evtimer_assign(&r->resend_timer, r->w->base,
			    on_resend_timer, r);
			set_timer_ms(&r->resend_timer, resend_delay_ms(r));
			return;
		}
		break;
	case VENDOR_GATEWAY_FAULT:
		log_pack(LOG_ERROR, "purchase", "vendor_refused_gateway",
		    "{s:s, s:s, s:i}", "req_id", r->id, "vendor_code",
		    va.code, "upstream_status", va.http_status);
		break;
	case VENDOR_MALFORMED:
		log_pack(LOG_WARN, "purchase", "vendor_answer_malformed",
		    "{s:s, s:i}", "req_id", r->id, "upstream_status",
		    va.http_status);
		/* A 2xx we cannot read may hide an order: keep the lease. */
		if (va.http_status >= 200 && va.http_status < 300) {
			r->retry_after_s = lease_retry_after_s(r);
			set_problem(r, &ERR_UPSTREAM_UNAVAILABLE, NULL);
			answer(r);
			return;
		}
		break;
	case VENDOR_TRANSIENT:
		break;
	}

	/* Not final: let the next retry go upstream at once. */
	set_problem(r, &ERR_UPSTREAM_UNAVAILABLE, va.code[0] != '\0' ?
	    vendor_extra(&va) : NULL);
	r->retry_after_s = cfg->idem_retry_after_s;
	release(r);
}

static void
on_sent(const struct upstream_result *res, void *arg)
{
	struct request	*r = arg;

	r->pending--;
	switch (res->status) {
	case UPSTREAM_ANSWERED:
		on_answered(r, res);
		break;
	case UPSTREAM_NOT_SENT:
		metrics_upstream(METRICS_UPSTREAM_NOT_SENT,
		    util_mono_ms() - r->sent_ms);
		log_pack(LOG_WARN, "purchase", "upstream_not_sent", "{s:s}",
		    "req_id", r->id);
		r->retry_after_s = r->w->cfg->idem_retry_after_s;
		set_problem(r, &ERR_UPSTREAM_UNAVAILABLE, NULL);
		/*
		 * The vendor saw nothing of this purchase, unless an earlier
		 * attempt (answered IdempotentProcessing) left: only then
		 * is the outcome unknown and the lease kept.
		 */
		if (r->attempts == 1)
			release(r);
		else
			answer(r);
		break;
	case UPSTREAM_TIMEOUT:
		/* The vendor may have acted: the lease stays until it ends. */
		metrics_upstream(METRICS_UPSTREAM_TIMEOUT,
		    util_mono_ms() - r->sent_ms);
		log_pack(LOG_WARN, "purchase", "upstream_timeout", "{s:s}",
		    "req_id", r->id);
		r->retry_after_s = lease_retry_after_s(r);
		set_problem(r, &ERR_UPSTREAM_TIMEOUT, NULL);
		answer(r);
		break;
	case UPSTREAM_FAILED:
		metrics_upstream(METRICS_UPSTREAM_FAILED,
		    util_mono_ms() - r->sent_ms);
		log_pack(LOG_WARN, "purchase", "upstream_failed", "{s:s}",
		    "req_id", r->id);
		r->retry_after_s = lease_retry_after_s(r);
		set_problem(r, &ERR_UPSTREAM_UNAVAILABLE, NULL);
		answer(r);
		break;
	}
	request_release(r);
}

static void
on_record_timer(evutil_socket_t fd, short what, void *arg)
{
	struct request	*r = arg;

	(void)fd;
	(void)what;
	r->pending--;
	record(r);
	request_release(r);
}

static void
on_recorded(bool is_stored, void *arg)
{
	struct request	*r = arg;

	r->pending--;
	if (!is_stored && r->record_tries < RECORD_MAX_TRIES &&
	    !r->w->is_stopped) {
		r->pending++;
		evtimer_assign(&r->record_timer, r->w->base, on_record_timer,
		    r);
		set_timer_ms(&r->record_timer, RECORD_RETRY_MS *
		    r->record_tries);
		request_release(r);
		return;
	}
	/*
	 * Not stored: the client still gets its answer. A retry finds the
	 * lease expired, resends the same upstream ClientToken and the
	 * vendor returns this same order.
	 */
	if (!is_stored) {
		metrics_record_failed();
		log_pack(LOG_ERROR, "purchase", "record_failed",
		    "{s:s, s:s, s:i}", "req_id", r->id, "tenant",
		    r->tenant->name, "status", r->status);
	}
	answer(r);
	request_release(r);
}

static void
record(struct request *r)
{
	r->record_tries++;
	r->pending++;
	idem_complete(r->w->idem, &r->key, r->is_final_failure, r->status,
	    r->body, on_recorded, r);
}

static void
on_released(bool is_stored, void *arg)
{
	struct request	*r = arg;

	(void)is_stored;
	r->pending--;
	answer(r);
	request_release(r);
}

static void
release(struct request *r)
{
	r->pending++;
	idem_release(r->w->idem, &r->key, r->epoch, on_released, r);
}

void
purchase_stop_waiting(struct request *r)
{
	if (r->wait == NULL)
		return;
	idem_wait_cancel(r->wait);
	r->wait = NULL;
	r->retry_after_s = r->w->cfg->idem_retry_after_s;
	request_fail(r, &ERR_REQUEST_IN_PROGRESS, NULL);
	request_release(r);
}

void
purchase_cleanup(struct request *r)
{
	idem_wait_cancel(r->wait);
	r->wait = NULL;
	if (event_initialized(&r->resend_timer))
		evtimer_del(&r->resend_timer);
	if (event_initialized(&r->record_timer))
		evtimer_del(&r->record_timer);
	rpc_params_free(r->params);
	r->params = NULL;
}

static void
on_record(json_t *record_json, bool is_available, void *arg)
{
	struct request	*r = arg;
	char		*text;

	r->pending--;
	if (!is_available) {
		request_fail(r, &ERR_UNAVAILABLE, NULL);
	} else if (record_json == NULL) {
		request_fail(r, &ERR_NOT_FOUND, NULL);
	} else {
		text = json_dumps(record_json, JSON_COMPACT |
		    JSON_PRESERVE_ORDER);
		if (text == NULL)
			abort();
		request_respond(r, 200, false, text);
	}
	request_release(r);
}

void
purchase_lookup(struct request *r, const char *encoded_token)
{
	char	*token;
	size_t	 len = 0;

	token = evhttp_uridecode(encoded_token, 0, &len);
	if (token == NULL || strlen(token) != len ||
	    !vendor_is_token(token, len)) {
		free(token);
		request_fail(r, &ERR_NOT_FOUND, NULL);
		return;
	}
	r->pending++;
	idem_lookup(r->w->idem, r->tenant->name, token, on_record, r);
	free(token);
}
