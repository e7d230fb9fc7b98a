/*  ly_gateway.h: the gateway actor, Layers' HTTP/1.1 face (libmicrohttpd). It holds no
    database connection: requests that need another actor are suspended, handed to the
    actor's loop, and resumed when the answer comes back or their deadline passes.
    Routes: POST /l/events (SDK ingest), GET /healthz, GET /readyz, GET /metrics. */
#ifndef LY_GATEWAY_H
#define LY_GATEWAY_H

#include "ly_prelude.h"

void ly_gateway_actor (zsock_t *pipe, void *args);

#endif
