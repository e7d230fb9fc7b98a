/*  ly_api.h: the api actor. Binds the "api" endpoint (ROUTER). It answers the gateway's
    SDK key lookups (KEY_LOOKUP) and readiness probes itself, over a layers_auth session,
    which can read credentials by hash across tenants and nothing else, and hands the
    partner API (API_REQUEST, see ly_apiv1.h) to a pool of worker threads, each with its
    own layers_api session (tenant set per request): a slow request holds only its
    worker, never the key lookups; one token holds at most all workers but one, so
    that one integration's slow requests leave a worker to everybody else. */
#ifndef LY_API_H
#define LY_API_H

#include "ly_prelude.h"

void ly_api_actor (zsock_t *pipe, void *args);

#endif
