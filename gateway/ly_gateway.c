/*  ly_gateway.c: the gateway actor (see ly_gateway.h).
    Design: libmicrohttpd runs its own epoll thread pool. A route is either answered on
    the HTTP thread (healthz, metrics) or needs another actor: then the connection is
    suspended, the request is queued for the actor's loop and an eventfd wakes it. The
    loop sends the frame, and when the reply (or the deadline) comes, writes the answer
    into the request and resumes the connection; libmicrohttpd then calls the handler
    again, which queues the response. A request belongs to its connection and is freed
    by the completion callback; the loop holds it only while it is suspended. */
#include "ly_gateway.h"
#include "ly_actor.h"
#include "ly_config.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_topology.h"
#include <microhttpd.h>
#include <netdb.h>
#include <sys/eventfd.h>

#define S_ACTOR "gateway"
#define S_READYZ_TIMEOUT_MSEC 1000
#define S_THREADS 2
#define S_CONNECTION_LIMIT 1000

typedef struct _s_request_t s_request_t;
typedef struct _s_shared_t s_shared_t;

typedef enum { S_LOCAL, S_ACTOR_CALL } s_route_kind_t;

typedef struct {
    const char *method;         /* HTTP method */
    const char *path;           /* exact path */
    const char *name;           /* metrics label */
    s_route_kind_t kind;        /* answered here or by an actor */
    void (*local) (s_request_t *request);   /* for S_LOCAL */
} s_route_t;

struct _s_request_t {
    uint64_t id;                    /* request id, also sent in frames */
    struct MHD_Connection *conn;    /* borrowed from libmicrohttpd */
    const s_route_t *route;         /* matched route, NULL: not found */
    bool method_ok;                 /* the path matched with this method */
    int64_t started_usec;           /* for the latency histogram */
    int64_t deadline;               /* monotonic msec, while suspended */
    unsigned status;                /* answer status, 0 until answered */
    char *body;                     /* answer body (JSON), owned */
    int retry_after;                /* seconds, 0: no Retry-After */
    s_request_t *next;              /* link in the hand-off queue or pending list */
};

struct _s_shared_t {
    pthread_mutex_t lock;           /* guards the queue and next_id */
    s_request_t *head, *tail;       /* suspended requests for the actor loop */
    int wake_fd;                    /* eventfd: the queue is not empty */
    uint64_t next_id;               /* request id sequence */
};

typedef struct {
    zsock_t *pipe;                  /* actor pipe, borrowed */
    zsock_t *store;                 /* DEALER to the store, owned */
    ly_tap_t *tap;                  /* debug publisher, owned */
    struct MHD_Daemon *daemon;      /* HTTP server, owned */
    s_shared_t shared;              /* state shared with HTTP threads */
    s_request_t *pending;           /* requests waiting for an actor, borrowed */
    bool verbose;                   /* log every request */
} self_t;

static void s_readyz (s_request_t *request);
static void s_healthz (s_request_t *request);
static void s_metrics (s_request_t *request);

static const s_route_t s_routes [] = {
    { "GET", "/healthz", "/healthz", S_LOCAL, s_healthz },
    { "GET", "/readyz",  "/readyz",  S_ACTOR_CALL, s_readyz },
    { "GET", "/metrics", "/metrics", S_LOCAL, s_metrics },
};
#define S_ROUTES (sizeof (s_routes) / sizeof (s_routes [0]))

//  Sets the answer; takes over body (may be NULL: empty).
static void
s_answer (s_request_t *request, unsigned status, char *body)
{
    free (request->body);
    request->status = status;
    request->body = body;
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
s_healthz (s_request_t *request)
{
    s_answer (request, MHD_HTTP_OK, strdup ("{\"status\":\"ok\"}"));
}

static void
s_metrics (s_request_t *request)
{
    char *text = ly_metrics_render ();
    if (text)
        s_answer (request, MHD_HTTP_OK, text);
    else
        s_answer_error (request, MHD_HTTP_INTERNAL_SERVER_ERROR, "internal", "out of memory");
}

//  Only reached when the store did not answer in time: see s_handle_store.
static void
s_readyz (s_request_t *request)
{
    s_answer_error (request, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                    "the store did not answer the readiness probe in time");
    request->retry_after = 1;
}

static const char *
s_content_type (const s_request_t *request)
{
    if (request->route && request->route->local == s_metrics && request->status == MHD_HTTP_OK)
        return "text/plain; version=0.0.4; charset=utf-8";
    return "application/json";
}

static enum MHD_Result
s_queue_answer (s_request_t *request)
{
    const char *body = request->body? request->body: "";
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (body), (void *) body, MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, s_content_type (request));
    char id [32];
    snprintf (id, sizeof id, "%" PRIu64, request->id);
    MHD_add_response_header (response, "X-Request-Id", id);
    if (request->retry_after > 0) {
        char seconds [16];
        snprintf (seconds, sizeof seconds, "%d", request->retry_after);
        MHD_add_response_header (response, MHD_HTTP_HEADER_RETRY_AFTER, seconds);
    }
    enum MHD_Result rc = MHD_queue_response (request->conn, request->status, response);
    MHD_destroy_response (response);

    char labels [128];
    snprintf (labels, sizeof labels, "route=\"%s\",code=\"%u\"",
              request->route? request->route->name: "other", request->status);
    ly_metric_add (ly_counter ("layers_http_requests_total",
                               "HTTP requests answered, by route and status", labels), 1);
    snprintf (labels, sizeof labels, "route=\"%s\"",
              request->route? request->route->name: "other");
    ly_metric_observe (ly_histogram ("layers_http_request_duration_seconds",
                                     "Time from request to response", labels),
                       (double) (ly_now_usec () - request->started_usec) / 1e6);
    return rc;
}

//  Hands a suspended request to the actor loop.
static void
s_hand_off (s_shared_t *shared, s_request_t *request)
{
    pthread_mutex_lock (&shared->lock);
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
}

static enum MHD_Result
s_access_handler (void *cls, struct MHD_Connection *conn, const char *url,
                  const char *method, const char *version, const char *upload_data,
                  size_t *upload_data_size, void **req_cls)
{
    s_shared_t *shared = (s_shared_t *) cls;
    s_request_t *request = (s_request_t *) *req_cls;
    if (!request) {
        request = (s_request_t *) calloc (1, sizeof (s_request_t));
        if (!request)
            return MHD_NO;
        request->conn = conn;
        request->started_usec = ly_now_usec ();
        pthread_mutex_lock (&shared->lock);
        request->id = ++shared->next_id;
        pthread_mutex_unlock (&shared->lock);
        for (size_t i = 0; i < S_ROUTES; i++)
            if (streq (s_routes [i].path, url)) {
                request->route = &s_routes [i];
                if (streq (s_routes [i].method, method)
                ||  (streq (method, "HEAD") && streq (s_routes [i].method, "GET"))) {
                    request->method_ok = true;
                    break;
                }
            }
        *req_cls = request;
        return MHD_YES;     //  answer once the whole request is in: keeps keep-alive
    }
    if (request->status)                //  answered, possibly after a resume
        return s_queue_answer (request);
    if (*upload_data_size) {
        *upload_data_size = 0;          //  no route takes a body yet: discard it
        return MHD_YES;
    }
    if (!request->route) {
        s_answer_error (request, MHD_HTTP_NOT_FOUND, "not_found", "no such route");
        return s_queue_answer (request);
    }
    if (!request->method_ok) {
        s_answer_error (request, MHD_HTTP_METHOD_NOT_ALLOWED, "method_not_allowed",
                        "this route does not accept that method");
        return s_queue_answer (request);
    }
    if (request->route->kind == S_LOCAL) {
        request->route->local (request);
        return s_queue_answer (request);
    }
    MHD_suspend_connection (conn);
    s_hand_off (shared, request);
    return MHD_YES;
}

static void
s_request_completed (void *cls, struct MHD_Connection *conn, void **req_cls,
                     enum MHD_RequestTerminationCode code)
{
    s_request_t *request = (s_request_t *) *req_cls;
    if (request) {
        free (request->body);
        free (request);
        *req_cls = NULL;
    }
}

static void
s_mhd_log (void *cls, const char *format, va_list ap)
{
    char line [512];
    vsnprintf (line, sizeof line, format, ap);
    size_t len = strlen (line);
    while (len && line [len - 1] == '\n')
        line [--len] = 0;
    ly_warning (S_ACTOR, "libmicrohttpd: %s", line);
}

static struct MHD_Daemon *
s_start_http (self_t *self)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV | AI_PASSIVE };
    struct addrinfo *addresses = NULL;
    char port [8];
    snprintf (port, sizeof port, "%d", ly_config.http_port);
    int rc = getaddrinfo (ly_config.http_host, port, &hints, &addresses);
    if (rc || !addresses) {
        ly_error (S_ACTOR, "could not resolve LAYERS_HTTP_ADDR \"%s\": %s",
                  ly_config.http_addr, gai_strerror (rc));
        return NULL;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL
                       | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (addresses->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_Daemon *daemon = MHD_start_daemon (
        flags, (uint16_t) ly_config.http_port, NULL, NULL,
        s_access_handler, &self->shared,
        MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, addresses->ai_addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int) S_THREADS,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) S_CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) 30,
        MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned int) 1,
        MHD_OPTION_NOTIFY_COMPLETED, s_request_completed, NULL,
        MHD_OPTION_END);
    freeaddrinfo (addresses);
    if (!daemon)
        ly_error (S_ACTOR, "could not listen on \"%s\": %s", ly_config.http_addr,
                  errno? strerror (errno): "unknown reason");
    return daemon;
}

//  Resumes a suspended request; the loop must not touch it afterwards.
static void
s_resume (s_request_t *request)
{
    MHD_resume_connection (request->conn);
}

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (!self)
        return;
    if (self->daemon) {
        //  Every suspended connection must be resumed before the daemon stops.
        pthread_mutex_lock (&self->shared.lock);
        s_request_t *queued = self->shared.head;
        self->shared.head = self->shared.tail = NULL;
        pthread_mutex_unlock (&self->shared.lock);
        s_request_t *lists [2] = { self->pending, queued };
        for (int i = 0; i < 2; i++)
            while (lists [i]) {
                s_request_t *request = lists [i];
                lists [i] = request->next;
                s_answer_error (request, MHD_HTTP_SERVICE_UNAVAILABLE, "shutting_down",
                                "the server is shutting down");
                request->retry_after = 1;
                s_resume (request);
            }
        MHD_stop_daemon (self->daemon);
    }
    zsock_destroy (&self->store);
    ly_tap_destroy (&self->tap);
    if (self->shared.wake_fd >= 0)
        close (self->shared.wake_fd);
    pthread_mutex_destroy (&self->shared.lock);
    free (self);
    *self_p = NULL;
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    pthread_mutex_init (&self->shared.lock, NULL);
    self->shared.wake_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    self->shared.next_id = (uint64_t) ly_now_usec () << 8;     //  unique across restarts
    self->store = ly_topology_open (S_ACTOR, "store");
    self->tap = ly_tap_new (S_ACTOR);
    if (self->shared.wake_fd < 0 || !self->store || !self->tap
    || !(self->daemon = s_start_http (self)))
        s_self_destroy (&self);
    return self;
}

//  Takes the requests HTTP threads handed off and sends their frames.
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
        ly_msg_t *ping = ly_msg_new (LY_MSG_PING);
        ly_msg_set_uint (ping, LY_PING_REQUEST_ID, request->id);
        ly_msg_set_str (ping, LY_PING_SENDER, S_ACTOR);
        if (ly_send (self->store, self->tap, NULL, &ping)) {
            s_answer_error (request, MHD_HTTP_SERVICE_UNAVAILABLE, "overloaded",
                            "the store queue is full");
            request->retry_after = 1;
            s_resume (request);
        }
        else {
            request->deadline = ly_mono_msec () + S_READYZ_TIMEOUT_MSEC;
            request->next = self->pending;
            self->pending = request;
        }
        request = next;
    }
}

//  Unlinks and returns the pending request with this id, or NULL.
static s_request_t *
s_take_pending (self_t *self, uint64_t id)
{
    for (s_request_t **link = &self->pending; *link; link = &(*link)->next)
        if ((*link)->id == id) {
            s_request_t *request = *link;
            *link = request->next;
            return request;
        }
    return NULL;
}

static void
s_handle_store (self_t *self)
{
    ly_msg_t *msg = ly_recv (self->store, self->tap, S_ACTOR, NULL);
    if (!msg)
        return;
    if (ly_msg_type (msg) == LY_MSG_PONG) {
        s_request_t *request = s_take_pending (self, ly_msg_uint (msg, LY_PONG_REQUEST_ID));
        if (request) {
            if (ly_msg_bool (msg, LY_PONG_DB_OK))
                s_answer (request, MHD_HTTP_OK, strdup ("{\"status\":\"ready\"}"));
            else {
                s_answer_error (request, MHD_HTTP_SERVICE_UNAVAILABLE, "not_ready",
                                "the database is unreachable");
                request->retry_after = 1;
            }
            s_resume (request);
        }
    }
    else
        ly_warning (S_ACTOR, "unexpected %s from the store", ly_msg_type_name (ly_msg_type (msg)));
    ly_msg_destroy (&msg);
}

//  Answers requests whose deadline passed; returns msec to the next deadline, or -1.
static long
s_expire (self_t *self)
{
    int64_t now = ly_mono_msec ();
    long next = -1;
    for (s_request_t **link = &self->pending; *link; ) {
        s_request_t *request = *link;
        if (request->deadline <= now) {
            *link = request->next;
            request->route->local (request);
            s_resume (request);
        }
        else {
            long wait = (long) (request->deadline - now);
            if (next < 0 || wait < next)
                next = wait;
            link = &request->next;
        }
    }
    return next;
}

void
ly_gateway_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    zsock_signal (pipe, self? 0: 1);
    if (!self)
        return;
    ly_info (S_ACTOR, "listening on http://%s", ly_config.http_addr);
    while (true) {
        zmq_pollitem_t items [] = {
            { zsock_resolve (pipe), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (self->store), 0, ZMQ_POLLIN, 0 },
            { zsock_resolve (ly_tap_socket (self->tap)), 0, ZMQ_POLLIN, 0 },
            { NULL, self->shared.wake_fd, ZMQ_POLLIN, 0 },
        };
        long timeout = s_expire (self);
        if (zmq_poll (items, 4, timeout) == -1) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (items [0].revents & ZMQ_POLLIN
        &&  ly_actor_pipe (pipe, S_ACTOR, &self->verbose, "ok"))
            break;
        if (items [1].revents & ZMQ_POLLIN)
            s_handle_store (self);
        if (items [2].revents & ZMQ_POLLIN)
            ly_tap_handle (self->tap);
        if (items [3].revents & ZMQ_POLLIN)
            s_handle_wake (self);
    }
    s_self_destroy (&self);
}
