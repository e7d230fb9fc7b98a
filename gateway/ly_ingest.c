/*  ly_ingest.c: the ingest actor (see ly_ingest.h). */
#include "ly_ingest.h"
#include "ly_actor.h"
#include "ly_config.h"
#include "ly_event.h"
#include "ly_log.h"
#include "ly_metrics.h"
#include "ly_topology.h"

#define S_ACTOR "ingest"
#define S_ROWS_MAX (6 << 20)    /* a request's stored rows, at most: they go to the store
                                   in one frame (LY_MSG_MAX_FRAME, 8 MiB); a 1 MiB body
                                   reaches this only with numbers that jsonb writes out
                                   long (5e-324 is 326 bytes) */
_Static_assert (S_ROWS_MAX + (2 << 20) <= LY_MSG_MAX_FRAME, "room for the rest of the frame");
#define S_UA_CACHE 10000
#define S_GEOIP_RETRY_MSEC 5000     /* a geo-IP database that did not open is tried again */

typedef struct {
    zsock_t *pipe;          /* actor pipe, borrowed */
    zsock_t *pull;          /* "ingest" endpoint, owned */
    zsock_t *store;         /* DEALER to the store, owned */
    ly_tap_t *tap;          /* debug publisher, owned */
    ly_uap_t *uap;          /* User-Agent parser, owned */
    ly_geoip_t *geoip;      /* geo-IP database, owned; NULL when not configured or
                               not opened yet (s_geoip_open) */
    int64_t geoip_tried;    /* when s_geoip_open last tried, monotonic msec; 0: never */
    ly_metric_t *accepted;  /* events turned into rows */
    ly_metric_t *rejected;  /* events refused */
    ly_metric_t *email_invalid;  /* email fields dropped */
    ly_metric_t *phone_invalid;  /* phone fields dropped */
    bool verbose;           /* log every request */
} self_t;

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        zsock_destroy (&self->pull);
        zsock_destroy (&self->store);
        ly_tap_destroy (&self->tap);
        ly_uap_destroy (&self->uap);
        ly_geoip_destroy (&self->geoip);
        free (self);
        *self_p = NULL;
    }
}

//  Opens LAYERS_GEOIP_DB when it is not open, at most every S_GEOIP_RETRY_MSEC.
//  layersd checked it at start; an actor started after it went away or broke (a
//  restart) runs without it, events getting no region, until it opens again.
static void
s_geoip_open (self_t *self)
{
    if (self->geoip || !ly_config.geoip_db)
        return;
    int64_t now = ly_mono_msec ();
    if (self->geoip_tried && now - self->geoip_tried < S_GEOIP_RETRY_MSEC)
        return;
    bool first = !self->geoip_tried;
    self->geoip_tried = now;
    char err [512];
    self->geoip = ly_geoip_new (ly_config.geoip_db, err, sizeof err);
    if (self->geoip && !first)
        ly_info (S_ACTOR, "the geo-IP database \"%s\" is open again", ly_config.geoip_db);
    else
    if (!self->geoip && first)
        ly_warning (S_ACTOR, "%s: events get no region until it opens (tried every %d s)",
                    err, S_GEOIP_RETRY_MSEC / 1000);
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    char err [512];
    self->uap = ly_uap_new (LY_UAP_DEFAULT_REGEXES, S_UA_CACHE, err, sizeof err);
    if (!self->uap)
        ly_error (S_ACTOR, "%s", err);
    s_geoip_open (self);
    self->pull = ly_topology_open (S_ACTOR, "ingest");
    self->store = ly_topology_open (S_ACTOR, "store");
    if (self->store)
        zsock_set_sndtimeo (self->store, 5000);     //  then the gateway's deadline answers
    self->tap = ly_tap_new (S_ACTOR);
    self->accepted = ly_counter ("layers_ingest_events_total", "Events scrubbed by ingest, by outcome",
                                 "outcome=\"accepted\"");
    self->rejected = ly_counter ("layers_ingest_events_total", NULL, "outcome=\"rejected\"");
    self->email_invalid = ly_counter ("layers_ingest_fields_dropped_total",
                                      "Invalid personal-data fields dropped", "field=\"email\"");
    self->phone_invalid = ly_counter ("layers_ingest_fields_dropped_total", NULL, "field=\"phone\"");
    if (!self->uap || !self->pull || !self->store || !self->tap)
        s_self_destroy (&self);
    return self;
}

//  The gateway's reason for refusing event index, if it gave one: refused holds count
//  [index, reason] pairs in index order, *cursor the first not yet passed.
static const msgpack_object_str *
s_gateway_reason (const msgpack_object *refused, uint32_t count, uint32_t *cursor, uint32_t index)
{
    for (; *cursor < count; (*cursor)++) {
        const msgpack_object *pair = &refused->via.array.ptr [*cursor];
        if (pair->type != MSGPACK_OBJECT_ARRAY || pair->via.array.size != 2
        ||  pair->via.array.ptr [0].type != MSGPACK_OBJECT_POSITIVE_INTEGER
        ||  pair->via.array.ptr [1].type != MSGPACK_OBJECT_STR)
            continue;                   //  not a pair: skipped
        uint64_t at = pair->via.array.ptr [0].via.u64;
        if (at > index)
            return NULL;
        if (at == index)
            return &pair->via.array.ptr [1].via.str;
    }
    return NULL;
}

//  Scrubs one request's events and sends them on to the store.
static void
s_handle_submit (self_t *self, ly_msg_t *submit)
{
    s_geoip_open (self);
    ly_geoip_refresh (self->geoip);
    ly_event_ctx_t ctx = {
        .org_id = ly_msg_str (submit, LY_EVENTS_SUBMIT_ORG_ID),
        .project_id = ly_msg_str (submit, LY_EVENTS_SUBMIT_PROJECT_ID),
        .received_usec = ly_msg_int (submit, LY_EVENTS_SUBMIT_RECEIVED_AT),
        .client_ip = ly_msg_str (submit, LY_EVENTS_SUBMIT_CLIENT_IP),
        .user_agent = ly_msg_str (submit, LY_EVENTS_SUBMIT_USER_AGENT),
        .user_agent_len = ly_msg_str_len (submit, LY_EVENTS_SUBMIT_USER_AGENT),
        .default_country_code = ly_msg_str (submit, LY_EVENTS_SUBMIT_DEFAULT_COUNTRY_CODE),
        .max_past_usec = ly_config.event_max_age * 1000000,
        .max_future_usec = ly_config.event_max_future * 1000000,
        .uap = self->uap,
        .geoip = self->geoip,
    };
    const msgpack_object *events = ly_msg_obj (submit, LY_EVENTS_SUBMIT_EVENTS);
    uint32_t count = events && events->type == MSGPACK_OBJECT_ARRAY? events->via.array.size: 0;

    char *rows = NULL;
    size_t rows_len = 0;
    msgpack_sbuffer rejected;
    msgpack_sbuffer_init (&rejected);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &rejected, msgpack_sbuffer_write);
    //  Rejections are packed after we know how many: collect them first.
    uint32_t *reject_index = (uint32_t *) calloc (count + 1, sizeof (uint32_t));
    char **reject_reason = (char **) calloc (count + 1, sizeof (char *));
    uint32_t rejects = 0;
    ly_event_stats_t stats = { 0 };
    bool valid_context = ctx.org_id && ctx.project_id && ctx.received_usec > 0;
    //  The events the gateway refused already keep its reason: its [index, reason]
    //  pairs come in index order, so one cursor walks them beside the events
    const msgpack_object *refused = ly_msg_obj (submit, LY_EVENTS_SUBMIT_REJECTED);
    uint32_t refused_count = refused && refused->type == MSGPACK_OBJECT_ARRAY? refused->via.array.size: 0;
    uint32_t next_refused = 0;
    for (uint32_t i = 0; i < count; i++) {
        char event_id [129];
        char reason [256] = "";
        ly_result_t rc = LY_INVALID;
        const msgpack_object_str *gateway_reason =
            s_gateway_reason (refused, refused_count, &next_refused, i);
        if (gateway_reason)
            snprintf (reason, sizeof reason, "%.*s", (int) gateway_reason->size, gateway_reason->ptr);
        else
        if (valid_context) {
            size_t rows_before = rows_len;
            rc = ly_event_scrub (&events->via.array.ptr [i], &ctx, &rows, &rows_len,
                                 event_id, &stats, reason, sizeof reason);
            if (rc == LY_OK && rows_len > S_ROWS_MAX) {
                rows_len = rows_before;
                rc = LY_INVALID;
                snprintf (reason, sizeof reason, "the request's events take more than %d MiB"
                          " once stored (numbers as plain decimals): send fewer per request",
                          S_ROWS_MAX >> 20);
            }
        }
        else
            snprintf (reason, sizeof reason, "the request lacked its project context");
        if (rc != LY_OK) {
            reject_index [rejects] = i;
            reject_reason [rejects++] = strdup (reason [0]? reason: "invalid event");
        }
    }
    msgpack_pack_array (&pk, rejects);
    for (uint32_t i = 0; i < rejects; i++) {
        msgpack_pack_array (&pk, 2);
        msgpack_pack_uint32 (&pk, reject_index [i]);
        msgpack_pack_str_with_body (&pk, reject_reason [i], strlen (reject_reason [i]));
        free (reject_reason [i]);
    }
    free (reject_index);
    free (reject_reason);
    ly_metric_add (self->accepted, count - rejects);
    ly_metric_add (self->rejected, rejects);
    ly_metric_add (self->email_invalid, stats.email_invalid);
    ly_metric_add (self->phone_invalid, stats.phone_invalid);

    ly_msg_t *store = ly_msg_new (LY_MSG_EVENTS_STORE);
    ly_msg_set_uint (store, LY_EVENTS_STORE_REQUEST_ID, ly_msg_uint (submit, LY_EVENTS_SUBMIT_REQUEST_ID));
    size_t reply_to_len = 0;
    const void *reply_to = ly_msg_bin (submit, LY_EVENTS_SUBMIT_REPLY_TO, &reply_to_len);
    ly_msg_set_bin (store, LY_EVENTS_STORE_REPLY_TO, reply_to, reply_to_len);
    ly_msg_set_uint (store, LY_EVENTS_STORE_COUNT, count);
    ly_msg_set_bin (store, LY_EVENTS_STORE_ROWS, rows? rows: "", rows_len);
    ly_msg_set_obj (store, LY_EVENTS_STORE_REJECTED, rejected.data, rejected.size);
    free (rows);
    msgpack_sbuffer_destroy (&rejected);
    if (self->verbose)
        ly_info (S_ACTOR, "scrubbed %u events, %u rejected", count, rejects);
    if (ly_send_wait (self->store, self->tap, NULL, &store))
        ly_warning (S_ACTOR, "could not pass a request to the store: %s", zmq_strerror (zmq_errno ()));
}

static void
s_handle_pull (void *self_, zsock_t *sock)
{
    self_t *self = (self_t *) self_;
    ly_msg_t *msg = ly_recv (sock, self->tap, S_ACTOR, NULL);
    if (msg && ly_msg_type (msg) == LY_MSG_EVENTS_SUBMIT)
        s_handle_submit (self, msg);
    else
    if (msg)
        ly_warning (S_ACTOR, "unexpected %s", ly_msg_type_name (ly_msg_type (msg)));
    ly_msg_destroy (&msg);
}

void
ly_ingest_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    ly_actor_ready (pipe, self != NULL);
    if (!self)
        return;
    ly_actor_loop (pipe, S_ACTOR, self->tap, &self->verbose, NULL, self,
                   s_handle_pull, self->pull, NULL);
    s_self_destroy (&self);
}
