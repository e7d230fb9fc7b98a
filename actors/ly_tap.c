/*  ly_tap.c: an actor's debug publisher (see ly_tap.h). The XPUB socket tells us when
    the first tap subscribes and the last one leaves, so a frame is encoded only while
    someone is watching. Personal data is redacted before it leaves the process. */
#include "ly_tap.h"
#include "ly_config.h"
#include "ly_log.h"
#include <dirent.h>

struct _ly_tap_t {
    char *actor;        /* actor name, owned */
    char *path;         /* the socket's file, owned */
    zsock_t *xpub;      /* publisher, owned */
    bool active;        /* at least one subscriber */
};

char *
ly_tap_dir (void)
{
    return zsys_sprintf ("%s/tap", ly_config.data_dir);
}

//  Removes the tap files ("ACTOR.PID") of processes that no longer run (killed, so
//  they could not remove their own): they would pile up with every restart.
static void
s_remove_stale (const char *dir)
{
    DIR *listing = opendir (dir);
    struct dirent *entry;
    while (listing && (entry = readdir (listing))) {
        const char *dot = strrchr (entry->d_name, '.');
        char *end = NULL;
        long pid = dot? strtol (dot + 1, &end, 10): 0;
        if (pid <= 0 || *end || kill ((pid_t) pid, 0) == 0 || errno != ESRCH)
            continue;                   //  not a tap file, or its process runs
        char *path = zsys_sprintf ("%s/%s", dir, entry->d_name);
        unlink (path);
        zstr_free (&path);
    }
    if (listing)
        closedir (listing);
}

ly_tap_t *
ly_tap_new (const char *actor)
{
    ly_tap_t *self = (ly_tap_t *) zmalloc (sizeof (ly_tap_t));
    self->actor = strdup (actor);
    self->xpub = zsock_new (ZMQ_XPUB);
    char *dir = ly_tap_dir ();
    zsys_dir_create ("%s", dir);
    chmod (dir, 0700);          //  frames are redacted, but the taps are ours alone
    s_remove_stale (dir);
    self->path = zsys_sprintf ("%s/%s.%d", dir, actor, (int) getpid ());
    if (self->xpub) {
        zsock_set_sndhwm (self->xpub, 10000);
        zsock_set_linger (self->xpub, 0);
        if (zsock_bind (self->xpub, "ipc://%s", self->path) == -1) {
            ly_error (actor, "could not bind tap publisher in \"%s\": %s",
                      dir, zmq_strerror (zmq_errno ()));
            zsock_destroy (&self->xpub);
        }
    }
    zstr_free (&dir);
    if (!self->xpub)
        ly_tap_destroy (&self);
    return self;
}

void
ly_tap_destroy (ly_tap_t **self_p)
{
    assert (self_p);
    ly_tap_t *self = *self_p;
    if (self) {
        if (self->xpub)
            unlink (self->path);
        zsock_destroy (&self->xpub);
        zstr_free (&self->path);
        free (self->actor);
        free (self);
        *self_p = NULL;
    }
}

zsock_t *
ly_tap_socket (ly_tap_t *self)
{
    return self->xpub;
}

void
ly_tap_handle (ly_tap_t *self)
{
    //  Without XPUB_VERBOSE we get the first subscription and the last unsubscription
    //  of each topic; every tap subscribes to everything.
    zframe_t *frame = zframe_recv (self->xpub);
    if (!frame)
        return;
    if (zframe_size (frame) >= 1) {
        bool subscribe = zframe_data (frame) [0] == 1;
        if (subscribe != self->active)
            ly_info (self->actor, "debug tap %s", subscribe? "on": "off");
        self->active = subscribe;
    }
    zframe_destroy (&frame);
}

bool
ly_tap_active (ly_tap_t *self)
{
    return self && self->active;
}

void
ly_tap_publish (ly_tap_t *self, const char *direction, const ly_msg_t *msg)
{
    if (!ly_tap_active (self))
        return;
    void *body;
    size_t body_size;
    if (ly_msg_encode (msg, true, &body, &body_size))
        return;
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    msgpack_pack_array (&pk, 6);
    msgpack_pack_uint8 (&pk, LY_TAP_VERSION);
    msgpack_pack_int64 (&pk, ly_now_usec ());
    msgpack_pack_str_with_body (&pk, self->actor, strlen (self->actor));
    msgpack_pack_int32 (&pk, (int32_t) getpid ());
    msgpack_pack_str_with_body (&pk, direction, strlen (direction));
    msgpack_sbuffer_write (&sbuf, body, body_size);     //  the message, nested as-is
    free (body);
    zframe_t *frame = zframe_new (sbuf.data, sbuf.size);
    msgpack_sbuffer_destroy (&sbuf);
    if (zframe_send (&frame, self->xpub, ZFRAME_DONTWAIT) == -1)
        zframe_destroy (&frame);
}
