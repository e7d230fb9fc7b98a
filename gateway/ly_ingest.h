/*  ly_ingest.h: the ingest actor, where personal data is scrubbed. It pulls
    EVENTS_SUBMIT from the gateway (any number of ingest actors share the work), turns
    each event into a storable row with ly_event (geo-IP region, hashed email and phone,
    device fields from the User-Agent, validation), and pushes EVENTS_STORE to the store.
    The client IP and User-Agent never leave this actor. */
#ifndef LY_INGEST_H
#define LY_INGEST_H

#include "ly_prelude.h"

void ly_ingest_actor (zsock_t *pipe, void *args);

#endif
