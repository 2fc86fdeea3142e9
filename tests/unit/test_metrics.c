#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "metrics.h"

/* The value on the exposition line that starts with prefix, or -1. */
static long long
value_of(const char *text, const char *prefix)
{
	const char	*p = text;
	size_t		 len = strlen(prefix);

	while ((p = strstr(p, prefix)) != NULL) {
		if ((p == text || p[-1] == '\n') && p[len] == ' ')
			return strtoll(p + len + 1, NULL, 10);
		p += len;
	}
	return -1;
}

static long long
scrape(const char *prefix)
{
	char		*text = metrics_render();
	long long	 v = value_of(text, prefix);

	free(text);
	return v;
}

static void
request_counts_by_status_and_other(void **state)
{
	long long	before_201, before_other;

	(void)state;
	before_201 = scrape("acrgw_http_requests_total{code=\"201\"}");
	before_other = scrape("acrgw_http_requests_total{code=\"other\"}");
	metrics_request(201, 3);
	metrics_request(201, 7);
	metrics_request(418, 1);
	assert_int_equal(scrape("acrgw_http_requests_total{code=\"201\"}"),
	    before_201 + 2);
	assert_int_equal(scrape("acrgw_http_requests_total{code=\"other\"}"),
	    before_other + 1);
}

static void
histogram_buckets_are_cumulative(void **state)
{
	long long	le5, le10, inf, count;

	(void)state;
	metrics_upstream(METRICS_UPSTREAM_CREATED, 4);
	metrics_upstream(METRICS_UPSTREAM_CREATED, 9);
	metrics_upstream(METRICS_UPSTREAM_TIMEOUT, 60000);
	le5 = scrape("acrgw_upstream_duration_seconds_bucket{le=\"0.005\"}");
	le10 = scrape("acrgw_upstream_duration_seconds_bucket{le=\"0.01\"}");
	inf = scrape("acrgw_upstream_duration_seconds_bucket{le=\"+Inf\"}");
	count = scrape("acrgw_upstream_duration_seconds_count");
	assert_int_equal(le5, 1);
	assert_int_equal(le10, 2);
	assert_int_equal(inf, 3);
	assert_int_equal(count, 3);
	assert_int_equal(scrape(
	    "acrgw_upstream_calls_total{result=\"timeout\"}"), 1);
}

static void
idempotency_counts_known_outcomes_only(void **state)
{
	(void)state;
	metrics_idempotency("replayed");
	metrics_idempotency("replayed");
	metrics_idempotency("not-an-outcome");
	assert_int_equal(scrape(
	    "acrgw_idempotency_total{outcome=\"replayed\"}"), 2);
}

static void
inflight_gauge_follows_deltas(void **state)
{
	(void)state;
	metrics_inflight(3);
	metrics_inflight(-1);
	assert_int_equal(scrape("acrgw_requests_in_flight"), 2);
	metrics_inflight(-2);
	assert_int_equal(scrape("acrgw_requests_in_flight"), 0);
}

static void
every_family_has_help_and_type(void **state)
{
	char	*text = metrics_render();

	(void)state;
	assert_non_null(strstr(text, "# TYPE acrgw_http_requests_total "
	    "counter\n"));
	assert_non_null(strstr(text, "# TYPE acrgw_request_duration_seconds "
	    "histogram\n"));
	assert_non_null(strstr(text, "# HELP acrgw_records_failed_total "));
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(request_counts_by_status_and_other),
		cmocka_unit_test(histogram_buckets_are_cumulative),
		cmocka_unit_test(idempotency_counts_known_outcomes_only),
		cmocka_unit_test(inflight_gauge_follows_deltas),
		cmocka_unit_test(every_family_has_help_and_type),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
