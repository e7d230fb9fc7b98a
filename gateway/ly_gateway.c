/*  ly_gateway.c: the gateway actor (see ly_gateway.h).
    Design: libmicrohttpd runs its own epoll thread pool. A route is either answered on
    the HTTP thread (healthz, metrics) or needs another actor: then the connection is
    suspended, the request is queued for the actor's loop and an eventfd wakes it. The
    loop sends the frame, and when the reply (or the deadline) comes, writes the answer
    into the request and resumes the connection; libmicrohttpd then calls the handler
    again, which queues the response. A request belongs to its connection and is freed
    by the completion callback; the loop holds it only while it is suspended.

    POST /l/events: the HTTP thread reads the body (1 MiB at most), checks its type,
    inflates and parses it and packs the events (ly_sdkbody), and hashes the SDK key.
    The loop resolves the key through the api actor (answers cached), pushes
    EVENTS_SUBMIT to an ingest actor and waits for the store's EVENTS_ACK, which comes
    only after COMMIT: then 202. Every wait is bounded; a full queue, a database that
    is down or a deadline that passes answers 503 with Retry-After. */
#include "ly_gateway.h"
#include "ly_actor.h"
#include "ly_config.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_netaddr.h"
#include "ly_topology.h"
#include <malloc.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <sys/eventfd.h>
#include <arpa/inet.h>
#include "ly_crypto.h"
#include "ly_sdkbody.h"

#define S_ACTOR "gateway"
#define S_READYZ_TIMEOUT_MSEC 1000
#define S_EVENTS_TIMED_OUT_MSEC 10000   /* not ready this long after an event request
                                           timed out, unless one is answered meanwhile */
#define S_EVENTS_TIMEOUT_MSEC 10000     /* key lookup + scrub + commit */
#define S_THREADS 2
#define S_CONNECTION_LIMIT 4000
#define S_MAX_IN_FLIGHT 5000            /* requests waiting for actors */
#define S_MAX_IN_FLIGHT_BYTES (256 * 1024 * 1024)   /* bodies being read or waiting, together */
#define S_KEY_TTL_MSEC 5000             /* a found SDK key is trusted this long */
#define S_UNKNOWN_KEY_TTL_MSEC 5000     /* an unknown one is refused this long */
#define S_KEY_STALE_MSEC 60000          /* past its TTL, a found key still serves when its
                                           new lookup is slow, for at most this long */
#define S_LOOKUP_SLOW_MSEC 1000         /* a lookup unanswered this long is slow */
#define S_LOOKUP_SCAN_MSEC 100          /* lookups are looked over at most this often */
#define S_LOOKUP_RESEND_MSEC 2000       /* a key lookup not answered in this time (the api
                                           actor restarted, the database hangs) is sent again */
#define S_LOOKUP_GIVE_UP_MSEC 5000      /* a key lookup not answered in this time (sent
                                           again once) means the database hangs: what waits
                                           for it is answered 503 */
#define S_KEY_CACHE_MAX 100000
#define S_API_TIMEOUT_MSEC 30000
#define S_DRAIN_MSEC 5000               /* stopping: longest wait for requests in flight */
#define S_DRAIN_POLL_MSEC 20            /* how often to look meanwhile */
#define S_DISCARD_MAX (64 << 20)        /* a body over the limit is read this far */
#define S_HEADER_GAP_MAX (64 * 1024)    /* above libmicrohttpd's 32 KiB for a request's head */
#define S_FLUSH_MSEC 1000               /* then: longest wait for the 503s to go out */
#define S_AUTH_FAILURES 10              /* failures per client and credential, per window */
#define S_AUTH_CLIENT_FAILURES 100      /* failures per client with any credential */
#define S_AUTH_WINDOW_MSEC 60000
#define S_GOOD_TOKEN_TTL_MSEC 300000    /* an API token that worked is trusted this long */

typedef struct _s_request_t s_request_t;
typedef struct _s_shared_t s_shared_t;

typedef enum { S_HEALTHZ, S_READYZ, S_METRICS, S_EVENTS, S_API } s_route_id_t;

typedef struct {
    const char *method;         /* HTTP method */
    const char *path;           /* exact path */
    s_route_id_t id;            /* which handler */
    bool local;                 /* answered on the HTTP thread */
} s_route_t;

static const s_route_t s_routes [] = {
    { "GET",  "/healthz",  S_HEALTHZ, true },
    { "GET",  "/readyz",   S_READYZ,  false },
    { "GET",  "/metrics",  S_METRICS, true },
    { "POST", "/l/events", S_EVENTS,  false },
};
//  Every method on /v1 and below goes to the api actor.
static const s_route_t s_api_route = { "*", "/v1", S_API, false };
#define S_ROUTES (sizeof (s_routes) / sizeof (s_routes [0]))

struct _s_request_t {
    uint64_t id;                    /* request id, also sent in frames */
    struct MHD_Connection *conn;    /* borrowed from libmicrohttpd */
    const s_route_t *route;         /* matched route, NULL: not found */
    bool method_ok;                 /* the path matched with this method */
    int64_t started_usec;           /* receive time, epoch usec */
    int64_t deadline;               /* monotonic msec, while with the loop */
    unsigned status;                /* answer status, 0 until answered */
    char *body;                     /* answer body, owned */
    size_t body_len;                /* bytes in body */
    char *etag;                     /* answer ETag, owned */
    char *location;                 /* answer Location, owned */
    char *allow;                    /* answer Allow (with 405), owned */
    char *answer_type;              /* answer Content-Type, owned; NULL: JSON */
    int retry_after;                /* seconds, 0: no Retry-After */
    char *upload;                   /* request body, owned */
    size_t upload_size;
    uint64_t received;              /* body bytes received, kept or not */
    bool too_large;                 /* the body passed the limit */
    bool over_budget;               /* its body would pass S_MAX_IN_FLIGHT_BYTES: dropped */
    bool keyless;                   /* /l/events without a key: its body is dropped */
    bool guessing;                  /* counted in guesses while its credential is checked */
    bool close;                     /* the connection closes after the answer */
    char key_hash [65];             /* SHA-256 hex of the SDK key or API token */
    bool has_token;                 /* /v1: a bearer token was sent */
    char *path;                     /* /v1: path, owned */
    char *query;                    /* /v1: re-encoded query string, owned */
    char *idempotency_key;          /* /v1: header, owned */
    char *if_match;                 /* /v1: header, owned */
    char *request_type;             /* /v1: Content-Type header, owned */
    ly_sdkbody_t events;            /* parsed events, owned */
    char client_ip [INET6_ADDRSTRLEN];  /* raw personal data: only until submitted */
    char *user_agent;               /* raw personal data, owned: only until submitted */
    s_request_t *prev, *next;       /* hand-off queue, or deadline list in the loop */
    bool submitted;                 /* events: sent to an ingest actor, the ack awaited */
    bool store_ponged;              /* readiness: the store answered */
    bool api_ponged;                /* readiness: the api actor answered */
    size_t held_bytes;              /* in in_flight_bytes till completion: upload's room, then the events too */
    char method [16];               /* HTTP method */
};

struct _s_shared_t {
    pthread_mutex_t lock;           /* guards the queue and next_id */
    s_request_t *head, *tail;       /* suspended requests for the actor loop */
    int wake_fd;                    /* eventfd: the queue is not empty */
    uint64_t next_id;               /* request id sequence */
    size_t in_flight_bytes;         /* bodies held, being read or with the loop (atomic) */
    size_t open_requests;           /* requests begun and not yet completed (atomic) */
    bool stopping;                  /* the loop takes no more requests (under lock) */
};

typedef struct {
    s_request_t *head, *tail;       /* requests in deadline order */
} s_fifo_t;

typedef struct {
    int64_t window_start;           /* monotonic msec */
    unsigned count;                 /* failed authentications in the window */
    unsigned before;                /* ... in the window before it */
} s_failures_t;

typedef struct {
    int64_t expires;                /* monotonic msec */
    bool found;                     /* a live key; else unknown */
    char org_id [40];
    char project_id [40];
    char country_code [8];
} s_key_t;

//  A key lookup sent to the api actor, and the requests waiting for its answer.
typedef struct {
    zlistx_t *waiting;              /* request ids (char *), owned */
    int64_t since;                  /* monotonic msec it was first sent */
    int64_t sent;                   /* monotonic msec it was last sent */
} s_lookup_t;

static void
s_lookup_destroy (s_lookup_t **self_p)
{
    if (*self_p) {
        zlistx_destroy (&(*self_p)->waiting);
        free (*self_p);
        *self_p = NULL;
    }
}

typedef struct {
    zsock_t *pipe;                  /* actor pipe, borrowed */
    zsock_t *store;                 /* DEALER to the store (PING out, ACKs in), owned */
    zsock_t *api;                   /* DEALER to the api actor, owned */
    zsock_t *metrics;               /* PULL: other processes' METRICS_REPORT, owned */
    zsock_t *ingest;                /* PUSH to the ingest actors, owned */
    zactor_t *ingest_monitor;       /* zmonitor on ingest: counts connected actors, owned */
    zactor_t *store_monitor;        /* zmonitor on store: tells when it went away, owned */
    int ingest_peers;               /* ingest actors connected now */
    int64_t events_timed_out;       /* monotonic msec an event request last went
                                       unanswered to its deadline; 0 once one is answered */
    char routing_id [64];           /* our name on the store's ROUTER */
    ly_tap_t *tap;                  /* debug publisher, owned */
    struct MHD_Daemon *daemon;      /* HTTP server, owned */
    s_shared_t shared;              /* state shared with HTTP threads */
    zhashx_t *pending;              /* request id -> request (borrowed) */
    s_fifo_t readyz_fifo;           /* readiness probes by deadline */
    s_fifo_t events_fifo;           /* event requests by deadline */
    s_fifo_t api_fifo;              /* partner API requests by deadline */
    zhashx_t *auth_failures;        /* "ip/credential" -> s_failures_t, owned */
    zhashx_t *guesses;              /* "ip/credential" being checked -> requests (size_t), owned */
    zhashx_t *client_guesses;       /* ip -> credentials being checked (size_t), owned */
    zhashx_t *good_tokens;          /* API token hash -> expiry (int64_t), owned */
    zhashx_t *keys;                 /* key hash -> s_key_t, owned */
    zhashx_t *lookups;              /* key hash -> s_lookup_t, owned */
    zhashx_t *rates;                /* project id -> s_bucket_t, owned */
    ly_metric_t *in_flight;         /* gauge: requests with the loop */
    ly_metric_t *overloaded;        /* 503s for a full pipeline */
    ly_metric_t *rate_limited;      /* 429s for a project over its rate */
    bool verbose;                   /* log every request */
    int64_t drain_until;            /* stopping: monotonic msec to give up waiting; 0: not */
    int64_t lookups_due;            /* monotonic msec of the next s_lookups_resend */
} self_t;

//  A project's events allowance under LAYERS_PROJECT_EVENT_RATE (a token bucket)
typedef struct {
    double tokens;                  /* events it may send now */
    int64_t refilled;               /* monotonic msec of the last refill */
} s_bucket_t;

//  Sets the answer; takes over body (may be NULL: empty).
static void
s_answer (s_request_t *request, unsigned status, char *body)
{
    free (request->body);
    request->status = status;
    request->body = body;
    request->body_len = body? strlen (body): 0;
}

//  Sets a JSON error answer {"error": {"code", "message"}}.
static void
s_answer_error (s_request_t *request, unsigned status, const char *code, const char *message)
{
    json_t *json = json_pack ("{s:{s:s, s:s}}", "error", "code", code, "message", message);
    s_answer (request, status, json_dumps (json, JSON_COMPACT));
    json_decref (json);
}

static void
s_answer_unavailable (s_request_t *request, const char *code, const char *message, int seconds)
{
    s_answer_error (request, MHD_HTTP_SERVICE_UNAVAILABLE, code, message);
    request->retry_after = seconds;
}

static const char *
s_content_type (const s_request_t *request)
{
    if (request->route && request->route->id == S_METRICS && request->status == MHD_HTTP_OK)
        return "text/plain; version=0.0.4; charset=utf-8";
    return request->answer_type? request->answer_type: "application/json";
}

static enum MHD_Result
s_queue_answer (s_request_t *request)
{
    const char *body = request->body? request->body: "";
    struct MHD_Response *response = MHD_create_response_from_buffer (
        request->body_len, (void *) body, MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, s_content_type (request));
    char id [32];
    snprintf (id, sizeof id, LY_REQUEST_ID_FORMAT, request->id);
    MHD_add_response_header (response, "X-Request-Id", id);
    MHD_add_response_header (response, "X-Content-Type-Options", "nosniff");
    if (request->retry_after > 0) {
        char seconds [16];
        snprintf (seconds, sizeof seconds, "%d", request->retry_after);
        MHD_add_response_header (response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    if (request->etag)
        MHD_add_response_header (response, MHD_HTTP_HEADER_ETAG, request->etag);
    if (request->location)
        MHD_add_response_header (response, MHD_HTTP_HEADER_LOCATION, request->location);
    if (request->allow)
        MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, request->allow);
    if (request->close)
        MHD_add_response_header (response, MHD_HTTP_HEADER_CONNECTION, "close");
    if (request->status == MHD_HTTP_UNAUTHORIZED)     //  RFC 9110: says what to send
        MHD_add_response_header (response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    enum MHD_Result rc = MHD_queue_response (request->conn, request->status, response);
    MHD_destroy_response (response);

    char labels [128];
    const char *route = request->route? request->route->path: "other";
    snprintf (labels, sizeof labels, "route=\"%s\",code=\"%u\"", route, request->status);
    ly_metric_add (ly_counter ("layers_http_requests_total",
                               "HTTP requests answered, by route and status", labels), 1);
    snprintf (labels, sizeof labels, "route=\"%s\"", route);
    ly_metric_observe (ly_histogram ("layers_http_request_duration_seconds",
                                     "Time from request to response", labels),
                       (double) (ly_now_usec () - request->started_usec) / 1e6);
    return rc;
}

//  Hands a request to the actor loop, its connection suspended until the answer; false
//  when the loop takes no more (stopping: answer it at once). Under the lock, so that
//  no connection is suspended after the loop emptied the queue for the last time
//  (libmicrohttpd aborts the process when it stops with a suspended connection).
static bool
s_hand_off (s_shared_t *shared, s_request_t *request)
{
    pthread_mutex_lock (&shared->lock);
    if (shared->stopping) {
        pthread_mutex_unlock (&shared->lock);
        return false;
    }
    MHD_suspend_connection (request->conn);
    request->next = NULL;
    if (shared->tail)
        shared->tail->next = request;
    else
        shared->head = request;
    shared->tail = request;
    pthread_mutex_unlock (&shared->lock);
    uint64_t one = 1;
    if (write (shared->wake_fd, &one, sizeof one) != sizeof one)
        ly_error (S_ACTOR, "could not wake the gateway loop: %s", strerror (errno));
    return true;
}

static bool
s_trusted_proxy (const uint8_t addr [16])
{
    for (size_t i = 0; i < ly_config.trusted_range_count; i++)
        if (ly_netaddr_range_contains (&ly_config.trusted_ranges [i], addr))
            return true;
    return false;
}

//  The X-Forwarded-For lines of a request, in order: a proxy may add its own line
//  rather than extend the one the client sent, and only all of them in order say
//  which entries the trusted proxies added. The last S_FORWARDED_LINES are kept (the
//  right-most entries are the ones read); they point into libmicrohttpd's copy of the
//  headers, so no client address is copied.
#define S_FORWARDED_LINES 16
typedef struct {
    const char *line [S_FORWARDED_LINES];   /* a ring: line n at n % S_FORWARDED_LINES */
    size_t count;                           /* lines seen */
} s_forwarded_t;

static enum MHD_Result
s_collect_forwarded (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void) kind;
    s_forwarded_t *forwarded = (s_forwarded_t *) cls;
    if (key && value && strcasecmp (key, "X-Forwarded-For") == 0)
        forwarded->line [forwarded->count++ % S_FORWARDED_LINES] = value;
    return MHD_YES;
}

//  Walks the entries of one X-Forwarded-For line from the right: writes each address
//  into out while it is a trusted proxy's. True when the walk goes on to the line
//  before (every entry was a trusted proxy).
static bool
s_walk_forwarded (const char *line, char out [INET6_ADDRSTRLEN])
{
    const char *end = line + strlen (line);
    while (true) {
        const char *start = end;
        while (start > line && start [-1] != ',')
            start--;
        uint8_t addr [16];
        if (ly_netaddr_parse_forwarded (start, (size_t) (end - start), addr)) {
            out [0] = 0;            //  not an address: the client is not known
            return false;
        }
        ly_netaddr_format (addr, out);
        if (!s_trusted_proxy (addr))
            return false;           //  the client
        if (start == line)
            return true;
        end = start - 1;
    }
}

//  The client's IP: the peer, or, when the peer is a trusted proxy, the right-most
//  address in X-Forwarded-For that is not one. An entry that is not an address, met
//  before that one, leaves the client unknown (empty), and so does a request on which
//  every address is a trusted proxy's (no X-Forwarded-For, say a load balancer's own
//  health check): a trusted proxy's own address says nothing of where the client is.
static void
s_client_ip (struct MHD_Connection *conn, char out [INET6_ADDRSTRLEN])
{
    out [0] = 0;
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info (conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr)
        return;
    const struct sockaddr *peer = info->client_addr;
    uint8_t addr [16] = { [10] = 0xFF, [11] = 0xFF };
    if (peer->sa_family == AF_INET)
        memcpy (addr + 12, &((const struct sockaddr_in *) peer)->sin_addr, 4);
    else
    if (peer->sa_family == AF_INET6)
        memcpy (addr, &((const struct sockaddr_in6 *) peer)->sin6_addr, 16);
    else
        return;
    ly_netaddr_format (addr, out);
    if (!s_trusted_proxy (addr))
        return;
    s_forwarded_t forwarded = { .count = 0 };
    MHD_get_connection_values (conn, MHD_HEADER_KIND, s_collect_forwarded, &forwarded);
    size_t kept = forwarded.count < S_FORWARDED_LINES? forwarded.count: S_FORWARDED_LINES;
    for (size_t n = forwarded.count; n > forwarded.count - kept; n--)
        if (!s_walk_forwarded (forwarded.line [(n - 1) % S_FORWARDED_LINES], out))
            return;
    out [0] = 0;
}

//  The credential of an "Authorization: Bearer ..." header, without the white space
//  around it, and its length; NULL when there is no such header (or it is empty).
static const char *
s_bearer (struct MHD_Connection *conn, size_t *len)
{
    const char *authorization = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                             MHD_HTTP_HEADER_AUTHORIZATION);
    if (!authorization || strncasecmp (authorization, "Bearer ", 7) != 0)
        return NULL;
    const char *credential = authorization + 7;
    credential += strspn (credential, " \t");
    size_t size = strlen (credential);
    while (size && (credential [size - 1] == ' ' || credential [size - 1] == '\t'))
        size--;
    *len = size;
    return size? credential: NULL;
}

//  413 for a body over the limit, however it was found out
static void
s_answer_too_large (s_request_t *request)
{
    char message [64];
    snprintf (message, sizeof message, "the body exceeds %d bytes", LY_SDKBODY_MAX_BYTES);
    s_answer_error (request, MHD_HTTP_CONTENT_TOO_LARGE, "too_large", message);
}

//  True for a request whose route and method take a body (the others' is thrown away)
static bool
s_takes_body (const s_request_t *request)
{
    return request->method_ok && (request->route->id == S_EVENTS || request->route->id == S_API);
}

//  The SDK key of an event request (len bytes), or NULL when it has none of a plausible
//  length: answered 401 here.
static const char *
s_events_key (s_request_t *request, size_t *len)
{
    const char *key = s_bearer (request->conn, len);
    if (!key)
        s_answer_error (request, MHD_HTTP_UNAUTHORIZED, "unauthorized",
                        "an SDK key is required: Authorization: Bearer <sdk key>");
    else
    if (*len > 256) {
        s_answer_error (request, MHD_HTTP_UNAUTHORIZED, "unauthorized", "unknown SDK key");
        key = NULL;
    }
    return key;
}

//  Whether an event request's content type and encoding are ones the body parser takes
//  (before the body is in: a client waiting for 100 Continue); else answered 415 here.
static bool
s_events_type_ok (s_request_t *request)
{
    struct MHD_Connection *conn = request->conn;
    ly_sdkbody_error_t error;
    if (ly_sdkbody_check_headers (
            MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE),
            MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_ENCODING),
            &error)) {
        s_answer_error (request, error.status, error.code, error.message);
        return false;
    }
    return true;
}

//  Prepares an /l/events request on the HTTP thread: auth header, body (its content
//  type and encoding are checked by the parser). Returns false when the request was
//  answered here.
static bool
s_prepare_events (s_shared_t *shared, s_request_t *request)
{
    struct MHD_Connection *conn = request->conn;
    if (request->too_large) {
        s_answer_too_large (request);
        return false;
    }
    size_t key_len;
    const char *key = s_events_key (request, &key_len);
    if (!key)
        return false;
    ly_sha256_hex (key, key_len, request->key_hash);

    ly_sdkbody_error_t error;
    const char *content_type = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                            MHD_HTTP_HEADER_CONTENT_TYPE);
    const char *encoding = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                        MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (ly_sdkbody_parse (content_type, encoding, request->upload? request->upload: "",
                          request->upload_size, &request->events, &error)) {
        s_answer_error (request, error.status, error.code, error.message);
        return false;
    }
    free (request->upload);
    request->upload = NULL;
    s_client_ip (conn, request->client_ip);
    const char *user_agent = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                          MHD_HTTP_HEADER_USER_AGENT);
    if (user_agent)
        request->user_agent = strdup (user_agent);
    return true;
}

//  Percent-encodes one query component into a growing string.
static void
s_query_append (char **query, size_t *len, const char *text)
{
    static const char hex [] = "0123456789ABCDEF";
    size_t size = strlen (text);
    *query = (char *) realloc (*query, *len + size * 3 + 2);
    for (size_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char) text [i];
        if (isalnum (c) || c == '-' || c == '_' || c == '.' || c == '~')
            (*query) [(*len)++] = (char) c;
        else {
            (*query) [(*len)++] = '%';
            (*query) [(*len)++] = hex [c >> 4];
            (*query) [(*len)++] = hex [c & 15];
        }
    }
    (*query) [*len] = 0;
}

typedef struct {
    char *query;                /* the query being built, owned by the caller */
    size_t len;                 /* its length */
    bool nul;                   /* a name or value held a NUL (%00) */
} s_query_t;

static enum MHD_Result
s_query_arg (void *cls, enum MHD_ValueKind kind, const char *key, size_t key_size,
             const char *value, size_t value_size)
{
    (void) kind;
    s_query_t *q = (s_query_t *) cls;
    //  A NUL would end the text early on the way (name=purchase%00xyz read as purchase)
    if (strlen (key) != key_size || (value && strlen (value) != value_size))
        q->nul = true;
    if (q->len) {
        q->query = (char *) realloc (q->query, q->len + 2);
        q->query [q->len++] = '&';
        q->query [q->len] = 0;
    }
    s_query_append (&q->query, &q->len, key);
    if (value) {
        q->query = (char *) realloc (q->query, q->len + 2);
        q->query [q->len++] = '=';
        q->query [q->len] = 0;
        s_query_append (&q->query, &q->len, value);
    }
    return MHD_YES;
}

//  Prepares a /v1 request on the HTTP thread. Returns false when answered here.
static bool
s_prepare_api (s_shared_t *shared, s_request_t *request)
{
    if (request->too_large) {
        s_answer_too_large (request);
        return false;
    }
    size_t token_len;
    const char *token = s_bearer (request->conn, &token_len);
    if (token && token_len <= 256) {
        ly_sha256_hex (token, token_len, request->key_hash);
        request->has_token = true;
    }
    const char *value;
    struct MHD_Connection *conn = request->conn;
    if ((value = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, "Idempotency-Key")))
        request->idempotency_key = strdup (value);
    if ((value = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_MATCH)))
        request->if_match = strdup (value);
    if ((value = MHD_lookup_connection_value (conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE)))
        request->request_type = strdup (value);
    const char *encoding = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                        MHD_HTTP_HEADER_CONTENT_ENCODING);
    if (encoding && strcasecmp (encoding, "identity") != 0) {
        s_answer_error (request, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "unsupported_encoding",
                        "the partner API takes bodies without a Content-Encoding");
        return false;
    }
    s_query_t q = { strdup (""), 0, false };
    MHD_get_connection_values_n (request->conn, MHD_GET_ARGUMENT_KIND, s_query_arg, &q);
    request->query = q.query;
    if (q.nul) {
        s_answer_error (request, MHD_HTTP_BAD_REQUEST, "bad_query",
                        "a query parameter holds a NUL character (%00)");
        return false;
    }
    s_client_ip (request->conn, request->client_ip);
    return true;
}

static void
s_answer_local (s_request_t *request)
{
    if (request->route->id == S_HEALTHZ)
        s_answer (request, MHD_HTTP_OK, strdup ("{\"status\":\"ok\"}"));
    else {
        char *text = ly_metrics_render ();
        if (text)
            s_answer (request, MHD_HTTP_OK, text);
        else
            s_answer_error (request, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
    }
}

//  The header lines of a request, as far as its framing and the headers that may come
//  only once go (s_framing_error)
typedef struct {
    unsigned lengths;               /* Content-Length lines */
    const char *length;             /* the first one's value */
    bool lengths_differ;            /* two of them disagree */
    unsigned encodings;             /* Transfer-Encoding lines */
    const char *encoding;           /* the first one's value */
    const char *repeated;           /* a header that may come once, twice; NULL: none */
    bool spaced_name;               /* a header name with white space before its colon */
    bool folded;                    /* a header continued on a line of its own (obs-fold) */
    unsigned seen;                  /* of s_single_headers, a bit per header seen */
} s_headers_t;

static const char *s_single_headers [] = {
    "Authorization", "Content-Type", "Content-Encoding", "Host",
    "If-Match", "Idempotency-Key"       //  a second line would be left unread
};
#define S_HOST_SEEN (1u << 3)           /* Host's bit in s_headers_t.seen */

//  Whether a header was folded: continued on a next line that begins with white space
//  (obs-fold, RFC 9112 5.2). libmicrohttpd (0.9.75) appends such a line to the header's
//  name, which it moves out of the line, and keeps as value what came before the fold:
//  a folded Content-Length or Transfer-Encoding is lost and the body read as the next
//  request. As sent on one line, the value follows the name in the same buffer, past
//  the NUL that took the colon's place and the white space after it.
static bool
s_header_folded (const char *key, const char *value)
{
    const char *end = key + strlen (key);
    if ((uintptr_t) value <= (uintptr_t) end || (uintptr_t) value - (uintptr_t) end > S_HEADER_GAP_MAX)
        return true;
    for (const char *space = end + 1; space < value; space++)
        if (*space != ' ' && *space != '\t')
            return true;
    return false;
}

static enum MHD_Result
s_scan_header (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void) kind;
    s_headers_t *headers = (s_headers_t *) cls;
    if (!key)
        return MHD_YES;
    if (value && s_header_folded (key, value))
        headers->folded = true;
    value = value? value: "";
    if (strpbrk (key, " \t"))
        headers->spaced_name = true;
    if (strcasecmp (key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
        if (headers->lengths++ == 0)
            headers->length = value;
        else
        if (strcmp (headers->length, value) != 0)
            headers->lengths_differ = true;
    }
    else
    if (strcasecmp (key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
        if (headers->encodings++ == 0)
            headers->encoding = value;
    }
    else
    for (unsigned i = 0; i < sizeof s_single_headers / sizeof s_single_headers [0]; i++)
        if (strcasecmp (key, s_single_headers [i]) == 0) {
            if (headers->seen & (1u << i))
                headers->repeated = s_single_headers [i];
            headers->seen |= 1u << i;
        }
    return MHD_YES;
}

//  Answers a request whose header lines leave where its body ends in doubt (another
//  server on the way could read it otherwise: request smuggling), or that repeat a
//  header that may come once; such a connection closes after the answer. False when
//  the request is fine.
static bool
s_framing_error (s_request_t *request, const char *version)
{
    s_headers_t headers = { .lengths = 0 };
    MHD_get_connection_values (request->conn, MHD_HEADER_KIND, s_scan_header, &headers);
    char message [128] = "";
    unsigned status = MHD_HTTP_BAD_REQUEST;
    if (!(headers.seen & S_HOST_SEEN) && strcmp (version, MHD_HTTP_VERSION_1_0))
        snprintf (message, sizeof message, "an HTTP/1.1 request needs a Host header");
    else
    if (headers.folded)
        snprintf (message, sizeof message, "a header line is folded (a line begins with white"
                  " space): send each header on one line");
    else
    if (headers.spaced_name)
        snprintf (message, sizeof message, "a header name is followed by white space");
    else
    if (headers.lengths_differ)
        snprintf (message, sizeof message, "the Content-Length headers disagree");
    else
    if (headers.encodings && headers.lengths)
        snprintf (message, sizeof message, "both Transfer-Encoding and Content-Length are given");
    else
    if (headers.encodings && (headers.encodings > 1 || strcasecmp (headers.encoding, "chunked"))) {
        status = MHD_HTTP_NOT_IMPLEMENTED;
        snprintf (message, sizeof message, "the only Transfer-Encoding accepted is chunked");
    }
    else
    if (headers.repeated)
        snprintf (message, sizeof message, "the %s header is given more than once", headers.repeated);
    if (!*message)
        return false;
    s_answer_error (request, status, status == MHD_HTTP_BAD_REQUEST? "malformed": "not_implemented",
                    message);
    request->close = true;
    return true;
}

//  The path of a request target: an absolute-form one ("http://host/path", as a client
//  talking to a proxy sends) without its scheme and authority.
static const char *
s_target_path (const char *url)
{
    const char *rest = strncasecmp (url, "http://", 7) == 0? url + 7
                     : strncasecmp (url, "https://", 8) == 0? url + 8: NULL;
    if (!rest)
        return url;
    const char *path = strchr (rest, '/');
    return path? path: "/";
}

//  libmicrohttpd hands the access handler a decoded path, cut at an encoded NUL: with
//  DELETE /v1/projects/P%00/layers/meta the project went. The raw target is seen here
//  first; a path with an encoded NUL or '/' (read as a separator) gets this mark as the
//  request's first context, and a 400.
static char s_encoded_path;

static void *
s_uri_log (void *cls, const char *uri, struct MHD_Connection *conn)
{
    (void) cls;
    (void) conn;
    size_t path_len = strcspn (uri, "?");
    for (size_t i = 0; i + 2 < path_len; i++)
        if (uri [i] == '%'
        &&  ((uri [i + 1] == '0' && uri [i + 2] == '0')
          || (uri [i + 1] == '2' && (uri [i + 2] == 'f' || uri [i + 2] == 'F'))))
            return &s_encoded_path;
    return NULL;
}

//  Set by s_access_handler when it closes a connection on purpose (a body past
//  S_DISCARD_MAX), so that libmicrohttpd's message about it, logged next in the same
//  thread, is left out.
static __thread bool s_cut_on_purpose;

static enum MHD_Result
s_access_handler (void *cls, struct MHD_Connection *conn, const char *url,
                  const char *method, const char *version, const char *upload_data,
                  size_t *upload_data_size, void **req_cls)
{
    s_shared_t *shared = (s_shared_t *) cls;
    bool encoded_path = *req_cls == &s_encoded_path;
    s_request_t *request = encoded_path? NULL: (s_request_t *) *req_cls;
    s_cut_on_purpose = false;
    if (!request) {
        request = (s_request_t *) calloc (1, sizeof (s_request_t));
        if (!request)
            return MHD_NO;
        __atomic_add_fetch (&shared->open_requests, 1, __ATOMIC_RELAXED);
        request->conn = conn;
        request->started_usec = ly_now_usec ();
        snprintf (request->method, sizeof request->method, "%s", method);
        pthread_mutex_lock (&shared->lock);
        request->id = ++shared->next_id;
        pthread_mutex_unlock (&shared->lock);
        url = s_target_path (url);
        if (streq (url, "/v1") || strncmp (url, "/v1/", 4) == 0) {
            request->route = &s_api_route;
            request->method_ok = true;
            request->path = strdup (url);
        }
        for (size_t i = 0; !request->route && i < S_ROUTES; i++)
            if (streq (s_routes [i].path, url)) {
                request->route = &s_routes [i];
                if (streq (s_routes [i].method, method)
                ||  (streq (method, "HEAD") && streq (s_routes [i].method, "GET"))) {
                    request->method_ok = true;
                    break;
                }
            }
        size_t key_len;
        request->keyless = request->route && request->route->id == S_EVENTS
                        && !s_bearer (conn, &key_len);
        const char *length = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                          MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (length && strtoull (length, NULL, 10) > LY_SDKBODY_MAX_BYTES)
            request->too_large = true;
        *req_cls = request;
        if (s_framing_error (request, version))
            return s_queue_answer (request);
        if (encoded_path) {
            s_answer_error (request, MHD_HTTP_BAD_REQUEST, "malformed",
                            "the path holds an encoded NUL or slash (%00, %2F)");
            request->close = true;
            return s_queue_answer (request);
        }
        const char *expect = MHD_lookup_connection_value (conn, MHD_HEADER_KIND,
                                                          MHD_HTTP_HEADER_EXPECT);
        if (request->too_large && s_takes_body (request)
        &&  ((expect && strcasecmp (expect, "100-continue") == 0)
          || (length && strtoull (length, NULL, 10) > S_DISCARD_MAX))) {
            //  Said too large up front by a client that waits for 100 Continue: answer
            //  now, and it sends none of the body (the connection then closes). Other
            //  clients send the body anyway; they may see a reset instead of our answer,
            //  so theirs is read and thrown away first, unless it is too large for that
            //  too: then the answer now is their only chance of one.
            s_answer_too_large (request);
            return s_queue_answer (request);
        }
        if (expect && strcasecmp (expect, "100-continue") == 0
        &&  request->route && request->route->id == S_EVENTS && request->method_ok
        &&  (!s_events_key (request, &key_len) || !s_events_type_ok (request)))
            return s_queue_answer (request);    //  no key, or a body we would refuse:
                                                //  said before the client sends it
        return MHD_YES;     //  answer once the whole request is in: keeps keep-alive
    }
    if (request->status)                //  answered, possibly after a resume
        return s_queue_answer (request);
    if (*upload_data_size) {
        //  Keep the body of routes that take one, up to the limit and while all bodies
        //  held stay within theirs; discard the rest (and a keyless one: it gets 401).
        size_t more = *upload_data_size;
        request->received += more;
        if (request->received > S_DISCARD_MAX) {
            //  Read and thrown away this far (keyless, over the limit or the budget, on
            //  any route) so that a client that sends its whole body before it reads the
            //  answer gets it (most do, curl too: an answer before the end of what they
            //  send is lost with the connection's reset). Past this it is abuse, and
            //  libmicrohttpd takes no answer in the middle of a body: the connection
            //  closes without one (and without its "internal error" message).
            s_cut_on_purpose = true;
            return MHD_NO;
        }
        if (s_takes_body (request) && !request->too_large && !request->over_budget
        &&  !request->keyless) {
            size_t need = request->upload_size + more;
            if (need > LY_SDKBODY_MAX_BYTES)
                request->too_large = true;
            else
            if (need > request->held_bytes) {
                //  The room doubles (up to the limit), each step counted before it is taken
                size_t room = request->held_bytes * 2 > need? request->held_bytes * 2: need;
                room = room > LY_SDKBODY_MAX_BYTES? LY_SDKBODY_MAX_BYTES: room;
                size_t extra = room - request->held_bytes;
                char *bigger = NULL;
                if (__atomic_add_fetch (&shared->in_flight_bytes, extra, __ATOMIC_RELAXED)
                    <= S_MAX_IN_FLIGHT_BYTES)
                    bigger = (char *) realloc (request->upload, room);
                if (!bigger) {
                    __atomic_sub_fetch (&shared->in_flight_bytes, extra, __ATOMIC_RELAXED);
                    request->over_budget = true;
                }
                else {
                    request->upload = bigger;
                    request->held_bytes = room;
                }
            }
            if (request->too_large || request->over_budget) {
                __atomic_sub_fetch (&shared->in_flight_bytes, request->held_bytes, __ATOMIC_RELAXED);
                request->held_bytes = 0;
                free (request->upload);
                request->upload = NULL;
                request->upload_size = 0;
            }
            else {
                memcpy (request->upload + request->upload_size, upload_data, more);
                request->upload_size = need;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!request->route) {
        s_answer_error (request, MHD_HTTP_NOT_FOUND, "not_found", "no such route");
        return s_queue_answer (request);
    }
    if (!request->method_ok) {
        s_answer_error (request, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                        "this route does not accept that method");
        request->allow = strdup (streq (request->route->method, "GET")? "GET, HEAD"
                                                                      : request->route->method);
        return s_queue_answer (request);
    }
    if (request->route->local) {
        s_answer_local (request);
        return s_queue_answer (request);
    }
    if (request->over_budget) {
        s_answer_unavailable (request, "overloaded", "too much data in flight; retry later", 1);
        return s_queue_answer (request);
    }
    if (request->route->id == S_EVENTS && !s_prepare_events (shared, request))
        return s_queue_answer (request);
    if (request->route->id == S_API && !s_prepare_api (shared, request))
        return s_queue_answer (request);
    //  Bound the memory that waiting requests hold, whatever their count: the body is
    //  counted since it came in, its events now.
    size_t held = request->events.events_size;
    if (__atomic_add_fetch (&shared->in_flight_bytes, held, __ATOMIC_RELAXED) > S_MAX_IN_FLIGHT_BYTES) {
        __atomic_sub_fetch (&shared->in_flight_bytes, held, __ATOMIC_RELAXED);
        s_answer_unavailable (request, "overloaded", "too much data in flight; retry later", 1);
        return s_queue_answer (request);
    }
    request->held_bytes += held;
    if (!s_hand_off (shared, request)) {
        s_answer_unavailable (request, "shutting_down", "the server is shutting down", 1);
        request->close = true;
        return s_queue_answer (request);
    }
    return MHD_YES;
}

static void
s_request_completed (void *cls, struct MHD_Connection *conn, void **req_cls,
                     enum MHD_RequestTerminationCode code)
{
    s_request_t *request = *req_cls == &s_encoded_path? NULL: (s_request_t *) *req_cls;
    if (request) {
        __atomic_sub_fetch (&((s_shared_t *) cls)->open_requests, 1, __ATOMIC_RELAXED);
        if (request->held_bytes)
            __atomic_sub_fetch (&((s_shared_t *) cls)->in_flight_bytes, request->held_bytes,
                                __ATOMIC_RELAXED);
        free (request->body);
        free (request->etag);
        free (request->location);
        free (request->allow);
        free (request->answer_type);
        free (request->path);
        free (request->query);
        free (request->idempotency_key);
        free (request->if_match);
        free (request->request_type);
        free (request->upload);
        free (request->user_agent);
        ly_sdkbody_free (&request->events);
        free (request);
        *req_cls = NULL;
    }
}

//  libmicrohttpd's messages, most of them about what a client sent (a malformed request,
//  a connection reset): at most S_MHD_LOG_LINES a minute, so that no client can fill
//  the log; the number left out is logged when the next minute begins.
#define S_MHD_LOG_LINES 20
#define S_MHD_LOG_WINDOW_MSEC 60000
static void
s_mhd_log (void *cls, const char *format, va_list ap)
{
    (void) cls;
    char line [512];
    vsnprintf (line, sizeof line, format, ap);
    if (s_cut_on_purpose && strstr (line, "Application reported internal error")) {
        s_cut_on_purpose = false;
        return;                         //  it did not: s_access_handler closed it
    }
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static int64_t window_start;
    static unsigned lines, left_out;
    int64_t now = ly_mono_msec ();
    pthread_mutex_lock (&lock);
    unsigned earlier_left_out = 0;
    if (now - window_start >= S_MHD_LOG_WINDOW_MSEC) {
        earlier_left_out = left_out;
        window_start = now;
        lines = left_out = 0;
    }
    bool shown = lines < S_MHD_LOG_LINES;
    if (shown)
        lines++;
    else
        left_out++;
    pthread_mutex_unlock (&lock);
    if (earlier_left_out)
        ly_warning (S_ACTOR, "libmicrohttpd: %u messages were left out (at most %d a minute"
                    " are logged)", earlier_left_out, S_MHD_LOG_LINES);
    if (!shown)
        return;
    size_t len = strlen (line);
    while (len && line [len - 1] == '\n')
        line [--len] = 0;
    ly_warning (S_ACTOR, "libmicrohttpd: %s", line);
}

static struct MHD_Daemon *
s_start_http (self_t *self)
{
    //  Bodies (up to 1 MiB each, S_MAX_IN_FLIGHT_BYTES together) go to the system and
    //  back as they come and go: with malloc's sliding threshold, a burst of them would
    //  stay as heap the process keeps (hundreds of MiB after a flood of large bodies)
    mallopt (M_MMAP_THRESHOLD, 128 * 1024);
    struct addrinfo *addresses = ly_config_http_address (S_ACTOR);
    if (!addresses)
        return NULL;
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL
                       | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (addresses->ai_family == AF_INET6)
        flags |= MHD_USE_DUAL_STACK;    //  [::] takes IPv4 clients too
    struct MHD_Daemon *daemon = MHD_start_daemon (
        flags, (uint16_t) ly_config.http_port, NULL, NULL,
        s_access_handler, &self->shared,
        MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, addresses->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) S_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) S_CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 30,
        MHD_OPTION_NOTIFY_COMPLETED, s_request_completed, &self->shared,
        MHD_OPTION_URI_LOG_CALLBACK, s_uri_log, NULL,
        MHD_OPTION_END);
    freeaddrinfo (addresses);
    if (!daemon)
        ly_error (S_ACTOR, "could not listen on \"%s\": %s", ly_config.http_addr,
                  errno? strerror (errno): "unknown reason");
    return daemon;
}

//  --------------------------------------------------------------------------
//  The loop's bookkeeping: pending requests by id, and by deadline

static s_fifo_t *
s_fifo_of (self_t *self, s_request_t *request)
{
    return request->route->id == S_READYZ? &self->readyz_fifo
         : request->route->id == S_API? &self->api_fifo: &self->events_fifo;
}

static void
s_track (self_t *self, s_request_t *request)
{
    s_fifo_t *fifo = s_fifo_of (self, request);
    request->deadline = ly_mono_msec () + (request->route->id == S_READYZ? S_READYZ_TIMEOUT_MSEC
                                         : request->route->id == S_API? S_API_TIMEOUT_MSEC
                                         : S_EVENTS_TIMEOUT_MSEC);
    request->prev = fifo->tail;
    request->next = NULL;
    if (fifo->tail)
        fifo->tail->next = request;
    else
        fifo->head = request;
    fifo->tail = request;
    zhashx_insert (self->pending, &request->id, request);
    ly_metric_set (self->in_flight, (double) zhashx_size (self->pending));
}

//  Forgets a tracked request and resumes its connection with the answer it holds.
//  The loop must not touch it afterwards.
static void s_guess_end (self_t *self, s_request_t *request);

static void
s_finish (self_t *self, s_request_t *request)
{
    s_fifo_t *fifo = s_fifo_of (self, request);
    if (request->prev)
        request->prev->next = request->next;
    else
        fifo->head = request->next;
    if (request->next)
        request->next->prev = request->prev;
    else
        fifo->tail = request->prev;
    zhashx_delete (self->pending, &request->id);
    s_guess_end (self, request);
    MHD_resume_connection (request->conn);
}

//  Answers a request that was never tracked.
static void
s_finish_untracked (s_request_t *request)
{
    MHD_resume_connection (request->conn);
}

static void
s_expire_fifo (self_t *self, s_fifo_t *fifo, int64_t now, long *next)
{
    while (fifo->head && fifo->head->deadline <= now) {
        s_request_t *request = fifo->head;
        if (request->route->id == S_READYZ)
            s_answer_unavailable (request, "not_ready",
                                  !request->store_ponged && !request->api_ponged?
                                  "the store and the api actor did not answer the readiness probe in time"
                                  : !request->store_ponged?
                                  "the store did not answer the readiness probe in time"
                                  : "the api actor did not answer the readiness probe in time", 1);
        else {
            s_answer_unavailable (request, "timeout",
                                  "the request was not answered in time; retry later", 2);
            if (request->route->id == S_EVENTS)
                self->events_timed_out = now;
        }
        s_finish (self, request);
    }
    if (fifo->head) {
        long wait = (long) (fifo->head->deadline - now);
        if (*next < 0 || wait < *next)
            *next = wait;
    }
}

//  Answers requests whose deadline passed; returns msec to the next deadline, or -1.
static long
s_expire (self_t *self)
{
    int64_t now = ly_mono_msec ();
    long next = -1;
    s_expire_fifo (self, &self->readyz_fifo, now, &next);
    s_expire_fifo (self, &self->events_fifo, now, &next);
    s_expire_fifo (self, &self->api_fifo, now, &next);
    ly_metric_set (self->in_flight, (double) zhashx_size (self->pending));
    return next;
}

//  --------------------------------------------------------------------------
//  Failed authentication, counted per client address (held in memory only)

//  Failures are counted twice: per client address and credential (a client retrying
//  one bad key is refused after S_AUTH_FAILURES), and per address (a client trying
//  many keys is refused after S_AUTH_CLIENT_FAILURES, except with a credential that
//  worked recently). Other clients, and good credentials, are served meanwhile. The
//  credentials of a client still being checked count as failures already: a client
//  that sends hundreds of keys at once, before any answer, is held to the same number
//  of guesses. A minute is a sliding one: the failures of the minute before count for
//  the part of it still within the last 60 s.

static void
s_failure_key (s_request_t *request, bool with_credential, char *key, size_t size)
{
    snprintf (key, size, "%s/%s", request->client_ip,
              with_credential? (request->key_hash [0]? request->key_hash: "none"): "*");
}

//  The counter of key, its window moved on to the one now is in; NULL when it has
//  nothing left to count.
static s_failures_t *
s_failures (self_t *self, const char *key, int64_t now)
{
    s_failures_t *failures = (s_failures_t *) zhashx_lookup (self->auth_failures, key);
    if (failures && now - failures->window_start >= S_AUTH_WINDOW_MSEC) {
        int64_t windows = (now - failures->window_start) / S_AUTH_WINDOW_MSEC;
        failures->before = windows == 1? failures->count: 0;
        failures->count = 0;
        failures->window_start += windows * S_AUTH_WINDOW_MSEC;
        if (!failures->before) {
            zhashx_delete (self->auth_failures, key);
            failures = NULL;
        }
    }
    return failures;
}

//  Seconds to wait when the failures of the last minute, and extra (credentials being
//  checked), reach limit; else 0.
static int
s_failures_wait (self_t *self, const char *key, unsigned limit, size_t extra)
{
    int64_t now = ly_mono_msec ();
    s_failures_t *failures = s_failures (self, key, now);
    int64_t left = failures? S_AUTH_WINDOW_MSEC - (now - failures->window_start): 0;
    double count = (double) extra;
    if (failures)
        count += failures->count + (double) failures->before * (double) left / S_AUTH_WINDOW_MSEC;
    if (count < limit)
        return 0;
    return failures && failures->count + extra >= limit? (int) (left / 1000) + 1: 1;
}

//  Credentials of the request's client being checked now
static size_t
s_guesses (self_t *self, s_request_t *request)
{
    size_t *count = (size_t *) zhashx_lookup (self->client_guesses, request->client_ip);
    return count? *count: 0;
}

//  Adds delta (1 or -1) to the count of key in map; gone at 0. The count before.
static size_t
s_count_add (zhashx_t *map, const char *key, int delta)
{
    size_t *count = (size_t *) zhashx_lookup (map, key);
    size_t was = count? *count: 0;
    if (!count && delta > 0) {
        count = (size_t *) zmalloc (sizeof (size_t));
        zhashx_insert (map, key, count);
    }
    if (count && (*count += (size_t) delta) == 0)
        zhashx_delete (map, key);
    return was;
}

//  The request's credential, not known good, is being checked: counted as a guess of its
//  client until s_guess_end
static void
s_guess_begin (self_t *self, s_request_t *request)
{
    char key [128];
    s_failure_key (request, true, key, sizeof key);
    if (s_count_add (self->guesses, key, 1) == 0)
        s_count_add (self->client_guesses, request->client_ip, 1);
    request->guessing = true;
}

static void
s_guess_end (self_t *self, s_request_t *request)
{
    if (!request->guessing)
        return;
    char key [128];
    s_failure_key (request, true, key, sizeof key);
    if (s_count_add (self->guesses, key, -1) == 1)
        s_count_add (self->client_guesses, request->client_ip, -1);
    request->guessing = false;
}

//  True when the request's credential worked recently.
static bool
s_known_good (self_t *self, s_request_t *request)
{
    if (!request->key_hash [0])
        return false;
    if (request->route->id == S_EVENTS) {
        s_key_t *key = (s_key_t *) zhashx_lookup (self->keys, request->key_hash);
        return key && key->found && key->expires > ly_mono_msec ();
    }
    int64_t *until = (int64_t *) zhashx_lookup (self->good_tokens, request->key_hash);
    return until && *until > ly_mono_msec ();
}

//  Seconds the client must wait, or 0 when it may try: then a credential not known
//  good is counted as being checked (s_guess_begin) until its answer.
static int
s_auth_admit (self_t *self, s_request_t *request)
{
    char key [128];
    s_failure_key (request, true, key, sizeof key);
    int wait = s_failures_wait (self, key, S_AUTH_FAILURES, 0);
    if (!wait && !s_known_good (self, request)) {
        //  The other credentials of this client being checked count as failed already
        bool checking = zhashx_lookup (self->guesses, key) != NULL;
        s_failure_key (request, false, key, sizeof key);
        wait = s_failures_wait (self, key, S_AUTH_CLIENT_FAILURES,
                                s_guesses (self, request) - checking);
        if (!wait && request->key_hash [0])
            s_guess_begin (self, request);
    }
    return wait;
}

static void
s_count_failure (self_t *self, const char *key)
{
    s_failures_t *failures = s_failures (self, key, ly_mono_msec ());
    if (!failures) {
        if (zhashx_size (self->auth_failures) >= S_KEY_CACHE_MAX)
            zhashx_purge (self->auth_failures);
        failures = (s_failures_t *) zmalloc (sizeof (s_failures_t));
        failures->window_start = ly_mono_msec ();
        zhashx_insert (self->auth_failures, key, failures);
    }
    failures->count++;
}

static void
s_auth_failed (self_t *self, s_request_t *request)
{
    char key [128];
    s_failure_key (request, true, key, sizeof key);
    s_count_failure (self, key);
    s_failure_key (request, false, key, sizeof key);
    s_count_failure (self, key);
}

static void
s_auth_worked (self_t *self, s_request_t *request)
{
    if (!request->has_token)
        return;
    if (zhashx_size (self->good_tokens) >= S_KEY_CACHE_MAX)
        zhashx_purge (self->good_tokens);
    int64_t *until = (int64_t *) malloc (sizeof (int64_t));
    *until = ly_mono_msec () + S_GOOD_TOKEN_TTL_MSEC;
    zhashx_update (self->good_tokens, request->key_hash, until);
}

//  --------------------------------------------------------------------------
//  The partner API path

static void
s_api_begin (self_t *self, s_request_t *request)
{
    ly_msg_t *msg = ly_msg_new (LY_MSG_API_REQUEST);
    ly_msg_set_uint (msg, LY_API_REQUEST_REQUEST_ID, request->id);
    ly_msg_set_str (msg, LY_API_REQUEST_PATH, request->path);
    ly_msg_set_str (msg, LY_API_REQUEST_QUERY, request->query? request->query: "");
    ly_msg_set_str (msg, LY_API_REQUEST_METHOD, request->method);
    if (request->has_token)
        ly_msg_set_str (msg, LY_API_REQUEST_TOKEN_SHA256, request->key_hash);
    ly_msg_set_str (msg, LY_API_REQUEST_IDEMPOTENCY_KEY, request->idempotency_key);
    ly_msg_set_str (msg, LY_API_REQUEST_IF_MATCH, request->if_match);
    ly_msg_set_str (msg, LY_API_REQUEST_CONTENT_TYPE, request->request_type);
    ly_msg_set_bin (msg, LY_API_REQUEST_BODY, request->upload? request->upload: "", request->upload_size);
    free (request->upload);
    request->upload = NULL;
    if (ly_send (self->api, self->tap, NULL, &msg)) {
        ly_metric_add (self->overloaded, 1);
        s_answer_unavailable (request, "overloaded", "the API queue is full; retry later", 1);
        s_finish (self, request);
    }
}

static void
s_handle_api_response (self_t *self, ly_msg_t *msg)
{
    uint64_t request_id = ly_msg_uint (msg, LY_API_RESPONSE_REQUEST_ID);
    s_request_t *request = (s_request_t *) zhashx_lookup (self->pending, &request_id);
    if (!request || request->route->id != S_API)
        return;
    unsigned status = (unsigned) ly_msg_uint (msg, LY_API_RESPONSE_STATUS);
    if (status < 100 || status > 599) {
        s_answer_error (request, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "bad answer from the api actor");
        s_finish (self, request);
        return;
    }
    size_t len = 0;
    const void *body = ly_msg_bin (msg, LY_API_RESPONSE_BODY, &len);
    char *copy = (char *) malloc (len + 1);
    if (len)
        memcpy (copy, body, len);
    copy [len] = 0;
    s_answer (request, status, copy);
    request->body_len = len;
    if (status == MHD_HTTP_SERVICE_UNAVAILABLE)
        request->retry_after = 2;           //  as the gateway's own 503s say when to come back
    const char *value;
    if ((value = ly_msg_str (msg, LY_API_RESPONSE_CONTENT_TYPE)))
        request->answer_type = strdup (value);
    if ((value = ly_msg_str (msg, LY_API_RESPONSE_ETAG)))
        request->etag = strdup (value);
    if ((value = ly_msg_str (msg, LY_API_RESPONSE_LOCATION)))
        request->location = strdup (value);
    if ((value = ly_msg_str (msg, LY_API_RESPONSE_ALLOW)))
        request->allow = strdup (value);
    if (status == MHD_HTTP_UNAUTHORIZED)
        s_auth_failed (self, request);
    else
        s_auth_worked (self, request);
    //  An SDK key revoked, or its project changed or gone: forget the cached keys, so
    //  that this gateway sees the change from the next request on
    if (ly_msg_bool (msg, LY_API_RESPONSE_KEYS_CHANGED))
        zhashx_purge (self->keys);
    s_finish (self, request);
}

//  --------------------------------------------------------------------------
//  The events path

//  Sends a request's events to an ingest actor.
static void
s_submit (self_t *self, s_request_t *request, const s_key_t *key)
{
    ly_msg_t *submit = ly_msg_new (LY_MSG_EVENTS_SUBMIT);
    ly_msg_set_uint (submit, LY_EVENTS_SUBMIT_REQUEST_ID, request->id);
    ly_msg_set_bin (submit, LY_EVENTS_SUBMIT_REPLY_TO, self->routing_id, strlen (self->routing_id));
    ly_msg_set_str (submit, LY_EVENTS_SUBMIT_ORG_ID, key->org_id);
    ly_msg_set_str (submit, LY_EVENTS_SUBMIT_PROJECT_ID, key->project_id);
    if (key->country_code [0])
        ly_msg_set_str (submit, LY_EVENTS_SUBMIT_DEFAULT_COUNTRY_CODE, key->country_code);
    ly_msg_set_int (submit, LY_EVENTS_SUBMIT_RECEIVED_AT, request->started_usec);
    if (request->client_ip [0])
        ly_msg_set_str (submit, LY_EVENTS_SUBMIT_CLIENT_IP, request->client_ip);
    if (request->user_agent)
        ly_msg_set_str (submit, LY_EVENTS_SUBMIT_USER_AGENT, request->user_agent);
    ly_msg_set_obj (submit, LY_EVENTS_SUBMIT_EVENTS, request->events.events, request->events.events_size);
    ly_msg_set_obj (submit, LY_EVENTS_SUBMIT_REJECTED, request->events.rejected, request->events.rejected_size);
    //  The raw values go with the frame; the gateway keeps no copy.
    s_guess_end (self, request);            //  filed under the client IP, wiped now
    explicit_bzero (request->client_ip, sizeof request->client_ip);
    if (request->user_agent) {
        explicit_bzero (request->user_agent, strlen (request->user_agent));
        free (request->user_agent);
        request->user_agent = NULL;
    }
    ly_sdkbody_free (&request->events);
    request->submitted = true;
    if (ly_send (self->ingest, self->tap, NULL, &submit)) {
        if (self->ingest_peers <= 0)        //  not overload: every ingest actor is gone
            s_answer_unavailable (request, "unavailable",
                                  "no ingest actor is connected; retry later", 1);
        else {
            ly_metric_add (self->overloaded, 1);
            s_answer_unavailable (request, "overloaded",
                                  "the ingest pipeline is full; retry later", 1);
        }
        s_finish (self, request);
    }
}

//  Takes count events from the project's allowance under LAYERS_PROJECT_EVENT_RATE:
//  0 when they may go, else the seconds until they could. The allowance refills at the
//  rate, up to ten seconds' worth, and never less than one full request's worth.
static int
s_rate_wait (self_t *self, const char *project_id, size_t count)
{
    double rate = (double) ly_config.project_event_rate;
    if (rate <= 0)
        return 0;
    double burst = rate * 10 > LY_SDKBODY_MAX_EVENTS? rate * 10: LY_SDKBODY_MAX_EVENTS;
    int64_t now = ly_mono_msec ();
    s_bucket_t *bucket = (s_bucket_t *) zhashx_lookup (self->rates, project_id);
    if (!bucket) {
        if (zhashx_size (self->rates) >= S_KEY_CACHE_MAX)
            zhashx_purge (self->rates);
        bucket = (s_bucket_t *) zmalloc (sizeof (s_bucket_t));
        bucket->tokens = burst;
        bucket->refilled = now;
        zhashx_insert (self->rates, project_id, bucket);
    }
    bucket->tokens += rate * (double) (now - bucket->refilled) / 1000.0;
    if (bucket->tokens > burst)
        bucket->tokens = burst;
    bucket->refilled = now;
    if (bucket->tokens >= (double) count) {
        bucket->tokens -= (double) count;
        return 0;
    }
    return (int) ceil (((double) count - bucket->tokens) / rate);
}

static void
s_key_answer (self_t *self, s_request_t *request, const s_key_t *key)
{
    int wait = key->found? s_rate_wait (self, key->project_id, request->events.count): 0;
    if (wait) {
        ly_metric_add (self->rate_limited, 1);
        char message [128];
        snprintf (message, sizeof message, "the project sends more than its %" PRId64
                  " events a second; retry later", ly_config.project_event_rate);
        s_answer_error (request, MHD_HTTP_TOO_MANY_REQUESTS, "rate_limited", message);
        request->retry_after = wait;
        s_finish (self, request);
    }
    else
    if (key->found)
        s_submit (self, request, key);
    else {
        s_auth_failed (self, request);
        s_answer_error (request, MHD_HTTP_UNAUTHORIZED, "unauthorized", "unknown SDK key");
        s_finish (self, request);
    }
}

//  Sends the lookup of key_hash to the api actor (request_id names the first request
//  waiting for it) and notes when; creates the lookup when it is new. -1 when the
//  queue to the api actor is full, or S_KEY_CACHE_MAX lookups are open.
static int
s_lookup_send (self_t *self, const char *key_hash, uint64_t request_id)
{
    s_lookup_t *lookup = (s_lookup_t *) zhashx_lookup (self->lookups, key_hash);
    if (!lookup && zhashx_size (self->lookups) >= S_KEY_CACHE_MAX)
        return -1;                  //  keys sprayed while the database does not answer
    ly_msg_t *msg = ly_msg_new (LY_MSG_KEY_LOOKUP);
    ly_msg_set_uint (msg, LY_KEY_LOOKUP_REQUEST_ID, request_id);
    ly_msg_set_str (msg, LY_KEY_LOOKUP_KEY_SHA256, key_hash);
    if (ly_send (self->api, self->tap, NULL, &msg))
        return -1;
    if (!lookup) {
        lookup = (s_lookup_t *) zmalloc (sizeof (s_lookup_t));
        lookup->waiting = zlistx_new ();
        zlistx_set_destructor (lookup->waiting, (zlistx_destructor_fn *) zstr_free);
        zhashx_insert (self->lookups, key_hash, lookup);
        lookup->since = ly_mono_msec ();
    }
    lookup->sent = ly_mono_msec ();
    return 0;
}

//  The request a lookup's waiting list names by id (text), or NULL when its deadline
//  passed meanwhile.
static s_request_t *
s_waiting_request (self_t *self, const char *id)
{
    uint64_t request_id = strtoull (id, NULL, 10);
    return (s_request_t *) zhashx_lookup (self->pending, &request_id);
}

//  The cached key of key_hash when it was good lately: found, expired less than
//  S_KEY_STALE_MSEC ago. Else NULL.
static s_key_t *
s_key_recent (self_t *self, const char *key_hash, int64_t now)
{
    s_key_t *key = (s_key_t *) zhashx_lookup (self->keys, key_hash);
    return key && key->found && now < key->expires + S_KEY_STALE_MSEC? key: NULL;
}

//  The cached key of key_hash when it may serve past its TTL: good lately, and its new
//  lookup slow (the database does not answer). Else NULL.
static s_key_t *
s_key_stale (self_t *self, const char *key_hash, s_lookup_t *lookup, int64_t now)
{
    return lookup && now - lookup->since >= S_LOOKUP_SLOW_MSEC
         ? s_key_recent (self, key_hash, now): NULL;
}

//  Goes on with the lookups that requests wait for: forgets the requests whose deadline
//  passed; serves the others with the key as it was when the new lookup is slow
//  (s_key_stale), or, for a key that cannot serve so, answers them 503 once the lookup
//  has gone unanswered for S_LOOKUP_GIVE_UP_MSEC; sends again a lookup not answered
//  within S_LOOKUP_RESEND_MSEC (the api actor restarted and lost it, or the database
//  hangs) while requests come for it. A lookup nothing waits for is forgotten once its
//  key can no longer serve stale.
static void
s_lookups_resend (self_t *self)
{
    int64_t now = ly_mono_msec ();
    zlistx_t *forget = zlistx_new ();
    for (s_lookup_t *lookup = (s_lookup_t *) zhashx_first (self->lookups); lookup;
         lookup = (s_lookup_t *) zhashx_next (self->lookups)) {
        const char *key_hash = (const char *) zhashx_cursor (self->lookups);
        s_key_t *stale = s_key_stale (self, key_hash, lookup, now);
        bool hangs = !stale && now - lookup->since >= S_LOOKUP_GIVE_UP_MSEC;
        uint64_t first = 0;         //  the request the lookup goes on for, or was given up
        for (char *id = (char *) zlistx_first (lookup->waiting); id;
             id = (char *) zlistx_first (lookup->waiting)) {
            s_request_t *request = s_waiting_request (self, id);
            if (request && !stale && !hangs) {
                first = request->id;
                break;
            }
            zlistx_delete (lookup->waiting, zlistx_cursor (lookup->waiting));
            if (request && stale)
                s_key_answer (self, request, stale);
            else
            if (request) {
                first = request->id;
                s_answer_unavailable (request, "unavailable", "the SDK key could not be checked:"
                                      " the lookup was not answered in time; retry later", 2);
                s_finish (self, request);
            }
        }
        if (!first) {
            if (now - lookup->since >= S_KEY_TTL_MSEC + S_KEY_STALE_MSEC)
                zlistx_add_end (forget, (void *) key_hash);
            continue;
        }
        if (now - lookup->sent >= S_LOOKUP_RESEND_MSEC)
            s_lookup_send (self, key_hash, first);
    }
    for (const char *key_hash = (const char *) zlistx_first (forget); key_hash;
         key_hash = (const char *) zlistx_next (forget))
        zhashx_delete (self->lookups, key_hash);
    zlistx_destroy (&forget);
}

//  Runs s_lookups_resend every S_LOOKUP_SCAN_MSEC while there are lookups. Returns msec
//  to the next run, or -1.
static long
s_lookups_tick (self_t *self)
{
    if (!zhashx_size (self->lookups))
        return -1;
    int64_t now = ly_mono_msec ();
    if (now >= self->lookups_due) {
        s_lookups_resend (self);
        self->lookups_due = now + S_LOOKUP_SCAN_MSEC;
    }
    return (long) (self->lookups_due - now);
}

//  Resolves the request's SDK key from the cache, or asks the api actor. While a new
//  lookup of a key that was good is slow, the key serves as it was (s_key_stale), so
//  that a database that hangs holds no request at the key: the store answers for it.
static void
s_events_begin (self_t *self, s_request_t *request)
{
    int64_t now = ly_mono_msec ();
    s_key_t *key = (s_key_t *) zhashx_lookup (self->keys, request->key_hash);
    if (key && key->expires > now) {
        s_key_answer (self, request, key);
        return;
    }
    s_lookup_t *lookup = (s_lookup_t *) zhashx_lookup (self->lookups, request->key_hash);
    s_key_t *stale = s_key_stale (self, request->key_hash, lookup, now);
    if (!lookup || (stale && now - lookup->sent >= S_LOOKUP_RESEND_MSEC)) {
        if (s_lookup_send (self, request->key_hash, request->id) && !stale) {
            s_answer_unavailable (request, "overloaded", "the key lookup queue is full", 1);
            s_finish (self, request);
            return;
        }
        lookup = (s_lookup_t *) zhashx_lookup (self->lookups, request->key_hash);
    }
    if (stale)
        s_key_answer (self, request, stale);
    else
        zlistx_add_end (lookup->waiting, zsys_sprintf ("%" PRIu64, request->id));
}

static void
s_handle_key_info (self_t *self, ly_msg_t *msg)
{
    const char *hash = ly_msg_str (msg, LY_KEY_INFO_KEY_SHA256);
    const char *status = ly_msg_str (msg, LY_KEY_INFO_STATUS);
    s_lookup_t *lookup = hash? (s_lookup_t *) zhashx_lookup (self->lookups, hash): NULL;
    if (!lookup || !status)
        return;
    zlistx_t *waiting = lookup->waiting;
    s_key_t key = { 0 };
    bool unavailable = !streq (status, "found") && !streq (status, "unknown");
    if (streq (status, "found")) {
        const char *org = ly_msg_str (msg, LY_KEY_INFO_ORG_ID);
        const char *project = ly_msg_str (msg, LY_KEY_INFO_PROJECT_ID);
        const char *country = ly_msg_str (msg, LY_KEY_INFO_DEFAULT_COUNTRY_CODE);
        if (!org || !project || strlen (org) >= sizeof key.org_id
        ||  strlen (project) >= sizeof key.project_id)
            unavailable = true;
        else {
            key.found = true;
            snprintf (key.org_id, sizeof key.org_id, "%s", org);
            snprintf (key.project_id, sizeof key.project_id, "%s", project);
            snprintf (key.country_code, sizeof key.country_code, "%s", country? country: "");
        }
    }
    //  A key that was good lately serves as it was while the database cannot say, as
    //  when its lookup is slow (s_key_stale): the store may still write
    s_key_t *known = unavailable? s_key_recent (self, hash, ly_mono_msec ()): NULL;
    if (!unavailable) {
        key.expires = ly_mono_msec () + (key.found? S_KEY_TTL_MSEC: S_UNKNOWN_KEY_TTL_MSEC);
        if (zhashx_size (self->keys) >= S_KEY_CACHE_MAX)
            zhashx_purge (self->keys);
        s_key_t *entry = (s_key_t *) malloc (sizeof (s_key_t));
        *entry = key;
        zhashx_update (self->keys, hash, entry);
    }
    for (char *id = (char *) zlistx_first (waiting); id; id = (char *) zlistx_next (waiting)) {
        s_request_t *request = s_waiting_request (self, id);
        if (!request)
            continue;           //  its deadline passed meanwhile
        if (unavailable && !known) {
            s_answer_unavailable (request, "unavailable",
                                  "the SDK key could not be checked; retry later", 2);
            s_finish (self, request);
        }
        else
            s_key_answer (self, request, known? known: &key);
    }
    zhashx_delete (self->lookups, hash);
}

//  Turns the store's acknowledgement into the HTTP answer.
static void
s_handle_ack (self_t *self, ly_msg_t *msg)
{
    self->events_timed_out = 0;     //  events flow again
    uint64_t request_id = ly_msg_uint (msg, LY_EVENTS_ACK_REQUEST_ID);
    s_request_t *request = (s_request_t *) zhashx_lookup (self->pending, &request_id);
    if (!request)
        return;                 //  answered 503 at its deadline already
    const char *status = ly_msg_str (msg, LY_EVENTS_ACK_STATUS);
    if (status && streq (status, "ok")) {
        json_t *rejected = json_array ();
        const msgpack_object *list = ly_msg_obj (msg, LY_EVENTS_ACK_REJECTED);
        if (list && list->type == MSGPACK_OBJECT_ARRAY)
            for (uint32_t i = 0; i < list->via.array.size; i++) {
                const msgpack_object *item = &list->via.array.ptr [i];
                if (item->type != MSGPACK_OBJECT_ARRAY || item->via.array.size != 2
                ||  item->via.array.ptr [0].type != MSGPACK_OBJECT_POSITIVE_INTEGER
                ||  item->via.array.ptr [1].type != MSGPACK_OBJECT_STR)
                    continue;
                json_array_append_new (rejected, json_pack ("{s:I, s:s%}",
                    "index", (json_int_t) item->via.array.ptr [0].via.u64,
                    "error", item->via.array.ptr [1].via.str.ptr,
                    (size_t) item->via.array.ptr [1].via.str.size));
            }
        json_t *body = json_pack ("{s:I, s:I, s:o}",
            "accepted", (json_int_t) ly_msg_uint (msg, LY_EVENTS_ACK_ACCEPTED),
            "duplicates", (json_int_t) ly_msg_uint (msg, LY_EVENTS_ACK_DUPLICATES),
            "rejected", rejected);
        s_answer (request, MHD_HTTP_ACCEPTED, json_dumps (body, JSON_COMPACT));
        json_decref (body);
    }
    else
    if (status && streq (status, "error"))
        s_answer_error (request, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal",
                        "the events could not be stored");
    else
        s_answer_unavailable (request, "unavailable",
                              "the database is unavailable; retry later", 2);
    s_finish (self, request);
}

//  --------------------------------------------------------------------------
//  The actor

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon) {
        //  Every suspended connection must be resumed before the daemon stops, and no
        //  request that comes on a kept-alive connection meanwhile may be suspended.
        pthread_mutex_lock (&self->shared.lock);
        self->shared.stopping = true;
        s_request_t *queued = self->shared.head;
        self->shared.head = self->shared.tail = NULL;
        pthread_mutex_unlock (&self->shared.lock);
        while (queued) {
            s_request_t *request = queued;
            queued = request->next;
            s_answer_unavailable (request, "shutting_down", "the server is shutting down", 1);
            s_finish_untracked (request);
        }
        s_fifo_t *fifos [3] = { &self->readyz_fifo, &self->events_fifo, &self->api_fifo };
        for (int i = 0; i < 3; i++)
            while (fifos [i]->head) {
                s_request_t *request = fifos [i]->head;
                s_answer_unavailable (request, "shutting_down", "the server is shutting down", 1);
                s_finish (self, request);
            }
        //  Those answers go out on the HTTP threads: stopping the daemon at once would
        //  close their connections first, and a client cannot tell a dropped connection
        //  from one whose events were stored
        int64_t until = ly_mono_msec () + S_FLUSH_MSEC;
        while (__atomic_load_n (&self->shared.open_requests, __ATOMIC_RELAXED) > 0
        &&     ly_mono_msec () < until)
            zclock_sleep (5);
        MHD_stop_daemon (self->daemon);
    }
    zhashx_destroy (&self->pending);
    zhashx_destroy (&self->keys);
    zhashx_destroy (&self->lookups);
    zhashx_destroy (&self->auth_failures);
    zhashx_destroy (&self->guesses);
    zhashx_destroy (&self->client_guesses);
    zhashx_destroy (&self->rates);
    zhashx_destroy (&self->good_tokens);
    zsock_destroy (&self->store);
    zsock_destroy (&self->api);
    zsock_destroy (&self->metrics);
    zactor_destroy (&self->ingest_monitor);
    zactor_destroy (&self->store_monitor);
    zsock_destroy (&self->ingest);
    ly_tap_destroy (&self->tap);
    if (self->shared.wake_fd >= 0)
        close (self->shared.wake_fd);
    pthread_mutex_destroy (&self->shared.lock);
    free (self);
    *self_p = NULL;
}

static size_t
s_id_hash (const void *key)
{
    uint64_t id = *(const uint64_t *) key;
    return (size_t) (id ^ (id >> 29));
}

static int
s_id_compare (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y? -1: x > y;
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    pthread_mutex_init (&self->shared.lock, NULL);
    self->shared.wake_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->shared.next_id = (uint64_t) ly_now_usec () << 8;     //  unique across restarts
    snprintf (self->routing_id, sizeof self->routing_id, "gateway.%d.%" PRIx64,
              (int) getpid (), (uint64_t) ly_now_usec ());
    self->pending = zhashx_new ();
    zhashx_set_key_hasher (self->pending, s_id_hash);
    zhashx_set_key_comparator (self->pending, s_id_compare);
    zhashx_set_key_duplicator (self->pending, NULL);
    zhashx_set_key_destructor (self->pending, NULL);
    self->keys = zhashx_new ();
    zhashx_set_destructor (self->keys, (zhashx_destructor_fn *) zstr_free);
    self->auth_failures = zhashx_new ();
    zhashx_set_destructor (self->auth_failures, (zhashx_destructor_fn *) zstr_free);
    self->good_tokens = zhashx_new ();
    zhashx_set_destructor (self->good_tokens, (zhashx_destructor_fn *) zstr_free);
    self->guesses = zhashx_new ();
    zhashx_set_destructor (self->guesses, (zhashx_destructor_fn *) zstr_free);
    self->client_guesses = zhashx_new ();
    zhashx_set_destructor (self->client_guesses, (zhashx_destructor_fn *) zstr_free);
    self->lookups = zhashx_new ();
    zhashx_set_destructor (self->lookups, (zhashx_destructor_fn *) s_lookup_destroy);
    self->rates = zhashx_new ();
    zhashx_set_destructor (self->rates, (zhashx_destructor_fn *) zstr_free);
    self->in_flight = ly_gauge ("layers_gateway_in_flight", "Requests waiting for actors", NULL);
    self->overloaded = ly_counter ("layers_gateway_overloaded_total",
                                   "Requests refused with 503 because a queue was full", NULL);
    self->rate_limited = ly_counter ("layers_gateway_rate_limited_total",
                                     "Event requests refused with 429: the project was over"
                                     " LAYERS_PROJECT_EVENT_RATE", NULL);
    self->store = ly_topology_open_as (S_ACTOR, "store", self->routing_id);
    if (self->store) {
        self->store_monitor = zactor_new (zmonitor, self->store);
        zstr_sendx (self->store_monitor, "LISTEN", "DISCONNECTED", NULL);
        zstr_sendx (self->store_monitor, "START", NULL);
        zsock_wait (self->store_monitor);
    }
    self->api = ly_topology_open (S_ACTOR, "api");
    self->metrics = ly_topology_open (S_ACTOR, "metrics");
    //  Watch the ingest socket before it binds, so no connection goes uncounted.
    self->ingest = zsock_new (ZMQ_PUSH);
    if (self->ingest) {
        self->ingest_monitor = zactor_new (zmonitor, self->ingest);
        zstr_sendx (self->ingest_monitor, "LISTEN", "ACCEPTED", "DISCONNECTED", NULL);
        zstr_sendx (self->ingest_monitor, "START", NULL);
        zsock_wait (self->ingest_monitor);
        if (ly_topology_attach (S_ACTOR, "ingest", self->ingest))
            zsock_destroy (&self->ingest);
    }
    self->tap = ly_tap_new (S_ACTOR);
    if (self->shared.wake_fd < 0 || !self->store || !self->api || !self->ingest || !self->tap
    ||  !self->metrics || !self->store_monitor
    || !(self->daemon = s_start_http (self)))
        s_self_destroy (&self);
    return self;
}

//  Readiness: the store and the api actor answer with a working database, and at
//  least one ingest actor is connected.
static void
s_readyz_begin (self_t *self, s_request_t *request)
{
    if (self->ingest_peers <= 0) {
        s_answer_unavailable (request, "not_ready", "no ingest actor is connected", 1);
        s_finish (self, request);
        return;
    }
    //  An ingest actor that is connected but stalled answers no ping of ours: what
    //  tells is that event requests go unanswered, until one is answered again
    if (self->events_timed_out
    &&  ly_mono_msec () - self->events_timed_out < S_EVENTS_TIMED_OUT_MSEC) {
        s_answer_unavailable (request, "not_ready", "event requests are not answered in time"
                              " (an ingest actor or the store is stalled)", 1);
        s_finish (self, request);
        return;
    }
    zsock_t *targets [] = { self->store, self->api };
    for (int i = 0; i < 2; i++) {
        ly_msg_t *ping = ly_msg_new (LY_MSG_PING);
        ly_msg_set_uint (ping, LY_PING_REQUEST_ID, request->id);
        ly_msg_set_str (ping, LY_PING_SENDER, S_ACTOR);
        if (ly_send (targets [i], self->tap, NULL, &ping)) {
            s_answer_unavailable (request, "not_ready", "an actor queue is full", 1);
            s_finish (self, request);
            return;
        }
    }
}

static void
s_handle_pong (self_t *self, ly_msg_t *msg)
{
    uint64_t request_id = ly_msg_uint (msg, LY_PONG_REQUEST_ID);
    s_request_t *request = (s_request_t *) zhashx_lookup (self->pending, &request_id);
    if (!request || request->route->id != S_READYZ)
        return;
    const char *sender = ly_msg_str (msg, LY_PONG_SENDER);
    if (!ly_msg_bool (msg, LY_PONG_DB_OK)) {
        char reason [160];
        const char *detail = ly_msg_str (msg, LY_PONG_DETAIL);
        snprintf (reason, sizeof reason, "the %s actor: %s", sender? sender: "?",
                  detail? detail: "the database is unreachable");
        s_answer_unavailable (request, "not_ready", reason, 1);
        s_finish (self, request);
        return;
    }
    if (sender && streq (sender, "store"))
        request->store_ponged = true;
    else
        request->api_ponged = true;
    if (request->store_ponged && request->api_ponged) {
        s_answer (request, MHD_HTTP_OK, strdup ("{\"status\":\"ready\"}"));
        s_finish (self, request);
    }
}

//  Answers 503 at once to the event requests whose acknowledgement will not come: the
//  store, or the last ingest actor, went away with them. Their events may have been
//  stored all the same; a retry counts those as duplicates.
static void
s_fail_submitted (self_t *self, const char *who)
{
    size_t failed = 0;
    char *why = zsys_sprintf ("the %s went away before the events were acknowledged;"
                              " they may have been stored: retry", who);
    s_request_t *request = self->events_fifo.head;
    while (request) {
        s_request_t *next = request->next;
        if (request->submitted) {
            s_answer_unavailable (request, "unavailable", why, 1);
            s_finish (self, request);
            failed++;
        }
        request = next;
    }
    zstr_free (&why);
    if (failed)
        ly_warning (S_ACTOR, "the %s went away: answered 503 to the %zu event requests it held",
                    who, failed);
}

static void
s_handle_monitor (self_t *self)
{
    zmsg_t *event = zmsg_recv (self->ingest_monitor);
    char *name = event? zmsg_popstr (event): NULL;
    if (name && streq (name, "ACCEPTED"))
        self->ingest_peers++;
    else
    if (name && streq (name, "DISCONNECTED") && self->ingest_peers > 0
    &&  --self->ingest_peers == 0)
        s_fail_submitted (self, "ingest actor");
    zstr_free (&name);
    zmsg_destroy (&event);
}

static void s_handle_store (self_t *self);

static void
s_handle_store_monitor (self_t *self)
{
    zmsg_t *event = zmsg_recv (self->store_monitor);
    char *name = event? zmsg_popstr (event): NULL;
    if (name && streq (name, "DISCONNECTED")) {
        //  What the store sent before it went (a clean stop acknowledges its batches)
        //  is read first: only the requests left without an answer fail
        while (zsock_events (self->store) & ZMQ_POLLIN)
            s_handle_store (self);
        s_fail_submitted (self, "store");
    }
    zstr_free (&name);
    zmsg_destroy (&event);
}

//  Takes the requests HTTP threads handed off.
static void
s_handle_wake (self_t *self)
{
    uint64_t count;
    if (read (self->shared.wake_fd, &count, sizeof count) < 0 && errno != EAGAIN)
        ly_warning (S_ACTOR, "could not read the wake-up counter: %s", strerror (errno));
    pthread_mutex_lock (&self->shared.lock);
    s_request_t *request = self->shared.head;
    self->shared.head = self->shared.tail = NULL;
    pthread_mutex_unlock (&self->shared.lock);
    while (request) {
        s_request_t *next = request->next;
        if (zhashx_size (self->pending) >= S_MAX_IN_FLIGHT) {
            ly_metric_add (self->overloaded, 1);
            s_answer_unavailable (request, "overloaded", "too many requests in flight; retry later", 1);
            s_finish_untracked (request);
        }
        else {
            s_track (self, request);
            int wait = request->route->id == S_READYZ? 0: s_auth_admit (self, request);
            if (wait) {
                s_answer_error (request, MHD_HTTP_TOO_MANY_REQUESTS, "too_many_failures",
                                "too many failed authentications from this address; retry later");
                request->retry_after = wait;
                s_finish (self, request);
            }
            else
            if (request->route->id == S_READYZ)
                s_readyz_begin (self, request);
            else
            if (request->route->id == S_API)
                s_api_begin (self, request);
            else
                s_events_begin (self, request);
        }
        request = next;
    }
}

static void
s_handle_store (self_t *self)
{
    ly_msg_t *msg = ly_recv (self->store, self->tap, S_ACTOR, NULL);
    if (!msg)
        return;
    if (ly_msg_type (msg) == LY_MSG_EVENTS_ACK)
        s_handle_ack (self, msg);
    else
    if (ly_msg_type (msg) == LY_MSG_PONG)
        s_handle_pong (self, msg);
    else
        ly_warning (S_ACTOR, "unexpected %s from the store", ly_msg_type_name (ly_msg_type (msg)));
    ly_msg_destroy (&msg);
}

static void
s_handle_metrics (self_t *self)
{
    ly_msg_t *msg = ly_recv (self->metrics, NULL, S_ACTOR, NULL);
    if (msg && ly_msg_type (msg) == LY_MSG_METRICS_REPORT
    &&  ly_msg_str (msg, LY_METRICS_REPORT_INSTANCE) && ly_msg_has (msg, LY_METRICS_REPORT_SNAPSHOT)) {
        //  Repack the snapshot object as bytes for the registry to keep.
        msgpack_sbuffer sbuf;
        msgpack_sbuffer_init (&sbuf);
        msgpack_packer pk;
        msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
        msgpack_pack_object (&pk, *ly_msg_obj (msg, LY_METRICS_REPORT_SNAPSHOT));
        ly_metrics_import (ly_msg_str (msg, LY_METRICS_REPORT_INSTANCE), sbuf.data, sbuf.size);
        msgpack_sbuffer_destroy (&sbuf);
    }
    ly_msg_destroy (&msg);
}

static void
s_handle_api (self_t *self)
{
    ly_msg_t *msg = ly_recv (self->api, self->tap, S_ACTOR, NULL);
    if (!msg)
        return;
    if (ly_msg_type (msg) == LY_MSG_KEY_INFO)
        s_handle_key_info (self, msg);
    else
    if (ly_msg_type (msg) == LY_MSG_API_RESPONSE)
        s_handle_api_response (self, msg);
    else
    if (ly_msg_type (msg) == LY_MSG_PONG)
        s_handle_pong (self, msg);
    else
        ly_warning (S_ACTOR, "unexpected %s from the api actor", ly_msg_type_name (ly_msg_type (msg)));
    ly_msg_destroy (&msg);
}

//  Stopping: no new connection is accepted (the listening socket is closed), and the
//  loop goes on until every request begun is answered and sent, for S_DRAIN_MSEC at
//  most; ingest and the store still run meanwhile (the supervisor stops them after).
static void
s_drain_start (self_t *self)
{
    self->drain_until = ly_mono_msec () + S_DRAIN_MSEC;
    MHD_socket listener = MHD_quiesce_daemon (self->daemon);
    if (listener != MHD_INVALID_SOCKET)
        close (listener);
    size_t open = __atomic_load_n (&self->shared.open_requests, __ATOMIC_RELAXED);
    if (open)
        ly_info (S_ACTOR, "stopping: answering the %zu requests in flight first", open);
}

void
ly_gateway_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    ly_actor_ready (pipe, self != NULL);
    if (!self)
        return;
    ly_info (S_ACTOR, "listening on http://%s", ly_config.http_addr);
    while (true) {
        zmq_pollitem_t items [] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->store), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->api), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (ly_tap_socket (self->tap)), 0, ZMQ_POLLIN, 0 },
            { NULL, self->shared.wake_fd, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->ingest_monitor), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->metrics), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->store_monitor), 0, ZMQ_POLLIN, 0 },
        };
        long timeout = s_expire (self);
        long resend = s_lookups_tick (self);
        if (resend >= 0 && (timeout < 0 || resend < timeout))
            timeout = resend;
        if (self->drain_until && (timeout < 0 || timeout > S_DRAIN_POLL_MSEC))
            timeout = S_DRAIN_POLL_MSEC;    //  requests complete on the HTTP threads
        if (zmq_poll (items, 8, timeout) == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN
        &&  ly_actor_pipe (pipe, S_ACTOR, &self->verbose, NULL, NULL)) {
            if (self->drain_until || !self->daemon)
                break;
            s_drain_start (self);
        }
        //  Drain what is waiting (bounded), so answers never pile up behind the poll.
        for (int n = 0; n < 1000 && (zsock_events (self->store) & ZMQ_POLLIN); n++)
            s_handle_store (self);
        for (int n = 0; n < 1000 && (zsock_events (self->api) & ZMQ_POLLIN); n++)
            s_handle_api (self);
        if (items [3].revents & ZMQ_POLLIN)
            ly_tap_handle (self->tap);
        if (items [4].revents & ZMQ_POLLIN)
            s_handle_wake (self);
        if (items [5].revents & ZMQ_POLLIN)
            s_handle_monitor (self);
        if (items [6].revents & ZMQ_POLLIN)
            s_handle_metrics (self);
        if (items [7].revents & ZMQ_POLLIN)
            s_handle_store_monitor (self);
        if (self->drain_until
        &&  (__atomic_load_n (&self->shared.open_requests, __ATOMIC_RELAXED) == 0
        ||   ly_mono_msec () >= self->drain_until))
            break;
    }
    s_self_destroy (&self);
}
