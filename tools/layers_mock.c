/*  layers-mock: local fakes of Meta's Conversions API, TikTok's Events API, Apple's
    AdServices attribution API and a model provider, for tests and benchmarks. Each
    fake checks requests against the documented shape; everything received is kept
    for tests to read back over HTTP, and faults (errors, latency, dropped connections)
    are injected on command.
    Design: libmicrohttpd with a thread per connection, so an injected delay sleeps on
    its own connection's thread (on a condition variable that shutdown wakes) and never
    holds up another. A request is answered only once its whole body is in; it is
    journaled before the answer is queued, so a client that has its answer finds it
    in /_mock/requests. The fakes are in tools/mock/. */
#include "ly_prelude.h"
#include "ly_log.h"
#include "ly_mock.h"
#include "ly_mock_faults.h"
#include "ly_mock_journal.h"
#include <microhttpd.h>
#include <netdb.h>
#include <arpa/inet.h>

#define S_ACTOR "mock"
#define S_DEFAULT_LISTEN "127.0.0.1:8090"
#define S_MAX_BODY (64 * 1024 * 1024)
#define S_CONNECTION_LIMIT 1000
#define S_CONNECTION_TIMEOUT_SEC 120

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: layers-mock [--listen HOST:PORT] [OPTIONS]\n"
"\n"
"Serves fakes of the ad networks and a model provider that check what they receive\n"
"against the documented request shapes, keep every request for tests to read back,\n"
"and inject faults on command. The first line on stdout is\n"
"  listening on http://HOST:PORT\n"
"SIGINT or SIGTERM stops it (exit 0).\n"
"\n"
"Options:\n"
"  --listen HOST:PORT   address to serve (" S_DEFAULT_LISTEN "); port 0 picks a free one\n"
"  --max-records N      requests kept for /_mock/requests (100000); the oldest go first\n"
"  --max-record-mib N   and at most this much of their bodies (256)\n"
"  --verbose            log every request (LAYERS_LOG_LEVEL=debug does the same)\n"
"  --help               show this help and exit\n"
"\n"
"Fakes (point Layers at them with LAYERS_META_URL=http://HOST:PORT/meta,\n"
"LAYERS_TIKTOK_URL=http://HOST:PORT/tiktok,\n"
"LAYERS_ADSERVICES_URL=http://HOST:PORT/apple/api/v1/, LAYERS_MODEL_URL=http://HOST:PORT/model/v1):\n"
"  POST /meta/{version}/{dataset_id}/events\n"
"      Meta Conversions API. access_token in the query string or the body; a JSON body or\n"
"      a form (data=<json>&access_token=...); data: 1 to 1000 events, each with\n"
"      event_name, event_time (seconds, at most 7 days old), event_id, action_source and,\n"
"      for \"app\", app_data (advertiser_tracking_enabled, application_tracking_enabled,\n"
"      extinfo: 16 strings, [0] \"i2\" or \"a2\"); user_data em / ph / external_id as\n"
"      SHA-256 hex. 200 {\"events_received\", \"messages\", \"fbtrace_id\"}, or 400 with\n"
"      Graph's error object (code 100, error_subcode, error_user_msg naming data[i].field).\n"
"      An access_token starting \"bad-\" or \"expired-\" is refused with code 190.\n"
"  POST /tiktok/open_api/v1.3/event/track/\n"
"      TikTok Events API 2.0. Access-Token header; {event_source, event_source_id, data:\n"
"      1 to 1000 events with event, event_time (seconds), event_id, user (email / phone\n"
"      as SHA-256 hex), properties, app}. HTTP 200 {\"code\": 0, \"message\": \"OK\",\n"
"      \"request_id\", \"data\": {}}; code 40002 for a wrong shape, 40104 without a token,\n"
"      40105 for a token starting \"bad-\".\n"
"  POST /apple/api/v1/\n"
"      Apple AdServices, the token as text/plain. By the token's prefix: \"notyet-K-\"\n"
"      404 the first K times, \"bad-\" 400, \"noattr-\" 200 {\"attribution\": false},\n"
"      \"error-\" 500; any other token 200 with an attribution record.\n"
"  POST /model/v1/chat/completions, /model/v1/images/generations (OpenAI-compatible,\n"
"      Authorization: Bearer), /model/v1/messages (Anthropic-compatible, x-api-key):\n"
"      a fixed completion, n small PNGs as b64_json.\n"
"\n"
"Control:\n"
"  GET    /_mock/healthz        200 {\"status\": \"ok\"}\n"
"  GET    /_mock/requests       what the fakes received, oldest first: seq, time, service,\n"
"                               method, path, query, headers (lower case), body (parsed\n"
"                               JSON, a form as an object, else text), status (0: dropped),\n"
"                               dropped, delay_ms, faults, errors, warnings, events,\n"
"                               response. ?service=meta|tiktok|apple|model, ?since=SEQ,\n"
"                               ?limit=N (the newest N), ?bodies=0\n"
"  DELETE /_mock/requests       forget them (and the counters)\n"
"  GET    /_mock/stats          per service: requests, events, refused, faulted, dropped\n"
"  POST   /_mock/faults         add a fault (or an array of them); 201 with its id:\n"
"      {\"service\": \"meta\"|\"tiktok\"|\"apple\"|\"model\"|\"*\", \"count\": N (1; -1: until\n"
"       cleared), \"status\": 500, \"body\": JSON or text (default: the service's own error\n"
"       body for status / code; a body alone answers 200), \"code\": 17, \"subcode\": n,\n"
"       \"message\": \"...\", \"content_type\": \"...\", \"headers\": {...}, \"delay_ms\": 0,\n"
"       \"drop\": false (close the connection without answering),\n"
"       \"match\": \"substring of the body\"}\n"
"      Faults apply in order; the first that matches a request is used and counted.\n"
"      A fault with only delay_ms adds latency and lets later faults apply too.\n"
"  GET    /_mock/faults         the queue with counts left; DELETE clears (?service=)\n"
"  POST   /_mock/reset          forget requests, faults and Apple's \"notyet\" counters\n");
}

typedef struct {
    ly_mock_journal_t *journal;     /* owned */
    ly_mock_faults_t *faults;       /* owned */
    pthread_mutex_t lock;           /* guards stopping, for delays */
    pthread_cond_t wake;            /* signalled when stopping */
    bool stopping;
} s_mock_t;

//  A request's body as it arrives.
typedef struct {
    char *data;                     /* NUL-terminated, owned */
    size_t size;
    size_t capacity;
    bool too_large;                 /* passed S_MAX_BODY; the rest was discarded */
} s_upload_t;

static const ly_mock_fake_t s_fakes [] = {
    { LY_MOCK_META,   "/meta",   ly_mock_meta_handle,   ly_mock_meta_fail },
    { LY_MOCK_TIKTOK, "/tiktok", ly_mock_tiktok_handle, ly_mock_tiktok_fail },
    { LY_MOCK_APPLE,  "/apple",  ly_mock_apple_handle,  ly_mock_apple_fail },
    { LY_MOCK_MODEL,  "/model",  ly_mock_model_handle,  ly_mock_model_fail },
};
#define S_FAKES (sizeof s_fakes / sizeof s_fakes [0])

static bool
s_upload_append (s_upload_t *upload, const char *data, size_t size)
{
    if (upload->too_large || upload->size + size > S_MAX_BODY) {
        upload->too_large = true;
        return true;
    }
    if (upload->size + size + 1 > upload->capacity) {
        size_t capacity = upload->capacity? upload->capacity: 4096;
        while (capacity < upload->size + size + 1)
            capacity *= 2;
        char *grown = realloc (upload->data, capacity);
        if (!grown)
            return false;
        upload->data = grown;
        upload->capacity = capacity;
    }
    memcpy (upload->data + upload->size, data, size);
    upload->size += size;
    upload->data [upload->size] = 0;
    return true;
}

//  Waits delay_ms, or less when shutting down.
static void
s_delay (s_mock_t *self, int64_t delay_ms)
{
    if (delay_ms <= 0)
        return;
    struct timespec deadline;
    clock_gettime (CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += delay_ms / 1000;
    deadline.tv_nsec += (long) (delay_ms % 1000) * 1000000;
    if (deadline.tv_nsec >= 1000000000) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock (&self->lock);
    while (!self->stopping
       &&  pthread_cond_timedwait (&self->wake, &self->lock, &deadline) != ETIMEDOUT)
        ;
    pthread_mutex_unlock (&self->lock);
}

typedef struct {
    json_t *into;                   /* object being filled, borrowed */
    bool lower;                     /* lower-case the names */
} s_collect_t;

static enum MHD_Result
s_collect_value (void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    s_collect_t *collect = cls;
    char name [256];
    snprintf (name, sizeof name, "%s", key? key: "");
    if (collect->lower)
        for (char *c = name; *c; c++)
            *c = (char) tolower ((unsigned char) *c);
    json_t *name_value = ly_mock_text_value (name, strlen (name));
    const char *text = json_string_value (name_value);
    if (text && *text)
        json_object_set_new (collect->into, text,
                             ly_mock_text_value (value? value: "", value? strlen (value): 0));
    json_decref (name_value);
    return MHD_YES;
}

//  The connection's values of one kind as an object. Caller owns.
static json_t *
s_collect (struct MHD_Connection *conn, enum MHD_ValueKind kind, bool lower)
{
    s_collect_t collect = { json_object (), lower };
    MHD_get_connection_values (conn, kind, s_collect_value, &collect);
    return collect.into;
}

static enum MHD_Result
s_send (struct MHD_Connection *conn, unsigned status, const char *body,
        const char *content_type, json_t *headers)
{
    struct MHD_Response *response = MHD_create_response_from_buffer (
        body? strlen (body): 0, (void *) (body? body: ""), MHD_RESPMEM_MUST_COPY);
    if (!response)
        return MHD_NO;
    if (body && content_type)
        MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    const char *name;
    json_t *value;
    json_object_foreach (headers, name, value)
        if (json_is_string (value))
            MHD_add_response_header (response, name, json_string_value (value));
    enum MHD_Result rc = MHD_queue_response (conn, status, response);
    MHD_destroy_response (response);
    return rc;
}

//  Answers a control request with JSON (taken over).
static enum MHD_Result
s_send_json (struct MHD_Connection *conn, unsigned status, json_t *body)
{
    char *text = json_dumps (body, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref (body);
    enum MHD_Result rc = s_send (conn, status, text? text: "null", "application/json", NULL);
    free (text);
    return rc;
}

static enum MHD_Result
s_send_error (struct MHD_Connection *conn, unsigned status, const char *message)
{
    return s_send_json (conn, status, json_pack ("{s:s}", "error", message));
}

//  The fault's answer, into an initialized answer.
static void
s_fault_answer (const ly_mock_fake_t *fake, const ly_mock_request_t *request,
                const ly_mock_plan_t *plan, ly_mock_answer_t *answer)
{
    if (plan->body) {
        answer->status = plan->spec.status? plan->spec.status: 200;
        if (json_is_string (plan->body)) {
            answer->body = strdup (json_string_value (plan->body));
            answer->content_type = "text/plain; charset=utf-8";
        }
        else {
            answer->body = json_dumps (plan->body, JSON_COMPACT | JSON_ENCODE_ANY);
            answer->content_type = "application/json; charset=UTF-8";
        }
    }
    else
        fake->fail (request, &plan->spec, answer);
    if (plan->content_type)
        answer->content_type = plan->content_type;
    if (plan->headers) {
        if (!answer->headers)
            answer->headers = json_object ();
        json_object_update (answer->headers, plan->headers);
    }
}

static enum MHD_Result
s_serve_fake (s_mock_t *self, struct MHD_Connection *conn, const ly_mock_fake_t *fake,
              const char *url, const char *method, s_upload_t *upload)
{
    json_t *path = ly_mock_text_value (url, strlen (url));
    if (!json_is_string (path)) {
        json_decref (path);
        return s_send_error (conn, 500, "out of memory");
    }
    ly_mock_request_t request = {
        .service = fake->service,
        .method = method,
        .path = json_string_value (path),
        .query = s_collect (conn, MHD_GET_ARGUMENT_KIND, false),
        .headers = s_collect (conn, MHD_HEADER_KIND, true),
        .body = upload->data? upload->data: "",
        .body_size = upload->size,
    };
    request.subpath = request.path + strlen (fake->prefix);
    ly_mock_plan_t plan;
    ly_mock_faults_take (self->faults, fake->service, request.body, request.body_size, &plan);
    request.commit = !plan.answer && !plan.drop;

    ly_mock_answer_t own;
    ly_mock_answer_init (&own);
    if (upload->too_large) {
        ly_mock_error (&own, "body: larger than %d MiB", S_MAX_BODY / (1024 * 1024));
        ly_mock_answer_json (&own, 413, json_pack ("{s:s}", "error", "request body too large"));
    }
    else
        fake->handle (&request, &own);
    ly_mock_answer_t injected;
    ly_mock_answer_init (&injected);
    if (plan.answer)
        s_fault_answer (fake, &request, &plan, &injected);
    const ly_mock_answer_t *answer = plan.answer? &injected: &own;

    s_delay (self, plan.delay_ms);

    ly_mock_entry_t *entry = ly_mock_entry_new ();
    if (entry) {
        entry->time_usec = ly_now_usec ();
        entry->service = fake->service;
        entry->method = strdup (method);
        entry->path = strdup (request.path);
        //  Copies, never shared references: jansson's reference counts are not safe
        //  across threads, and the journal outlives this request.
        entry->query = json_deep_copy (request.query);
        entry->headers = json_deep_copy (request.headers);
        entry->body = malloc (request.body_size + 1);      //  every byte, NULs too
        if (entry->body) {
            memcpy (entry->body, request.body, request.body_size + 1);
            entry->body_size = request.body_size;
        }
        entry->dropped = plan.drop;
        entry->status = plan.drop? 0: answer->status;
        entry->delay_ms = plan.delay_ms;
        entry->fault_ids = json_deep_copy (plan.fault_ids);
        entry->errors = json_deep_copy (own.errors);
        entry->warnings = json_deep_copy (own.warnings);
        entry->events = request.commit? own.events: 0;
        entry->refused = json_array_size (own.errors) > 0;
        if (!plan.drop && answer->body) {
            entry->response = strdup (answer->body);
            entry->response_type = strdup (answer->content_type);
        }
    }
    //  Paths carry dataset ids, which the log's scrubber would take for phone numbers:
    //  name the request by its seq in /_mock/requests instead.
    uint64_t seq = entry? ly_mock_journal_add (self->journal, &entry): 0;
    if (json_array_size (own.errors) > 0)
        ly_info (S_ACTOR, "%s refused request %" PRIu64 ": %s", ly_mock_service_name (fake->service),
                 seq, ly_mock_first_error (&own));
    ly_debug (S_ACTOR, "%s request %" PRIu64 ": %s %u%s, %d events",
              ly_mock_service_name (fake->service), seq, plan.drop? "dropped": "answered",
              answer->status, json_array_size (plan.fault_ids)? " (fault)": "",
              request.commit? own.events: 0);

    enum MHD_Result rc = plan.drop? MHD_NO
                       : s_send (conn, answer->status, answer->body, answer->content_type,
                                 answer->headers);
    ly_mock_answer_reset (&own);
    ly_mock_answer_reset (&injected);
    ly_mock_plan_reset (&plan);
    json_decref (request.query);
    json_decref (request.headers);
    json_decref (path);
    return rc;
}

//  A non-negative integer query argument; 0 / -1 (absent: 0 with *value untouched).
static int
s_query_number (struct MHD_Connection *conn, const char *name, uint64_t *value)
{
    const char *text = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, name);
    if (!text)
        return 0;
    char *end = NULL;
    errno = 0;
    unsigned long long number = strtoull (text, &end, 10);
    if (!*text || *end || errno || *text == '-')
        return -1;
    *value = number;
    return 0;
}

//  ?service=NAME, or every service when absent; 0 / -1.
static int
s_query_service (struct MHD_Connection *conn, int *service)
{
    const char *name = MHD_lookup_connection_value (conn, MHD_GET_ARGUMENT_KIND, "service");
    *service = LY_MOCK_ANY_SERVICE;
    return name? ly_mock_service_parse (name, true, service): 0;
}

static enum MHD_Result
s_add_faults (s_mock_t *self, struct MHD_Connection *conn, s_upload_t *upload)
{
    json_error_t error;
    json_t *spec = upload->size? json_loadb (upload->data, upload->size, 0, &error): NULL;
    if (!spec)
        return s_send_error (conn, 400, "the body must be a JSON object (a fault) or an array of them");
    json_t *specs = json_is_array (spec)? json_incref (spec): json_pack ("[O]", spec);
    json_t *added = json_array ();
    char err [256] = "";
    for (size_t i = 0; i < json_array_size (specs); i++) {
        json_t *fault = ly_mock_faults_add (self->faults, json_array_get (specs, i), err, sizeof err);
        if (!fault)
            break;
        json_array_append_new (added, fault);
    }
    enum MHD_Result rc;
    if (json_array_size (added) < json_array_size (specs)) {
        //  All or nothing: take back the ones this request added.
        for (size_t i = 0; i < json_array_size (added); i++)
            ly_mock_faults_remove (self->faults, (uint64_t) json_integer_value (
                                   json_object_get (json_array_get (added, i), "id")));
        char message [320];
        snprintf (message, sizeof message, "invalid fault: %s", err);
        rc = s_send_error (conn, 400, message);
    }
    else {
        for (size_t i = 0; i < json_array_size (added); i++) {
            json_t *fault = json_array_get (added, i);
            ly_info (S_ACTOR, "fault %" JSON_INTEGER_FORMAT " added for %s: status %"
                     JSON_INTEGER_FORMAT ", count %" JSON_INTEGER_FORMAT ", delay %"
                     JSON_INTEGER_FORMAT " ms%s%s",
                     json_integer_value (json_object_get (fault, "id")),
                     json_string_value (json_object_get (fault, "service")),
                     json_integer_value (json_object_get (fault, "status")),
                     json_integer_value (json_object_get (fault, "count")),
                     json_integer_value (json_object_get (fault, "delay_ms")),
                     json_is_true (json_object_get (fault, "drop"))? ", drop": "",
                     json_object_get (fault, "match")? ", with match": "");
        }
        rc = s_send_json (conn, 201, json_is_array (spec)? json_incref (added)
                                                          : json_incref (json_array_get (added, 0)));
    }
    json_decref (added);
    json_decref (specs);
    json_decref (spec);
    return rc;
}

static enum MHD_Result
s_serve_control (s_mock_t *self, struct MHD_Connection *conn, const char *url,
                 const char *method, s_upload_t *upload)
{
    bool get = streq (method, "GET"), post = streq (method, "POST"),
         delete = streq (method, "DELETE");
    if (streq (url, "/_mock/healthz")) {
        if (!get)
            return s_send_error (conn, 405, "use GET");
        return s_send_json (conn, 200, json_pack ("{s:s}", "status", "ok"));
    }
    if (streq (url, "/_mock/requests")) {
        int service;
        if (s_query_service (conn, &service))
            return s_send_error (conn, 400, "service must be meta, tiktok, apple or model");
        if (delete)
            return s_send_json (conn, 200, json_pack ("{s:I}", "cleared",
                                (json_int_t) ly_mock_journal_clear (self->journal)));
        if (!get)
            return s_send_error (conn, 405, "use GET or DELETE");
        uint64_t since = 0, limit = 0, bodies = 1;
        if (s_query_number (conn, "since", &since) || s_query_number (conn, "limit", &limit)
        ||  s_query_number (conn, "bodies", &bodies))
            return s_send_error (conn, 400, "since, limit and bodies must be non-negative integers");
        return s_send_json (conn, 200, ly_mock_journal_list (self->journal, service, since,
                                                             (size_t) limit, bodies != 0));
    }
    if (streq (url, "/_mock/stats")) {
        if (!get)
            return s_send_error (conn, 405, "use GET");
        return s_send_json (conn, 200, ly_mock_journal_stats (self->journal));
    }
    if (streq (url, "/_mock/faults")) {
        if (get)
            return s_send_json (conn, 200, ly_mock_faults_list (self->faults));
        if (post)
            return s_add_faults (self, conn, upload);
        if (delete) {
            int service;
            if (s_query_service (conn, &service))
                return s_send_error (conn, 400, "service must be meta, tiktok, apple, model or *");
            size_t cleared = ly_mock_faults_clear (self->faults, service);
            ly_info (S_ACTOR, "faults cleared: %zu", cleared);
            return s_send_json (conn, 200, json_pack ("{s:I}", "cleared", (json_int_t) cleared));
        }
        return s_send_error (conn, 405, "use GET, POST or DELETE");
    }
    if (streq (url, "/_mock/reset")) {
        if (!post)
            return s_send_error (conn, 405, "use POST");
        ly_mock_journal_clear (self->journal);
        ly_mock_faults_clear (self->faults, LY_MOCK_ANY_SERVICE);
        ly_mock_apple_reset ();
        return s_send_json (conn, 200, json_pack ("{s:s}", "status", "ok"));
    }
    return s_send_error (conn, 404, "no such control route; see layers-mock --help");
}

static const ly_mock_fake_t *
s_fake_for (const char *url)
{
    for (size_t i = 0; i < S_FAKES; i++) {
        size_t len = strlen (s_fakes [i].prefix);
        if (strncmp (url, s_fakes [i].prefix, len) == 0 && (url [len] == '/' || url [len] == 0))
            return &s_fakes [i];
    }
    return NULL;
}

static enum MHD_Result
s_access_handler (void *cls, struct MHD_Connection *conn, const char *url,
                  const char *method, const char *version, const char *upload_data,
                  size_t *upload_data_size, void **req_cls)
{
    s_mock_t *self = cls;
    s_upload_t *upload = *req_cls;
    if (!upload) {
        upload = calloc (1, sizeof *upload);
        if (!upload)
            return MHD_NO;
        *req_cls = upload;
        return MHD_YES;         //  answer once the whole body is in
    }
    if (*upload_data_size > 0) {
        bool ok = s_upload_append (upload, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return ok? MHD_YES: MHD_NO;
    }
    if (strncmp (url, "/_mock/", 7) == 0)
        return s_serve_control (self, conn, url, method, upload);
    const ly_mock_fake_t *fake = s_fake_for (url);
    if (fake)
        return s_serve_fake (self, conn, fake, url, method, upload);
    return s_send_error (conn, 404, "no such route: fakes live under /meta, /tiktok, /apple and "
                                    "/model, controls under /_mock; see layers-mock --help");
}

static void
s_request_completed (void *cls, struct MHD_Connection *conn, void **req_cls,
                     enum MHD_RequestTerminationCode code)
{
    s_upload_t *upload = *req_cls;
    if (upload) {
        free (upload->data);
        free (upload);
        *req_cls = NULL;
    }
}

static void
s_mhd_log (void *cls, const char *format, va_list args)
{
    char text [512];
    vsnprintf (text, sizeof text, format, args);
    size_t len = strlen (text);
    while (len > 0 && (text [len - 1] == '\n' || text [len - 1] == '.'))
        text [--len] = 0;
    if (len > 0)
        text [0] = (char) tolower ((unsigned char) text [0]);
    ly_warning (S_ACTOR, "libmicrohttpd: %s", text);
}

//  Resolves "HOST:PORT" (IPv6 in brackets). Caller frees *result with freeaddrinfo.
//  0; -1: not HOST:PORT; -2: the host does not resolve (said on stderr).
static int
s_resolve (const char *listen, struct addrinfo **result)
{
    const char *text = listen;
    const char *colon = strrchr (listen, ':');
    if (!colon || colon == listen || !colon [1] || strspn (colon + 1, "0123456789") != strlen (colon + 1)
    ||  strlen (colon + 1) > 5 || atoi (colon + 1) > 65535)
        return -1;
    char host [256];
    size_t len = (size_t) (colon - listen);
    if (listen [0] == '[') {
        if (len < 3 || listen [len - 1] != ']')
            return -1;
        listen++;
        len -= 2;
    }
    if (len >= sizeof host)
        return -1;
    memcpy (host, listen, len);
    host [len] = 0;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    int error = getaddrinfo (host, colon + 1, &hints, result);
    if (error)
        fprintf (stderr, "layers-mock: --listen \"%s\": host \"%s\" does not resolve (%s)\n",
                 text, host, gai_strerror (error));
    return error? -2: 0;
}

static int
s_parse_size (const char *text, size_t min, size_t max, size_t *value)
{
    char *end = NULL;
    errno = 0;
    unsigned long long number = strtoull (text, &end, 10);
    if (!*text || *end || errno || *text == '-' || number < min || number > max)
        return -1;
    *value = (size_t) number;
    return 0;
}

int
main (int argc, char *argv [])
{
    const char *listen = S_DEFAULT_LISTEN;
    size_t max_records = 100000, max_mib = 256;
    bool verbose = false;
    zsys_handler_set (NULL);
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--help") || streq (argv [i], "-h")) {
            s_usage (stdout);
            return 0;
        }
        else
        if (streq (argv [i], "--version")) {
            printf ("layers-mock %s\n", LY_VERSION);
            return 0;
        }
        else
        if (streq (argv [i], "--listen") && i + 1 < argc)
            listen = argv [++i];
        else
        if (streq (argv [i], "--max-records") && i + 1 < argc) {
            if (s_parse_size (argv [++i], 1, 10000000, &max_records)) {
                fprintf (stderr, "layers-mock: --max-records takes a number from 1 to 10000000\n");
                return 2;
            }
        }
        else
        if (streq (argv [i], "--max-record-mib") && i + 1 < argc) {
            if (s_parse_size (argv [++i], 1, 65536, &max_mib)) {
                fprintf (stderr, "layers-mock: --max-record-mib takes a number from 1 to 65536\n");
                return 2;
            }
        }
        else
        if (streq (argv [i], "--verbose"))
            verbose = true;
        else {
            fprintf (stderr, "layers-mock: unknown or incomplete option \"%s\"; see --help\n", argv [i]);
            return 2;
        }
    }
    ly_log_level_t level = LY_LOG_INFO;
    const char *level_text = getenv ("LAYERS_LOG_LEVEL");
    if (level_text && *level_text && ly_log_level_parse (level_text, &level)) {
        fprintf (stderr, "layers-mock: LAYERS_LOG_LEVEL \"%s\" is not debug, info, warning or error\n",
                 level_text);
        return 2;
    }
    ly_log_init (verbose? LY_LOG_DEBUG: level, S_ACTOR);
    struct addrinfo *address = NULL;
    int resolved = s_resolve (listen, &address);
    if (resolved == -2)
        return 2;
    if (resolved) {
        fprintf (stderr, "layers-mock: --listen \"%s\" is not HOST:PORT (PORT from 0 to 65535;"
                 " an IPv6 address in brackets, as in [::1]:8090)\n", listen);
        return 2;
    }

    //  Signals are taken with sigwait by this thread; every thread started later
    //  inherits the mask.
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    signal (SIGPIPE, SIG_IGN);

    s_mock_t self = { 0 };
    pthread_mutex_init (&self.lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&self.wake, &attr);
    pthread_condattr_destroy (&attr);
    self.journal = ly_mock_journal_new (max_records, max_mib * 1024 * 1024);
    self.faults = ly_mock_faults_new ();
    int rc = 1;
    struct MHD_Daemon *daemon = NULL;
    if (!self.journal || !self.faults) {
        ly_error (S_ACTOR, "out of memory");
        goto cleanup;
    }
    char own [INET6_ADDRSTRLEN] = "";
    if (getnameinfo (address->ai_addr, address->ai_addrlen, own, sizeof own, NULL, 0,
                     NI_NUMERICHOST) == 0)
        ly_log_own_address (own);       //  the fake's own address is no client's: shown
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION
                       | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (address->ai_family == AF_INET6)
        flags |= MHD_USE_DUAL_STACK;    //  [::] takes IPv4 clients too
    daemon = MHD_start_daemon (flags, 0, NULL, NULL, s_access_handler, &self,
        MHD_OPTION_EXTERNAL_LOGGER, s_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, address->ai_addr,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) S_CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) S_CONNECTION_TIMEOUT_SEC,
        MHD_OPTION_NOTIFY_COMPLETED, s_request_completed, NULL,
        MHD_OPTION_END);
    if (!daemon) {
        ly_error (S_ACTOR, "could not listen on \"%s\": %s", listen, strerror (errno));
        goto cleanup;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info (daemon, MHD_DAEMON_INFO_BIND_PORT);
    char host [INET6_ADDRSTRLEN] = "?";
    getnameinfo (address->ai_addr, address->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST);
    bool v6 = address->ai_family == AF_INET6;
    printf ("listening on http://%s%s%s:%u\n", v6? "[": "", host, v6? "]": "",
            info? (unsigned) info->port: 0);
    fflush (stdout);
    ly_info (S_ACTOR, "listening on http://%s%s%s:%u", v6? "[": "", host, v6? "]": "",
             info? (unsigned) info->port: 0);

    int signum;
    do
        signum = sigwaitinfo (&signals, NULL);
    while (signum == -1 && errno == EINTR);
    ly_info (S_ACTOR, "stopping on signal %d", signum);

    pthread_mutex_lock (&self.lock);
    self.stopping = true;
    pthread_cond_broadcast (&self.wake);
    pthread_mutex_unlock (&self.lock);
    MHD_stop_daemon (daemon);
    rc = 0;
cleanup:
    freeaddrinfo (address);
    ly_mock_journal_destroy (&self.journal);
    ly_mock_faults_destroy (&self.faults);
    ly_mock_apple_reset ();
    pthread_cond_destroy (&self.wake);
    pthread_mutex_destroy (&self.lock);
    return rc;
}
