/*  ly_store.c: the store actor (see ly_store.h). One database session as layers_store;
    when it is lost, the actor reconnects at most once a second, on demand. */
#include "ly_store.h"
#include "ly_actor.h"
#include "ly_db.h"
#include "ly_log.h"
#include "ly_topology.h"

#define S_ACTOR "store"
#define S_RECONNECT_MSEC 1000

typedef struct {
    zsock_t *pipe;          /* actor pipe, borrowed */
    zsock_t *router;        /* "store" endpoint, owned */
    ly_tap_t *tap;          /* debug publisher, owned */
    PGconn *db;             /* session as layers_store, owned; NULL while down */
    int64_t next_connect;   /* monotonic msec before which we do not retry */
    bool verbose;           /* log every request */
} self_t;

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        zsock_destroy (&self->router);
        ly_tap_destroy (&self->tap);
        if (self->db)
            PQfinish (self->db);
        free (self);
        *self_p = NULL;
    }
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    self->router = ly_topology_open (S_ACTOR, "store");
    self->tap = ly_tap_new (S_ACTOR);
    if (!self->router || !self->tap)
        s_self_destroy (&self);
    return self;
}

//  True when the database session works, reconnecting when allowed.
static bool
s_db_ready (self_t *self)
{
    if (self->db && PQstatus (self->db) != CONNECTION_OK) {
        PQfinish (self->db);
        self->db = NULL;
    }
    if (!self->db && ly_mono_msec () >= self->next_connect) {
        char err [512];
        self->db = ly_db_connect (LY_DB_STORE, err, sizeof err);
        if (!self->db) {
            self->next_connect = ly_mono_msec () + S_RECONNECT_MSEC;
            ly_warning (S_ACTOR, "%s", err);
        }
    }
    if (!self->db)
        return false;
    PGresult *res = PQexec (self->db, "SELECT 1");
    bool ok = PQresultStatus (res) == PGRES_TUPLES_OK;
    PQclear (res);
    if (!ok) {
        ly_warning (S_ACTOR, "database session lost: %s", PQerrorMessage (self->db));
        PQfinish (self->db);
        self->db = NULL;
        self->next_connect = ly_mono_msec () + S_RECONNECT_MSEC;
    }
    return ok;
}

static void
s_handle_request (self_t *self)
{
    zframe_t *routing_id = NULL;
    ly_msg_t *msg = ly_recv (self->router, self->tap, S_ACTOR, &routing_id);
    if (!msg)
        return;
    ly_msg_t *reply = NULL;
    if (ly_msg_type (msg) == LY_MSG_PING) {
        bool db_ok = s_db_ready (self);
        reply = ly_msg_new (LY_MSG_PONG);
        ly_msg_set_uint (reply, LY_PONG_REQUEST_ID, ly_msg_uint (msg, LY_PING_REQUEST_ID));
        ly_msg_set_str (reply, LY_PONG_SENDER, S_ACTOR);
        ly_msg_set_bool (reply, LY_PONG_DB_OK, db_ok);
        ly_msg_set_str (reply, LY_PONG_DETAIL, db_ok? "database reachable": "database unreachable");
    }
    else {
        reply = ly_msg_new (LY_MSG_ERROR);
        ly_msg_set_uint (reply, LY_ERROR_REQUEST_ID, 0);
        ly_msg_set_str (reply, LY_ERROR_CODE, "unsupported");
        ly_msg_set_str (reply, LY_ERROR_MESSAGE, "the store does not serve this message type");
    }
    if (self->verbose)
        ly_info (S_ACTOR, "answered %s", ly_msg_type_name (ly_msg_type (msg)));
    ly_send (self->router, self->tap, routing_id, &reply);
    zframe_destroy (&routing_id);
    ly_msg_destroy (&msg);
}

void
ly_store_actor (zsock_t *pipe, void *args)
{
    self_t *self = s_self_new (pipe);
    zsock_signal (pipe, self? 0: 1);
    if (!self)
        return;
    s_db_ready (self);
    zpoller_t *poller = zpoller_new (pipe, self->router, ly_tap_socket (self->tap), NULL);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (!which) {
            if (zpoller_terminated (poller))
                break;
            continue;
        }
        if (which == pipe) {
            if (ly_actor_pipe (pipe, S_ACTOR, &self->verbose, self->db? "ok": "database down"))
                break;
        }
        else
        if (which == self->router)
            s_handle_request (self);
        else
            ly_tap_handle (self->tap);
    }
    zpoller_destroy (&poller);
    s_self_destroy (&self);
}
