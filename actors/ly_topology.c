/*  ly_topology.c: the whole wiring of Layers in one table. Each row names an endpoint,
    the actor that binds it and the actors that connect to it. Addresses default to
    ipc:// sockets under $LAYERS_DATA_DIR/sock (a 0700 directory); `--connect NAME=ADDR`
    overrides one for a scale-out node.
    tcp:// endpoints are authenticated and encrypted with CurveZMQ under one cluster
    certificate ($LAYERS_DATA_DIR/curve/cluster.cert and cluster.cert_secret, made by
    the supervisor; copy both to every node): binders are CURVE servers with it and
    accept only clients that present it (a process-wide zauth handler), connectors
    use it as client key and trust it as server key. */
#include "ly_topology.h"
#include "ly_config.h"
#include "ly_log.h"
#include "ly_msg.h"
#include <netdb.h>

static const ly_endpoint_t s_endpoints [] = {
    /* name     binder   bind type   connectors  connect type  hwm   purpose */
    { "ingest", "gateway", ZMQ_PUSH, "ingest",  ZMQ_PULL,     1000,
      "SDK requests to scrub (EVENTS_SUBMIT); PUSH spreads them over the ingest actors" },
    { "store",  "store", ZMQ_ROUTER, "gateway,ingest", ZMQ_DEALER, 1000,
      "rows to write (EVENTS_STORE from ingest), readiness probes (PING from the "
      "gateway); acknowledgements (EVENTS_ACK) go back to the gateway named in reply_to" },
    { "metrics", "gateway", ZMQ_PULL, "store,api,ingest,relay", ZMQ_PUSH, 10,
      "every actor process' metrics (METRICS_REPORT), for the gateway's /metrics" },
    { "api",    "api",   ZMQ_ROUTER, "gateway",  ZMQ_DEALER,   1000,
      "SDK key lookups (KEY_LOOKUP) and partner API requests (API_REQUEST)" },
};
#define S_ENDPOINTS (sizeof (s_endpoints) / sizeof (s_endpoints [0]))
#define S_HEARTBEAT_IVL_MSEC 1000     /* ZMTP PING on tcp connections this often */
#define S_HEARTBEAT_TIMEOUT_MSEC 4000 /* a tcp peer silent this long is cut off */

static char *s_overrides [S_ENDPOINTS];     /* NULL: default address; owned here */
static pthread_mutex_t s_curve_lock = PTHREAD_MUTEX_INITIALIZER;
static zcert_t *s_cert;                     /* the cluster certificate, loaded on first use */
static zactor_t *s_auth;                    /* ZAP handler, started by the first tcp bind */

char *
ly_topology_cert_path (void)
{
    return zsys_sprintf ("%s/curve/cluster.cert", ly_config.data_dir);
}

int
ly_topology_cert_ensure (char *err, size_t errlen)
{
    char *path = ly_topology_cert_path ();
    char *secret = zsys_sprintf ("%s_secret", path);
    int rc = 0;
    if (!zsys_file_exists (secret)) {
        char *dir = zsys_sprintf ("%s/curve", ly_config.data_dir);
        zsys_dir_create ("%s", dir);
        chmod (dir, 0700);
        zstr_free (&dir);
        zcert_t *cert = zcert_new ();
        zcert_set_meta (cert, "name", "layers cluster");
        if (!cert || zcert_save (cert, path)) {
            snprintf (err, errlen, "could not write the cluster certificate \"%s\": %s",
                      path, strerror (errno));
            rc = -1;
        }
        else
            chmod (secret, 0600);
        zcert_destroy (&cert);
    }
    zstr_free (&secret);
    zstr_free (&path);
    return rc;
}

//  Applies CurveZMQ to a tcp socket; 0 / -1 (logged).
static int
s_curve_apply (const char *actor, zsock_t *sock, bool binder)
{
    int rc = 0;
    pthread_mutex_lock (&s_curve_lock);
    if (!s_cert) {
        char *path = ly_topology_cert_path ();
        s_cert = zcert_load (path);
        //  Without its _secret file a certificate loads with an all-zero secret key.
        if (!s_cert || streq (zcert_secret_txt (s_cert), "0000000000000000000000000000000000000000")) {
            ly_error (actor, "tcp endpoints need the cluster certificate \"%s\" and \"%s_secret\": "
                      "copy both from the main node's data directory", path, path);
            zcert_destroy (&s_cert);
            rc = -1;
        }
        else {
            //  Anyone who reads the secret joins the cluster and reads its traffic
            char *secret = zsys_sprintf ("%s_secret", path);
            struct stat file;
            if (stat (secret, &file) == 0 && (file.st_mode & 077))
                ly_warning (actor, "the cluster certificate's secret \"%s\" may be read by "
                            "others (mode %03o): chmod 600 it", secret,
                            (unsigned) (file.st_mode & 0777));
            zstr_free (&secret);
        }
        zstr_free (&path);
    }
    if (rc == 0 && binder && !s_auth) {
        s_auth = zactor_new (zauth, NULL);
        char *dir = zsys_sprintf ("%s/curve", ly_config.data_dir);
        zstr_sendx (s_auth, "CURVE", dir, NULL);
        zsock_wait (s_auth);
        zstr_free (&dir);
    }
    if (rc == 0) {
        zcert_apply (s_cert, zsock_resolve (sock));
        if (binder) {
            zsock_set_curve_server (sock, 1);
            zsock_set_zap_domain (sock, "layers");
        }
        else
            zsock_set_curve_serverkey (sock, zcert_public_txt (s_cert));
    }
    pthread_mutex_unlock (&s_curve_lock);
    return rc;
}

void
ly_topology_shutdown (void)
{
    pthread_mutex_lock (&s_curve_lock);
    zactor_destroy (&s_auth);
    zcert_destroy (&s_cert);
    pthread_mutex_unlock (&s_curve_lock);
    ly_topology_reset ();
}

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
    if (!address [6]) {
        snprintf (err, errlen, "endpoint address \"%s\" names nothing", address);
        return -1;
    }
    if (strncmp (address, "tcp://", 6) == 0) {
        //  HOST:PORT, the port a number from 1 to 65535 (ZeroMQ would take 99999 as
        //  34463, and "*" as a port of the system's choosing, which peers cannot know)
        const char *colon = strrchr (address + 6, ':');
        const char *port = colon? colon + 1: "";
        char *end = NULL;
        long number = *port >= '0' && *port <= '9'? strtol (port, &end, 10): 0;
        if (!colon || colon == address + 6 || number < 1 || number > 65535 || *end) {
            snprintf (err, errlen, "endpoint address \"%s\" is not tcp://HOST:PORT with a "
                      "port from 1 to 65535", address);
            return -1;
        }
        //  The host is the server's own, not a client's: the log shows it (a bind that
        //  fails must say where)
        char own [64];
        ly_topology_tcp_host (address, own, sizeof own);
        ly_log_own_address (own);
    }
    free (s_overrides [index]);
    s_overrides [index] = strdup (address);
    return 0;
}

const char *
ly_topology_tcp_host (const char *address, char *host, size_t size)
{
    const char *colon = strncmp (address, "tcp://", 6) == 0? strrchr (address + 6, ':'): NULL;
    if (!colon)
        return NULL;
    const char *start = strrchr (address + 6, ';');
    start = start && start < colon? start + 1: address + 6;
    size_t len = (size_t) (colon - start);
    if (len >= 2 && start [0] == '[' && start [len - 1] == ']') {
        start++;
        len -= 2;
    }
    snprintf (host, size, "%.*s", (int) len, start);
    return colon + 1;
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

//  Whether a process accepts connections on the unix socket at path
static bool
s_ipc_listened (const char *path)
{
    struct sockaddr_un address = { .sun_family = AF_UNIX };
    if (strlen (path) >= sizeof address.sun_path)
        return false;                   //  the bind says what is wrong
    strcpy (address.sun_path, path);
    int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool listened = fd != -1 && connect (fd, (struct sockaddr *) &address, sizeof address) == 0;
    if (fd != -1)
        close (fd);
    return listened;
}

//  A tcp address whose host does not resolve is taken by zsock_connect all the same
//  (libzmq resolves it in the background and tries again for ever): say so once, where
//  a mistyped --connect host would otherwise leave no trace. On a thread of its own: a
//  resolver that does not answer must not hold the actor's start.
typedef struct {
    char *actor;                    //  who connects, for the log line
    char *name;                     //  the endpoint's name
    char *address;                  //  its address
    char host [256];                //  the host in it
    char port [8];                  //  the port in it
} s_lookup_t;

static void
s_lookup_destroy (s_lookup_t *lookup)
{
    free (lookup->actor);
    free (lookup->name);
    free (lookup->address);
    free (lookup);
}

static void *
s_lookup_run (void *arg)
{
    s_lookup_t *lookup = (s_lookup_t *) arg;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    struct addrinfo *found = NULL;
    int error = getaddrinfo (lookup->host, lookup->port, &hints, &found);
    if (error)
        ly_warning (lookup->actor, "endpoint \"%s\" at \"%s\": host \"%s\" does not resolve"
                    " (%s); connecting is retried in the background", lookup->name,
                    lookup->address, lookup->host, gai_strerror (error));
    else
        freeaddrinfo (found);
    s_lookup_destroy (lookup);
    return NULL;
}

static void
s_warn_unresolved (const char *actor, const char *name, const char *address)
{
    char host [256];
    const char *port = ly_topology_tcp_host (address, host, sizeof host);
    if (!port || strlen (port) >= sizeof ((s_lookup_t *) 0)->port)
        return;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
    struct addrinfo *found = NULL;
    if (getaddrinfo (host, port, &hints, &found) == 0) {
        freeaddrinfo (found);           //  an address: nothing to resolve
        return;
    }
    s_lookup_t *lookup = (s_lookup_t *) calloc (1, sizeof (s_lookup_t));
    if (!lookup)
        return;
    lookup->actor = strdup (actor);
    lookup->name = strdup (name);
    lookup->address = strdup (address);
    snprintf (lookup->host, sizeof lookup->host, "%s", host);
    snprintf (lookup->port, sizeof lookup->port, "%s", port);
    pthread_attr_t attr;
    pthread_t thread;
    pthread_attr_init (&attr);
    pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
    if (!lookup->actor || !lookup->name || !lookup->address
    ||  pthread_create (&thread, &attr, s_lookup_run, lookup) != 0)
        s_lookup_destroy (lookup);
    pthread_attr_destroy (&attr);
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
    //  No frame of ours is larger, and libzmq reads a frame whole before the CURVE
    //  handshake can refuse its sender: without a limit anyone reaching a tcp endpoint
    //  could make the process hold gigabytes
    zsock_set_maxmsgsize (sock, LY_MSG_MAX_FRAME + 64 * 1024);
    char *address = ly_topology_address (name);
    int rc = 0;
    if (strncmp (address, "tcp://", 6) == 0) {
        zsock_set_ipv6 (sock, 1);       //  tcp://[::1]:7601, and names that resolve to IPv6
        //  A peer that stops answering (stopped, hung, its host gone without a FIN)
        //  keeps its TCP connection and with it its share of the messages: ZMTP
        //  heartbeats cut it off, and it gets no more until it connects again
        zsock_set_heartbeat_ivl (sock, S_HEARTBEAT_IVL_MSEC);
        zsock_set_heartbeat_timeout (sock, S_HEARTBEAT_TIMEOUT_MSEC);
        zsock_set_heartbeat_ttl (sock, S_HEARTBEAT_TIMEOUT_MSEC);
        rc = s_curve_apply (actor, sock, binder);
    }
    bool ipc = strncmp (address, "ipc://", 6) == 0;
    if (rc == 0 && binder && ipc) {
        //  ipc sockets carry raw personal data: only we may open them. A directory we
        //  make is ours alone; one that was there (/tmp, say) keeps its mode, the
        //  socket file is made ours alone after the bind
        char *dir = strdup (address + 6);
        char *slash = strrchr (dir, '/');
        struct stat st;
        if (slash && slash != dir) {
            *slash = 0;
            if (stat (dir, &st) != 0) {
                zsys_dir_create ("%s", dir);
                chmod (dir, 0700);
            }
        }
        free (dir);
        //  libzmq removes the socket file of another process that listens there (a
        //  second layersd on this data directory): its peers would all come to us
        if (s_ipc_listened (address + 6)) {
            ly_error (actor, "could not bind endpoint \"%s\" at \"%s\": another process "
                      "listens there (another layersd on this data directory?)", name, address);
            zstr_free (&address);
            return -1;
        }
    }
    if (rc == 0 && binder) {
        rc = zsock_bind (sock, "%s", address);
        if (rc == 0 && ipc)
            chmod (address + 6, 0600);
    }
    else
    if (rc == 0) {
        s_warn_unresolved (actor, name, address);
        rc = zsock_connect (sock, "%s", address);
    }
    if (rc == -1)
        ly_error (actor, "could not %s endpoint \"%s\" at \"%s\": %s",
                  binder? "bind": "connect", name, address, zmq_strerror (zmq_errno ()));
    zstr_free (&address);
    return rc == -1? -1: 0;
}
