/*  ly_store.h: the store actor, the only writer of sdk_events and the relay's outbox.
    Binds the "store" endpoint (ROUTER). It batches EVENTS_STORE requests from the ingest
    actors (as many as are waiting, bounded), writes each batch in one transaction (COPY
    into a staging table, then deduplication on (project, event_id), the events, and one
    outbox row per enabled layer) and only after COMMIT sends each request's EVENTS_ACK
    to the gateway that took it. It writes on two PostgreSQL sessions: a second batch
    starts beside a running one once enough rows wait for it. It also answers readiness
    probes (PING). */
#ifndef LY_STORE_H
#define LY_STORE_H

#include "ly_prelude.h"

void ly_store_actor (zsock_t *pipe, void *args);

#endif
