/*  layers-tap: watches actor traffic. Connects to the debug publisher of every running
    actor (or the ones named), which switches their taps on, and prints each frame as
    one JSON line: time, actor, pid, direction, message type and fields. Personal data
    is redacted by the actor before the frame leaves it, and again here. */
#include "ly_prelude.h"
#include "ly_actor.h"
#include "ly_config.h"
#include "ly_log.h"
#include "ly_msg.h"
#include "ly_tap.h"
#include <dirent.h>

#define S_RESCAN_MSEC 300

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: layers-tap [OPTIONS] [ACTOR...]\n"
"\n"
"Prints the frames Layers actors send and receive, one JSON object per line:\n"
"  {\"time\", \"actor\", \"pid\", \"direction\", \"type\", \"fields\"}\n"
"Raw personal data (IP, email, phone, User-Agent) is shown as \"[redacted]\"; in a\n"
"partner API request's path, emails, phones and IPs as [email], [phone], [ip].\n"
"Watching switches an actor's tap on; it costs nothing while nobody watches.\n"
"Without ACTOR names every actor is watched (store, gateway, ...); actors that start\n"
"later are picked up.\n"
"\n"
"Options:\n"
"  --filter TYPE    print only messages of this type (e.g. PING); repeatable\n"
"  --count N        exit after printing N frames\n"
"  --timeout SEC    exit after SEC seconds (status 1 if --count was not reached)\n"
"  --help           show this help and exit\n"
"  --version        show the version and exit\n"
"\n"
"The taps live under $LAYERS_DATA_DIR/tap (LAYERS_DATA_DIR defaults to ./var).\n");
}

typedef struct {
    zsock_t *sub;           /* subscriber, owned */
    zhashx_t *connected;    /* endpoint -> "" for endpoints we connected, owned */
    char **actors;          /* actor names to watch (argv), NULL: all */
    int actor_count;
    char **filters;         /* type names to print, borrowed from argv */
    int filter_count;
} s_tap_t;

static bool
s_wanted_actor (s_tap_t *self, const char *name, size_t len)
{
    if (self->actor_count == 0)
        return true;
    for (int i = 0; i < self->actor_count; i++)
        if (strlen (self->actors [i]) == len && memcmp (self->actors [i], name, len) == 0)
            return true;
    return false;
}

//  Connects to every live tap endpoint we have not connected yet.
static void
s_scan (s_tap_t *self)
{
    char *dir = ly_tap_dir ();
    DIR *handle = opendir (dir);
    if (handle) {
        struct dirent *entry;
        while ((entry = readdir (handle))) {
            const char *dot = strrchr (entry->d_name, '.');
            if (!dot || dot == entry->d_name)
                continue;
            int pid = atoi (dot + 1);
            if (pid <= 0 || kill (pid, 0) == -1)
                continue;       //  a dead actor's leftover
            if (!s_wanted_actor (self, entry->d_name, (size_t) (dot - entry->d_name)))
                continue;
            char *endpoint = zsys_sprintf ("ipc://%s/%s", dir, entry->d_name);
            if (!zhashx_lookup (self->connected, endpoint)) {
                if (zsock_connect (self->sub, "%s", endpoint) == 0)
                    zhashx_insert (self->connected, endpoint, "");
            }
            zstr_free (&endpoint);
        }
        closedir (handle);
    }
    zstr_free (&dir);
}

//  Prints one tap frame; returns true when it was printed (passed the filter).
static bool
s_print (s_tap_t *self, zframe_t *frame)
{
    msgpack_unpacked unpacked;
    msgpack_unpacked_init (&unpacked);
    size_t offset = 0;
    bool printed = false;
    if (msgpack_unpack_next (&unpacked, (const char *) zframe_data (frame),
                             zframe_size (frame), &offset) != MSGPACK_UNPACK_SUCCESS)
        goto cleanup;
    msgpack_object *top = &unpacked.data;
    if (top->type != MSGPACK_OBJECT_ARRAY || top->via.array.size != 6)
        goto cleanup;
    msgpack_object *item = top->via.array.ptr;
    msgpack_object *message = &item [5];
    if (item [0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || item [0].via.u64 != LY_TAP_VERSION
    ||  item [2].type != MSGPACK_OBJECT_STR || item [4].type != MSGPACK_OBJECT_STR
    ||  message->type != MSGPACK_OBJECT_ARRAY || message->via.array.size < 2
    ||  message->via.array.ptr [1].type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        goto cleanup;
    int type = (int) message->via.array.ptr [1].via.u64;
    const char *type_name = ly_msg_type_name (type);
    if (self->filter_count) {
        bool match = false;
        for (int i = 0; i < self->filter_count && !match; i++)
            match = type_name && strcasecmp (self->filters [i], type_name) == 0;
        if (!match)
            goto cleanup;
    }
    int64_t usec = item [1].type == MSGPACK_OBJECT_POSITIVE_INTEGER? (int64_t) item [1].via.u64: 0;
    time_t seconds = (time_t) (usec / 1000000);
    struct tm tm;
    gmtime_r (&seconds, &tm);
    char when [64];
    size_t n = strftime (when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (when + n, sizeof when - n, ".%06dZ", (int) (usec % 1000000));

    json_t *fields = json_object ();
    for (uint32_t i = 2; i < message->via.array.size; i++) {
        msgpack_object *value = &message->via.array.ptr [i];
        if (value->type == MSGPACK_OBJECT_NIL)
            continue;
        const ly_field_t *field = type_name? ly_msg_field (type, i - 2): NULL;
        char unknown [32];
        snprintf (unknown, sizeof unknown, "field_%u", i - 2);
        json_t *json = field && field->pii == LY_PII_RAW
                     ? json_string ("[redacted]")
                     : ly_msgpack_to_json (value, true);
        json_object_set_new (fields, field? field->name: unknown, json);
    }
    json_t *line = json_pack ("{s:s, s:s%, s:I, s:s%, s:s, s:o}",
        "time", when,
        "actor", item [2].via.str.ptr, (size_t) item [2].via.str.size,
        "pid", (json_int_t) (item [3].type == MSGPACK_OBJECT_POSITIVE_INTEGER? item [3].via.u64: 0),
        "direction", item [4].via.str.ptr, (size_t) item [4].via.str.size,
        "type", type_name? type_name: "UNKNOWN",
        "fields", fields);
    if (line) {
        char *text = json_dumps (line, JSON_COMPACT);
        if (text) {
            printf ("%s\n", text);
            fflush (stdout);
            free (text);
            printed = true;
        }
        json_decref (line);
    }
cleanup:
    msgpack_unpacked_destroy (&unpacked);
    return printed;
}

int
main (int argc, char *argv [])
{
    s_tap_t self = { 0 };
    long count = -1;
    long timeout_sec = -1;
    char err [512];
    self.actors = (char **) calloc ((size_t) argc, sizeof (char *));
    self.filters = (char **) calloc ((size_t) argc, sizeof (char *));
    for (int i = 1; i < argc; i++) {
        char *end = NULL;
        if (streq (argv [i], "--help") || streq (argv [i], "-h")) {
            s_usage (stdout);
            free (self.actors);
            free (self.filters);
            return 0;
        }
        const char *bad = NULL;         //  what is wrong with argument i
        if (streq (argv [i], "--version")) {
            printf ("layers-tap %s\n", LY_VERSION);
            free (self.actors);
            free (self.filters);
            return 0;
        }
        else
        if (streq (argv [i], "--filter")) {
            if (i + 1 < argc)
                self.filters [self.filter_count++] = argv [++i];
            else
                bad = "takes a message type";
        }
        else
        if (streq (argv [i], "--count") || streq (argv [i], "--timeout")) {
            long value = i + 1 < argc? strtol (argv [i + 1], &end, 10): 0;
            if (i + 1 >= argc || end == argv [i + 1] || *end || value <= 0)
                bad = "takes a positive whole number";
            else
            if (streq (argv [i++], "--count"))
                count = value;
            else
                timeout_sec = value;
        }
        else
        if (argv [i][0] != '-') {
            bool known = false;
            for (int k = 0; ly_actor_names [k]; k++)
                known |= streq (argv [i], ly_actor_names [k]);
            if (known)
                self.actors [self.actor_count++] = argv [i];
            else
                bad = "is not an actor (store, api, ingest, gateway, relay)";
        }
        else
            bad = "is not an option";
        if (bad) {
            fprintf (stderr, "layers-tap: \"%s\" %s; see --help\n", argv [i], bad);
            free (self.actors);
            free (self.filters);
            return 2;
        }
    }
    for (int i = 0; i < self.filter_count; i++)
        if (ly_msg_type_by_name (self.filters [i]) < 0)
            fprintf (stderr, "layers-tap: warning: no message type is called \"%s\"\n",
                     self.filters [i]);
    zsys_handler_set (NULL);      //  Ctrl-C simply ends the program
    signal (SIGPIPE, SIG_IGN);
    if (ly_config_load (&ly_config, err, sizeof err)) {
        fprintf (stderr, "layers-tap: %s\n", err);
        return 2;
    }
    ly_log_init (ly_config.log_level, "layers-tap");
    zsys_init ();
    zsys_set_linger (0);
    self.sub = zsock_new (ZMQ_SUB);
    zsock_set_subscribe (self.sub, "");
    zsock_set_rcvhwm (self.sub, 100000);
    self.connected = zhashx_new ();

    int rc = 0;
    long printed = 0;
    int64_t deadline = timeout_sec > 0? ly_mono_msec () + timeout_sec * 1000: -1;
    int64_t next_scan = 0;
    bool told = false;              //  that there is no tap to read (yet)
    while (count < 0 || printed < count) {
        int64_t now = ly_mono_msec ();
        if (deadline >= 0 && now >= deadline) {
            rc = count > 0? 1: 0;
            break;
        }
        if (now >= next_scan) {
            s_scan (&self);
            next_scan = now + S_RESCAN_MSEC;
            if (!told && zhashx_size (self.connected) == 0) {
                //  Once: a wrong directory would look like a quiet server
                char *dir = ly_tap_dir ();
                fprintf (stderr, "layers-tap: no running actor's tap in \"%s\" (yet); "
                         "is LAYERS_DATA_DIR the server's? waiting\n", dir);
                zstr_free (&dir);
                told = true;
            }
        }
        long wait = (long) (next_scan - now);
        if (deadline >= 0 && deadline - now < wait)
            wait = (long) (deadline - now);
        zmq_pollitem_t item = { zsock_resolve (self.sub), 0, ZMQ_POLLIN, 0 };
        int ready = zmq_poll (&item, 1, wait);
        if (ready == -1 && errno != EINTR)
            break;
        if (ready > 0) {
            zframe_t *frame = zframe_recv (self.sub);
            if (frame && s_print (&self, frame))
                printed++;
            zframe_destroy (&frame);
        }
    }
    zsock_destroy (&self.sub);
    zhashx_destroy (&self.connected);
    free (self.actors);
    free (self.filters);
    ly_config_free (&ly_config);
    zsys_shutdown ();
    return rc;
}
