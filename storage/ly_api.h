/*  ly_api.h: the api actor. Binds the "api" endpoint (ROUTER). It answers the gateway's
    SDK key lookups (KEY_LOOKUP) over a layers_auth session, which can read credentials
    by hash across tenants and nothing else, and serves the partner API (API_REQUEST,
    see ly_apiv1.h) over a layers_api session with the tenant set per request. */
#ifndef LY_API_H
#define LY_API_H

#include "ly_prelude.h"

void ly_api_actor (zsock_t *pipe, void *args);

#endif
