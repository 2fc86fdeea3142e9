/*
 * Counters and histograms behind GET /metrics, in the Prometheus text
 * format (version 0.0.4). Plain arrays of atomics indexed by fixed label
 * sets: no allocation on the request path, no lock.
 */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "util.h"

#define NELEM(a)	(sizeof(a) / sizeof((a)[0]))

/* Every status the gateway itself answers; the rest count as "other". */
static const int statuses[] = {
	200, 201, 400, 401, 403, 404, 405, 409, 413, 415, 422,
	500, 501, 502, 503, 504,
};

static const char *const outcomes[] = {
	"fresh", "takeover", "replayed", "mismatch", "in_flight",
	"unavailable",
};

static const char *const upstream_results[METRICS_UPSTREAM_COUNT] = {
	[METRICS_UPSTREAM_CREATED] = "created",
	[METRICS_UPSTREAM_REJECTED] = "rejected",
	[METRICS_UPSTREAM_RETRY] = "idempotent_processing",
	[METRICS_UPSTREAM_TRANSIENT] = "transient",
	[METRICS_UPSTREAM_GATEWAY_FAULT] = "gateway_fault",
	[METRICS_UPSTREAM_MALFORMED] = "malformed",
	[METRICS_UPSTREAM_NOT_SENT] = "not_sent",
	[METRICS_UPSTREAM_TIMEOUT] = "timeout",
	[METRICS_UPSTREAM_FAILED] = "failed",
};

/* Upper bounds in milliseconds; one more bucket holds +Inf. */
static const int64_t bounds_ms[] = {
	5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
};

struct histogram {
	atomic_uint_fast64_t	 buckets[NELEM(bounds_ms) + 1];
	atomic_uint_fast64_t	 sum_ms;
	atomic_uint_fast64_t	 count;
};

static atomic_uint_fast64_t	requests[NELEM(statuses) + 1];
static atomic_int_fast64_t	inflight;
static atomic_uint_fast64_t	idempotency[NELEM(outcomes)];
static atomic_uint_fast64_t	upstream_calls[METRICS_UPSTREAM_COUNT];
static atomic_uint_fast64_t	records_failed;
static struct histogram		request_ms;
static struct histogram		upstream_ms;

static void
observe(struct histogram *h, int64_t ms)
{
	size_t	i;

	if (ms < 0)
		ms = 0;
	for (i = 0; i < NELEM(bounds_ms) && ms > bounds_ms[i]; i++)
		;
	atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_ms, (uint64_t)ms,
	    memory_order_relaxed);
	atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void
metrics_request(int status, int64_t latency_ms)
{
	size_t	i;

	for (i = 0; i < NELEM(statuses) && statuses[i] != status; i++)
		;
	atomic_fetch_add_explicit(&requests[i], 1, memory_order_relaxed);
	observe(&request_ms, latency_ms);
}

void
metrics_inflight(int delta)
{
	atomic_fetch_add_explicit(&inflight, delta, memory_order_relaxed);
}

void
metrics_idempotency(const char *outcome)
{
	size_t	i;

	for (i = 0; i < NELEM(outcomes); i++) {
		if (strcmp(outcomes[i], outcome) == 0) {
			atomic_fetch_add_explicit(&idempotency[i], 1,
			    memory_order_relaxed);
			return;
		}
	}
}

void
metrics_upstream(enum metrics_upstream result, int64_t latency_ms)
{
	atomic_fetch_add_explicit(&upstream_calls[result], 1,
	    memory_order_relaxed);
	observe(&upstream_ms, latency_ms);
}

void
metrics_record_failed(void)
{
	atomic_fetch_add_explicit(&records_failed, 1, memory_order_relaxed);
}

static uint64_t
load(atomic_uint_fast64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

/* Appends to a growing buffer; formats are ours, never input. */
struct text {
	char	*buf;
	size_t	 len;
	size_t	 size;
};

static void
add(struct text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
add(struct text *t, const char *fmt, ...)
{
	va_list	ap;
	int	n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->size - t->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if ((size_t)n < t->size - t->len)
			break;
		t->size = t->size * 2 + (size_t)n;
		t->buf = xrealloc(t->buf, t->size);
	}
	t->len += (size_t)n;
}

static void
render_histogram(struct text *t, const char *name, const char *help,
    struct histogram *h)
{
	uint64_t	cumulative = 0;
	size_t		i;

	add(t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
	for (i = 0; i < NELEM(bounds_ms); i++) {
		cumulative += load(&h->buckets[i]);
		add(t, "%s_bucket{le=\"%g\"} %llu\n", name,
		    (double)bounds_ms[i] / 1000, (unsigned long long)cumulative);
	}
	cumulative += load(&h->buckets[i]);
	add(t, "%s_bucket{le=\"+Inf\"} %llu\n", name,
	    (unsigned long long)cumulative);
	add(t, "%s_sum %g\n%s_count %llu\n", name,
	    (double)load(&h->sum_ms) / 1000, name,
	    (unsigned long long)load(&h->count));
}

char *
metrics_render(void)
{
	struct text	t = { xmalloc(4096), 0, 4096 };
	size_t		i;

	add(&t, "# HELP acrgw_http_requests_total Answered requests by "
	    "status.\n# TYPE acrgw_http_requests_total counter\n");
	for (i = 0; i < NELEM(statuses); i++)
		add(&t, "acrgw_http_requests_total{code=\"%d\"} %llu\n",
		    statuses[i], (unsigned long long)load(&requests[i]));
	add(&t, "acrgw_http_requests_total{code=\"other\"} %llu\n",
	    (unsigned long long)load(&requests[i]));

	add(&t, "# HELP acrgw_requests_in_flight Requests being served.\n"
	    "# TYPE acrgw_requests_in_flight gauge\n"
	    "acrgw_requests_in_flight %lld\n",
	    (long long)atomic_load_explicit(&inflight, memory_order_relaxed));

	add(&t, "# HELP acrgw_idempotency_total Claims by outcome.\n"
	    "# TYPE acrgw_idempotency_total counter\n");
	for (i = 0; i < NELEM(outcomes); i++)
		add(&t, "acrgw_idempotency_total{outcome=\"%s\"} %llu\n",
		    outcomes[i], (unsigned long long)load(&idempotency[i]));

	add(&t, "# HELP acrgw_upstream_calls_total Vendor calls by result.\n"
	    "# TYPE acrgw_upstream_calls_total counter\n");
	for (i = 0; i < METRICS_UPSTREAM_COUNT; i++)
		add(&t, "acrgw_upstream_calls_total{result=\"%s\"} %llu\n",
		    upstream_results[i],
		    (unsigned long long)load(&upstream_calls[i]));

	add(&t, "# HELP acrgw_records_failed_total Final results that could "
	    "not be stored in Redis.\n"
	    "# TYPE acrgw_records_failed_total counter\n"
	    "acrgw_records_failed_total %llu\n",
	    (unsigned long long)load(&records_failed));

	render_histogram(&t, "acrgw_request_duration_seconds",
	    "Time from routing to answer.", &request_ms);
	render_histogram(&t, "acrgw_upstream_duration_seconds",
	    "Time per vendor call.", &upstream_ms);
	return t.buf;
}
