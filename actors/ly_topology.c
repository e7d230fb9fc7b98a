/*  ly_topology.c: the whole wiring of Layers in one table. Each row names an endpoint,
    the actor that binds it and the actors that connect to it. Addresses default to
    ipc:// sockets under $LAYERS_DATA_DIR/sock; `--connect NAME=ADDR` overrides one for
    a scale-out node. */
#include "ly_topology.h"
#include "ly_config.h"
#include "ly_log.h"

static const ly_endpoint_t s_endpoints [] = {
    /* name     binder   bind type   connectors  connect type  hwm   purpose */
    { "ingest", "gateway", ZMQ_PUSH, "ingest",  ZMQ_PULL,     1000,
      "SDK requests to scrub (EVENTS_SUBMIT); PUSH spreads them over the ingest actors" },
    { "store",  "store", ZMQ_ROUTER, "gateway,ingest", ZMQ_DEALER, 1000,
      "rows to write (EVENTS_STORE from ingest), readiness probes (PING from the "
      "gateway); acknowledgements (EVENTS_ACK) go back to the gateway named in reply_to" },
    { "api",    "api",   ZMQ_ROUTER, "gateway",  ZMQ_DEALER,   1000,
      "SDK key lookups (KEY_LOOKUP) and, later, partner API requests" },
};
#define S_ENDPOINTS (sizeof (s_endpoints) / sizeof (s_endpoints [0]))

static char *s_overrides [S_ENDPOINTS];     /* NULL: default address; owned here */

size_t
ly_topology_count (void)
{
    return S_ENDPOINTS;
}

const ly_endpoint_t *
ly_topology_at (size_t index)
{
    return index < S_ENDPOINTS? &s_endpoints [index]: NULL;
}

static int
s_index (const char *name, size_t len)
{
    for (size_t i = 0; i < S_ENDPOINTS; i++)
        if (strlen (s_endpoints [i].name) == len
        &&  memcmp (s_endpoints [i].name, name, len) == 0)
            return (int) i;
    return -1;
}

const ly_endpoint_t *
ly_topology_lookup (const char *name)
{
    int index = s_index (name, strlen (name));
    return index < 0? NULL: &s_endpoints [index];
}

int
ly_topology_override (const char *spec, char *err, size_t errlen)
{
    const char *eq = strchr (spec, '=');
    if (!eq) {
        snprintf (err, errlen, "endpoint \"%s\" is not NAME=ADDRESS", spec);
        return -1;
    }
    int index = s_index (spec, (size_t) (eq - spec));
    if (index < 0) {
        snprintf (err, errlen, "unknown endpoint \"%.*s\"", (int) (eq - spec), spec);
        return -1;
    }
    const char *address = eq + 1;
    if (strncmp (address, "tcp://", 6) && strncmp (address, "ipc://", 6)) {
        snprintf (err, errlen, "endpoint address \"%s\" is not tcp:// or ipc://", address);
        return -1;
    }
    free (s_overrides [index]);
    s_overrides [index] = strdup (address);
    return 0;
}

void
ly_topology_reset (void)
{
    for (size_t i = 0; i < S_ENDPOINTS; i++) {
        free (s_overrides [i]);
        s_overrides [i] = NULL;
    }
}

char *
ly_topology_address (const char *name)
{
    int index = s_index (name, strlen (name));
    assert (index >= 0);
    if (s_overrides [index])
        return strdup (s_overrides [index]);
    return zsys_sprintf ("ipc://%s/sock/%s", ly_config.data_dir, name);
}

zsock_t *
ly_topology_open (const char *actor, const char *name)
{
    return ly_topology_open_as (actor, name, NULL);
}

zsock_t *
ly_topology_open_as (const char *actor, const char *name, const char *routing_id)
{
    const ly_endpoint_t *endpoint = ly_topology_lookup (name);
    assert (endpoint);
    bool binder = streq (endpoint->binder, actor);
    zsock_t *sock = zsock_new (binder? endpoint->bind_type: endpoint->connect_type);
    if (!sock)
        return NULL;
    if (routing_id)
        zsock_set_identity (sock, routing_id);
    if (ly_topology_attach (actor, name, sock))
        zsock_destroy (&sock);
    return sock;
}

int
ly_topology_attach (const char *actor, const char *name, zsock_t *sock)
{
    const ly_endpoint_t *endpoint = ly_topology_lookup (name);
    assert (endpoint);
    bool binder = streq (endpoint->binder, actor);
    zsock_set_sndhwm (sock, endpoint->hwm);
    zsock_set_rcvhwm (sock, endpoint->hwm);
    zsock_set_linger (sock, 0);
    char *address = ly_topology_address (name);
    int rc;
    if (binder) {
        if (strncmp (address, "ipc://", 6) == 0) {
            char *dir = strdup (address + 6);
            char *slash = strrchr (dir, '/');
            if (slash) {
                *slash = 0;
                zsys_dir_create ("%s", dir);
            }
            free (dir);
        }
        rc = zsock_bind (sock, "%s", address);
    }
    else
        rc = zsock_connect (sock, "%s", address);
    if (rc == -1)
        ly_error (actor, "could not %s endpoint \"%s\" at \"%s\": %s",
                  binder? "bind": "connect", name, address, zmq_strerror (zmq_errno ()));
    zstr_free (&address);
    return rc == -1? -1: 0;
}
