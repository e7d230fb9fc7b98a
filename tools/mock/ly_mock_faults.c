/*  ly_mock_faults.c: the fault queue of layers-mock (see ly_mock_faults.h). A list in
    the order faults were added, under one mutex; a fault whose count reaches zero
    leaves the list. Two kinds: latency-only faults (just delay_ms) add to whatever
    answers after them in the list, so a lasting latency does not hide the faults queued
    after it. */
#include "ly_prelude.h"
#include "ly_mock_faults.h"

#define S_MAX_DELAY_MS 600000
#define S_MAX_FAULTS 10000

typedef struct _s_fault_t s_fault_t;
struct _s_fault_t {
    uint64_t id;                /* from 1, in order of arrival */
    int service;                /* ly_mock_service_t, or LY_MOCK_ANY_SERVICE */
    int64_t count;              /* uses left, -1: until cleared */
    int64_t applied;            /* uses so far */
    bool latency_only;          /* only delay_ms was given */
    int64_t delay_ms;
    bool drop;
    unsigned status;            /* 0: the fake's default */
    bool has_code;
    json_int_t code;
    bool has_subcode;
    json_int_t subcode;
    char *message;              /* owned, NULL: default */
    json_t *body;               /* owned, NULL: the fake's error body */
    char *content_type;         /* owned */
    json_t *headers;            /* owned */
    char *match;                /* owned, NULL: every request */
    json_t *spec;               /* the description as posted, owned */
    s_fault_t *next;
};

struct _ly_mock_faults_t {
    pthread_mutex_t lock;       /* guards everything below */
    s_fault_t *head, *tail;     /* the queue, oldest first */
    size_t size;
    uint64_t next_id;
};

ly_mock_faults_t *
ly_mock_faults_new (void)
{
    ly_mock_faults_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    pthread_mutex_init (&self->lock, NULL);
    self->next_id = 1;
    return self;
}

static void
s_fault_destroy (s_fault_t **self_p)
{
    s_fault_t *self = *self_p;
    if (!self)
        return;
    free (self->message);
    json_decref (self->body);
    free (self->content_type);
    json_decref (self->headers);
    free (self->match);
    json_decref (self->spec);
    free (self);
    *self_p = NULL;
}

void
ly_mock_faults_destroy (ly_mock_faults_t **self_p)
{
    ly_mock_faults_t *self = *self_p;
    if (!self)
        return;
    ly_mock_faults_clear (self, LY_MOCK_ANY_SERVICE);
    pthread_mutex_destroy (&self->lock);
    free (self);
    *self_p = NULL;
}

static int
s_fail (char *err, size_t errlen, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_fail (char *err, size_t errlen, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (err, errlen, format, args);
    va_end (args);
    return -1;
}

//  Fills fault from spec; 0 / -1 with the reason in err.
static int
s_parse (s_fault_t *fault, json_t *spec, char *err, size_t errlen)
{
    static const char *known [] = { "service", "count", "status", "body", "content_type",
        "headers", "code", "subcode", "message", "delay_ms", "drop", "match" };
    const char *key;
    json_t *value;
    json_object_foreach (spec, key, value) {
        bool found = false;
        for (size_t i = 0; i < sizeof known / sizeof known [0]; i++)
            found |= streq (key, known [i]);
        if (!found)
            return s_fail (err, errlen, "unknown fault field \"%s\"", key);
    }
    if (ly_mock_service_parse (json_string_value (json_object_get (spec, "service")), true,
                               &fault->service))
        return s_fail (err, errlen, "service must be \"meta\", \"tiktok\", \"apple\", \"model\" or \"*\"");
    fault->count = 1;
    if ((value = json_object_get (spec, "count"))) {
        fault->count = json_is_integer (value)? json_integer_value (value): 0;
        if (fault->count < -1 || fault->count == 0)
            return s_fail (err, errlen, "count must be a positive integer, or -1 for until cleared");
    }
    if ((value = json_object_get (spec, "status"))) {
        json_int_t status = json_is_integer (value)? json_integer_value (value): 0;
        if (status < 100 || status > 599)
            return s_fail (err, errlen, "status must be an integer from 100 to 599");
        fault->status = (unsigned) status;
    }
    if ((value = json_object_get (spec, "delay_ms"))) {
        fault->delay_ms = json_is_integer (value)? json_integer_value (value): -1;
        if (fault->delay_ms < 0 || fault->delay_ms > S_MAX_DELAY_MS)
            return s_fail (err, errlen, "delay_ms must be an integer from 0 to %d", S_MAX_DELAY_MS);
    }
    if ((value = json_object_get (spec, "drop"))) {
        if (!json_is_boolean (value))
            return s_fail (err, errlen, "drop must be true or false");
        fault->drop = json_is_true (value);
    }
    if ((value = json_object_get (spec, "code"))) {
        if (!json_is_integer (value))
            return s_fail (err, errlen, "code must be an integer");
        fault->has_code = true;
        fault->code = json_integer_value (value);
    }
    if ((value = json_object_get (spec, "subcode"))) {
        if (!json_is_integer (value))
            return s_fail (err, errlen, "subcode must be an integer");
        fault->has_subcode = true;
        fault->subcode = json_integer_value (value);
    }
    if ((value = json_object_get (spec, "message"))) {
        if (!json_is_string (value))
            return s_fail (err, errlen, "message must be a string");
        fault->message = strdup (json_string_value (value));
    }
    if ((value = json_object_get (spec, "match"))) {
        if (!json_is_string (value) || json_string_length (value) == 0)
            return s_fail (err, errlen, "match must be a non-empty string");
        fault->match = strdup (json_string_value (value));
    }
    if ((value = json_object_get (spec, "content_type"))) {
        if (!json_is_string (value) || strpbrk (json_string_value (value), "\r\n"))
            return s_fail (err, errlen, "content_type must be a string on one line");
        fault->content_type = strdup (json_string_value (value));
    }
    if ((value = json_object_get (spec, "headers"))) {
        if (!json_is_object (value))
            return s_fail (err, errlen, "headers must be an object of strings");
        const char *name;
        json_t *header;
        json_object_foreach (value, name, header)
            if (!json_is_string (header) || strpbrk (json_string_value (header), "\r\n")
            ||  !*name || strpbrk (name, ": \r\n"))
                return s_fail (err, errlen, "headers must be an object of strings");
        fault->headers = json_deep_copy (value);
    }
    if ((value = json_object_get (spec, "body")))
        fault->body = json_deep_copy (value);
    bool answers = fault->status || fault->body || fault->has_code || fault->has_subcode
                || fault->message || fault->content_type || fault->headers;
    if (!answers && !fault->drop && !json_object_get (spec, "delay_ms"))
        return s_fail (err, errlen, "a fault needs status, body, code, drop or delay_ms");
    fault->latency_only = !answers && !fault->drop;
    return 0;
}

//  The fault as GET /_mock/faults lists it: the posted fields, id, count left, applied.
static json_t *
s_describe (s_fault_t *fault)
{
    json_t *out = json_deep_copy (fault->spec);     //  shares nothing with the queue
    json_object_set_new (out, "id", json_integer ((json_int_t) fault->id));
    json_object_set_new (out, "count", json_integer (fault->count));
    json_object_set_new (out, "applied", json_integer (fault->applied));
    return out;
}

json_t *
ly_mock_faults_add (ly_mock_faults_t *self, json_t *spec, char *err, size_t errlen)
{
    if (!json_is_object (spec)) {
        s_fail (err, errlen, "a fault must be a JSON object");
        return NULL;
    }
    s_fault_t *fault = calloc (1, sizeof *fault);
    if (!fault) {
        s_fail (err, errlen, "out of memory");
        return NULL;
    }
    if (s_parse (fault, spec, err, errlen)) {
        s_fault_destroy (&fault);
        return NULL;
    }
    fault->spec = json_deep_copy (spec);
    pthread_mutex_lock (&self->lock);
    json_t *listed = NULL;
    if (self->size >= S_MAX_FAULTS) {
        s_fail (err, errlen, "too many faults queued (at most %d)", S_MAX_FAULTS);
        s_fault_destroy (&fault);
    }
    else {
        fault->id = self->next_id++;
        if (self->tail)
            self->tail->next = fault;
        else
            self->head = fault;
        self->tail = fault;
        self->size++;
        listed = s_describe (fault);
    }
    pthread_mutex_unlock (&self->lock);
    return listed;
}

json_t *
ly_mock_faults_list (ly_mock_faults_t *self)
{
    json_t *list = json_array ();
    pthread_mutex_lock (&self->lock);
    for (s_fault_t *fault = self->head; fault; fault = fault->next)
        json_array_append_new (list, s_describe (fault));
    pthread_mutex_unlock (&self->lock);
    return list;
}

//  Unlinks every fault for which drop_it (fault, arg, id) is true; returns how many.
//  Lock held.
static size_t
s_remove (ly_mock_faults_t *self, bool (*drop_it) (s_fault_t *, int, uint64_t), int arg,
          uint64_t id)
{
    size_t removed = 0;
    s_fault_t **link = &self->head;
    self->tail = NULL;
    while (*link) {
        s_fault_t *fault = *link;
        if (drop_it (fault, arg, id)) {
            *link = fault->next;
            s_fault_destroy (&fault);
            self->size--;
            removed++;
        }
        else {
            self->tail = fault;
            link = &fault->next;
        }
    }
    return removed;
}

static bool
s_of_service (s_fault_t *fault, int service, uint64_t unused)
{
    return service == LY_MOCK_ANY_SERVICE || fault->service == service;
}

static bool
s_used_up (s_fault_t *fault, int unused, uint64_t unused_id)
{
    return fault->count == 0;
}

static bool
s_has_id (s_fault_t *fault, int unused, uint64_t id)
{
    return fault->id == id;
}

void
ly_mock_faults_remove (ly_mock_faults_t *self, uint64_t id)
{
    pthread_mutex_lock (&self->lock);
    s_remove (self, s_has_id, 0, id);
    pthread_mutex_unlock (&self->lock);
}

size_t
ly_mock_faults_clear (ly_mock_faults_t *self, int service)
{
    pthread_mutex_lock (&self->lock);
    size_t removed = s_remove (self, s_of_service, service, 0);
    pthread_mutex_unlock (&self->lock);
    return removed;
}

static bool
s_applies (s_fault_t *fault, ly_mock_service_t service, const char *body, size_t body_size)
{
    if (fault->count == 0)
        return false;
    if (fault->service != LY_MOCK_ANY_SERVICE && fault->service != (int) service)
        return false;
    return !fault->match || (body && memmem (body, body_size, fault->match, strlen (fault->match)));
}

static void
s_use (s_fault_t *fault, ly_mock_plan_t *plan)
{
    if (fault->count > 0)
        fault->count--;
    fault->applied++;
    plan->delay_ms += fault->delay_ms;
    json_array_append_new (plan->fault_ids, json_integer ((json_int_t) fault->id));
}

void
ly_mock_faults_take (ly_mock_faults_t *self, ly_mock_service_t service,
                     const char *body, size_t body_size, ly_mock_plan_t *plan)
{
    memset (plan, 0, sizeof *plan);
    plan->fault_ids = json_array ();
    pthread_mutex_lock (&self->lock);
    s_fault_t *latency = NULL, *answer = NULL;
    //  In order: a latency-only fault met first adds its delay to the answer found
    //  after it; the first answer ends the search (a latency queued after it waits for
    //  a later request)
    for (s_fault_t *fault = self->head; fault && !answer; fault = fault->next) {
        if (!s_applies (fault, service, body, body_size))
            continue;
        if (fault->latency_only && !latency)
            latency = fault;
        else
        if (!fault->latency_only && !answer)
            answer = fault;
    }
    if (latency)
        s_use (latency, plan);
    if (answer) {
        s_use (answer, plan);
        plan->drop = answer->drop;
        plan->answer = answer->status || answer->body || answer->has_code || answer->has_subcode
                    || answer->message || answer->content_type || answer->headers;
        plan->spec.status = answer->status;
        plan->spec.has_code = answer->has_code;
        plan->spec.code = answer->code;
        plan->spec.has_subcode = answer->has_subcode;
        plan->spec.subcode = answer->subcode;
        plan->message = answer->message? strdup (answer->message): NULL;
        plan->spec.message = plan->message;
        plan->body = json_deep_copy (answer->body);
        plan->content_type = answer->content_type? strdup (answer->content_type): NULL;
        plan->headers = json_deep_copy (answer->headers);
    }
    if (latency || answer)
        s_remove (self, s_used_up, 0, 0);
    pthread_mutex_unlock (&self->lock);
}

void
ly_mock_plan_reset (ly_mock_plan_t *plan)
{
    json_decref (plan->body);
    free (plan->content_type);
    json_decref (plan->headers);
    free (plan->message);
    json_decref (plan->fault_ids);
    memset (plan, 0, sizeof *plan);
}
