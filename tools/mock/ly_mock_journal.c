/*  ly_mock_journal.c: the journal of layers-mock (see ly_mock_journal.h). A ring of
    entries under one mutex; bodies are kept raw and parsed only when a test reads
    them, so a benchmark's thousands of batches cost their size and no more. */
#include "ly_prelude.h"
#include "ly_mock_journal.h"

typedef struct {
    uint64_t requests;          /* requests received */
    uint64_t events;            /* events accepted by the fake */
    uint64_t refused;           /* requests the fake refused */
    uint64_t faulted;           /* requests a fault changed */
    uint64_t dropped;           /* connections closed without an answer */
} s_counters_t;

struct _ly_mock_journal_t {
    pthread_mutex_t lock;       /* guards everything below */
    ly_mock_entry_t **ring;     /* max_entries slots, owned */
    size_t max_entries;
    size_t max_bytes;
    size_t first;               /* slot of the oldest entry */
    size_t count;               /* entries kept */
    size_t bytes;               /* their bodies and answers */
    uint64_t last_seq;
    s_counters_t counters [LY_MOCK_SERVICES];
};

ly_mock_journal_t *
ly_mock_journal_new (size_t max_entries, size_t max_bytes)
{
    ly_mock_journal_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->max_entries = max_entries? max_entries: 1;
    self->max_bytes = max_bytes;
    self->ring = calloc (self->max_entries, sizeof *self->ring);
    if (!self->ring) {
        free (self);
        return NULL;
    }
    pthread_mutex_init (&self->lock, NULL);
    return self;
}

void
ly_mock_journal_destroy (ly_mock_journal_t **self_p)
{
    ly_mock_journal_t *self = *self_p;
    if (!self)
        return;
    ly_mock_journal_clear (self);
    pthread_mutex_destroy (&self->lock);
    free (self->ring);
    free (self);
    *self_p = NULL;
}

ly_mock_entry_t *
ly_mock_entry_new (void)
{
    return calloc (1, sizeof (ly_mock_entry_t));
}

void
ly_mock_entry_destroy (ly_mock_entry_t **self_p)
{
    ly_mock_entry_t *self = *self_p;
    if (!self)
        return;
    free (self->method);
    free (self->path);
    json_decref (self->query);
    json_decref (self->headers);
    free (self->body);
    json_decref (self->fault_ids);
    json_decref (self->errors);
    json_decref (self->warnings);
    free (self->response);
    free (self->response_type);
    free (self);
    *self_p = NULL;
}

static size_t
s_entry_bytes (const ly_mock_entry_t *entry)
{
    return entry->body_size + (entry->response? strlen (entry->response): 0) + 512;
}

//  Drops the oldest entry. Lock held, count > 0.
static void
s_evict (ly_mock_journal_t *self)
{
    ly_mock_entry_t *oldest = self->ring [self->first];
    self->ring [self->first] = NULL;
    self->first = (self->first + 1) % self->max_entries;
    self->count--;
    self->bytes -= s_entry_bytes (oldest);
    ly_mock_entry_destroy (&oldest);
}

uint64_t
ly_mock_journal_add (ly_mock_journal_t *self, ly_mock_entry_t **entry_p)
{
    ly_mock_entry_t *entry = *entry_p;
    *entry_p = NULL;
    size_t bytes = s_entry_bytes (entry);
    pthread_mutex_lock (&self->lock);
    uint64_t seq = entry->seq = ++self->last_seq;
    s_counters_t *counters = &self->counters [entry->service];
    counters->requests++;
    counters->events += (uint64_t) entry->events;
    counters->refused += entry->refused;
    counters->faulted += json_array_size (entry->fault_ids) > 0;
    counters->dropped += entry->dropped;
    while (self->count > 0
       && (self->count == self->max_entries || self->bytes + bytes > self->max_bytes))
        s_evict (self);
    self->ring [(self->first + self->count) % self->max_entries] = entry;
    self->count++;
    self->bytes += bytes;
    pthread_mutex_unlock (&self->lock);
    return seq;
}

static json_t *
s_time_text (int64_t usec)
{
    time_t seconds = (time_t) (usec / 1000000);
    struct tm tm;
    gmtime_r (&seconds, &tm);
    char text [40];
    size_t len = strftime (text, sizeof text, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (text + len, sizeof text - len, ".%03dZ", (int) (usec % 1000000 / 1000));
    return json_string (text);
}

static json_t *
s_describe (const ly_mock_entry_t *entry, bool bodies)
{
    //  Deep copies: the answer is serialized and freed after the lock is let go, while
    //  another thread may evict the entry.
    json_t *out = json_pack ("{s:I, s:o, s:I, s:s, s:s, s:s, s:o, s:o, s:I, s:i, s:b, s:I, "
                             "s:o, s:o, s:o, s:i, s:b}",
        "seq", (json_int_t) entry->seq, "time", s_time_text (entry->time_usec),
        "time_usec", (json_int_t) entry->time_usec,
        "service", ly_mock_service_name (entry->service),
        "method", entry->method, "path", entry->path,
        "query", json_deep_copy (entry->query), "headers", json_deep_copy (entry->headers),
        "body_bytes", (json_int_t) entry->body_size,
        "status", (int) entry->status, "dropped", entry->dropped,
        "delay_ms", (json_int_t) entry->delay_ms, "faults", json_deep_copy (entry->fault_ids),
        "errors", json_deep_copy (entry->errors), "warnings", json_deep_copy (entry->warnings),
        "events", entry->events, "refused", entry->refused);
    if (!out)
        return json_null ();
    if (bodies) {
        const char *type = json_string_value (json_object_get (entry->headers, "content-type"));
        json_object_set_new (out, "body", ly_mock_body_value (type, entry->body, entry->body_size));
        json_object_set_new (out, "response", entry->response
                             ? ly_mock_body_value (entry->response_type, entry->response,
                                                   strlen (entry->response))
                             : json_null ());
    }
    return out;
}

json_t *
ly_mock_journal_list (ly_mock_journal_t *self, int service, uint64_t since, size_t limit,
                      bool bodies)
{
    json_t *list = json_array ();
    pthread_mutex_lock (&self->lock);
    //  Newest first back to the oldest wanted, then reversed.
    size_t taken = 0;
    for (size_t i = self->count; i > 0 && (!limit || taken < limit); i--) {
        ly_mock_entry_t *entry = self->ring [(self->first + i - 1) % self->max_entries];
        if (entry->seq <= since)
            break;
        if (service != LY_MOCK_ANY_SERVICE && (int) entry->service != service)
            continue;
        json_array_append_new (list, s_describe (entry, bodies));
        taken++;
    }
    pthread_mutex_unlock (&self->lock);
    json_t *ordered = json_array ();
    for (size_t i = json_array_size (list); i > 0; i--)
        json_array_append (ordered, json_array_get (list, i - 1));
    json_decref (list);
    return ordered;
}

json_t *
ly_mock_journal_stats (ly_mock_journal_t *self)
{
    json_t *stats = json_object ();
    pthread_mutex_lock (&self->lock);
    for (int i = 0; i < LY_MOCK_SERVICES; i++) {
        s_counters_t *c = &self->counters [i];
        json_object_set_new (stats, ly_mock_service_name (i), json_pack (
            "{s:I, s:I, s:I, s:I, s:I}", "requests", (json_int_t) c->requests,
            "events", (json_int_t) c->events, "refused", (json_int_t) c->refused,
            "faulted", (json_int_t) c->faulted, "dropped", (json_int_t) c->dropped));
    }
    json_object_set_new (stats, "last_seq", json_integer ((json_int_t) self->last_seq));
    json_object_set_new (stats, "kept", json_integer ((json_int_t) self->count));
    pthread_mutex_unlock (&self->lock);
    return stats;
}

size_t
ly_mock_journal_clear (ly_mock_journal_t *self)
{
    pthread_mutex_lock (&self->lock);
    size_t cleared = self->count;
    while (self->count > 0)
        s_evict (self);
    self->first = 0;
    memset (self->counters, 0, sizeof self->counters);
    pthread_mutex_unlock (&self->lock);
    return cleared;
}
