/*  ly_actor.h: what every actor shares besides its own loop: sending and receiving
    codec frames (tapped), and the pipe commands every actor answers ($TERM, STATUS,
    VERBOSE). The skeleton itself is in STYLE.md and followed by each actor file. */
#ifndef LY_ACTOR_H
#define LY_ACTOR_H

#include "ly_prelude.h"
#include "ly_msg.h"
#include "ly_tap.h"

/*  Sends a message, preceded by routing_id when not NULL (ROUTER sockets). Takes over
    *msg_p. 0 / -1. */
int ly_send (zsock_t *sock, ly_tap_t *tap, zframe_t *routing_id, ly_msg_t **msg_p);
/*  The same, but waits while the peer's queue is full (up to the socket's send
    timeout): backpressure for a stage that must not drop work. */
int ly_send_wait (zsock_t *sock, ly_tap_t *tap, zframe_t *routing_id, ly_msg_t **msg_p);
/*  Sends a frame already encoded (ly_msg_encode_frame), preceded by routing_id when
    not NULL; both stay the caller's, to send again. flags: ZFRAME_DONTWAIT or 0.
    0 / -1 (zmq_errno: EHOSTUNREACH for a ROUTER_MANDATORY peer not connected, EAGAIN). */
int ly_send_frame (zsock_t *sock, zframe_t *routing_id, zframe_t *frame, int flags);
/*  Receives one message. For ROUTER sockets pass routing_id_p to get the sender's id
    (caller owns). Returns NULL when the frame is malformed (logged, dropped) or on
    interrupt. Caller owns. */
ly_msg_t *ly_recv (zsock_t *sock, ly_tap_t *tap, const char *actor, zframe_t **routing_id_p);

/*  An actor's status for the STATUS pipe command ("ok", "database down", ...). */
typedef const char *(ly_actor_status_fn) (void *self);

/*  Handles one pipe command. Returns -1 for $TERM (the actor leaves its loop), 0 else.
    STATUS is answered with status (self) (status may be NULL: "ok"); ALIVE with "ok"
    at once (the supervisor's heartbeat: it costs nothing and touches nothing);
    VERBOSE toggles *verbose. */
int ly_actor_pipe (zsock_t *pipe, const char *actor, bool *verbose,
                   ly_actor_status_fn *status, void *self);

/*  The loop most actors need: waits on the pipe, the tap and the given sockets
    (NULL-terminated), answers pipe commands (status may be NULL: "ok"), keeps the tap
    informed, and calls reader for each readable socket. Returns when $TERM arrives. */
typedef void (ly_actor_reader_fn) (void *self, zsock_t *sock);
void ly_actor_loop (zsock_t *pipe, const char *actor, ly_tap_t *tap, bool *verbose,
                    ly_actor_status_fn *status, void *self, ly_actor_reader_fn *reader, ...);

/*  Ends an actor's set-up: signals the parent (0 on success, 1 on failure). CZMQ's
    zactor_new does not return the status, so a failure is also counted where
    ly_actor_failures can see it as soon as zactor_new returns. */
void ly_actor_ready (zsock_t *pipe, bool ok);
unsigned ly_actor_failures (void);

/*  The names of the actors a supervisor can run, NULL-terminated. */
extern const char *ly_actor_names [];
/*  The actor function for a name; NULL when unknown. */
zactor_fn *ly_actor_fn (const char *name);

#endif
