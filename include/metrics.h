/*
 * Process-wide counters for operators, served as Prometheus text on
 * GET /metrics. Every function is safe from any thread (relaxed atomics):
 * a scrape may see one counter a step ahead of another, never a torn one.
 * Labels come from fixed sets only, never from input, and no metric
 * carries a tenant's token, a key or a secret.
 */
#ifndef ACRGW_METRICS_H
#define ACRGW_METRICS_H

#include <stdint.h>

enum metrics_upstream {
	METRICS_UPSTREAM_CREATED,
	METRICS_UPSTREAM_REJECTED,
	METRICS_UPSTREAM_RETRY,
	METRICS_UPSTREAM_TRANSIENT,
	METRICS_UPSTREAM_GATEWAY_FAULT,
	METRICS_UPSTREAM_MALFORMED,
	METRICS_UPSTREAM_NOT_SENT,
	METRICS_UPSTREAM_TIMEOUT,
	METRICS_UPSTREAM_FAILED,
	METRICS_UPSTREAM_COUNT,
};

/* One answered request: its status and how long it took. */
void	 metrics_request(int status, int64_t latency_ms);
/* Requests alive across all workers. */
void	 metrics_inflight(int delta);
/* The claim's outcome, by the access log's name for it. */
void	 metrics_idempotency(const char *outcome);
/* One vendor call: how it ended and how long it took. */
void	 metrics_upstream(enum metrics_upstream result, int64_t latency_ms);
/* A final result that could not be stored. */
void	 metrics_record_failed(void);

/* The exposition text. New string; free with free(). */
char	*metrics_render(void);

#endif
