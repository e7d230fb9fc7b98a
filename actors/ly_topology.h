/*  ly_topology.h: which actor binds or connects which endpoint, declared in one table
    (ly_topology.c). Single node: ipc:// under $LAYERS_DATA_DIR/sock. Scale-out:
    `layersd --only ROLE --connect NAME=tcp://HOST:PORT` overrides an endpoint. */
#ifndef LY_TOPOLOGY_H
#define LY_TOPOLOGY_H

#include "ly_prelude.h"

typedef struct {
    const char *name;        /* endpoint name, e.g. "store" */
    const char *binder;      /* the actor that binds it */
    int bind_type;           /* binder's ZeroMQ socket type */
    const char *connectors;  /* comma-separated actors that connect to it */
    int connect_type;        /* connectors' socket type */
    int hwm;                 /* high-water mark on both sides, in messages */
    const char *purpose;     /* one line, for --help and docs */
} ly_endpoint_t;

size_t ly_topology_count (void);
const ly_endpoint_t *ly_topology_at (size_t index);
const ly_endpoint_t *ly_topology_lookup (const char *name);

/*  Overrides an endpoint's address from "NAME=ADDRESS"; 0 / -1 (unknown name or bad
    address, reason in err). */
int ly_topology_override (const char *spec, char *err, size_t errlen);
/*  The address of an endpoint; caller owns. */
char *ly_topology_address (const char *name);
/*  The host of a tcp:// address ("tcp://[SOURCE;]HOST:PORT"), without an IPv6
    address's brackets, into host; returns the port's text within address, or NULL when
    address is no tcp:// address with a port. */
const char *ly_topology_tcp_host (const char *address, char *host, size_t size);
/*  Opens the socket an actor uses on an endpoint: binds when the actor is the binder,
    connects otherwise; NULL on failure (logged). Caller owns. */
zsock_t *ly_topology_open (const char *actor, const char *name);
/*  The same, with a routing id set before connecting (a DEALER that must be
    answerable by name through a ROUTER). */
zsock_t *ly_topology_open_as (const char *actor, const char *name, const char *routing_id);
/*  Binds or connects a socket the caller made (of the table's type for this actor),
    e.g. after starting a monitor on it. 0 / -1 (logged). */
int ly_topology_attach (const char *actor, const char *name, zsock_t *sock);
/*  Drops every override; for tests. */
void ly_topology_reset (void);

/*  The cluster certificate for tcp endpoints (CurveZMQ): its path (caller owns), and
    its creation when missing (the supervisor does it at start). 0 / -1. */
char *ly_topology_cert_path (void);
int ly_topology_cert_ensure (char *err, size_t errlen);
/*  Stops the ZAP handler and forgets the certificate; from main, before zsys_shutdown. */
void ly_topology_shutdown (void);

#endif
