/*
 * The request context and the worker it runs on. Shared by server.c
 * (routing, answering, threads) and purchase.c (the purchase steps).
 *
 * A struct request owns everything the request acquires. It lives from
 * routing until request_respond has sent the answer and no Redis or
 * upstream callback is outstanding; request_free releases it all.
 */
#ifndef ACRGW_REQUEST_H
#define ACRGW_REQUEST_H

/* Include <sys/queue.h> before any libevent header: libevent undefines
 * the TAILQ macros it defines for itself. */
#include <sys/queue.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event_struct.h>
#include <jansson.h>

#include "idem.h"
#include "vendor.h"

struct api_error;
struct config;
struct config_tenant;
struct evhttp_request;
struct rpc_params;

TAILQ_HEAD(request_list, request);

struct worker {
	int			 index;
	const struct config	*cfg;
	struct event_base	*base;
	struct evhttp		*http;
	struct evhttp_bound_socket *bound;
	struct idem		*idem;
	struct upstream		*upstream;
	struct event		*shutdown_ev;
	struct event		*grace_timer;
	struct event		*accept_timer;	/* resumes accepting */
	struct request_list	 requests;	/* alive on this worker */
	int			 active;	/* length of requests */
	int			 unflushed;	/* answers not yet written */
	bool			 is_draining;	/* SIGTERM: finish, accept none */
	bool			 is_stopped;	/* drain time is up */
};

struct request {
	struct worker		*w;
	TAILQ_ENTRY(request)	 link;
	/* The client's request; NULL once the answer is sent. */
	struct evhttp_request	*req;
	char			 id[33];
	int64_t			 started_ms;
	const struct config_tenant *tenant;

	/* The purchase: what was asked and where the claim stands. */
	struct order		 order;
	char			 fingerprint[65];
	char			 upstream_token[VENDOR_TOKEN_MAX + 1];
	struct idem_key		 key;
	int64_t			 epoch;
	int64_t			 lease_end_ms;	/* monotonic, local estimate */
	int64_t			 wait_deadline_ms;	/* 0: no Prefer: wait */
	int64_t			 recheck_ms;	/* next wait's cap */
	struct idem_wait	*wait;
	struct rpc_params	*params;
	int			 attempts;
	int64_t			 sent_ms;	/* monotonic, last attempt */
	struct event		 resend_timer;
	int			 record_tries;
	struct event		 record_timer;

	/* The answer, kept until it is stored and sent. */
	int			 status;
	char			 *body;
	bool			 is_problem;
	bool			 is_final_failure;
	bool			 is_replay;
	bool			 is_closing;	/* Connection: close after */
	int			 retry_after_s;	/* 0: no Retry-After */
	const char		*allow;		/* Allow, with a 405 */
	const char		*content_type;	/* NULL: JSON or problem */

	/* For the access line. */
	const char		*idem_outcome;
	int			 upstream_status;
	char			 upstream_request_id[128];
	char			 vendor_code[128];
	/* Redis or upstream callbacks still to come: do not free yet. */
	int			 pending;
};

/*
 * Sends status with body (takes ownership) and the request's headers and
 * writes the access line. A second answer is dropped. It never frees r:
 * every entry point (the route and each callback) ends with
 * request_release, so the free is always the callback's last act.
 */
void	 request_respond(struct request *r, int status, bool is_problem,
	    char *body);
/* Answers with a problem body for err; extra as in errors_problem_body. */
void	 request_fail(struct request *r, const struct api_error *err,
	    json_t *extra);
/* Frees r if it has answered and no callback is pending. */
void	 request_release(struct request *r);

/* POST /v1/instances, after authentication. */
void	 purchase_create(struct request *r);
/* GET /v1/instances/requests/{token}, after authentication. */
void	 purchase_lookup(struct request *r, const char *encoded_token);
/* Frees what the purchase steps hold; called by request_release. */
void	 purchase_cleanup(struct request *r);
/* Shutdown: a request waiting on another attempt is answered 409 now. */
void	 purchase_stop_waiting(struct request *r);

#endif
