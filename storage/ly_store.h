/*  ly_store.h: the store actor, the only writer of sdk_events and the relay's queue.
    Binds the "store" endpoint (ROUTER). Today it answers readiness probes (PING) with
    the state of its database session. */
#ifndef LY_STORE_H
#define LY_STORE_H

#include "ly_prelude.h"

void ly_store_actor (zsock_t *pipe, void *args);

#endif
