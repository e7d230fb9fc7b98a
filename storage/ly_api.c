/*  ly_api.c: the api actor (see ly_api.h). Database sessions are opened on demand and
    re-opened at most once a second after a failure; while the database is down, lookups
    answer "unavailable" so the gateway can say 503 rather than 401. */
#include "ly_api.h"
#include "ly_apiv1.h"
#include "ly_actor.h"
#include "ly_crypto.h"
#include "ly_db.h"
#include "ly_log.h"
#include "ly_topology.h"

#define S_ACTOR "api"
#define S_ANSWER_MAX (LY_MSG_MAX_FRAME - 64 * 1024)   /* an answer body that fits a frame */

typedef struct {
    zsock_t *pipe;          /* actor pipe, borrowed */
    zsock_t *router;        /* "api" endpoint, owned */
    ly_tap_t *tap;          /* debug publisher, owned */
    ly_db_session_t *auth;  /* session as layers_auth, owned */
    ly_apiv1_t *v1;         /* partner API handlers, owned */
    bool verbose;           /* log every request */
} self_t;

static void
s_self_destroy (self_t **self_p)
{
    self_t *self = *self_p;
    if (self) {
        zsock_destroy (&self->router);
        ly_tap_destroy (&self->tap);
        ly_db_session_destroy (&self->auth);
        ly_apiv1_destroy (&self->v1);
        free (self);
        *self_p = NULL;
    }
}

static char *
s_auth_setup (void *arg)
{
    //  A key found is stamped last_used_at: the gateway asks again every 5 s while the
    //  key is in use, so the stamp is at most that far behind.
    return strdup ("PREPARE key_lookup AS"
        " WITH found AS ("
        "  SELECT k.key_id, k.org_id, k.project_id, coalesce (p.default_country_code, '') AS cc"
        "    FROM sdk_keys k JOIN projects p ON p.project_id = k.project_id"
        "   WHERE k.key_sha256 = decode ($1, 'hex') AND k.revoked_at IS NULL),"
        " touch AS ("
        "  UPDATE sdk_keys SET last_used_at = now () WHERE key_id IN (SELECT key_id FROM found))"
        " SELECT org_id, project_id, cc FROM found");
}

static self_t *
s_self_new (zsock_t *pipe)
{
    self_t *self = (self_t *) zmalloc (sizeof (self_t));
    self->pipe = pipe;
    self->router = ly_topology_open (S_ACTOR, "api");
    self->tap = ly_tap_new (S_ACTOR);
    self->auth = ly_db_session_new (LY_DB_AUTH, S_ACTOR, s_auth_setup, NULL);
    self->v1 = ly_apiv1_new ();
    if (!self->router || !self->tap)
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
s_api_request (self_t *self, ly_msg_t *msg)
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
    ly_apiv1_handle (self->v1, &request, &response);
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

static void
s_handle_request (void *self_, zsock_t *sock)
{
    self_t *self = (self_t *) self_;
    zframe_t *routing_id = NULL;
    ly_msg_t *msg = ly_recv (self->router, self->tap, S_ACTOR, &routing_id);
    if (!msg)
        return;
    ly_msg_t *reply = NULL;
    if (ly_msg_type (msg) == LY_MSG_KEY_LOOKUP)
        reply = s_key_lookup (self, msg);
    else
    if (ly_msg_type (msg) == LY_MSG_API_REQUEST)
        reply = s_api_request (self, msg);
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
                   s_handle_request, self->router, NULL);
    s_self_destroy (&self);
}
