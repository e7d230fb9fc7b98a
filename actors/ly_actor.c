/*  ly_actor.c: what every actor shares besides its own loop: tapped sends and receives
    of codec frames, the common pipe commands, and the table of runnable actors. */
#include "ly_actor.h"
#include "ly_log.h"
#include "ly_gateway.h"
#include "ly_store.h"
#include "ly_api.h"
#include "ly_ingest.h"
#include "ly_relay.h"
#include <openssl/crypto.h>

const char *ly_actor_names [] = { "store", "api", "ingest", "gateway", "relay", NULL };

//  Each actor thread frees OpenSSL's state for itself (its error queue, which libpq's
//  SCRAM and our hashing create) before CZMQ signals its end. Left to the thread's own
//  exit, the free can come after the process decided to exit, and LeakSanitizer then
//  reports it.
#define S_ACTOR_THREAD(role) \
    static void \
    s_##role##_thread (zsock_t *pipe, void *args) \
    { \
        ly_##role##_actor (pipe, args); \
        OPENSSL_thread_stop (); \
    }
S_ACTOR_THREAD (store)
S_ACTOR_THREAD (gateway)
S_ACTOR_THREAD (api)
S_ACTOR_THREAD (ingest)
S_ACTOR_THREAD (relay)

zactor_fn *
ly_actor_fn (const char *name)
{
    if (streq (name, "store"))
        return s_store_thread;
    if (streq (name, "gateway"))
        return s_gateway_thread;
    if (streq (name, "api"))
        return s_api_thread;
    if (streq (name, "ingest"))
        return s_ingest_thread;
    if (streq (name, "relay"))
        return s_relay_thread;
    return NULL;
}

int
ly_send_frame (zsock_t *sock, zframe_t *routing_id, zframe_t *frame, int flags)
{
    if (routing_id) {
        zframe_t *copy = zframe_dup (routing_id);
        if (zframe_send (&copy, sock, ZFRAME_MORE | flags) == -1) {
            zframe_destroy (&copy);
            return -1;
        }
    }
    zframe_t *copy = zframe_dup (frame);
    if (zframe_send (&copy, sock, flags) == -1) {
        zframe_destroy (&copy);
        return -1;
    }
    return 0;
}

static int
s_send (zsock_t *sock, ly_tap_t *tap, zframe_t *routing_id, ly_msg_t **msg_p, int flags)
{
    assert (msg_p && *msg_p);
    ly_tap_publish (tap, "out", *msg_p);
    zframe_t *frame = ly_msg_encode_frame (*msg_p, false);
    ly_msg_destroy (msg_p);
    if (!frame)
        return -1;
    int rc = ly_send_frame (sock, routing_id, frame, flags);
    zframe_destroy (&frame);
    return rc;
}

int
ly_send (zsock_t *sock, ly_tap_t *tap, zframe_t *routing_id, ly_msg_t **msg_p)
{
    return s_send (sock, tap, routing_id, msg_p, ZFRAME_DONTWAIT);
}

int
ly_send_wait (zsock_t *sock, ly_tap_t *tap, zframe_t *routing_id, ly_msg_t **msg_p)
{
    return s_send (sock, tap, routing_id, msg_p, 0);
}

ly_msg_t *
ly_recv (zsock_t *sock, ly_tap_t *tap, const char *actor, zframe_t **routing_id_p)
{
    zmsg_t *zmsg = zmsg_recv (sock);
    if (!zmsg)
        return NULL;
    if (routing_id_p) {
        *routing_id_p = zmsg_pop (zmsg);
        if (!*routing_id_p) {
            zmsg_destroy (&zmsg);
            return NULL;
        }
    }
    ly_msg_t *msg = NULL;
    zframe_t *frame = zmsg_last (zmsg);
    if (frame && zmsg_size (zmsg) == 1) {
        char reason [256] = "";
        msg = ly_msg_decode (zframe_data (frame), zframe_size (frame), reason, sizeof reason);
        if (!msg)
            ly_warning (actor, "dropped malformed frame of %zu bytes: %s",
                        zframe_size (frame), reason);
    }
    else
        ly_warning (actor, "dropped message of %zu frames, expected one",
                    zmsg_size (zmsg));
    zmsg_destroy (&zmsg);
    if (msg)
        ly_tap_publish (tap, "in", msg);
    else
    if (routing_id_p)
        zframe_destroy (routing_id_p);
    return msg;
}

int
ly_actor_pipe (zsock_t *pipe, const char *actor, bool *verbose,
               ly_actor_status_fn *status, void *self)
{
    char *command = zstr_recv (pipe);
    if (!command)
        return -1;              //  interrupted
    int rc = 0;
    if (streq (command, "$TERM"))
        rc = -1;
    else
    if (streq (command, "STATUS"))
        zstr_send (pipe, status? status (self): "ok");
    else
    if (streq (command, "ALIVE"))
        zstr_send (pipe, "ok");
    else
    if (streq (command, "VERBOSE"))
        *verbose = !*verbose;
    else
        ly_warning (actor, "unknown pipe command \"%s\"", command);
    zstr_free (&command);
    return rc;
}

void
ly_actor_loop (zsock_t *pipe, const char *actor, ly_tap_t *tap, bool *verbose,
               ly_actor_status_fn *status, void *self, ly_actor_reader_fn *reader, ...)
{
    zpoller_t *poller = zpoller_new (pipe, ly_tap_socket (tap), NULL);
    va_list args;
    va_start (args, reader);
    for (zsock_t *sock = va_arg (args, zsock_t *); sock; sock = va_arg (args, zsock_t *))
        zpoller_add (poller, sock);
    va_end (args);
    while (true) {
        void *which = zpoller_wait (poller, -1);
        if (!which) {
            if (zpoller_terminated (poller))
                break;
            continue;
        }
        if (which == pipe) {
            if (ly_actor_pipe (pipe, actor, verbose, status, self))
                break;
        }
        else
        if (which == ly_tap_socket (tap))
            ly_tap_handle (tap);
        else
            reader (self, (zsock_t *) which);
    }
    zpoller_destroy (&poller);
}

static unsigned s_failures;         /* actors whose set-up failed (atomic) */

void
ly_actor_ready (zsock_t *pipe, bool ok)
{
    if (!ok)
        __atomic_add_fetch (&s_failures, 1, __ATOMIC_SEQ_CST);
    zsock_signal (pipe, ok? 0: 1);
}

unsigned
ly_actor_failures (void)
{
    return __atomic_load_n (&s_failures, __ATOMIC_SEQ_CST);
}
