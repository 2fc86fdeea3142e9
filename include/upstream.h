/*
 * The HTTPS client to the vendor, one per worker thread: a small pool of
 * keep-alive connections (libevent's HTTP client over bufferevent_openssl)
 * with certificate and host name verification, a deadline per call and a
 * shorter one for connecting.
 *
 * A call that never got a connection (refused, unreachable, certificate
 * rejected, handshake over upstream.connect_timeout_ms, or still queued
 * for a free connection at its deadline) ends UPSTREAM_NOT_SENT: the
 * request bytes never left, because bufferevent_openssl writes nothing
 * before its handshake is done. Over plain http (tests only) there is no
 * handshake to watch, so every failure there counts as sent.
 */
#ifndef ACRGW_UPSTREAM_H
#define ACRGW_UPSTREAM_H

#include <stddef.h>

#include <openssl/ssl.h>

struct config;
struct event_base;
struct upstream;

enum upstream_status {
	UPSTREAM_ANSWERED,	/* an HTTP answer arrived: see http_status */
	UPSTREAM_NOT_SENT,	/* no connection: the vendor saw nothing */
	UPSTREAM_TIMEOUT,	/* sent, no whole answer by the deadline */
	UPSTREAM_FAILED,	/* sent, then a reset: outcome unknown */
};

struct upstream_result {
	enum upstream_status	 status;
	int			 http_status;
	const char		*body;		/* borrowed; NUL-terminated */
	size_t			 body_len;
};

/* result is borrowed: valid only during the callback. */
typedef void upstream_done_cb(const struct upstream_result *result,
	    void *arg);

/*
 * Builds the TLS context shared read-only by every worker: peer
 * verification on, CA file from config or the system store. Returns NULL
 * (after logging) on failure. Free with SSL_CTX_free.
 */
SSL_CTX		*upstream_tls_context(const struct config *cfg);

/* ssl_ctx is borrowed and may be NULL for plain http. */
struct upstream	*upstream_new(struct event_base *base,
		    const struct config *cfg, SSL_CTX *ssl_ctx);
/* Drops every connection; calls in flight are failed first. */
void		 upstream_free(struct upstream *up);

/*
 * POSTs the form body (copied) to "/" as
 * application/x-www-form-urlencoded. cb runs exactly once, later, on this
 * loop; arg must stay valid until then.
 */
void		 upstream_post(struct upstream *up, const char *form,
		    size_t len, upstream_done_cb *cb, void *arg);

#endif
