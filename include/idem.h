/*
 * The idempotency protocol: one Redis record per (tenant, client_token),
 * moved between states by one atomic Lua script per transition.
 *
 *   (none) --claim--> in_flight --complete--> completed | failed_final
 *                        |  ^
 *            lease ends  |  |  claim by a retry (takeover, epoch + 1)
 *            or release  v  |
 *                     in_flight, lease expired
 *
 * The record holds the request's fingerprint, the upstream ClientToken,
 * the owner node, a fencing epoch, the lease expiry, timestamps and, once
 * known, the status and body to replay. Lease times come from Redis's own
 * clock (TIME), so nodes with skewed clocks agree on who holds a lease.
 *
 * One struct idem per worker thread; all callbacks run on that thread's
 * loop. Every call's callback runs exactly once.
 */
#ifndef ACRGW_IDEM_H
#define ACRGW_IDEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct config;
struct event_base;
struct idem;

enum idem_outcome {
	IDEM_FRESH,		/* claimed a new record: call upstream */
	IDEM_TAKEOVER,		/* took over an expired lease: call upstream */
	IDEM_REPLAYED,		/* final result stored: replay it */
	IDEM_MISMATCH,		/* the token was used for another request */
	IDEM_IN_FLIGHT,		/* another attempt holds a live lease */
	/*
	 * Redis down or over budget: fail closed. The claim may still run
	 * once a stalled Redis wakes; idem undoes it a second later if it
	 * is still this attempt's, so a retry is not held up by a lease
	 * nobody is using.
	 */
	IDEM_UNAVAILABLE,
};

struct idem_claim {
	enum idem_outcome	 outcome;
	int64_t			 epoch;		/* FRESH, TAKEOVER */
	int64_t			 lease_left_ms;	/* IN_FLIGHT */
	/*
	 * IN_FLIGHT: the key was announced while this claim was out, so the
	 * record may have moved since Redis ran it and the announcement will
	 * not come again: claim again now rather than wait for it.
	 */
	bool			 is_stale;
	int			 status;	/* REPLAYED */
	const char		*body;		/* REPLAYED; borrowed */
	size_t			 body_len;
};

/* What the claim is about; all strings borrowed for the call only. */
struct idem_key {
	const char	*tenant;
	const char	*client_token;
	const char	*fingerprint;		/* 64 hex */
	const char	*upstream_token;
	/* Names this attempt (the request id), to undo a claim that timed
	 * out; unique per request. */
	const char	*attempt;
};

/* claim is borrowed: valid only during the callback. */
typedef void idem_claim_cb(const struct idem_claim *claim, void *arg);
/* is_stored: the transition reached Redis (or had nothing to do). */
typedef void idem_done_cb(bool is_stored, void *arg);
/*
 * record: {"client_token","state","created_at","updated_at","result"},
 * borrowed; NULL when there is none. is_available is false when Redis did
 * not answer.
 */
typedef void idem_record_cb(json_t *record, bool is_available, void *arg);
/* A completion or release was announced for a waited-on key, or time ran
 * out: claim again to learn which. */
typedef void idem_wake_cb(void *arg);

/* owner names this node in records. New; free with idem_free. */
struct idem	*idem_new(struct event_base *base, const struct config *cfg,
		    const char *owner);
void		 idem_free(struct idem *idem);	/* NULL is a no-op */

/* Readiness: the command connection is up. */
bool		 idem_is_ready(const struct idem *idem);

void		 idem_claim(struct idem *idem, const struct idem_key *key,
		    idem_claim_cb *cb, void *arg);

/*
 * Stores the final result: completed (is_final_failure false) or
 * failed_final. Recreates the record if it vanished (Redis lost its data
 * meanwhile); keeps an existing final result. Announces the key to
 * waiters on every node.
 */
void		 idem_complete(struct idem *idem, const struct idem_key *key,
		    bool is_final_failure, int status, const char *body,
		    idem_done_cb *cb, void *arg);

/*
 * Ends the lease of attempt epoch early after a transient failure, so the
 * next retry goes upstream at once. A stale epoch changes nothing.
 */
void		 idem_release(struct idem *idem, const struct idem_key *key,
		    int64_t epoch, idem_done_cb *cb, void *arg);

void		 idem_lookup(struct idem *idem, const char *tenant,
		    const char *client_token, idem_record_cb *cb, void *arg);

/*
 * Waits for the key's next announcement, at most timeout_ms. Returns a
 * handle to cancel with idem_wait_cancel before arg goes away; the handle
 * is gone once cb has run.
 */
struct idem_wait *idem_wait(struct idem *idem, const struct idem_key *key,
		    int64_t timeout_ms, idem_wake_cb *cb, void *arg);
void		 idem_wait_cancel(struct idem_wait *wait);

#endif
