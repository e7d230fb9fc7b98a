/*  ly_api.c: the api actor (see ly_api.h). Database sessions are opened on demand and
    re-opened at most once a second after a failure; while the database is down, lookups
    answer "unavailable" so the gateway can say 503 rather than 401. The workers are
    served as a broker serves them: each says READY, gets one request, answers it, and
    is free again; requests wait in arrival order while all are busy (s_dispatch). */
#include "ly_api.h"
#include "ly_apiv1.h"
#include "ly_actor.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_log.h"
#include "ly_topology.h"

#define S_ACTOR "api"
#define S_ANSWER_MAX (LY_MSG_MAX_FRAME - 64 * 1024)   /* an answer body that fits a frame */
#define S_WORKERS 4                 /* partner API requests served at once */
#define S_QUEUE_MAX 1000            /* requests waiting for a worker; more get 503 */
#define S_QUEUE_WAIT_MSEC 30000     /* the gateway's deadline: a request that waited this
                                       long was answered 503 there, and is dropped */
#define S_PER_TOKEN (S_WORKERS - 1) /* workers one API token may hold at once: one is left
                                       for everybody else's requests */

//  A partner API request waiting for a worker
typedef struct {
    zframe_t *gateway;      /* routing id of the gateway that sent it, owned */
    zframe_t *request;      /* the API_REQUEST frame, owned */
    char token [65];        /* its token's SHA-256 hex, "" without one */
    int64_t queued;         /* monotonic msec it came */
} s_job_t;

typedef struct {
    zsock_t *pipe;          /* actor pipe, borrowed */
    zsock_t *router;        /* "api" endpoint, owned */
    ly_tap_t *tap;          /* debug publisher, owned */
    ly_db_session_t *auth;  /* session as layers_auth, owned */
    zsock_t *workers;       /* inproc ROUTER the workers connect to, owned */
    char endpoint [64];     /* its address */
    ly_apiv1_t *v1 [S_WORKERS];     /* each worker's handlers and sessions, owned */
    zactor_t *worker [S_WORKERS];   /* partner API workers, owned */
    bool idle [S_WORKERS];  /* the worker is free for a request */
    char serving [S_WORKERS][65];   /* the token of the request each worker serves */
    zlistx_t *queue;        /* requests (s_job_t) waiting, oldest first */
    bool verbose;           /* log every request */
} self_t;

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        //  A worker's statement is cancelled, and its request fails at its next one
        //  (503): each then sees $TERM at once
        for (size_t i = 0; i < S_WORKERS; i++)
            if (self->v1 [i])
                ly_apiv1_cancel (self->v1 [i]);
        for (size_t i = 0; i < S_WORKERS; i++) {
            zactor_destroy (&self->worker [i]);
            ly_apiv1_destroy (&self->v1 [i]);
        }
        zsock_destroy (&self->workers);
        zlistx_destroy (&self->queue);
        zsock_destroy (&self->router);
        ly_tap_destroy (&self->tap);
        ly_db_session_destroy (&self->auth);
        free (self);
        *self_p = NULL;
    }
}

static char *
s_auth_setup (void *arg)
{
    //  A key found is stamped last_used_at: the gateway asks again every 5 s while the
    //  key is in use, so the stamp is at most that far behind. This session serves the
    //  actor's own thread (every lookup, readiness, the workers' answers): the stamp
    //  skips a row another transaction holds (a project being deleted, a revocation)
    //  rather than wait for it, and a statement that waits anyway (a table a migration
    //  locked) gives up after 2 s: the gateway then says 503, or serves the key it knew.
    return strdup ("SET statement_timeout = '2s';"
        " PREPARE key_lookup AS"
        " WITH found AS ("
        "  SELECT k.key_id, k.org_id, k.project_id, coalesce (p.default_country_code, '') AS cc"
        "    FROM sdk_keys k JOIN projects p ON p.project_id = k.project_id"
        "   WHERE k.key_sha256 = decode ($1, 'hex') AND k.revoked_at IS NULL),"
        " touch AS ("
        "  UPDATE sdk_keys SET last_used_at = now ()"
        "   WHERE key_id IN (SELECT k.key_id FROM sdk_keys k JOIN found f USING (key_id)"
        "                     FOR UPDATE OF k SKIP LOCKED))"
        " SELECT org_id, project_id, cc FROM found");
}

static void s_worker (zsock_t *pipe, void *args);

typedef struct {
    const char *endpoint;   /* the broker's inproc address, borrowed */
    ly_apiv1_t *v1;         /* the worker's handlers, borrowed */
    size_t index;           /* its place: its routing id is "w<index>" */
} s_worker_args_t;

static void
s_job_destroy (void **item)
{
    s_job_t *job = *(s_job_t **) item;
    if (job) {
        zframe_destroy (&job->gateway);
        zframe_destroy (&job->request);
        free (job);
        *item = NULL;
    }
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    self->router = ly_topology_open (S_ACTOR, "api");
    self->tap = ly_tap_new (S_ACTOR);
    self->auth = ly_db_session_new (LY_DB_AUTH, S_ACTOR, s_auth_setup, NULL);
    self->queue = zlistx_new ();
    zlistx_set_destructor (self->queue, s_job_destroy);
    //  One endpoint per actor: --threads runs one api actor per process, tests several
    snprintf (self->endpoint, sizeof self->endpoint, "inproc://layers-api-workers-%p",
              (void *) self);
    self->workers = zsock_new_router (self->endpoint);
    for (size_t i = 0; self->workers && i < S_WORKERS; i++) {
        self->v1 [i] = ly_apiv1_new ();
        s_worker_args_t args = { self->endpoint, self->v1 [i], i };
        //  zactor_new returns once the worker has read its arguments and signalled
        if (!self->v1 [i] || !(self->worker [i] = zactor_new (s_worker, &args))) {
            ly_error (S_ACTOR, "could not start partner API worker %zu", i);
            zsock_destroy (&self->workers);
        }
    }
    if (!self->router || !self->tap || !self->workers)
        s_self_destroy (&self);
    return self;
}

static ly_msg_t *
s_key_lookup (self_t *self, ly_msg_t *request)
{
    const char *hash = ly_msg_str (request, LY_KEY_LOOKUP_KEY_SHA256);
    ly_msg_t *reply = ly_msg_new (LY_MSG_KEY_INFO);
    ly_msg_set_uint (reply, LY_KEY_INFO_REQUEST_ID, ly_msg_uint (request, LY_KEY_LOOKUP_REQUEST_ID));
    ly_msg_set_str (reply, LY_KEY_INFO_KEY_SHA256, hash);
    if (!hash || !ly_is_sha256_hex (hash, ly_msg_str_len (request, LY_KEY_LOOKUP_KEY_SHA256))) {
        ly_msg_set_str (reply, LY_KEY_INFO_STATUS, "unknown");
        return reply;
    }
    const char *params [] = { hash };
    PGresult *res = ly_db_session_read (self->auth, "key_lookup", NULL, 1, params);
    if (!res) {
        ly_msg_set_str (reply, LY_KEY_INFO_STATUS, "unavailable");
        return reply;
    }
    if (PQresultStatus (res) != PGRES_TUPLES_OK) {
        ly_warning (S_ACTOR, "key lookup failed: %s", PQresultErrorMessage (res));
        ly_msg_set_str (reply, LY_KEY_INFO_STATUS, "unavailable");
        ly_db_session_check (self->auth, res);
    }
    else
    if (PQntuples (res) == 1) {
        ly_msg_set_str (reply, LY_KEY_INFO_STATUS, "found");
        ly_msg_set_str (reply, LY_KEY_INFO_ORG_ID, PQgetvalue (res, 0, 0));
        ly_msg_set_str (reply, LY_KEY_INFO_PROJECT_ID, PQgetvalue (res, 0, 1));
        if (*PQgetvalue (res, 0, 2))        //  "when set" (docs/protocol.md)
            ly_msg_set_str (reply, LY_KEY_INFO_DEFAULT_COUNTRY_CODE, PQgetvalue (res, 0, 2));
    }
    else
        ly_msg_set_str (reply, LY_KEY_INFO_STATUS, "unknown");
    PQclear (res);
    return reply;
}

//  Serves one partner API request with the /v1 handlers.
static ly_msg_t *
s_api_request (ly_apiv1_t *v1, ly_msg_t *msg)
{
    char request_id [32];
    snprintf (request_id, sizeof request_id, LY_REQUEST_ID_FORMAT, ly_msg_uint (msg, LY_API_REQUEST_REQUEST_ID));
    size_t body_len = 0;
    const char *body = (const char *) ly_msg_bin (msg, LY_API_REQUEST_BODY, &body_len);
    ly_api_request_t request = {
        .method = ly_msg_str (msg, LY_API_REQUEST_METHOD)? ly_msg_str (msg, LY_API_REQUEST_METHOD): "",
        .path = ly_msg_str (msg, LY_API_REQUEST_PATH)? ly_msg_str (msg, LY_API_REQUEST_PATH): "",
        .query = ly_msg_str (msg, LY_API_REQUEST_QUERY)? ly_msg_str (msg, LY_API_REQUEST_QUERY): "",
        .token_sha256 = ly_msg_str (msg, LY_API_REQUEST_TOKEN_SHA256),
        .idempotency_key = ly_msg_str (msg, LY_API_REQUEST_IDEMPOTENCY_KEY),
        .if_match = ly_msg_str (msg, LY_API_REQUEST_IF_MATCH),
        .content_type = ly_msg_str (msg, LY_API_REQUEST_CONTENT_TYPE),
        .request_id = request_id,
        .body = body? body: "",
        .body_len = body_len,
    };
    ly_api_response_t response = { 0 };
    ly_apiv1_handle (v1, &request, &response);
    if (response.body_len > S_ANSWER_MAX) {
        //  A frame this large would not go: the gateway would wait out its deadline
        ly_warning (S_ACTOR, "request %s: the answer of %zu bytes is too large to send",
                    request_id, response.body_len);
        char *text = zsys_sprintf ("{\"error\":{\"code\":\"answer_too_large\",\"message\":"
                                   "\"the answer would be %zu bytes, more than the %d the server "
                                   "passes: ask for less\"}}", response.body_len, S_ANSWER_MAX);
        ly_api_response_reset (&response);
        response.status = 500;
        response.body = text;
        response.body_len = strlen (text);
    }
    ly_msg_t *reply = ly_msg_new (LY_MSG_API_RESPONSE);
    ly_msg_set_uint (reply, LY_API_RESPONSE_REQUEST_ID, ly_msg_uint (msg, LY_API_REQUEST_REQUEST_ID));
    ly_msg_set_uint (reply, LY_API_RESPONSE_STATUS, response.status? response.status: 500);
    ly_msg_set_str (reply, LY_API_RESPONSE_CONTENT_TYPE, response.content_type);
    ly_msg_set_str (reply, LY_API_RESPONSE_ETAG, response.etag);
    ly_msg_set_str (reply, LY_API_RESPONSE_LOCATION, response.location);
    ly_msg_set_bin (reply, LY_API_RESPONSE_BODY, response.body? response.body: "", response.body_len);
    ly_msg_set_str (reply, LY_API_RESPONSE_ALLOW, response.allow);
    if (response.keys_changed)
        ly_msg_set_bool (reply, LY_API_RESPONSE_KEYS_CHANGED, true);
    ly_api_response_reset (&response);
    return reply;
}

//  An error answer to the partner API request msg
static ly_msg_t *
s_failed (ly_msg_t *msg, unsigned status, const char *code, const char *message)
{
    ly_msg_t *reply = ly_msg_new (LY_MSG_API_RESPONSE);
    ly_msg_set_uint (reply, LY_API_RESPONSE_REQUEST_ID, ly_msg_uint (msg, LY_API_REQUEST_REQUEST_ID));
    ly_msg_set_uint (reply, LY_API_RESPONSE_STATUS, status);
    ly_msg_set_str (reply, LY_API_RESPONSE_CONTENT_TYPE, "application/json");
    char *body = zsys_sprintf ("{\"error\":{\"code\":\"%s\",\"message\":\"%s\"}}",
                               code, message);
    ly_msg_set_bin (reply, LY_API_RESPONSE_BODY, body, strlen (body));
    zstr_free (&body);
    return reply;
}

//  A partner API worker: its own sessions (ly_apiv1), one request at a time, so that a
//  slow request holds neither the others nor the SDK key lookups. It says READY once,
//  then answers each [gateway id, request frame] with [gateway id, answer frame].
//  Serves the request a worker was given: [gateway id, request frame] in, [gateway id,
//  answer frame] out, or [gateway id] alone for a request it could not read.
static void
s_worker_serve (zsock_t *broker, ly_apiv1_t *v1)
{
    zmsg_t *job = zmsg_recv (broker);
    zframe_t *gateway = job? zmsg_pop (job): NULL;
    zframe_t *frame = job? zmsg_pop (job): NULL;
    char reason [256] = "";
    ly_msg_t *msg = frame? ly_msg_decode (zframe_data (frame), zframe_size (frame),
                                          reason, sizeof reason): NULL;
    ly_msg_t *reply = msg? s_api_request (v1, msg): NULL;
    zframe_t *answer = reply? ly_msg_encode_frame (reply, false): NULL;
    if (!answer && msg) {
        ly_msg_destroy (&reply);
        reply = s_failed (msg, 500, "internal", "the answer could not be encoded");
        answer = ly_msg_encode_frame (reply, false);
    }
    if (!answer)
        ly_warning (S_ACTOR, "dropped a request the worker could not read: %s", reason);
    zmsg_t *out = zmsg_new ();
    zmsg_append (out, &gateway);
    if (answer)
        zmsg_append (out, &answer);
    zmsg_send (&out, broker);           //  either way, the worker is free again
    ly_msg_destroy (&reply);
    ly_msg_destroy (&msg);
    zframe_destroy (&frame);
    zframe_destroy (&gateway);
    zmsg_destroy (&job);
}

static void
s_worker (zsock_t *pipe, void *args_)
{
    s_worker_args_t *args = (s_worker_args_t *) args_;
    zsock_t *broker = zsock_new (ZMQ_DEALER);
    if (broker) {
        char name [16];
        snprintf (name, sizeof name, "w%zu", args->index);
        zsock_set_identity (broker, name);
        if (zsock_connect (broker, "%s", args->endpoint))
            zsock_destroy (&broker);
    }
    ly_apiv1_t *v1 = args->v1;
    zpoller_t *poller = broker? zpoller_new (pipe, broker, NULL): NULL;
    zsock_signal (pipe, poller? 0: 1);
    if (poller)
        zstr_send (broker, "READY");
    bool verbose = false;               //  (the actor logs the answers)
    while (poller) {
        void *which = zpoller_wait (poller, -1);
        if (which == broker)
            s_worker_serve (broker, v1);
        else
        if (which == pipe? ly_actor_pipe (pipe, S_ACTOR, &verbose, NULL, NULL) != 0
                         : zpoller_terminated (poller))
            break;
    }
    zpoller_destroy (&poller);
    zsock_destroy (&broker);
}

//  Workers serving requests with this token now
static size_t
s_serving (self_t *self, const char *token)
{
    size_t count = 0;
    for (size_t i = 0; i < S_WORKERS; i++)
        count += !self->idle [i] && streq (self->serving [i], token);
    return count;
}

//  Hands waiting requests to free workers, oldest first, but never more than
//  S_PER_TOKEN of them to one token: one integration's slow requests leave a worker to
//  everybody else. Requests the gateway gave up on meanwhile are dropped.
static void
s_dispatch (self_t *self)
{
    int64_t now = ly_mono_msec ();
    size_t dropped = 0;
    s_job_t *job = (s_job_t *) zlistx_first (self->queue);
    while (job && now - job->queued >= S_QUEUE_WAIT_MSEC) {
        zlistx_delete (self->queue, zlistx_cursor (self->queue));
        dropped++;
        job = (s_job_t *) zlistx_first (self->queue);
    }
    if (dropped)
        ly_warning (S_ACTOR, "dropped %zu partner API requests that waited %d s for a worker"
                    " (the gateway answered them 503)", dropped, S_QUEUE_WAIT_MSEC / 1000);
    for (job = (s_job_t *) zlistx_first (self->queue); job; ) {
        size_t worker = 0;
        while (worker < S_WORKERS && !self->idle [worker])
            worker++;
        if (worker == S_WORKERS)
            break;
        if (s_serving (self, job->token) >= S_PER_TOKEN) {
            job = (s_job_t *) zlistx_next (self->queue);
            continue;
        }
        job = (s_job_t *) zlistx_detach_cur (self->queue);
        zmsg_t *out = zmsg_new ();
        zmsg_addstrf (out, "w%zu", worker);
        zmsg_append (out, &job->gateway);
        zmsg_append (out, &job->request);
        zmsg_send (&out, self->workers);
        self->idle [worker] = false;
        snprintf (self->serving [worker], sizeof self->serving [worker], "%s", job->token);
        s_job_destroy ((void **) &job);
        job = (s_job_t *) zlistx_next (self->queue);
    }
}

//  An answer of a worker (or its READY): to the gateway, and the worker is free again.
static void
s_handle_worker (self_t *self)
{
    zmsg_t *answer = zmsg_recv (self->workers);
    char *worker = answer? zmsg_popstr (answer): NULL;
    size_t index = worker && worker [0] == 'w'? (size_t) atoi (worker + 1): S_WORKERS;
    zstr_free (&worker);
    if (index >= S_WORKERS) {
        zmsg_destroy (&answer);
        return;
    }
    if (zmsg_size (answer) == 2) {
        //  Encoded by the worker: sent on as it is, decoded only for a debug tap
        zframe_t *gateway = zmsg_pop (answer);
        zframe_t *frame = zmsg_pop (answer);
        if (ly_tap_active (self->tap)) {
            char reason [256];
            ly_msg_t *reply = ly_msg_decode (zframe_data (frame), zframe_size (frame),
                                             reason, sizeof reason);
            if (reply)
                ly_tap_publish (self->tap, "out", reply);
            ly_msg_destroy (&reply);
        }
        if (self->verbose)
            ly_info (S_ACTOR, "answered %s", ly_msg_type_name (LY_MSG_API_RESPONSE));
        ly_send_frame (self->router, gateway, frame, ZFRAME_DONTWAIT);
        zframe_destroy (&gateway);
        zframe_destroy (&frame);
    }
    self->idle [index] = true;
    self->serving [index][0] = 0;
    zmsg_destroy (&answer);
    s_dispatch (self);
}

static void
s_handle_request (void *self_, zsock_t *sock)
{
    self_t *self = (self_t *) self_;
    if (sock == self->workers) {
        s_handle_worker (self);
        return;
    }
    zframe_t *routing_id = NULL;
    ly_msg_t *msg = ly_recv (self->router, self->tap, S_ACTOR, &routing_id);
    if (!msg)
        return;
    ly_msg_t *reply = NULL;
    if (ly_msg_type (msg) == LY_MSG_KEY_LOOKUP)
        reply = s_key_lookup (self, msg);
    else
    if (ly_msg_type (msg) == LY_MSG_API_REQUEST && zlistx_size (self->queue) < S_QUEUE_MAX) {
        s_job_t *job = (s_job_t *) calloc (1, sizeof (s_job_t));
        zframe_t *frame = job? ly_msg_encode_frame (msg, false): NULL;
        if (frame) {
            const char *token = ly_msg_str (msg, LY_API_REQUEST_TOKEN_SHA256);
            snprintf (job->token, sizeof job->token, "%s", token? token: "");
            job->gateway = routing_id;
            job->request = frame;
            job->queued = ly_mono_msec ();
            routing_id = NULL;
            zlistx_add_end (self->queue, job);
            s_dispatch (self);
            ly_msg_destroy (&msg);
            return;
        }
        free (job);
        reply = s_failed (msg, 500, "internal", "out of memory");
    }
    else
    if (ly_msg_type (msg) == LY_MSG_API_REQUEST)
        reply = s_failed (msg, 503, "overloaded", "too many partner API requests waiting; retry later");
    else
    if (ly_msg_type (msg) == LY_MSG_PING) {
        reply = ly_msg_new (LY_MSG_PONG);
        ly_msg_set_uint (reply, LY_PONG_REQUEST_ID, ly_msg_uint (msg, LY_PING_REQUEST_ID));
        ly_msg_set_str (reply, LY_PONG_SENDER, S_ACTOR);
        //  A statement, not only a connection: one the database dropped (it restarted)
        //  is not ready until it was made again
        PGresult *res = ly_db_session_read (self->auth, NULL, "SELECT 1", 0, NULL);
        ly_msg_set_bool (reply, LY_PONG_DB_OK, PQresultStatus (res) == PGRES_TUPLES_OK);
        PQclear (res);
    }
    else {
        reply = ly_msg_new (LY_MSG_ERROR);
        ly_msg_set_uint (reply, LY_ERROR_REQUEST_ID, 0);
        ly_msg_set_str (reply, LY_ERROR_CODE, "unsupported");
        ly_msg_set_str (reply, LY_ERROR_MESSAGE, "the api actor does not serve this message type");
    }
    if (self->verbose)
        ly_info (S_ACTOR, "answered %s", ly_msg_type_name (ly_msg_type (msg)));
    ly_send (self->router, self->tap, routing_id, &reply);
    zframe_destroy (&routing_id);
    ly_msg_destroy (&msg);
}

static const char *
s_status (void *self)
{
    return ly_db_session_get (((self_t *) self)->auth)? "ok": "database down";
}

void
ly_api_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    ly_actor_ready (pipe, self != NULL);
    if (!self)
        return;
    ly_db_session_get (self->auth);
    ly_actor_loop (pipe, S_ACTOR, self->tap, &self->verbose, s_status, self,
                   s_handle_request, self->router, self->workers, NULL);
    s_self_destroy (&self);
}
