/*
 * The vendor client: a per-thread pool of keep-alive HTTP(S) connections.
 *
 * Each connection carries at most one call at a time; calls beyond the
 * pool's size wait in a queue. A connection that fails, times out or is
 * closed by the peer is never reused: libevent 2.1 would reconnect it with
 * its spent TLS session. It is freed on a later loop turn, since freeing it
 * inside its own callback is not safe.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "config.h"
#include "log.h"
#include "upstream.h"
#include "util.h"

/* The vendor's answers are under 1 KiB; anything near this is not it. */
#define UPSTREAM_BODY_MAX_BYTES		(256 * 1024)
#define UPSTREAM_HEADERS_MAX_BYTES	(32 * 1024)
/*
 * An idle connection older than this is closed rather than reused: a
 * server may drop idle connections at any time, and a request written into
 * one it is just closing fails with an unknown outcome. Load balancers in
 * front of HTTP APIs keep idle connections for 60 s or more.
 */
#define UPSTREAM_IDLE_MAX_MS		15000

struct upstream_conn {
	struct upstream			*up;
	struct evhttp_connection	*evcon;
	struct bufferevent		*bev;	/* owned by evcon */
	evutil_socket_t			 nodelay_fd;	/* -1: not yet set */
	int64_t				 idle_since_ms;	/* monotonic */
	bool				 is_busy;
	bool				 is_broken;
	/* TLS handshake done (always, over plain http): bytes may leave. */
	bool				 is_connected;
	TAILQ_ENTRY(upstream_conn)	 link;
};

struct upstream_call {
	struct upstream			*up;
	struct upstream_conn		*conn;	/* NULL while queued */
	struct evhttp_request		*req;	/* NULL once libevent let go */
	char				*form;
	size_t				 form_len;
	struct event			 deadline;
	struct event			 connect_deadline;
	enum evhttp_request_error	 error;
	bool				 has_error;
	upstream_done_cb		*cb;
	void				*arg;
	TAILQ_ENTRY(upstream_call)	 link;
};

struct upstream {
	struct event_base		*base;
	struct evdns_base		*dns;
	const struct config		*cfg;
	SSL_CTX				*ssl_ctx;
	struct event			 reaper;
	int				 nconns;
	TAILQ_HEAD(, upstream_conn)	 conns;
	TAILQ_HEAD(, upstream_call)	 queued;
	TAILQ_HEAD(, upstream_call)	 active;
};

static void	dispatch(struct upstream *up);

static void
set_timer_ms(struct event *ev, int ms)
{
	struct timeval	tv = { ms / 1000, (ms % 1000) * 1000 };

	evtimer_add(ev, &tv);
}

SSL_CTX *
upstream_tls_context(const struct config *cfg)
{
	SSL_CTX	*ctx;
	int	 ok;

	ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		log_openssl_errors(LOG_ERROR, "upstream", "tls_context_failed");
		return NULL;
	}
	(void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	if (cfg->upstream_ca_file != NULL)
		ok = SSL_CTX_load_verify_locations(ctx, cfg->upstream_ca_file,
		    NULL);
	else
		ok = SSL_CTX_set_default_verify_paths(ctx);
	if (ok != 1) {
		log_openssl_errors(LOG_ERROR, "upstream", "tls_ca_load_failed");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static void
schedule_reap(struct upstream *up)
{
	event_active(&up->reaper, EV_TIMEOUT, 0);
}

static void
on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct upstream_conn	*conn = arg;

	(void)evcon;
	conn->is_broken = true;
	schedule_reap(conn->up);
}

static void
conn_free(struct upstream_conn *conn)
{
	TAILQ_REMOVE(&conn->up->conns, conn, link);
	conn->up->nconns--;
	evhttp_connection_set_closecb(conn->evcon, NULL, NULL);
	evhttp_connection_free(conn->evcon);
	free(conn);
}

/* Frees idle broken connections, then hands queued calls a connection. */
static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
	struct upstream		*up = arg;
	struct upstream_conn	*conn, *next;

	(void)fd;
	(void)what;
	for (conn = TAILQ_FIRST(&up->conns); conn != NULL; conn = next) {
		next = TAILQ_NEXT(conn, link);
		if (conn->is_broken && !conn->is_busy)
			conn_free(conn);
	}
	dispatch(up);
}

static bool
is_ip_literal(const char *host)
{
	unsigned char	addr[16];

	return inet_pton(AF_INET, host, addr) == 1 ||
	    inet_pton(AF_INET6, host, addr) == 1;
}

/* Runs inside OpenSSL on this thread; marks the end of the handshake. */
static void
on_tls_info(const SSL *ssl, int where, int ret)
{
	struct upstream_conn	*conn;

	(void)ret;
	if ((where & SSL_CB_HANDSHAKE_DONE) == 0)
		return;
	if ((conn = SSL_get_app_data(ssl)) != NULL)
		conn->is_connected = true;
}

/*
 * A TLS session that checks the peer's certificate names our host and
 * tells conn when its handshake is done. conn outlives the session: the
 * session is freed with conn->evcon, before conn.
 */
static SSL *
tls_session(struct upstream *up, struct upstream_conn *conn)
{
	const char	*host = up->cfg->upstream_host;
	SSL		*ssl;

	ssl = SSL_new(up->ssl_ctx);
	if (ssl == NULL)
		return NULL;
	if (SSL_set_app_data(ssl, conn) != 1)
		goto fail;
	SSL_set_info_callback(ssl, on_tls_info);
	if (is_ip_literal(host)) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host)
		    != 1)
			goto fail;
	} else {
		if (SSL_set_tlsext_host_name(ssl, host) != 1 ||
		    SSL_set1_host(ssl, host) != 1)
			goto fail;
	}
	return ssl;

fail:
	SSL_free(ssl);
	return NULL;
}

static struct upstream_conn *
conn_new(struct upstream *up)
{
	struct upstream_conn	*conn;
	struct timeval		 tv;
	SSL			*ssl;
	int			 ms = up->cfg->upstream_timeout_ms;

	conn = xcalloc(1, sizeof(*conn));
	conn->up = up;
	conn->nodelay_fd = -1;
	conn->idle_since_ms = util_mono_ms();
	conn->is_connected = !up->cfg->upstream_is_https;
	if (up->cfg->upstream_is_https) {
		ssl = tls_session(up, conn);
		if (ssl == NULL) {
			log_openssl_errors(LOG_ERROR, "upstream",
			    "tls_session_failed");
			free(conn);
			return NULL;
		}
		/* Takes ownership of ssl (BEV_OPT_CLOSE_ON_FREE). */
		conn->bev = bufferevent_openssl_socket_new(up->base, -1, ssl,
		    BUFFEREVENT_SSL_CONNECTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (conn->bev == NULL) {
			SSL_free(ssl);
			free(conn);
			return NULL;
		}
		bufferevent_openssl_set_allow_dirty_shutdown(conn->bev, 1);
	}
	conn->evcon = evhttp_connection_base_bufferevent_new(up->base,
	    up->dns, conn->bev, up->cfg->upstream_host,
	    (unsigned short)up->cfg->upstream_port);
	if (conn->evcon == NULL) {
		if (conn->bev != NULL)
			bufferevent_free(conn->bev);
		free(conn);
		return NULL;
	}

	tv.tv_sec = ms / 1000;
	tv.tv_usec = (ms % 1000) * 1000;
	evhttp_connection_set_timeout_tv(conn->evcon, &tv);
	evhttp_connection_set_retries(conn->evcon, 0);
	evhttp_connection_set_max_body_size(conn->evcon,
	    UPSTREAM_BODY_MAX_BYTES);
	evhttp_connection_set_max_headers_size(conn->evcon,
	    UPSTREAM_HEADERS_MAX_BYTES);
	evhttp_connection_set_closecb(conn->evcon, on_conn_close, conn);

	TAILQ_INSERT_TAIL(&up->conns, conn, link);
	up->nconns++;
	return conn;
}

/* An idle reusable connection, a new one if the pool has room, or NULL. */
static struct upstream_conn *
conn_acquire(struct upstream *up)
{
	struct upstream_conn	*conn;

	TAILQ_FOREACH(conn, &up->conns, link) {
		if (conn->is_busy || conn->is_broken)
			continue;
		if (util_mono_ms() - conn->idle_since_ms <=
		    UPSTREAM_IDLE_MAX_MS)
			return conn;
		conn->is_broken = true;
		schedule_reap(up);
	}
	if (up->nconns >= up->cfg->upstream_max_connections)
		return NULL;
	return conn_new(up);
}

/* Logs why a TLS session failed, without anything secret in it. */
static void
log_tls_errors(struct upstream_conn *conn)
{
	unsigned long	code;
	char		text[256];

	if (conn->bev == NULL)
		return;
	while ((code = bufferevent_get_openssl_error(conn->bev)) != 0) {
		/*
		 * libevent queues SSL_get_error()'s result (SSL_ERROR_SSL,
		 * ...) beside the library's codes; it reads as noise.
		 */
		if (ERR_GET_LIB(code) == 0)
			continue;
		ERR_error_string_n(code, text, sizeof(text));
		log_pack(LOG_WARN, "upstream", "upstream_tls_error",
		    "{s:s}", "openssl", text);
	}
}

static void
call_finish(struct upstream_call *call, const struct upstream_result *res)
{
	struct upstream	*up = call->up;

	evtimer_del(&call->deadline);
	evtimer_del(&call->connect_deadline);
	if (call->conn != NULL) {
		call->conn->is_busy = false;
		call->conn->idle_since_ms = util_mono_ms();
		TAILQ_REMOVE(&up->active, call, link);
	} else {
		TAILQ_REMOVE(&up->queued, call, link);
	}
	call->cb(res, call->arg);
	/* The form carries a signature: no copy of it outlives the call. */
	OPENSSL_cleanse(call->form, call->form_len);
	free(call->form);
	free(call);
	/* A connection was freed up or a broken one may go. */
	schedule_reap(up);
}

static void
call_fail(struct upstream_call *call, enum upstream_status status)
{
	struct upstream_result	res = { .status = status };

	call_finish(call, &res);
}

/* How a call that got no answer ended, from what may have left. */
static enum upstream_status
failure(const struct upstream_call *call, enum upstream_status if_sent)
{
	if (call->conn == NULL || !call->conn->is_connected)
		return UPSTREAM_NOT_SENT;
	return if_sent;
}

static void
on_request_error(enum evhttp_request_error error, void *arg)
{
	struct upstream_call	*call = arg;

	call->error = error;
	call->has_error = true;
}

static void
on_response(struct evhttp_request *req, void *arg)
{
	struct upstream_call	*call = arg;
	struct upstream_result	 res = { .status = UPSTREAM_FAILED };
	struct evbuffer		*in;
	char			*body;
	size_t			 len;

	/* libevent frees req once this returns. */
	call->req = NULL;
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		call->conn->is_broken = true;
		log_tls_errors(call->conn);
		call_fail(call, failure(call, call->has_error &&
		    call->error == EVREQ_HTTP_TIMEOUT ? UPSTREAM_TIMEOUT :
		    UPSTREAM_FAILED));
		return;
	}

	in = evhttp_request_get_input_buffer(req);
	len = evbuffer_get_length(in);
	body = xmalloc(len + 1);
	if (evbuffer_remove(in, body, len) != (int)len)
		len = 0;
	body[len] = '\0';

	res.status = UPSTREAM_ANSWERED;
	res.http_status = evhttp_request_get_response_code(req);
	res.body = body;
	res.body_len = len;
	call_finish(call, &res);
	free(body);
}

/* Cancels the request, which drops its connection. */
static void
call_cancel(struct upstream_call *call)
{
	struct evhttp_request	*req = call->req;

	if (req == NULL)
		return;
	call->req = NULL;
	call->conn->is_broken = true;
	evhttp_cancel_request(req);
}

/*
 * The deadline passed. A vendor that got the request may still act on
 * it, so once it may have left the caller treats this as an unknown
 * outcome; a call still queued or still connecting sent nothing.
 */
static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_call	*call = arg;
	enum upstream_status	 status;

	(void)fd;
	(void)what;
	status = failure(call, UPSTREAM_TIMEOUT);
	call_cancel(call);
	call_fail(call, status);
}

/* The connection is still not up: give up before anything leaves. */
static void
on_connect_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_call	*call = arg;

	(void)fd;
	(void)what;
	if (call->conn->is_connected)
		return;
	call_cancel(call);
	call_fail(call, UPSTREAM_NOT_SENT);
}

/*
 * A request leaves as several TLS records. With Nagle's algorithm on, the
 * later ones wait for the vendor's delayed ACK, adding 40 ms or more to
 * every call on a reused connection. libevent creates the socket inside
 * evhttp_make_request (or after a DNS lookup), so this runs after it and
 * again on the next call for a socket that was not there yet.
 */
static void
set_nodelay(struct upstream_conn *conn)
{
	struct bufferevent	*bev;
	evutil_socket_t		 fd;
	int			 on = 1;

	bev = evhttp_connection_get_bufferevent(conn->evcon);
	fd = bev != NULL ? bufferevent_getfd(bev) : -1;
	if (fd < 0 || fd == conn->nodelay_fd)
		return;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == 0)
		conn->nodelay_fd = fd;
}

static int
call_start(struct upstream_call *call, struct upstream_conn *conn)
{
	struct evhttp_request	*req;
	struct evkeyvalq	*headers;

	req = evhttp_request_new(on_response, call);
	evhttp_request_set_error_cb(req, on_request_error);
	headers = evhttp_request_get_output_headers(req);
	if (evhttp_add_header(headers, "Host", call->up->cfg->upstream_host)
	    != 0 || evhttp_add_header(headers, "Content-Type",
	    "application/x-www-form-urlencoded") != 0 ||
	    evhttp_add_header(headers, "Accept", "application/json") != 0 ||
	    evhttp_add_header(headers, "User-Agent", "acr-gateway/"
	    ACRGW_VERSION) != 0 ||
	    evbuffer_add(evhttp_request_get_output_buffer(req), call->form,
	    call->form_len) != 0) {
		evhttp_request_free(req);
		return -1;
	}

	call->conn = conn;
	call->req = req;
	conn->is_busy = true;
	if (!conn->is_connected)
		set_timer_ms(&call->connect_deadline,
		    call->up->cfg->upstream_connect_timeout_ms);
	set_nodelay(conn);
	if (evhttp_make_request(conn->evcon, req, EVHTTP_REQ_POST, "/") != 0) {
		/* libevent has dropped the request on this path. */
		call->req = NULL;
		conn->is_broken = true;
		return -1;
	}
	set_nodelay(conn);
	return 0;
}

/* Starts queued calls while connections are free. */
static void
dispatch(struct upstream *up)
{
	struct upstream_call	*call;
	struct upstream_conn	*conn;

	while ((call = TAILQ_FIRST(&up->queued)) != NULL) {
		conn = conn_acquire(up);
		if (conn == NULL)
			return;
		TAILQ_REMOVE(&up->queued, call, link);
		TAILQ_INSERT_TAIL(&up->active, call, link);
		if (call_start(call, conn) != 0) {
			log_pack(LOG_WARN, "upstream", "upstream_send_failed",
			    "{s:s}", "host", up->cfg->upstream_host);
			call_fail(call, UPSTREAM_NOT_SENT);
		}
	}
}

void
upstream_post(struct upstream *up, const char *form, size_t len,
    upstream_done_cb *cb, void *arg)
{
	struct upstream_call	*call;

	call = xcalloc(1, sizeof(*call));
	call->up = up;
	call->form = xstrndup(form, len);
	call->form_len = len;
	call->cb = cb;
	call->arg = arg;
	evtimer_assign(&call->deadline, up->base, on_deadline, call);
	evtimer_assign(&call->connect_deadline, up->base, on_connect_deadline,
	    call);
	set_timer_ms(&call->deadline, up->cfg->upstream_timeout_ms);

	/* Started from the loop, so cb never runs inside this call. */
	TAILQ_INSERT_TAIL(&up->queued, call, link);
	schedule_reap(up);
}

struct upstream *
upstream_new(struct event_base *base, const struct config *cfg,
    SSL_CTX *ssl_ctx)
{
	struct upstream	*up;

	up = xcalloc(1, sizeof(*up));
	up->base = base;
	up->cfg = cfg;
	up->ssl_ctx = ssl_ctx;
	up->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (up->dns == NULL)
		log_pack(LOG_WARN, "upstream", "dns_init_failed", "{}");
	TAILQ_INIT(&up->conns);
	TAILQ_INIT(&up->queued);
	TAILQ_INIT(&up->active);
	event_assign(&up->reaper, base, -1, 0, on_reap, up);
	return up;
}

void
upstream_free(struct upstream *up)
{
	struct upstream_call	*call;
	struct upstream_conn	*conn;

	if (up == NULL)
		return;
	while ((call = TAILQ_FIRST(&up->queued)) != NULL)
		call_fail(call, UPSTREAM_FAILED);
	while ((call = TAILQ_FIRST(&up->active)) != NULL) {
		call->req = NULL;
		call_fail(call, UPSTREAM_FAILED);
	}
	event_del(&up->reaper);
	while ((conn = TAILQ_FIRST(&up->conns)) != NULL)
		conn_free(conn);
	if (up->dns != NULL)
		evdns_base_free(up->dns, 0);
	free(up);
}
