/*  ly_tap.h: an actor's debug publisher. Each actor process binds an XPUB socket at
    ipc://$LAYERS_DATA_DIR/tap/<actor>.<pid>; it is off, and costs one branch per frame,
    until a layers-tap subscribes. Published frames are plain msgpack:
    [1, time_usec, actor, pid, direction ("in"|"out"), message with personal data redacted]. */
#ifndef LY_TAP_H
#define LY_TAP_H

#include "ly_prelude.h"
#include "ly_msg.h"

#define LY_TAP_VERSION 1

typedef struct _ly_tap_t ly_tap_t;

/*  Binds the actor's tap publisher; NULL on failure (logged). Caller owns. */
ly_tap_t *ly_tap_new (const char *actor);
void ly_tap_destroy (ly_tap_t **self_p);
/*  The XPUB socket, readable when subscriptions change: add it to the actor's poller
    and call ly_tap_handle when it is readable. */
zsock_t *ly_tap_socket (ly_tap_t *self);
void ly_tap_handle (ly_tap_t *self);
bool ly_tap_active (ly_tap_t *self);
/*  Publishes one message when a subscriber is present; no-op otherwise. */
void ly_tap_publish (ly_tap_t *self, const char *direction, const ly_msg_t *msg);
/*  The directory holding tap endpoints; caller owns. */
char *ly_tap_dir (void);

#endif
