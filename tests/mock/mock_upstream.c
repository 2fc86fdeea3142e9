/*
 * mock-upstream: a stand-in for the vendor's BssOpenApi endpoint, for tests.
 *
 * It serves the vendor call (POST /, or GET / with a query string) on
 * loopback over plain HTTP and, given a certificate, over HTTPS too. Each
 * call is checked the way the vendor checks it, in the vendor's order:
 * required parameters, access key, signature method, signature, timestamp,
 * nonce, action and version, then the CreateInstance parameters. Orders live
 * in memory, ClientToken replays return the first answer, and each new order
 * can be appended to a commit log so that a test can count orders across a
 * restart. A control API under /_mock/ reads counters, resets state and
 * plans failures (error answers, delays, dropped connections).
 *
 * One thread, one event_base. Every table is bounded so that a runaway test
 * cannot eat the machine: a full table answers 503 instead of growing, and
 * POST /_mock/reset empties it.
 */
#include <sys/queue.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "log.h"
#include "signer.h"
#include "util.h"

#define MOCK_MODULE		"mock"
#define MOCK_LISTEN_ADDRESS	"127.0.0.1"
#define MOCK_HOST_ID		"mock-upstream"

/* Vendor calls are under 2 KiB; the bounds leave room for odd tests. */
#define MOCK_BODY_MAX_BYTES	(64 * 1024)
/* The request line carries a GET's whole query, so allow it some room. */
#define MOCK_HEADERS_MAX_BYTES	(32 * 1024)
#define MOCK_PARAMS_MAX		100
#define MOCK_FIELD_MAX_BYTES	4096
#define MOCK_ACCESS_KEYS_MAX	16

/* The vendor accepts a Timestamp up to 15 minutes either side of its clock. */
#define MOCK_CLOCK_SKEW_MS	(15 * 60 * 1000)
/*
 * A signed call stays acceptable for the whole skew window on both sides,
 * 30 minutes at most, so its nonce is kept that long: a replay is caught
 * however the sender's clock is off.
 */
#define MOCK_NONCE_TTL_MS	(2 * MOCK_CLOCK_SKEW_MS)

#define MOCK_NONCES_MAX		65536
/*
 * Vendor calls remembered for GET /_mock/stats (token, nonce, signature):
 * more than any one test makes between resets, so a test sees them all.
 */
#define MOCK_RECENT_MAX		4096
#define MOCK_ORDERS_MAX		65536
#define MOCK_TOKENS_MAX		65536
/* Fixed bucket arrays: with the bounds above, chains stay a few long. */
#define MOCK_MAP_BUCKETS	16384

#define MOCK_DIGEST_HEX_LEN	64	/* SHA-256 as hex */
#define MOCK_REQUEST_ID_LEN	36	/* 8-4-4-4-12 hex digits */
#define MOCK_INSTANCE_ID_LEN	20	/* "cri-" and 16 characters */
#define MOCK_ORDER_ID_LEN	15
#define MOCK_CLIENT_TOKEN_MAX	64
#define MOCK_PLAN_CODE_MAX	64
#define MOCK_PLAN_COUNT_MAX	1000000
#define MOCK_DELAY_MAX_MS	(10 * 60 * 1000)
/* Period and RenewPeriod are months; ten years is beyond any real plan. */
#define MOCK_MONTHS_MAX		120
#define MOCK_QUOTA_MAX		1000000

struct access_key {
	char	*id;
	char	*secret;	/* wiped by secret_free */
};

struct map_entry {
	struct map_entry	*next;
	void			*value;
	char			 key[];
};

/* A string-keyed hash table with chaining and at most count_max entries. */
struct map {
	struct map_entry	**buckets;
	size_t			  bucket_count;
	size_t			  count;
	size_t			  count_max;
	void			(*value_free)(void *);
};

struct nonce_slot {
	int64_t	seen_ms;
	char	digest[MOCK_DIGEST_HEX_LEN + 1];
};

/*
 * Nonces seen, oldest first in a ring and indexed by a map. Every nonce is
 * kept for the same time, so ring order is expiry order and pruning only
 * looks at the head. Nonces are stored as SHA-256 digests so that a 4 KiB
 * nonce costs no more than a short one.
 */
struct nonce_set {
	struct nonce_slot	*slots;
	size_t			 head;
	size_t			 count;
	struct map		 seen;
};

enum nonce_result {
	NONCE_FRESH,
	NONCE_SEEN,
	NONCE_TABLE_FULL,
};

struct order {
	char	 instance_id[MOCK_INSTANCE_ID_LEN + 1];
	char	 order_id[MOCK_ORDER_ID_LEN + 1];
	char	*fingerprint;	/* canonical query of the compared fields */
};

struct token_count {
	int64_t	calls;
};

/*
 * What one vendor call carried, for tests: its ClientToken, SignatureNonce
 * and Signature as received (NULL when absent). A signature proves nothing
 * once its nonce is spent, and the tests need the exact value to search
 * the gateway's logs for it, so it is kept in the clear.
 */
struct received {
	char	*client_token;
	char	*nonce;
	char	*signature;
};

/* The last MOCK_RECENT_MAX calls in arrival order, oldest at head. */
struct recent_calls {
	struct received	*slots;
	size_t		 head;
	size_t		 count;
	int64_t		 dropped;	/* pushed out by newer calls */
};

/*
 * A failure planned through POST /_mock/fail for the next count calls.
 * is_commit says whether the call is processed (and an order created) in
 * spite of the failure; with a delay it also says whether processing comes
 * before the hold (true) or after it (false).
 */
struct fail_plan {
	int64_t	count;
	int	status;		/* 0: answer as processing decides */
	char	code[MOCK_PLAN_CODE_MAX + 1];
	int64_t	delay_ms;
	bool	is_reset;
	bool	is_commit;
};

/* Anything a client can be told, as the vendor would put it. */
struct vendor_error {
	int		 status;
	const char	*code;
	const char	*message;
};

struct mock;

/*
 * One vendor call, from arrival to answer. It owns what it parsed and its
 * answer. req is borrowed from evhttp and set to NULL if the connection is
 * freed under a held call, which then finishes without answering.
 */
struct call {
	TAILQ_ENTRY(call)	 entry;
	struct mock		*mock;
	struct evhttp_request	*req;
	struct event		 timer;
	bool			 is_held;
	bool			 is_processed;
	char			 method[8];
	char			 request_id[MOCK_REQUEST_ID_LEN + 1];
	struct fail_plan	 plan;
	struct rpc_params	*params;	/* all but Signature */
	char			*signature;	/* wiped by secret_free */
	const struct access_key	*key;		/* borrowed from the mock */
	const struct vendor_error *error;
	const char		*error_param;	/* static name, or NULL */
	const char		*outcome;	/* static, for the log */
	char			 instance_id[MOCK_INSTANCE_ID_LEN + 1];
	char			 order_id[MOCK_ORDER_ID_LEN + 1];
	int			 status;
	char			*code;
	char			*body;
};

TAILQ_HEAD(call_list, call);

struct mock {
	struct event_base	*base;
	struct evhttp		*http;
	struct evhttp		*https;
	SSL_CTX			*ssl_ctx;
	struct event		*on_sigterm;
	struct event		*on_sigint;
	struct access_key	 keys[MOCK_ACCESS_KEYS_MAX];
	size_t			 key_count;
	int			 commit_fd;	/* -1 without --commit-log */
	struct nonce_set	 nonces;
	struct map		 orders;	/* "id\ntoken" -> order */
	struct map		 tokens;	/* ClientToken -> token_count */
	json_t			*last_params;
	struct recent_calls	 recent;
	int64_t			 order_count;
	int64_t			 call_count;
	/* TCP connections accepted per listener, for keep-alive tests. */
	int64_t			 http_connections;
	int64_t			 https_connections;
	struct fail_plan	 plan;
	struct call_list	 held;		/* calls on their timer */
};

struct options {
	int		 http_port;
	int		 https_port;
	const char	*cert_path;
	const char	*key_path;
	const char	*commit_log_path;
};

static const struct vendor_error VE_MISSING_PARAMETER = {
	400, "MissingParameter",
	"A parameter this call requires is missing or empty."
};
static const struct vendor_error VE_INVALID_PARAMETER = {
	400, "InvalidParameter", "A parameter has a value this call rejects."
};
static const struct vendor_error VE_MALFORMED = {
	400, "InvalidParameter",
	"A parameter is badly encoded, longer than 4096 bytes or given twice."
};
static const struct vendor_error VE_TOO_MANY_PARAMETERS = {
	400, "InvalidParameter", "The call has more than 100 parameters."
};
static const struct vendor_error VE_CONTENT_TYPE = {
	400, "InvalidParameter",
	"A request body must be application/x-www-form-urlencoded."
};
static const struct vendor_error VE_ACCESS_KEY_NOT_FOUND = {
	404, "InvalidAccessKeyId.NotFound", "The AccessKeyId is not known."
};
static const struct vendor_error VE_SIGNATURE_MISMATCH = {
	400, "SignatureDoesNotMatch",
	"The Signature differs from the one computed for this call."
};
static const struct vendor_error VE_TIMESTAMP_FORMAT = {
	400, "InvalidTimeStamp.Format",
	"The Timestamp must read YYYY-MM-DDThh:mm:ssZ in UTC."
};
static const struct vendor_error VE_TIMESTAMP_EXPIRED = {
	400, "InvalidTimeStamp.Expired",
	"The Timestamp is more than 15 minutes away from the current time."
};
static const struct vendor_error VE_NONCE_USED = {
	400, "SignatureNonceUsed",
	"The SignatureNonce has been used by an earlier call."
};
static const struct vendor_error VE_ACTION_NOT_FOUND = {
	400, "InvalidAction.NotFound",
	"This endpoint only serves CreateInstance."
};
static const struct vendor_error VE_INVALID_VERSION = {
	400, "InvalidVersion", "This endpoint only serves Version 2017-12-14."
};
static const struct vendor_error VE_IDEMPOTENT_MISMATCH = {
	400, "IdempotentParameterMismatch",
	"The ClientToken was used before with different parameters."
};
static const struct vendor_error VE_NONCE_TABLE_FULL = {
	503, "ServiceUnavailable",
	"The mock's nonce table is full; POST /_mock/reset empties it."
};
static const struct vendor_error VE_ORDER_TABLE_FULL = {
	503, "ServiceUnavailable",
	"The mock's order table is full; POST /_mock/reset empties it."
};
static const struct vendor_error VE_INTERNAL = {
	500, "InternalError", "The mock failed to process the call."
};

/*
 * Random bytes for identifiers. A failing CSPRNG leaves nothing sensible
 * to do, so, like an allocation failure, it is fatal.
 */
static void
random_bytes(unsigned char *out, size_t len)
{
	if (RAND_bytes(out, (int)len) != 1) {
		log_openssl_errors(LOG_ERROR, MOCK_MODULE, "random_failed");
		abort();
	}
}

/*
 * count characters drawn uniformly from alphabet into out. Bytes past the
 * largest multiple of the alphabet's size are redrawn to avoid bias.
 */
static void
random_text(const char *alphabet, char *out, size_t count)
{
	size_t		 size = strlen(alphabet);
	size_t		 limit = 256 - 256 % size;
	unsigned char	 byte;
	size_t		 i = 0;

	while (i < count) {
		random_bytes(&byte, 1);
		if (byte < limit)
			out[i++] = alphabet[byte % size];
	}
	out[count] = '\0';
}

/* An uppercase UUID-like request id, as the vendor returns. */
static void
request_id_new(char out[MOCK_REQUEST_ID_LEN + 1])
{
	unsigned char	 bytes[16];
	char		 hex[2 * sizeof(bytes) + 1];
	size_t		 i, j = 0;

	random_bytes(bytes, sizeof(bytes));
	util_hex(bytes, sizeof(bytes), hex);
	for (i = 0; i < 2 * sizeof(bytes); i++) {
		if (i == 8 || i == 12 || i == 16 || i == 20)
			out[j++] = '-';
		out[j++] = (char)toupper((unsigned char)hex[i]);
	}
	out[j] = '\0';
}

static void
order_ids_new(struct order *order)
{
	memcpy(order->instance_id, "cri-", 4);
	random_text("0123456789abcdefghijklmnopqrstuvwxyz",
	    order->instance_id + 4, MOCK_INSTANCE_ID_LEN - 4);

	/* A leading zero would read oddly as a number. */
	random_text("123456789", order->order_id, 1);
	random_text("0123456789", order->order_id + 1, MOCK_ORDER_ID_LEN - 1);
}

static void
order_free(void *ptr)
{
	struct order	*order = ptr;

	if (order == NULL)
		return;
	free(order->fingerprint);
	free(order);
}

static uint64_t
map_hash(const char *key)
{
	uint64_t	 hash = 14695981039346656037ULL;	/* FNV-1a */

	for (; *key != '\0'; key++) {
		hash ^= (unsigned char)*key;
		hash *= 1099511628211ULL;
	}
	return hash;
}

static void
map_init(struct map *map, size_t count_max, void (*value_free)(void *))
{
	map->bucket_count = MOCK_MAP_BUCKETS;
	map->buckets = xcalloc(map->bucket_count, sizeof(*map->buckets));
	map->count = 0;
	map->count_max = count_max;
	map->value_free = value_free;
}

static void
map_clear(struct map *map)
{
	struct map_entry	*entry, *next;
	size_t			 i;

	for (i = 0; i < map->bucket_count; i++) {
		for (entry = map->buckets[i]; entry != NULL; entry = next) {
			next = entry->next;
			if (map->value_free != NULL)
				map->value_free(entry->value);
			free(entry);
		}
		map->buckets[i] = NULL;
	}
	map->count = 0;
}

static void
map_cleanup(struct map *map)
{
	if (map->buckets == NULL)
		return;
	map_clear(map);
	free(map->buckets);
	map->buckets = NULL;
}

static bool
map_is_full(const struct map *map)
{
	return map->count >= map->count_max;
}

/* Borrowed value for key, or NULL. */
static void *
map_get(const struct map *map, const char *key)
{
	struct map_entry	*entry;

	entry = map->buckets[map_hash(key) % map->bucket_count];
	for (; entry != NULL; entry = entry->next) {
		if (strcmp(entry->key, key) == 0)
			return entry->value;
	}
	return NULL;
}

/*
 * Adds key, which must be absent, and takes ownership of value. The caller
 * checks map_is_full first: a full map is an invariant broken here.
 */
static void
map_put(struct map *map, const char *key, void *value)
{
	struct map_entry	**bucket;
	struct map_entry	 *entry;
	size_t			  key_len = strlen(key);

	assert(!map_is_full(map));
	bucket = &map->buckets[map_hash(key) % map->bucket_count];
	entry = xmalloc(sizeof(*entry) + key_len + 1);
	memcpy(entry->key, key, key_len + 1);
	entry->value = value;
	entry->next = *bucket;
	*bucket = entry;
	map->count++;
}

static void
map_remove(struct map *map, const char *key)
{
	struct map_entry	**link, *entry;

	link = &map->buckets[map_hash(key) % map->bucket_count];
	for (; (entry = *link) != NULL; link = &entry->next) {
		if (strcmp(entry->key, key) != 0)
			continue;
		*link = entry->next;
		if (map->value_free != NULL)
			map->value_free(entry->value);
		free(entry);
		map->count--;
		return;
	}
}

static void
nonce_set_init(struct nonce_set *set)
{
	set->slots = xcalloc(MOCK_NONCES_MAX, sizeof(*set->slots));
	set->head = 0;
	set->count = 0;
	map_init(&set->seen, MOCK_NONCES_MAX, NULL);
}

static void
nonce_set_clear(struct nonce_set *set)
{
	map_clear(&set->seen);
	set->head = 0;
	set->count = 0;
}

static void
nonce_set_cleanup(struct nonce_set *set)
{
	map_cleanup(&set->seen);
	free(set->slots);
	set->slots = NULL;
}

static void
nonce_digest(const char *nonce, char out[MOCK_DIGEST_HEX_LEN + 1])
{
	unsigned char	 md[EVP_MAX_MD_SIZE];
	unsigned int	 md_len = 0;

	if (EVP_Digest(nonce, strlen(nonce), md, &md_len, EVP_sha256(),
	    NULL) != 1 || md_len * 2 != MOCK_DIGEST_HEX_LEN) {
		log_openssl_errors(LOG_ERROR, MOCK_MODULE, "digest_failed");
		abort();
	}
	util_hex(md, md_len, out);
}

/* Records nonce unless it was seen within the TTL. */
static enum nonce_result
nonce_set_add(struct nonce_set *set, const char *nonce, int64_t now_ms)
{
	struct nonce_slot	*slot;
	char			 digest[MOCK_DIGEST_HEX_LEN + 1];

	while (set->count > 0 &&
	    set->slots[set->head].seen_ms + MOCK_NONCE_TTL_MS <= now_ms) {
		map_remove(&set->seen, set->slots[set->head].digest);
		set->head = (set->head + 1) % MOCK_NONCES_MAX;
		set->count--;
	}

	nonce_digest(nonce, digest);
	if (map_get(&set->seen, digest) != NULL)
		return NONCE_SEEN;
	if (set->count == MOCK_NONCES_MAX)
		return NONCE_TABLE_FULL;

	slot = &set->slots[(set->head + set->count) % MOCK_NONCES_MAX];
	slot->seen_ms = now_ms;
	memcpy(slot->digest, digest, sizeof(slot->digest));
	/* The map only answers "seen?"; any non-NULL value will do. */
	map_put(&set->seen, digest, slot);
	set->count++;
	return NONCE_FRESH;
}

/*
 * s itself when JSON can carry it (valid UTF-8), else its percent-encoding,
 * so that stats stay valid JSON whatever bytes a test sent. New string.
 */
static char *
json_safe_text(const char *s)
{
	json_t	*probe;

	probe = json_string(s);
	if (probe != NULL) {
		json_decref(probe);
		return xstrdup(s);
	}
	return signer_percent_encode(s, strlen(s));
}

static void
json_set_text(json_t *object, const char *name, const char *value)
{
	char	*safe_name = json_safe_text(name);
	char	*safe_value = json_safe_text(value);

	if (json_object_set_new(object, safe_name,
	    json_string(safe_value)) == -1)
		abort();
	free(safe_name);
	free(safe_value);
}

static char *
json_safe_text_or_null(const char *s)
{
	return s != NULL ? json_safe_text(s) : NULL;
}

static void
received_clear(struct received *slot)
{
	free(slot->client_token);
	free(slot->nonce);
	free(slot->signature);
	memset(slot, 0, sizeof(*slot));
}

static void
recent_init(struct recent_calls *recent)
{
	recent->slots = xcalloc(MOCK_RECENT_MAX, sizeof(*recent->slots));
	recent->head = 0;
	recent->count = 0;
	recent->dropped = 0;
}

static void
recent_clear(struct recent_calls *recent)
{
	size_t	 i;

	for (i = 0; i < recent->count; i++)
		received_clear(&recent->slots[(recent->head + i) %
		    MOCK_RECENT_MAX]);
	recent->head = 0;
	recent->count = 0;
	recent->dropped = 0;
}

static void
recent_cleanup(struct recent_calls *recent)
{
	if (recent->slots == NULL)
		return;
	recent_clear(recent);
	free(recent->slots);
	recent->slots = NULL;
}

/*
 * Remembers what one call carried (copies; NULL for an absent value). A
 * full ring forgets its oldest call and counts it in dropped, so a test
 * can tell that it no longer sees every call.
 */
static void
recent_add(struct recent_calls *recent, const char *client_token,
    const char *nonce, const char *signature)
{
	struct received	*slot;

	if (recent->count == MOCK_RECENT_MAX) {
		received_clear(&recent->slots[recent->head]);
		recent->head = (recent->head + 1) % MOCK_RECENT_MAX;
		recent->count--;
		recent->dropped++;
	}
	slot = &recent->slots[(recent->head + recent->count) %
	    MOCK_RECENT_MAX];
	slot->client_token = json_safe_text_or_null(client_token);
	slot->nonce = json_safe_text_or_null(nonce);
	slot->signature = json_safe_text_or_null(signature);
	recent->count++;
}

static json_t *
recent_json(const struct recent_calls *recent)
{
	const struct received	*slot;
	json_t			*list = json_array();
	size_t			 i;

	for (i = 0; i < recent->count; i++) {
		slot = &recent->slots[(recent->head + i) % MOCK_RECENT_MAX];
		if (json_array_append_new(list, json_pack("{s:s?, s:s?, s:s?}",
		    "client_token", slot->client_token, "nonce", slot->nonce,
		    "signature", slot->signature)) == -1)
			abort();
	}
	return list;
}

/* Adds one name[=value] pair of a form or query to the call. */
static const struct vendor_error *
call_add_pair(struct call *call, const char *pair, size_t len)
{
	const char			*eq = memchr(pair, '=', len);
	const char			*raw_value = eq ? eq + 1 : pair + len;
	const struct vendor_error	*err = &VE_MALFORMED;
	char				*name = NULL, *value = NULL;
	size_t				 name_len, value_len;

	name_len = eq != NULL ? (size_t)(eq - pair) : len;
	value_len = eq != NULL ? len - name_len - 1 : 0;

	if (rpc_params_count(call->params) + (call->signature != NULL) >=
	    MOCK_PARAMS_MAX)
		return &VE_TOO_MANY_PARAMETERS;

	name = signer_percent_decode(pair, name_len);
	value = signer_percent_decode(raw_value, value_len);
	if (name == NULL || value == NULL || name[0] == '\0' ||
	    strlen(name) > MOCK_FIELD_MAX_BYTES ||
	    strlen(value) > MOCK_FIELD_MAX_BYTES)
		goto out;

	/* Kept apart from the parameters, which stats echo as last_params. */
	if (strcmp(name, "Signature") == 0) {
		if (call->signature != NULL)
			goto out;
		call->signature = value;
		value = NULL;
	} else {
		if (rpc_params_get(call->params, name) != NULL)
			goto out;
		rpc_params_set(call->params, name, value);
	}
	err = NULL;

out:
	free(name);
	secret_free(value);
	return err;
}

static const struct vendor_error *
call_add_form(struct call *call, const char *text, size_t len)
{
	const struct vendor_error	*err;
	const char			*end = text + len, *pair, *amp;

	for (pair = text; pair < end; pair = amp + 1) {
		amp = memchr(pair, '&', (size_t)(end - pair));
		if (amp == NULL)
			amp = end;
		if (amp > pair &&
		    (err = call_add_pair(call, pair, (size_t)(amp - pair))) !=
		    NULL)
			return err;
		if (amp == end)
			break;
	}
	return NULL;
}

static bool
is_form_body(struct evhttp_request *req)
{
	static const char	 form[] = "application/x-www-form-urlencoded";
	const char		*type;

	type = evhttp_find_header(evhttp_request_get_input_headers(req),
	    "Content-Type");
	if (type == NULL || strncasecmp(type, form, sizeof(form) - 1) != 0)
		return false;
	type += sizeof(form) - 1;
	return *type == '\0' || *type == ';' || *type == ' ';
}

/* Parameters come from the query string and, for a form body, the body. */
static const struct vendor_error *
call_parse(struct call *call)
{
	const struct evhttp_uri		*uri;
	const struct vendor_error	*err;
	struct evbuffer			*body;
	const char			*query;
	size_t				 len;

	uri = evhttp_request_get_evhttp_uri(call->req);
	query = uri != NULL ? evhttp_uri_get_query(uri) : NULL;
	if (query != NULL &&
	    (err = call_add_form(call, query, strlen(query))) != NULL)
		return err;

	body = evhttp_request_get_input_buffer(call->req);
	len = evbuffer_get_length(body);
	if (len == 0)
		return NULL;
	if (!is_form_body(call->req))
		return &VE_CONTENT_TYPE;
	return call_add_form(call, (const char *)evbuffer_pullup(body, -1),
	    len);
}

/* Stats a test reads: calls per ClientToken, the last CreateInstance. */
static void
call_note(struct call *call)
{
	struct mock		*mock = call->mock;
	const char		*token, *action, *name, *value;
	struct token_count	*count;
	char			*key;
	size_t			 i;

	token = rpc_params_get(call->params, "ClientToken");
	if (token != NULL && strlen(token) <= MOCK_CLIENT_TOKEN_MAX) {
		key = json_safe_text(token);
		count = map_get(&mock->tokens, key);
		if (count == NULL && !map_is_full(&mock->tokens)) {
			count = xcalloc(1, sizeof(*count));
			map_put(&mock->tokens, key, count);
		}
		if (count != NULL)
			count->calls++;
		free(key);
	}

	action = rpc_params_get(call->params, "Action");
	if (action == NULL || strcmp(action, "CreateInstance") != 0)
		return;
	json_decref(mock->last_params);
	mock->last_params = json_object();
	for (i = 0; i < rpc_params_count(call->params); i++) {
		rpc_params_at(call->params, i, &name, &value);
		if (strcmp(name, "SignatureNonce") != 0 &&
		    strcmp(name, "Timestamp") != 0)
			json_set_text(mock->last_params, name, value);
	}
}

static bool
is_empty(const char *s)
{
	return s == NULL || s[0] == '\0';
}

static const struct vendor_error *
check_required(struct call *call)
{
	static const char *const	 names[] = {
		"AccessKeyId", "Signature", "SignatureMethod",
		"SignatureNonce", "SignatureVersion", "Timestamp", "Action",
		"Version", "Format",
	};
	const char			*value;
	size_t				 i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(names[i], "Signature") == 0)
			value = call->signature;
		else
			value = rpc_params_get(call->params, names[i]);
		if (is_empty(value)) {
			call->error_param = names[i];
			return &VE_MISSING_PARAMETER;
		}
	}
	return NULL;
}

static const struct vendor_error *
check_access_key(struct call *call)
{
	const char	*id = rpc_params_get(call->params, "AccessKeyId");
	size_t		 i;

	for (i = 0; i < call->mock->key_count; i++) {
		if (strcmp(call->mock->keys[i].id, id) == 0) {
			call->key = &call->mock->keys[i];
			return NULL;
		}
	}
	return &VE_ACCESS_KEY_NOT_FOUND;
}

static const struct vendor_error *
check_signature_method(struct call *call)
{
	if (strcmp(rpc_params_get(call->params, "SignatureMethod"),
	    "HMAC-SHA1") != 0) {
		call->error_param = "SignatureMethod";
		return &VE_INVALID_PARAMETER;
	}
	if (strcmp(rpc_params_get(call->params, "SignatureVersion"),
	    "1.0") != 0) {
		call->error_param = "SignatureVersion";
		return &VE_INVALID_PARAMETER;
	}
	return NULL;
}

/* Signed over every parameter but Signature, with the request's method. */
static const struct vendor_error *
check_signature(struct call *call)
{
	const struct vendor_error	*err = &VE_INTERNAL;
	char				 expected[SIGNER_SIGNATURE_LEN + 1];
	char				*query = NULL, *to_sign = NULL;

	query = signer_canonical_query(call->params);
	if (query == NULL)
		goto out;
	to_sign = signer_string_to_sign(call->method, query);
	if (to_sign == NULL)
		goto out;
	if (signer_signature_with_secret(call->key->secret, to_sign,
	    expected) == -1) {
		log_openssl_errors(LOG_ERROR, MOCK_MODULE, "sign_failed");
		goto out;
	}

	/* The length of a signature is public; its bytes are compared blind. */
	err = &VE_SIGNATURE_MISMATCH;
	if (strlen(call->signature) == SIGNER_SIGNATURE_LEN &&
	    CRYPTO_memcmp(expected, call->signature,
	    SIGNER_SIGNATURE_LEN) == 0)
		err = NULL;

out:
	OPENSSL_cleanse(expected, sizeof(expected));
	free(to_sign);
	free(query);
	return err;
}

static int
digits_value(const char *s, size_t count)
{
	int	 value = 0;
	size_t	 i;

	for (i = 0; i < count; i++)
		value = value * 10 + (s[i] - '0');
	return value;
}

/* Strict YYYY-MM-DDThh:mm:ssZ; rejects dates that do not exist. */
static int
parse_timestamp(const char *s, time_t *out)
{
	static const char	 shape[] = "dddd-dd-ddTdd:dd:ddZ";
	struct tm		 wanted = { 0 }, tm, check;
	time_t			 t;
	size_t			 i;

	if (strlen(s) != sizeof(shape) - 1)
		return -1;
	for (i = 0; i < sizeof(shape) - 1; i++) {
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) :
		    s[i] != shape[i])
			return -1;
	}

	wanted.tm_year = digits_value(s, 4) - 1900;
	wanted.tm_mon = digits_value(s + 5, 2) - 1;
	wanted.tm_mday = digits_value(s + 8, 2);
	wanted.tm_hour = digits_value(s + 11, 2);
	wanted.tm_min = digits_value(s + 14, 2);
	wanted.tm_sec = digits_value(s + 17, 2);
	tm = wanted;
	t = timegm(&tm);

	/* timegm turns 02-30 into a day of March; the round trip shows it. */
	if (gmtime_r(&t, &check) == NULL ||
	    check.tm_year != wanted.tm_year || check.tm_mon != wanted.tm_mon ||
	    check.tm_mday != wanted.tm_mday ||
	    check.tm_hour != wanted.tm_hour ||
	    check.tm_min != wanted.tm_min || check.tm_sec != wanted.tm_sec)
		return -1;
	*out = t;
	return 0;
}

static const struct vendor_error *
check_timestamp(struct call *call)
{
	time_t	 t;
	int64_t	 skew_ms;

	if (parse_timestamp(rpc_params_get(call->params, "Timestamp"),
	    &t) == -1)
		return &VE_TIMESTAMP_FORMAT;
	skew_ms = (int64_t)t * 1000 - util_now_ms();
	if (skew_ms > MOCK_CLOCK_SKEW_MS || skew_ms < -MOCK_CLOCK_SKEW_MS)
		return &VE_TIMESTAMP_EXPIRED;
	return NULL;
}

static const struct vendor_error *
check_nonce(struct call *call)
{
	const char	*nonce = rpc_params_get(call->params, "SignatureNonce");

	switch (nonce_set_add(&call->mock->nonces, nonce, util_now_ms())) {
	case NONCE_FRESH:
		return NULL;
	case NONCE_SEEN:
		return &VE_NONCE_USED;
	case NONCE_TABLE_FULL:
		log_pack(LOG_WARN, MOCK_MODULE, "nonce_table_full", "{s:s}",
		    "request_id", call->request_id);
		return &VE_NONCE_TABLE_FULL;
	}
	return &VE_INTERNAL;
}

static const struct vendor_error *
check_action(struct call *call)
{
	if (strcmp(rpc_params_get(call->params, "Action"),
	    "CreateInstance") != 0)
		return &VE_ACTION_NOT_FOUND;
	if (strcmp(rpc_params_get(call->params, "Version"),
	    "2017-12-14") != 0)
		return &VE_INVALID_VERSION;

	/* The vendor could answer XML; the mock only speaks JSON. */
	if (strcasecmp(rpc_params_get(call->params, "Format"), "JSON") != 0) {
		call->error_param = "Format";
		return &VE_INVALID_PARAMETER;
	}
	return NULL;
}

/* A plain decimal in [min, max], without sign or leading zeros. */
static bool
is_decimal_in(const char *s, long min, long max)
{
	long	 value = 0;
	size_t	 i;

	if (s[0] == '\0' || strlen(s) > 9 || (s[0] == '0' && s[1] != '\0'))
		return false;
	for (i = 0; s[i] != '\0'; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		value = value * 10 + (s[i] - '0');
	}
	return value >= min && value <= max;
}

/* Lowercase letters, digits and inner hyphens, len in [min, max]. */
static bool
is_label(const char *s, size_t min, size_t max)
{
	size_t	 len = strlen(s), i;

	if (len < min || len > max || s[0] == '-' || s[len - 1] == '-')
		return false;
	for (i = 0; i < len; i++) {
		if (!islower((unsigned char)s[i]) &&
		    !isdigit((unsigned char)s[i]) && s[i] != '-')
			return false;
	}
	return true;
}

static bool
is_one_of(const char *s, const char *const *values)
{
	for (; *values != NULL; values++) {
		if (strcmp(s, *values) == 0)
			return true;
	}
	return false;
}

static bool
is_instance_type(const char *s)
{
	static const char *const values[] = {
		"Basic", "Standard", "Advanced", NULL
	};

	return is_one_of(s, values);
}

static bool
is_instance_name(const char *s)
{
	return is_label(s, 3, 30);
}

static bool
is_region(const char *s)
{
	return is_label(s, 2, 64);
}

static bool
is_boolean_text(const char *s)
{
	return strcmp(s, "true") == 0 || strcmp(s, "false") == 0;
}

/* OSS bucket names follow the same shape, 3 to 63 characters. */
static bool
is_bucket_name(const char *s)
{
	return is_label(s, 3, 63);
}

static bool
is_image_scanner(const char *s)
{
	return strcmp(s, "ACR") == 0 || strcmp(s, "SAS") == 0;
}

static bool
is_quota(const char *s)
{
	return is_decimal_in(s, 0, MOCK_QUOTA_MAX);
}

/* The instance properties the vendor page lists, and nothing else. */
static const struct property_rule {
	const char	*code;
	bool		 is_required;
	bool		(*is_valid)(const char *);
} property_rules[] = {
	{ "InstanceType",	 true,	is_instance_type },
	{ "InstanceName",	 true,	is_instance_name },
	{ "Region",		 true,	is_region },
	{ "DefaultOssBucket",	 true,	is_boolean_text },
	{ "InstanceStorageName", false,	is_bucket_name },
	{ "image_scanner",	 false,	is_image_scanner },
	{ "NamespaceQuota",	 false,	is_quota },
	{ "RepoQuota",		 false,	is_quota },
	{ "vpc_num",		 false,	is_quota },
};
#define PROPERTY_RULE_COUNT \
	(sizeof(property_rules) / sizeof(property_rules[0]))

/*
 * The index N of a Parameter.N.Code or Parameter.N.Value name, with
 * is_code telling which; 0 for a name outside that shape.
 */
static int
property_index(const char *name, bool *is_code)
{
	static const char	 prefix[] = "Parameter.";
	const char		*p = name + sizeof(prefix) - 1;
	int			 index = 0;

	if (p[0] < '1' || p[0] > '9')
		return 0;
	for (; isdigit((unsigned char)*p) && index <= MOCK_PARAMS_MAX; p++)
		index = index * 10 + (*p - '0');
	if (index > MOCK_PARAMS_MAX)
		return 0;
	if (strcmp(p, ".Code") == 0)
		*is_code = true;
	else if (strcmp(p, ".Value") == 0)
		*is_code = false;
	else
		return 0;
	return index;
}

static bool
is_property_name(const char *name)
{
	return strncmp(name, "Parameter.", 10) == 0;
}

/* The highest N among Parameter.N.*, or -1 for a malformed name. */
static int
property_count(const struct rpc_params *params)
{
	const char	*name, *value;
	bool		 is_code;
	int		 index, count = 0;
	size_t		 i;

	for (i = 0; i < rpc_params_count(params); i++) {
		rpc_params_at(params, i, &name, &value);
		if (!is_property_name(name))
			continue;
		index = property_index(name, &is_code);
		if (index == 0)
			return -1;
		if (index > count)
			count = index;
	}
	return count;
}

static const char *
property_get(const struct rpc_params *params, int index, const char *field)
{
	char	 name[64];
	int	 len;

	len = snprintf(name, sizeof(name), "Parameter.%d.%s", index, field);
	if (len < 0 || (size_t)len >= sizeof(name))
		return NULL;
	return rpc_params_get(params, name);
}

static const struct property_rule *
property_rule_find(const char *code)
{
	size_t	 i;

	for (i = 0; i < PROPERTY_RULE_COUNT; i++) {
		if (strcmp(property_rules[i].code, code) == 0)
			return &property_rules[i];
	}
	return NULL;
}

static const char *
property_seen(const char *const *seen, const char *code)
{
	const struct property_rule	*rule = property_rule_find(code);

	assert(rule != NULL);
	return seen[rule - property_rules];
}

/*
 * Parameter.N.Code/Value pairs numbered from 1 without gaps, each code from
 * the vendor page at most once, with a value it accepts. seen[i] receives
 * the value given for property_rules[i].
 */
static const struct vendor_error *
check_property_pairs(struct call *call, const char **seen)
{
	const struct property_rule	*rule;
	const char			*code, *value;
	int				 count, index;

	call->error_param = "Parameter.N";
	if ((count = property_count(call->params)) == -1)
		return &VE_INVALID_PARAMETER;

	for (index = 1; index <= count; index++) {
		code = property_get(call->params, index, "Code");
		value = property_get(call->params, index, "Value");
		if (is_empty(code) || value == NULL)
			return &VE_MISSING_PARAMETER;
		rule = property_rule_find(code);
		if (rule == NULL || seen[rule - property_rules] != NULL)
			return &VE_INVALID_PARAMETER;
		if (!rule->is_valid(value)) {
			call->error_param = rule->code;
			return &VE_INVALID_PARAMETER;
		}
		seen[rule - property_rules] = value;
	}
	call->error_param = NULL;
	return NULL;
}

/* The pairs, then every required code, then the custom bucket's name. */
static const struct vendor_error *
check_properties(struct call *call)
{
	const struct vendor_error	*err;
	const char			*seen[PROPERTY_RULE_COUNT] = { NULL };
	size_t				 i;

	if ((err = check_property_pairs(call, seen)) != NULL)
		return err;

	for (i = 0; i < PROPERTY_RULE_COUNT; i++) {
		if (property_rules[i].is_required && seen[i] == NULL) {
			call->error_param = property_rules[i].code;
			return &VE_MISSING_PARAMETER;
		}
	}

	/* A custom bucket (DefaultOssBucket false) must be named. */
	if (strcmp(property_seen(seen, "DefaultOssBucket"), "false") == 0 &&
	    property_seen(seen, "InstanceStorageName") == NULL) {
		call->error_param = "InstanceStorageName";
		return &VE_MISSING_PARAMETER;
	}
	return NULL;
}

/* Checks value of name against test; NULL passes when not required. */
static const struct vendor_error *
check_field(struct call *call, const char *name, bool is_required,
    bool (*test)(const char *))
{
	const char	*value = rpc_params_get(call->params, name);

	call->error_param = name;
	if (value == NULL)
		return is_required ? &VE_MISSING_PARAMETER : NULL;
	if (!test(value))
		return &VE_INVALID_PARAMETER;
	call->error_param = NULL;
	return NULL;
}

static bool
is_product_code(const char *s)
{
	return strcmp(s, "acr") == 0;
}

static bool
is_subscription_type(const char *s)
{
	return strcmp(s, "Subscription") == 0;
}

static bool
is_product_type(const char *s)
{
	return strcmp(s, "acr_ee_public_cn") == 0 ||
	    strcmp(s, "acr_ee_public_intl") == 0;
}

static bool
is_months(const char *s)
{
	return is_decimal_in(s, 1, MOCK_MONTHS_MAX);
}

static bool
is_renewal_status(const char *s)
{
	return strcmp(s, "AutoRenewal") == 0 ||
	    strcmp(s, "ManualRenewal") == 0;
}

/* Printable ASCII, 1 to 64 characters, as the vendor takes it. */
static bool
is_client_token(const char *s)
{
	size_t	 len = strlen(s), i;

	if (len == 0 || len > MOCK_CLIENT_TOKEN_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	}
	return true;
}

static const struct vendor_error *
check_create_instance(struct call *call)
{
	const struct vendor_error	*err;
	const char			*renewal;
	bool				 is_auto;

	if ((err = check_field(call, "ProductCode", true,
	    is_product_code)) != NULL ||
	    (err = check_field(call, "SubscriptionType", true,
	    is_subscription_type)) != NULL ||
	    (err = check_field(call, "ProductType", false,
	    is_product_type)) != NULL ||
	    (err = check_field(call, "Period", true, is_months)) != NULL ||
	    (err = check_field(call, "RenewalStatus", false,
	    is_renewal_status)) != NULL)
		return err;

	renewal = rpc_params_get(call->params, "RenewalStatus");
	is_auto = renewal != NULL && strcmp(renewal, "AutoRenewal") == 0;
	if ((err = check_field(call, "RenewPeriod", is_auto,
	    is_months)) != NULL ||
	    (err = check_field(call, "ClientToken", false,
	    is_client_token)) != NULL)
		return err;
	return check_properties(call);
}

/*
 * What a replay must repeat to count as the same order: the properties,
 * Period, RenewalStatus (absent means ManualRenewal), RenewPeriod and
 * ProductType. New string.
 */
static char *
order_fingerprint(const struct rpc_params *params)
{
	static const char *const	 names[] = {
		"Period", "RenewPeriod", "ProductType",
	};
	struct rpc_params		*picked = rpc_params_new();
	const char			*name, *value;
	char				*fingerprint;
	size_t				 i;

	for (i = 0; i < rpc_params_count(params); i++) {
		rpc_params_at(params, i, &name, &value);
		if (is_property_name(name))
			rpc_params_set(picked, name, value);
	}
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if ((value = rpc_params_get(params, names[i])) != NULL)
			rpc_params_set(picked, names[i], value);
	}
	value = rpc_params_get(params, "RenewalStatus");
	rpc_params_set(picked, "RenewalStatus",
	    value != NULL ? value : "ManualRenewal");

	fingerprint = signer_canonical_query(picked);
	rpc_params_free(picked);
	if (fingerprint == NULL)
		abort();
	return fingerprint;
}

static int
write_all(int fd, const char *buf, size_t len)
{
	ssize_t	 n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* One line per new order, synced before the order is answered. */
static int
commit_log_append(struct mock *mock, const char *token,
    const struct order *order, const struct access_key *key)
{
	json_t	*line;
	char	*text = NULL, *row = NULL;
	int	 rc = -1;

	if (mock->commit_fd == -1)
		return 0;
	line = json_pack("{s:s, s:s?, s:s, s:s}", "access_key_id", key->id,
	    "client_token", token, "instance_id", order->instance_id,
	    "order_id", order->order_id);
	if (line == NULL || (text = json_dumps(line, JSON_COMPACT)) == NULL)
		goto out;
	row = xasprintf("%s\n", text);
	if (write_all(mock->commit_fd, row, strlen(row)) == -1 ||
	    fsync(mock->commit_fd) == -1) {
		log_pack(LOG_ERROR, MOCK_MODULE, "commit_log_failed",
		    "{s:s}", "error", strerror(errno));
		goto out;
	}
	rc = 0;

out:
	free(row);
	free(text);
	json_decref(line);
	return rc;
}

/* Creates an order, recorded under key when the call has a token. */
static const struct vendor_error *
order_create(struct call *call, const char *token, const char *map_key,
    char *fingerprint)
{
	struct mock	*mock = call->mock;
	struct order	*order;

	if (map_key != NULL && map_is_full(&mock->orders)) {
		free(fingerprint);
		log_pack(LOG_WARN, MOCK_MODULE, "order_table_full", "{s:s}",
		    "request_id", call->request_id);
		return &VE_ORDER_TABLE_FULL;
	}

	order = xcalloc(1, sizeof(*order));
	order->fingerprint = fingerprint;
	order_ids_new(order);
	if (commit_log_append(mock, token, order, call->key) == -1) {
		order_free(order);
		return &VE_INTERNAL;
	}

	memcpy(call->instance_id, order->instance_id,
	    sizeof(order->instance_id));
	memcpy(call->order_id, order->order_id, sizeof(order->order_id));
	call->outcome = "created";
	mock->order_count++;
	if (map_key != NULL)
		map_put(&mock->orders, map_key, order);
	else
		order_free(order);
	return NULL;
}

/*
 * The vendor's idempotency: a ClientToken seen before from the same access
 * key returns that order, unless the parameters differ.
 */
static const struct vendor_error *
place_order(struct call *call)
{
	const struct vendor_error	*err = NULL;
	const char			*token;
	struct order			*order;
	char				*fingerprint, *map_key;

	token = rpc_params_get(call->params, "ClientToken");
	fingerprint = order_fingerprint(call->params);
	if (token == NULL)
		return order_create(call, NULL, NULL, fingerprint);

	map_key = xasprintf("%s\n%s", call->key->id, token);
	order = map_get(&call->mock->orders, map_key);
	if (order == NULL) {
		err = order_create(call, token, map_key, fingerprint);
		fingerprint = NULL;
	} else if (strcmp(order->fingerprint, fingerprint) != 0) {
		err = &VE_IDEMPOTENT_MISMATCH;
	} else {
		memcpy(call->instance_id, order->instance_id,
		    sizeof(order->instance_id));
		memcpy(call->order_id, order->order_id,
		    sizeof(order->order_id));
		call->outcome = "replayed";
	}
	free(fingerprint);
	free(map_key);
	return err;
}

typedef const struct vendor_error *(*call_step)(struct call *);

/* The vendor's order of checks, then the order itself. */
static const call_step call_steps[] = {
	check_required,
	check_access_key,
	check_signature_method,
	check_signature,
	check_timestamp,
	check_nonce,
	check_action,
	check_create_instance,
	place_order,
};

static char *
json_dumps_or_die(json_t *doc)
{
	char	*text;

	if (doc == NULL || (text = json_dumps(doc, JSON_COMPACT |
	    JSON_PRESERVE_ORDER)) == NULL)
		abort();
	json_decref(doc);
	return text;
}

static void
call_answer_error(struct call *call, int status, const char *code,
    const char *message)
{
	call->status = status;
	call->code = xstrdup(code);
	call->body = json_dumps_or_die(json_pack("{s:s, s:s, s:s, s:s}",
	    "Code", code, "Message", message, "RequestId", call->request_id,
	    "HostId", MOCK_HOST_ID));
}

static void
call_answer_vendor_error(struct call *call, const struct vendor_error *err)
{
	char	*message;

	if (call->error_param != NULL)
		message = xasprintf("%s Parameter: %s.", err->message,
		    call->error_param);
	else
		message = xstrdup(err->message);
	call_answer_error(call, err->status, err->code, message);
	free(message);
}

static void
call_answer_success(struct call *call)
{
	call->status = 200;
	call->code = xstrdup("Success");
	call->body = json_dumps_or_die(json_pack(
	    "{s:s, s:{s:s, s:s}, s:s, s:s, s:b}", "Code", "Success",
	    "Data", "InstanceId", call->instance_id, "OrderId",
	    call->order_id, "RequestId", call->request_id,
	    "Message", "Successful!", "Success", 1));
}

/*
 * Checks and, if all is well, places the order, then prepares the answer.
 * A planned failure without commit skips the work: it stands for a vendor
 * that failed before looking at the call.
 */
static void
call_process(struct call *call)
{
	const struct fail_plan	*plan = &call->plan;
	size_t			 i;

	call->is_processed = true;
	if (!plan->is_commit && (plan->status != 0 || plan->is_reset)) {
		call->outcome = "injected";
		if (plan->status != 0)
			call_answer_error(call, plan->status, plan->code,
			    "The mock was told to fail this call.");
		return;
	}

	for (i = 0; call->error == NULL &&
	    i < sizeof(call_steps) / sizeof(call_steps[0]); i++)
		call->error = call_steps[i](call);

	if (plan->status != 0)
		call_answer_error(call, plan->status, plan->code,
		    "The mock was told to fail this call.");
	else if (call->error != NULL)
		call_answer_vendor_error(call, call->error);
	else
		call_answer_success(call);
}

static void
call_free(struct call *call)
{
	if (call == NULL)
		return;
	free(call->body);
	free(call->code);
	secret_free(call->signature);
	rpc_params_free(call->params);
	free(call);
}

static void
fail_plan_take(struct mock *mock, struct fail_plan *out)
{
	memset(out, 0, sizeof(*out));
	out->is_commit = true;
	if (mock->plan.count <= 0)
		return;
	*out = mock->plan;
	mock->plan.count--;
}

static struct call *
call_new(struct mock *mock, struct evhttp_request *req)
{
	struct call	*call = xcalloc(1, sizeof(*call));

	call->mock = mock;
	call->req = req;
	call->params = rpc_params_new();
	call->outcome = "rejected";
	request_id_new(call->request_id);
	(void)snprintf(call->method, sizeof(call->method), "%s",
	    evhttp_request_get_command(req) == EVHTTP_REQ_GET ? "GET" :
	    "POST");
	fail_plan_take(mock, &call->plan);

	call->error = call_parse(call);
	recent_add(&mock->recent, rpc_params_get(call->params, "ClientToken"),
	    rpc_params_get(call->params, "SignatureNonce"), call->signature);
	if (call->error == NULL)
		call_note(call);
	return call;
}

static void
send_json(struct evhttp_request *req, int status, const char *body)
{
	struct evbuffer	*buf = evbuffer_new();

	if (buf == NULL || evbuffer_add(buf, body, strlen(body)) == -1 ||
	    evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "application/json;charset=utf-8") == -1)
		abort();
	evhttp_send_reply(req, status, NULL, buf);
	evbuffer_free(buf);
}

/*
 * Drops the call's connection without an answer. A linger of zero makes it
 * a reset, which is what a client sees when the vendor's side goes away.
 */
static void
drop_connection(struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;
	struct linger			 hard = { .l_onoff = 1, .l_linger = 0 };
	evutil_socket_t			 fd;

	evcon = evhttp_request_get_connection(req);
	if (evcon == NULL) {
		/* The client left first; evhttp handed the request to us. */
		evhttp_request_free(req);
		return;
	}
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd != -1)
		(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &hard,
		    sizeof(hard));
	evhttp_connection_free(evcon);
}

/* Stops watching the connection of a held call. */
static void
call_release(struct call *call)
{
	struct evhttp_connection	*evcon;

	if (call->is_held) {
		event_del(&call->timer);
		TAILQ_REMOVE(&call->mock->held, call, entry);
		call->is_held = false;
	}
	if (call->req == NULL)
		return;
	evcon = evhttp_request_get_connection(call->req);
	if (evcon != NULL)
		evhttp_connection_set_closecb(evcon, NULL, NULL);
}

/* The client is known to be gone only once evhttp has seen it leave. */
static void
call_log(const struct call *call)
{
	const bool	 has_ids = call->instance_id[0] != '\0';
	const bool	 is_client_gone = call->req == NULL ||
			    evhttp_request_get_connection(call->req) == NULL;

	log_pack(LOG_INFO, MOCK_MODULE, "call",
	    "{s:s, s:s, s:i, s:s?, s:s, s:s?, s:s?, s:b, s:b}",
	    "request_id", call->request_id, "method", call->method,
	    "status", call->status, "code", call->code,
	    "outcome", call->outcome,
	    "instance_id", has_ids ? call->instance_id : NULL,
	    "order_id", has_ids ? call->order_id : NULL,
	    "is_reset", call->plan.is_reset,
	    "is_client_gone", is_client_gone);
}

/* Answers (or drops) the call and frees it. */
static void
call_finish(struct call *call)
{
	struct evhttp_request	*req = call->req;

	call_release(call);
	call_log(call);
	if (req != NULL) {
		if (call->plan.is_reset)
			drop_connection(req);
		else
			send_json(req, call->status, call->body);
	}
	call_free(call);
}

static void
on_call_timer(evutil_socket_t fd, short what, void *arg)
{
	struct call	*call = arg;

	(void)fd;
	(void)what;
	TAILQ_REMOVE(&call->mock->held, call, entry);
	call->is_held = false;
	if (!call->is_processed)
		call_process(call);
	call_finish(call);
}

/*
 * evhttp frees a connection's pending request along with it. The request
 * is ours only when evhttp detached it first (the client hung up); then
 * evhttp_request_get_connection no longer names this connection.
 */
static void
on_connection_close(struct evhttp_connection *evcon, void *arg)
{
	struct call	*call = arg;

	if (call->req != NULL &&
	    evhttp_request_get_connection(call->req) == evcon)
		call->req = NULL;
}

/*
 * Holds the call on a timer. Also used with no delay to drop a connection:
 * freeing it inside evhttp's own request callback is not safe.
 */
static void
call_hold(struct call *call, int64_t delay_ms)
{
	struct evhttp_connection	*evcon;
	struct timeval			 tv;

	tv.tv_sec = (time_t)(delay_ms / 1000);
	tv.tv_usec = (suseconds_t)(delay_ms % 1000 * 1000);
	evtimer_assign(&call->timer, call->mock->base, on_call_timer, call);
	if (evtimer_add(&call->timer, &tv) == -1)
		abort();
	TAILQ_INSERT_TAIL(&call->mock->held, call, entry);
	call->is_held = true;

	evcon = evhttp_request_get_connection(call->req);
	if (evcon != NULL)
		evhttp_connection_set_closecb(evcon, on_connection_close,
		    call);
}

static void
on_vendor_call(struct mock *mock, struct evhttp_request *req)
{
	struct call	*call = call_new(mock, req);

	mock->call_count++;
	if (call->plan.delay_ms > 0 && !call->plan.is_commit) {
		call_hold(call, call->plan.delay_ms);
		return;
	}
	call_process(call);
	if (call->plan.delay_ms > 0 || call->plan.is_reset) {
		call_hold(call, call->plan.delay_ms);
		return;
	}
	call_finish(call);
}

static void
control_reply(struct evhttp_request *req, int status, json_t *doc)
{
	char	*body = json_dumps_or_die(doc);

	send_json(req, status, body);
	free(body);
}

static void
control_error(struct evhttp_request *req, int status, const char *message)
{
	control_reply(req, status, json_pack("{s:s}", "error", message));
}

static void
on_stats(struct mock *mock, struct evhttp_request *req)
{
	const struct map_entry		*entry;
	const struct token_count	*count;
	json_t				*tokens = json_object();
	size_t				 i;

	for (i = 0; i < mock->tokens.bucket_count; i++) {
		entry = mock->tokens.buckets[i];
		for (; entry != NULL; entry = entry->next) {
			count = entry->value;
			if (json_object_set_new(tokens, entry->key,
			    json_integer(count->calls)) == -1)
				abort();
		}
	}
	control_reply(req, 200, json_pack(
	    "{s:I, s:I, s:o, s:o, s:o, s:I, s:{s:I, s:I}}",
	    "orders", (json_int_t)mock->order_count,
	    "calls", (json_int_t)mock->call_count, "tokens", tokens,
	    "last_params", mock->last_params != NULL ?
	    json_deep_copy(mock->last_params) : json_object(),
	    "recent", recent_json(&mock->recent),
	    "recent_dropped", (json_int_t)mock->recent.dropped,
	    "connections", "http", (json_int_t)mock->http_connections,
	    "https", (json_int_t)mock->https_connections));
}

/* Calls on hold keep their plan and finish as planned. */
static void
on_reset(struct mock *mock, struct evhttp_request *req)
{
	map_clear(&mock->orders);
	map_clear(&mock->tokens);
	nonce_set_clear(&mock->nonces);
	json_decref(mock->last_params);
	mock->last_params = NULL;
	recent_clear(&mock->recent);
	mock->order_count = 0;
	mock->call_count = 0;
	mock->http_connections = 0;
	mock->https_connections = 0;
	memset(&mock->plan, 0, sizeof(mock->plan));
	log_json(LOG_INFO, MOCK_MODULE, "reset", NULL);
	control_reply(req, 200, json_pack("{s:b}", "ok", 1));
}

static bool
json_integer_in(const json_t *value, json_int_t min, json_int_t max,
    json_int_t *out)
{
	if (!json_is_integer(value))
		return false;
	*out = json_integer_value(value);
	return *out >= min && *out <= max;
}

static bool
is_plan_code(const char *s)
{
	size_t	 len = strlen(s), i;

	if (len == 0 || len > MOCK_PLAN_CODE_MAX)
		return false;
	for (i = 0; i < len; i++) {
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' &&
		    s[i] != '_' && s[i] != '-')
			return false;
	}
	return true;
}

/* One member of a plan; returns a static complaint, or NULL. */
static const char *
fail_plan_member(struct fail_plan *plan, const char *name, json_t *value)
{
	json_int_t	 n;

	if (strcmp(name, "count") == 0) {
		if (!json_integer_in(value, 1, MOCK_PLAN_COUNT_MAX, &n))
			return "count must be an integer from 1 to 1000000";
		plan->count = n;
	} else if (strcmp(name, "status") == 0) {
		if (!json_integer_in(value, 400, 599, &n))
			return "status must be an integer from 400 to 599";
		plan->status = (int)n;
	} else if (strcmp(name, "code") == 0) {
		if (!json_is_string(value) ||
		    !is_plan_code(json_string_value(value)))
			return "code must be 1 to 64 of A-Z a-z 0-9 . _ -";
		(void)snprintf(plan->code, sizeof(plan->code), "%s",
		    json_string_value(value));
	} else if (strcmp(name, "delay_ms") == 0) {
		if (!json_integer_in(value, 0, MOCK_DELAY_MAX_MS, &n))
			return "delay_ms must be an integer from 0 to 600000";
		plan->delay_ms = n;
	} else if (strcmp(name, "reset") == 0) {
		if (!json_is_boolean(value))
			return "reset must be a boolean";
		plan->is_reset = json_is_true(value);
	} else if (strcmp(name, "commit") == 0) {
		if (!json_is_boolean(value))
			return "commit must be a boolean";
		plan->is_commit = json_is_true(value);
	} else {
		return "unknown key in plan";
	}
	return NULL;
}

/*
 * Parses a plan. commit defaults to false for an error answer (the vendor
 * failed before creating anything) and to true otherwise.
 */
static const char *
fail_plan_parse(json_t *doc, struct fail_plan *plan)
{
	const char	*name, *complaint;
	json_t		*value;

	if (!json_is_object(doc))
		return "plan must be a JSON object";
	memset(plan, 0, sizeof(*plan));
	plan->count = 1;
	json_object_foreach(doc, name, value) {
		if ((complaint = fail_plan_member(plan, name, value)) != NULL)
			return complaint;
	}
	if (json_object_get(doc, "commit") == NULL)
		plan->is_commit = plan->status == 0;
	if (plan->code[0] != '\0' && plan->status == 0)
		return "code needs a status";
	if (plan->status != 0 && plan->code[0] == '\0')
		(void)snprintf(plan->code, sizeof(plan->code), "%s",
		    plan->status == 503 ? "ServiceUnavailable" :
		    "InternalError");
	return NULL;
}

static void
on_fail(struct mock *mock, struct evhttp_request *req)
{
	struct evbuffer		*body = evhttp_request_get_input_buffer(req);
	struct fail_plan	 plan;
	const char		*complaint;
	json_t			*doc;

	doc = json_loadb((const char *)evbuffer_pullup(body, -1),
	    evbuffer_get_length(body), JSON_REJECT_DUPLICATES, NULL);
	if (doc == NULL) {
		control_error(req, 400, "body must be a JSON object");
		return;
	}
	complaint = fail_plan_parse(doc, &plan);
	json_decref(doc);
	if (complaint != NULL) {
		control_error(req, 400, complaint);
		return;
	}

	mock->plan = plan;
	log_pack(LOG_INFO, MOCK_MODULE, "fail_planned",
	    "{s:I, s:i, s:s, s:I, s:b, s:b}", "count", (json_int_t)plan.count,
	    "status", plan.status, "code", plan.code,
	    "delay_ms", (json_int_t)plan.delay_ms, "is_reset", plan.is_reset,
	    "is_commit", plan.is_commit);
	control_reply(req, 200, json_pack("{s:b}", "ok", 1));
}

static void
on_healthz(struct mock *mock, struct evhttp_request *req)
{
	(void)mock;
	control_reply(req, 200, json_pack("{s:b}", "ok", 1));
}

static const struct control_route {
	const char		*path;
	enum evhttp_cmd_type	 method;
	void			(*handler)(struct mock *,
				    struct evhttp_request *);
} control_routes[] = {
	{ "/_mock/stats",	EVHTTP_REQ_GET,		on_stats },
	{ "/_mock/reset",	EVHTTP_REQ_POST,	on_reset },
	{ "/_mock/fail",	EVHTTP_REQ_POST,	on_fail },
	{ "/_mock/healthz",	EVHTTP_REQ_GET,		on_healthz },
};

/*
 * Over TLS each answer leaves as several records; without TCP_NODELAY the
 * second waits for the client's delayed ACK (40 ms on Linux), which would
 * make the mock, not the gateway, set every benchmark figure.
 */
static void
set_nodelay(struct evhttp_request *req)
{
	struct evhttp_connection	*evcon;
	evutil_socket_t			 fd;
	int				 on = 1;

	evcon = evhttp_request_get_connection(req);
	if (evcon == NULL)
		return;
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on,
		    sizeof(on));
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	struct mock		*mock = arg;
	const struct evhttp_uri	*uri = evhttp_request_get_evhttp_uri(req);
	const char		*path = uri != NULL ? evhttp_uri_get_path(uri) :
				    NULL;
	size_t			 i;

	set_nodelay(req);

	if (path == NULL || path[0] == '\0' || strcmp(path, "/") == 0) {
		on_vendor_call(mock, req);
		return;
	}
	for (i = 0; i < sizeof(control_routes) / sizeof(control_routes[0]);
	    i++) {
		if (strcmp(control_routes[i].path, path) != 0)
			continue;
		if (evhttp_request_get_command(req) !=
		    control_routes[i].method)
			control_error(req, 405, "method not allowed");
		else
			control_routes[i].handler(mock, req);
		return;
	}
	control_error(req, 404, "no such path");
}

/*
 * evhttp's bevcb runs once per accepted connection: the plain listener's
 * makes the bufferevent evhttp would make itself, and counts it.
 */
static struct bufferevent *
on_plain_connection(struct event_base *base, void *arg)
{
	struct mock		*mock = arg;
	struct bufferevent	*bev;

	bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		abort();
	mock->http_connections++;
	return bev;
}

/* evhttp's bevcb: each TLS connection gets its own SSL. */
static struct bufferevent *
on_tls_connection(struct event_base *base, void *arg)
{
	struct mock		*mock = arg;
	struct bufferevent	*bev;
	SSL			*ssl;

	mock->https_connections++;
	/*
	 * Returning NULL would make evhttp serve plain HTTP on the TLS port,
	 * and these only fail when memory is gone: treat both as fatal.
	 */
	if ((ssl = SSL_new(mock->ssl_ctx)) == NULL)
		abort();
	bev = bufferevent_openssl_socket_new(base, -1, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL)
		abort();
	/* Test clients often close without close_notify; that is no error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static SSL_CTX *
tls_context_new(const char *cert_path, const char *key_path)
{
	SSL_CTX	*ctx;

	ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, key_path,
	    SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		log_openssl_errors(LOG_ERROR, MOCK_MODULE, "tls_setup_failed");
		log_pack(LOG_ERROR, MOCK_MODULE, "tls_setup_failed",
		    "{s:s, s:s}", "cert", cert_path, "key", key_path);
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int
bound_port(struct evhttp_bound_socket *handle)
{
	struct sockaddr_in	 addr;
	socklen_t		 len = sizeof(addr);

	if (getsockname(evhttp_bound_socket_get_fd(handle),
	    (struct sockaddr *)&addr, &len) == -1)
		return -1;
	return ntohs(addr.sin_port);
}

/* A listener on loopback; *port_inout 0 takes one from the kernel. */
static struct evhttp *
listener_new(struct mock *mock, bool is_tls, int *port_inout)
{
	struct evhttp_bound_socket	*handle;
	struct evhttp			*http;

	if ((http = evhttp_new(mock->base)) == NULL)
		abort();
	evhttp_set_max_body_size(http, MOCK_BODY_MAX_BYTES);
	evhttp_set_max_headers_size(http, MOCK_HEADERS_MAX_BYTES);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_gencb(http, on_request, mock);
	evhttp_set_bevcb(http, is_tls ? on_tls_connection :
	    on_plain_connection, mock);

	handle = evhttp_bind_socket_with_handle(http, MOCK_LISTEN_ADDRESS,
	    (ev_uint16_t)*port_inout);
	if (handle == NULL || (*port_inout = bound_port(handle)) == -1) {
		log_pack(LOG_ERROR, MOCK_MODULE, "listen_failed",
		    "{s:s, s:i, s:s}", "address", MOCK_LISTEN_ADDRESS,
		    "port", *port_inout, "error", strerror(errno));
		evhttp_free(http);
		return NULL;
	}
	return http;
}

/* libevent's own complaints join the JSON log. */
static void
on_libevent_log(int severity, const char *message)
{
	enum log_level	 level;

	switch (severity) {
	case EVENT_LOG_DEBUG:
		level = LOG_DEBUG;
		break;
	case EVENT_LOG_MSG:
		level = LOG_INFO;
		break;
	case EVENT_LOG_WARN:
		level = LOG_WARN;
		break;
	default:
		level = LOG_ERROR;
		break;
	}
	log_pack(level, MOCK_MODULE, "libevent", "{s:s}", "message", message);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct mock	*mock = arg;

	(void)what;
	log_pack(LOG_INFO, MOCK_MODULE, "stopping", "{s:i}", "signal",
	    (int)sig);
	event_base_loopbreak(mock->base);
}

static void
mock_init(struct mock *mock)
{
	memset(mock, 0, sizeof(*mock));
	mock->commit_fd = -1;
	nonce_set_init(&mock->nonces);
	map_init(&mock->orders, MOCK_ORDERS_MAX, order_free);
	map_init(&mock->tokens, MOCK_TOKENS_MAX, free);
	recent_init(&mock->recent);
	TAILQ_INIT(&mock->held);
}

/*
 * Calls still on hold are dropped unanswered: their requests go with their
 * connections in evhttp_free, except those evhttp already handed to us.
 */
static void
mock_cleanup(struct mock *mock)
{
	struct call	*call;
	size_t		 i;

	while ((call = TAILQ_FIRST(&mock->held)) != NULL) {
		call_release(call);
		if (call->req != NULL &&
		    evhttp_request_get_connection(call->req) == NULL)
			evhttp_request_free(call->req);
		call_free(call);
	}
	if (mock->https != NULL)
		evhttp_free(mock->https);
	if (mock->http != NULL)
		evhttp_free(mock->http);
	SSL_CTX_free(mock->ssl_ctx);
	if (mock->on_sigterm != NULL)
		event_free(mock->on_sigterm);
	if (mock->on_sigint != NULL)
		event_free(mock->on_sigint);
	if (mock->base != NULL)
		event_base_free(mock->base);

	if (mock->commit_fd != -1)
		(void)close(mock->commit_fd);
	json_decref(mock->last_params);
	recent_cleanup(&mock->recent);
	map_cleanup(&mock->tokens);
	map_cleanup(&mock->orders);
	nonce_set_cleanup(&mock->nonces);
	for (i = 0; i < mock->key_count; i++) {
		free(mock->keys[i].id);
		secret_free(mock->keys[i].secret);
	}
}

static int
mock_start(struct mock *mock, struct options *opts)
{
	if ((mock->base = event_base_new()) == NULL)
		abort();
	if (opts->commit_log_path != NULL) {
		mock->commit_fd = open(opts->commit_log_path,
		    O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
		if (mock->commit_fd == -1) {
			log_pack(LOG_ERROR, MOCK_MODULE, "commit_log_failed",
			    "{s:s, s:s}", "path", opts->commit_log_path,
			    "error", strerror(errno));
			return -1;
		}
	}

	mock->on_sigterm = evsignal_new(mock->base, SIGTERM, on_signal, mock);
	mock->on_sigint = evsignal_new(mock->base, SIGINT, on_signal, mock);
	if (mock->on_sigterm == NULL || mock->on_sigint == NULL ||
	    event_add(mock->on_sigterm, NULL) == -1 ||
	    event_add(mock->on_sigint, NULL) == -1)
		abort();

	if ((mock->http = listener_new(mock, false, &opts->http_port)) ==
	    NULL)
		return -1;
	if (opts->cert_path == NULL)
		return 0;
	mock->ssl_ctx = tls_context_new(opts->cert_path, opts->key_path);
	if (mock->ssl_ctx == NULL)
		return -1;
	mock->https = listener_new(mock, true, &opts->https_port);
	return mock->https != NULL ? 0 : -1;
}

/* The one line a test waits for on stdout. */
static void
announce(const struct options *opts, bool is_tls)
{
	int	 https_port = is_tls ? opts->https_port : 0;
	char	*line;

	line = json_dumps_or_die(json_pack("{s:s, s:i, s:i}", "event",
	    "listening", "http_port", opts->http_port, "https_port",
	    https_port));
	(void)printf("%s\n", line);
	(void)fflush(stdout);
	free(line);
	log_pack(LOG_INFO, MOCK_MODULE, "listening", "{s:i, s:i}",
	    "http_port", opts->http_port, "https_port", https_port);
}

static void
usage(FILE *out)
{
	(void)fprintf(out,
	    "usage: mock-upstream --access-key ID:SECRET [--access-key ...]\n"
	    "           [--http-port N] [--https-port N]\n"
	    "           [--cert FILE --key FILE] [--commit-log FILE]\n");
}

static int
parse_port(const char *s, int *out)
{
	if (!is_decimal_in(s, 0, 65535))
		return -1;
	*out = atoi(s);
	return 0;
}

/*
 * Takes ID:SECRET into the key table, then blanks the secret in argv so
 * that it no longer shows in /proc/<pid>/cmdline.
 */
static int
add_access_key(struct mock *mock, char *arg)
{
	char	*colon = strchr(arg, ':');

	if (colon == NULL || colon == arg || colon[1] == '\0' ||
	    mock->key_count == MOCK_ACCESS_KEYS_MAX)
		return -1;
	mock->keys[mock->key_count].id = xstrndup(arg, (size_t)(colon - arg));
	mock->keys[mock->key_count].secret = xstrdup(colon + 1);
	mock->key_count++;
	OPENSSL_cleanse(colon + 1, strlen(colon + 1));
	return 0;
}

static int
parse_args(int argc, char *argv[], struct mock *mock, struct options *opts)
{
	static const struct option	 longopts[] = {
		{ "http-port",	required_argument,	NULL, 'p' },
		{ "https-port",	required_argument,	NULL, 's' },
		{ "cert",	required_argument,	NULL, 'c' },
		{ "key",	required_argument,	NULL, 'k' },
		{ "access-key",	required_argument,	NULL, 'a' },
		{ "commit-log",	required_argument,	NULL, 'l' },
		{ "help",	no_argument,		NULL, 'h' },
		{ NULL,		0,			NULL, 0 },
	};
	int				 ch, rc = 0;

	memset(opts, 0, sizeof(*opts));
	while (rc == 0 &&
	    (ch = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			rc = parse_port(optarg, &opts->http_port);
			break;
		case 's':
			rc = parse_port(optarg, &opts->https_port);
			break;
		case 'c':
			opts->cert_path = optarg;
			break;
		case 'k':
			opts->key_path = optarg;
			break;
		case 'a':
			rc = add_access_key(mock, optarg);
			break;
		case 'l':
			opts->commit_log_path = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(EXIT_SUCCESS);
		default:
			rc = -1;
		}
	}
	if (rc == 0 && (optind != argc || mock->key_count == 0 ||
	    (opts->cert_path == NULL) != (opts->key_path == NULL) ||
	    (opts->cert_path == NULL && opts->https_port != 0)))
		rc = -1;
	if (rc == -1)
		usage(stderr);
	return rc;
}

int
main(int argc, char *argv[])
{
	struct mock	 mock;
	struct options	 opts;
	int		 status = EXIT_FAILURE;

	/* A client that hangs up mid-answer must not kill the mock. */
	if (signal(SIGPIPE, SIG_IGN) == SIG_ERR)
		return EXIT_FAILURE;
	mock_init(&mock);
	if (parse_args(argc, argv, &mock, &opts) == -1) {
		status = 2;
		goto out;
	}
	event_set_log_callback(on_libevent_log);
	if (mock_start(&mock, &opts) == -1)
		goto out;

	announce(&opts, mock.https != NULL);
	if (event_base_dispatch(mock.base) == -1)
		goto out;
	log_json(LOG_INFO, MOCK_MODULE, "stopped", NULL);
	status = EXIT_SUCCESS;

out:
	mock_cleanup(&mock);
	libevent_global_shutdown();
	return status;
}
