/*
 * Workers, routing and answers. Each worker thread runs one event_base with
 * its own evhttp, Redis connections and upstream pool; nothing but the
 * immutable config and the listening socket is shared between them.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/rand.h>

#include "auth.h"
#include "config.h"
#include "errors.h"
#include "idem.h"
#include "log.h"
#include "metrics.h"
#include "request.h"
#include "server.h"
#include "upstream.h"
#include "util.h"

#define LISTEN_BACKLOG		1024
/*
 * Bodies between body_max_bytes and this cap get our own 413 problem
 * body; evhttp itself refuses anything larger, with its own 413 page,
 * before the body is read.
 */
#define BODY_HARD_CAP_BYTES	(1024 * 1024)
/* How long shutdown waits for in-flight requests beyond the vendor's. */
#define DRAIN_EXTRA_MS		2000
/* Out of file descriptors: stop accepting for this long, then retry. */
#define ACCEPT_PAUSE_MS		100
/* Longest request path written to the access log. */
#define LOG_PATH_MAX		256

/*
 * The worker running on this thread, for libevent callbacks that carry
 * no argument of ours (the listener's error callback).
 */
static __thread struct worker	*this_worker;

struct server {
	const struct config	*cfg;
	struct event_base	*main_base;
	SSL_CTX			*ssl_ctx;
	evutil_socket_t		 listen_fd;
	char			 owner[96];
	struct worker		*workers;
	pthread_t		*threads;
	int			 nworkers;
};

static const char *
reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 422: return "Unprocessable Content";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "Status";
	}
}

static const char *
method_name(enum evhttp_cmd_type method)
{
	switch (method) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_PATCH: return "PATCH";
	default: return "OTHER";
	}
}

/* Draining ends when every request is done and every answer written. */
static void
maybe_stop(struct worker *w)
{
	if (w->is_draining && w->active == 0 && w->unflushed == 0)
		event_base_loopbreak(w->base);
}

static void
request_free(struct request *r)
{
	struct worker	*w = r->w;

	purchase_cleanup(r);
	TAILQ_REMOVE(&w->requests, r, link);
	w->active--;
	metrics_inflight(-1);
	free(r->body);
	free(r);
}

void
request_release(struct request *r)
{
	struct worker	*w = r->w;

	if (r->req != NULL || r->pending > 0)
		return;
	request_free(r);
	maybe_stop(w);
}

/* Bytes outside printable ASCII become '?', so the line stays valid. */
static void
loggable_path(const char *path, char *out, size_t size)
{
	size_t	i;

	for (i = 0; path[i] != '\0' && i + 1 < size; i++)
		out[i] = path[i] >= 0x20 && path[i] < 0x7f ? path[i] : '?';
	out[i] = '\0';
}

static void
log_access(const struct request *r, enum evhttp_cmd_type method,
    const char *path, int status)
{
	json_t	*fields;
	char	 logged_path[LOG_PATH_MAX + 1];

	loggable_path(path, logged_path, sizeof(logged_path));
	fields = json_pack("{s:s, s:s, s:s, s:s, s:i, s:I}",
	    "req_id", r->id,
	    "tenant", r->tenant != NULL ? r->tenant->name : "",
	    "method", method_name(method),
	    "path", logged_path,
	    "status", status,
	    "latency_ms", (json_int_t)(util_mono_ms() - r->started_ms));
	if (fields == NULL)
		return;
	if (r->idem_outcome != NULL)
		(void)json_object_set_new(fields, "idempotency",
		    json_string(r->idem_outcome));
	if (r->upstream_status != 0)
		(void)json_object_set_new(fields, "upstream_status",
		    json_integer(r->upstream_status));
	if (r->upstream_request_id[0] != '\0')
		(void)json_object_set_new(fields, "upstream_request_id",
		    json_string(r->upstream_request_id));
	if (r->vendor_code[0] != '\0')
		(void)json_object_set_new(fields, "vendor_code",
		    json_string(r->vendor_code));
	log_json(LOG_INFO, "server", "access", fields);
}

/*
 * An answer handed to evhttp counts in w->unflushed until it is written.
 * libevent reports the end of a write (the request's on_complete callback)
 * only when it succeeds: a connection that fails mid-write, such as one
 * the client reset, is freed without it. Its close callback, armed only
 * while the answer is out, then ends the count, so the answer stops
 * holding the drain either way.
 */
static void
unflushed_done(struct worker *w, struct evhttp_connection *evcon)
{
	if (evcon != NULL)
		evhttp_connection_set_closecb(evcon, NULL, NULL);
	w->unflushed--;
	maybe_stop(w);
}

static void
on_flushed(struct evhttp_request *req, void *arg)
{
	unflushed_done(arg, evhttp_request_get_connection(req));
}

static void
on_unflushed_close(struct evhttp_connection *evcon, void *arg)
{
	unflushed_done(arg, evcon);
}

/* Counts the answer on req until it is written or its connection goes. */
static void
unflushed_add(struct worker *w, struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;

	evcon = evhttp_request_get_connection(req);
	if (evcon == NULL)
		return;
	w->unflushed++;
	evhttp_request_set_on_complete_cb(req, on_flushed, w);
	evhttp_connection_set_closecb(evcon, on_unflushed_close, w);
}

void
request_respond(struct request *r, int status, bool is_problem, char *body)
{
	struct evhttp_request	*req = r->req;
	struct evkeyvalq	*headers;
	struct evbuffer		*out;
	enum evhttp_cmd_type	 method;
	const char		*path;
	char			 number[24];
	size_t			 len = strlen(body);

	if (req == NULL) {
		free(body);
		return;
	}
	method = evhttp_request_get_command(req);
	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

	headers = evhttp_request_get_output_headers(req);
	(void)evhttp_add_header(headers, "Content-Type",
	    r->content_type != NULL ? r->content_type : is_problem ?
	    "application/problem+json" : "application/json");
	(void)evhttp_add_header(headers, "Cache-Control", "no-store");
	(void)evhttp_add_header(headers, "X-Request-Id", r->id);
	if (r->is_replay)
		(void)evhttp_add_header(headers, "Idempotent-Replayed", "true");
	if (r->retry_after_s > 0) {
		(void)snprintf(number, sizeof(number), "%d", r->retry_after_s);
		(void)evhttp_add_header(headers, "Retry-After", number);
	}
	if (r->allow != NULL)
		(void)evhttp_add_header(headers, "Allow", r->allow);
	/* Draining: clients should take their next request elsewhere. */
	if (r->w->is_draining || r->is_closing)
		(void)evhttp_add_header(headers, "Connection", "close");

	/* HEAD: the length of the answer a GET would get, and no body. */
	out = evbuffer_new();
	if (out == NULL)
		abort();
	if (method == EVHTTP_REQ_HEAD) {
		(void)snprintf(number, sizeof(number), "%zu", len);
		(void)evhttp_add_header(headers, "Content-Length", number);
	} else if (evbuffer_add(out, body, len) != 0) {
		abort();
	}
	free(body);

	log_access(r, method, path != NULL ? path : "", status);
	metrics_request(status, util_mono_ms() - r->started_ms);
	/* Counted until written, so a drain does not cut the answer off. */
	unflushed_add(r->w, req);
	evhttp_send_reply(req, status, reason_phrase(status), out);
	evbuffer_free(out);
	r->req = NULL;
}

void
request_fail(struct request *r, const struct api_error *err, json_t *extra)
{
	request_respond(r, err->status, true,
	    errors_problem_body(err, r->id, extra));
}

static struct request *
request_new(struct worker *w, struct evhttp_request *req)
{
	struct request	*r;
	unsigned char	 raw[16];

	r = xcalloc(1, sizeof(*r));
	r->w = w;
	r->req = req;
	r->started_ms = util_mono_ms();
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		abort();
	util_hex(raw, sizeof(raw), r->id);
	TAILQ_INSERT_TAIL(&w->requests, r, link);
	w->active++;
	metrics_inflight(1);
	return r;
}

static void
answer_healthz(struct request *r)
{
	request_respond(r, 200, false, xstrdup("{\"status\":\"ok\"}"));
}

static void
answer_readyz(struct request *r)
{
	if (!idem_is_ready(r->w->idem)) {
		request_fail(r, &ERR_UNAVAILABLE, NULL);
		return;
	}
	answer_healthz(r);
}

static void
answer_metrics(struct request *r)
{
	r->content_type = "text/plain; version=0.0.4";
	request_respond(r, 200, false, metrics_render());
}

/* Paths open to anyone (probes, scrapers), for GET and HEAD only. */
static const struct {
	const char	*path;
	void		(*answer)(struct request *);
} open_routes[] = {
	{ "/healthz",	answer_healthz },
	{ "/readyz",	answer_readyz },
	{ "/metrics",	answer_metrics },
};

static bool
has_prefix(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* How many times a header appears; evhttp keeps them all, in order. */
static int
header_count(const struct evkeyvalq *headers, const char *name)
{
	const struct evkeyval	*kv;
	int			 n = 0;

	TAILQ_FOREACH(kv, headers, next) {
		if (strcasecmp(kv->key, name) == 0)
			n++;
	}
	return n;
}

static void
method_not_allowed(struct request *r, const char *allow)
{
	r->allow = allow;
	request_fail(r, &ERR_METHOD_NOT_ALLOWED, NULL);
}

/* Everything under /v1/ needs a tenant; authentication comes first. */
static void
route_api(struct request *r, const char *path, enum evhttp_cmd_type method)
{
	const struct evkeyvalq	*headers;
	const char		*prefix = "/v1/instances/requests/";

	/* Two credentials are none: which one would we trust? */
	headers = evhttp_request_get_input_headers(r->req);
	if (header_count(headers, "Authorization") == 1)
		r->tenant = auth_tenant(r->w->cfg,
		    evhttp_find_header(headers, "Authorization"));
	if (r->tenant == NULL) {
		request_fail(r, &ERR_UNAUTHENTICATED, NULL);
		return;
	}

	if (strcmp(path, "/v1/instances") == 0) {
		if (method != EVHTTP_REQ_POST)
			method_not_allowed(r, "POST");
		else if (header_count(headers, "Idempotency-Key") > 1 ||
		    header_count(headers, "Content-Type") > 1)
			request_fail(r, &ERR_DUPLICATE_HEADER, NULL);
		else
			purchase_create(r);
		return;
	}
	if (has_prefix(path, prefix) &&
	    strchr(path + strlen(prefix), '/') == NULL) {
		if (method != EVHTTP_REQ_GET)
			method_not_allowed(r, "GET");
		else
			purchase_lookup(r, path + strlen(prefix));
		return;
	}
	request_fail(r, &ERR_NOT_FOUND, NULL);
}

/*
 * No Transfer-Encoding, or chunked. libevent itself refuses a list of
 * codings and a repeated header (400) before the request reaches us.
 */
static bool
is_known_framing(const struct evkeyvalq *headers)
{
	const char	*value;

	value = evhttp_find_header(headers, "Transfer-Encoding");
	return value == NULL || strcasecmp(value, "chunked") == 0;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	struct worker		*w = arg;
	struct request		*r = request_new(w, req);
	struct evkeyvalq	*headers = evhttp_request_get_input_headers(req);
	enum evhttp_cmd_type	 method = evhttp_request_get_command(req);
	const char		*path;
	size_t			 i;

	path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	if (path == NULL)
		path = "";

	/*
	 * Conflicting framing headers are how requests get smuggled past a
	 * proxy that reads them differently; libevent takes the first.
	 */
	if (header_count(headers, "Content-Length") > 1) {
		request_fail(r, &ERR_DUPLICATE_HEADER, NULL);
		request_release(r);
		return;
	}
	/*
	 * libevent frames a body by chunked or Content-Length alone and
	 * passes over any other Transfer-Encoding, so the body would be
	 * read as the next request. Refuse it and close (RFC 9112, 6.1).
	 */
	if (!is_known_framing(headers)) {
		r->is_closing = true;
		request_fail(r, &ERR_UNSUPPORTED_TRANSFER_ENCODING, NULL);
		request_release(r);
		return;
	}
	/* HTTP/1.1 requires one Host (RFC 9112, 3.2); 1.0 may omit it. */
	if ((req->major > 1 || (req->major == 1 && req->minor >= 1)) &&
	    header_count(headers, "Host") != 1) {
		request_fail(r, &ERR_BAD_HOST, NULL);
		request_release(r);
		return;
	}

	for (i = 0; i < sizeof(open_routes) / sizeof(open_routes[0]); i++) {
		if (strcmp(path, open_routes[i].path) != 0)
			continue;
		if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD)
			method_not_allowed(r, "GET, HEAD");
		else
			open_routes[i].answer(r);
		request_release(r);
		return;
	}

	if (has_prefix(path, "/v1/"))
		route_api(r, path, method);
	else
		request_fail(r, &ERR_NOT_FOUND, NULL);
	request_release(r);
}

static void
on_grace_end(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;

	(void)fd;
	(void)what;
	log_pack(LOG_WARN, "server", "drain_timeout", "{s:i, s:i}",
	    "worker", w->index, "requests", w->active);
	w->is_stopped = true;
	event_base_loopbreak(w->base);
}

/*
 * Runs on the worker's thread: stop accepting, answer requests that are
 * only waiting on another attempt, and let the rest finish within the
 * vendor's timeout.
 */
static void
on_shutdown(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;
	struct request	*r, *next;
	struct timeval	 tv;
	int		 ms;

	(void)fd;
	(void)what;
	if (w->bound != NULL) {
		evhttp_del_accept_socket(w->http, w->bound);
		w->bound = NULL;
	}
	evtimer_del(w->accept_timer);
	w->is_draining = true;

	for (r = TAILQ_FIRST(&w->requests); r != NULL; r = next) {
		next = TAILQ_NEXT(r, link);
		purchase_stop_waiting(r);
	}

	ms = w->cfg->upstream_timeout_ms + DRAIN_EXTRA_MS;
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evtimer_add(w->grace_timer, &tv);
	maybe_stop(w);
}

static void
on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
	struct worker	*w = arg;

	(void)fd;
	(void)what;
	if (w->bound != NULL)
		(void)evconnlistener_enable(
		    evhttp_bound_socket_get_listener(w->bound));
}

/*
 * accept() failed. Out of descriptors, the pending connection stays
 * queued and the socket stays readable, so libevent would retry at once,
 * forever: pause accepting briefly instead and let connections close.
 */
static void
on_accept_error(struct evconnlistener *listener, void *arg)
{
	struct worker	*w = this_worker;
	int		 err = EVUTIL_SOCKET_ERROR();
	struct timeval	 tv = { 0, ACCEPT_PAUSE_MS * 1000 };

	(void)arg;
	if (err != EMFILE && err != ENFILE && err != ENOBUFS && err != ENOMEM)
		return;
	if (w == NULL || evtimer_pending(w->accept_timer, NULL))
		return;
	(void)evconnlistener_disable(listener);
	evtimer_add(w->accept_timer, &tv);
	log_pack(LOG_WARN, "server", "accept_paused", "{s:i, s:s, s:i}",
	    "worker", w->index, "error", strerror(err), "connections",
	    w->active);
}

static void *
worker_main(void *arg)
{
	struct worker	*w = arg;

	this_worker = w;
	(void)event_base_dispatch(w->base);
	return NULL;
}

static int
worker_init(struct worker *w, struct server *srv, int index)
{
	const struct config	*cfg = srv->cfg;
	struct timeval		 tv;
	evutil_socket_t		 fd;

	w->index = index;
	w->cfg = cfg;
	TAILQ_INIT(&w->requests);
	w->base = event_base_new();
	w->http = w->base != NULL ? evhttp_new(w->base) : NULL;
	if (w->http == NULL)
		return -1;

	evhttp_set_gencb(w->http, on_request, w);
	evhttp_set_allowed_methods(w->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_PATCH | EVHTTP_REQ_OPTIONS);
	evhttp_set_max_headers_size(w->http, (ev_ssize_t)cfg->header_max_bytes);
	evhttp_set_max_body_size(w->http, (ev_ssize_t)(cfg->body_max_bytes >
	    BODY_HARD_CAP_BYTES ? cfg->body_max_bytes : BODY_HARD_CAP_BYTES));
	tv.tv_sec = cfg->read_timeout_ms / 1000;
	tv.tv_usec = (cfg->read_timeout_ms % 1000) * 1000;
	evhttp_set_timeout_tv(w->http, &tv);

	/* Each worker accepts on its own copy of the one listening socket. */
	fd = dup(srv->listen_fd);
	if (fd < 0)
		return -1;
	w->bound = evhttp_accept_socket_with_handle(w->http, fd);
	if (w->bound == NULL) {
		close(fd);
		return -1;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(w->bound),
	    on_accept_error);

	w->idem = idem_new(w->base, cfg, srv->owner);
	w->upstream = upstream_new(w->base, cfg, srv->ssl_ctx);
	w->shutdown_ev = event_new(w->base, -1, 0, on_shutdown, w);
	w->grace_timer = evtimer_new(w->base, on_grace_end, w);
	w->accept_timer = evtimer_new(w->base, on_accept_resume, w);
	if (w->shutdown_ev == NULL || w->grace_timer == NULL ||
	    w->accept_timer == NULL)
		return -1;
	return 0;
}

/*
 * Upstream and Redis go first: freeing them delivers their last callbacks,
 * which may still answer requests, and those answers need evhttp alive.
 * Requests left after that outlived the drain; only their timers remain.
 */
static void
worker_cleanup(struct worker *w)
{
	struct request	*r;

	upstream_free(w->upstream);
	idem_free(w->idem);
	while ((r = TAILQ_FIRST(&w->requests)) != NULL) {
		log_pack(LOG_WARN, "server", "request_abandoned", "{s:s}",
		    "req_id", r->id);
		request_free(r);
	}
	if (w->http != NULL)
		evhttp_free(w->http);
	if (w->shutdown_ev != NULL)
		event_free(w->shutdown_ev);
	if (w->grace_timer != NULL)
		event_free(w->grace_timer);
	if (w->accept_timer != NULL)
		event_free(w->accept_timer);
	if (w->base != NULL)
		event_base_free(w->base);
}

/* A non-blocking listening socket on the configured address and port. */
static evutil_socket_t
listen_socket(const struct config *cfg, int *port)
{
	struct addrinfo		 hints = { 0 }, *ai = NULL;
	struct sockaddr_storage	 ss;
	socklen_t		 sslen = sizeof(ss);
	char			 service[8];
	evutil_socket_t		 fd = -1;
	int			 on = 1, rc;

	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	(void)snprintf(service, sizeof(service), "%d", cfg->listen_port);
	rc = getaddrinfo(cfg->listen_address, service, &hints, &ai);
	if (rc != 0) {
		log_pack(LOG_ERROR, "server", "listen_failed", "{s:s, s:s}",
		    "address", cfg->listen_address, "error", gai_strerror(rc));
		return -1;
	}

	fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0 ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 ||
	    listen(fd, LISTEN_BACKLOG) != 0 ||
	    evutil_make_socket_nonblocking(fd) != 0 ||
	    evutil_make_socket_closeonexec(fd) != 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sslen) != 0)
		goto fail;
	freeaddrinfo(ai);

	*port = ntohs(ss.ss_family == AF_INET6 ?
	    ((struct sockaddr_in6 *)&ss)->sin6_port :
	    ((struct sockaddr_in *)&ss)->sin_port);
	return fd;

fail:
	log_pack(LOG_ERROR, "server", "listen_failed", "{s:s, s:i, s:s}",
	    "address", cfg->listen_address, "port", cfg->listen_port,
	    "error", strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(ai);
	return -1;
}

/* Names this process in idempotency records: host, pid and a nonce. */
static void
make_owner(char *out, size_t size)
{
	char		host[64] = "unknown";
	unsigned char	raw[4];
	char		hex[9];

	(void)gethostname(host, sizeof(host) - 1);
	host[sizeof(host) - 1] = '\0';
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		abort();
	util_hex(raw, sizeof(raw), hex);
	(void)snprintf(out, size, "%s/%ld/%s", host, (long)getpid(), hex);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct server	*srv = arg;
	int		 i;

	(void)what;
	log_pack(LOG_INFO, "server", "stopping", "{s:i}", "signal", (int)sig);
	for (i = 0; i < srv->nworkers; i++)
		event_active(srv->workers[i].shutdown_ev, EV_READ, 0);
	/* With every copy closed, new connections are refused, not queued. */
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		srv->listen_fd = -1;
	}
	event_base_loopbreak(srv->main_base);
}

static int
workers_count(const struct config *cfg)
{
	long	n;

	if (cfg->workers > 0)
		return cfg->workers;
	n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (int)n : 1;
}

static void
server_cleanup(struct server *srv)
{
	int	i;

	for (i = 0; i < srv->nworkers; i++)
		worker_cleanup(&srv->workers[i]);
	free(srv->workers);
	free(srv->threads);
	if (srv->listen_fd >= 0)
		close(srv->listen_fd);
	SSL_CTX_free(srv->ssl_ctx);
	if (srv->main_base != NULL)
		event_base_free(srv->main_base);
}

int
server_run(const struct config *cfg)
{
	struct server	 srv = { .cfg = cfg, .listen_fd = -1 };
	struct event	*sigint = NULL, *sigterm = NULL;
	int		 i, port, started = 0, status = 1;

	if (evthread_use_pthreads() != 0)
		return 1;
	(void)signal(SIGPIPE, SIG_IGN);
	make_owner(srv.owner, sizeof(srv.owner));

	if (cfg->upstream_is_https &&
	    (srv.ssl_ctx = upstream_tls_context(cfg)) == NULL)
		goto out;
	srv.listen_fd = listen_socket(cfg, &port);
	if (srv.listen_fd < 0)
		goto out;

	srv.main_base = event_base_new();
	if (srv.main_base == NULL)
		goto out;
	srv.nworkers = workers_count(cfg);
	srv.workers = xcalloc((size_t)srv.nworkers, sizeof(*srv.workers));
	srv.threads = xcalloc((size_t)srv.nworkers, sizeof(*srv.threads));
	for (i = 0; i < srv.nworkers; i++) {
		if (worker_init(&srv.workers[i], &srv, i) != 0) {
			log_pack(LOG_ERROR, "server", "worker_init_failed",
			    "{s:i}", "worker", i);
			goto out;
		}
	}

	sigint = evsignal_new(srv.main_base, SIGINT, on_signal, &srv);
	sigterm = evsignal_new(srv.main_base, SIGTERM, on_signal, &srv);
	if (sigint == NULL || sigterm == NULL || evsignal_add(sigint, NULL) ||
	    evsignal_add(sigterm, NULL))
		goto out;

	for (started = 0; started < srv.nworkers; started++) {
		if (pthread_create(&srv.threads[started], NULL, worker_main,
		    &srv.workers[started]) != 0)
			goto out;
	}
	log_pack(LOG_INFO, "server", "listening", "{s:s, s:i, s:i, s:s}",
	    "address", cfg->listen_address, "port", port,
	    "workers", srv.nworkers, "node", srv.owner);

	(void)event_base_dispatch(srv.main_base);
	status = 0;

out:
	/* Threads still running (a failed start) are told to stop too. */
	for (i = 0; i < started; i++) {
		if (status != 0)
			event_active(srv.workers[i].shutdown_ev, EV_READ, 0);
		(void)pthread_join(srv.threads[i], NULL);
	}
	if (sigint != NULL)
		event_free(sigint);
	if (sigterm != NULL)
		event_free(sigterm);
	server_cleanup(&srv);
	log_pack(LOG_INFO, "server", "stopped", "{s:i}", "status", status);
	return status;
}
