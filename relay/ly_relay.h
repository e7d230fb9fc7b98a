/*  ly_relay.h: the relay actor. It works the outbox (relay_deliveries) that the store
    fills: claims due rows under a lease, sends each event to its ad network (Meta
    Conversions API, TikTok Events API, Apple AdServices) in that network's format, and
    records the outcome: delivered, retried later, or parked as a dead letter with the
    network's answer. Several relay processes share the outbox safely. The design is
    described at the top of ly_relay.c and in docs/relay.md.

    Knobs (environment, read when the actor starts; defaults in brackets):
      LAYERS_RELAY_BACKOFF_MS      first retry delay, doubled per attempt up to 1 h [1000]
      LAYERS_RELAY_LEASE_MS        lease of claimed rows, renewed while held [120000]
      LAYERS_RELAY_TIMEOUT_MS      whole-request timeout, at most a third of the lease [30000]
      LAYERS_RELAY_RETRY_WINDOW_S  how long after its row was created an event is retried [86400]
      LAYERS_RELAY_APPLE_RETRY_MS  wait after Apple's 404 "not known yet" [5000]
      LAYERS_RELAY_POLL_MS         outbox poll interval when idle [200]
      LAYERS_RELAY_CLAIM           rows claimed at once, and events per request, 1..1000 [1000];
                                   a relay holds at most five claims' worth of rows */
#ifndef LY_RELAY_H
#define LY_RELAY_H

#include "ly_prelude.h"

/*  The actor: `zactor_new (ly_relay_actor, NULL)`. Answers $TERM, STATUS and
    VERBOSE on its pipe. */
void ly_relay_actor (zsock_t *pipe, void *args);

/*  Whether every LAYERS_RELAY_* knob set is a number in its range; layersd refuses to
    start otherwise. 0 / -1 (the variable and its range in err). */
int ly_relay_settings_check (char *err, size_t errlen);

#endif
