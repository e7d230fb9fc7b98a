/*  ly_metrics.c: the process-wide metrics registry and its Prometheus text rendering
    (format 0.0.4). A mutex guards the registry's shape (creating, rendering, freeing);
    updates are lock-free atomics on the metric itself, so call sites that keep their
    ly_metric_t pointer pay no lock. A histogram keeps one counter per bucket, and its
    count is their sum, so a rendering's +Inf bucket always equals its _count. */
#include "ly_prelude.h"
#include "ly_metrics.h"

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;

static const char *s_type_names [] = { "counter", "gauge", "histogram" };

//  Upper bounds of the latency buckets, in seconds; a last bucket takes the rest (+Inf)
static const double s_bounds [] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
#define S_BOUNDS    (sizeof s_bounds / sizeof s_bounds [0])

typedef struct _s_family_t s_family_t;

//  One metric name: its help, its type and its label sets
struct _s_family_t {
    char *name;                 /* owned */
    char *help;                 /* owned, NULL when none was given */
    s_type_t type;              /* fixed by the first creation */
    ly_metric_t *series;        /* first label set, owned; creation order */
    ly_metric_t *series_tail;   /* last label set, borrowed */
    s_family_t *next;           /* next name in creation order */
};

//  One label set of a metric name
struct _ly_metric_t {
    s_family_t *family;         /* borrowed from the registry */
    char *labels;               /* owned; "" when none */
    uint64_t value;             /* atomic, the bits of a double: counter or gauge value, histogram sum */
    uint64_t buckets [S_BOUNDS + 1];    /* atomic, histogram: observations per bucket, not cumulative */
    ly_metric_t *next;          /* next label set of the family */
};

static pthread_mutex_t s_mutex = PTHREAD_MUTEX_INITIALIZER;
static s_family_t *s_families;          /* owned; creation order */
static s_family_t *s_families_tail;     /* borrowed */
static zhashx_t *s_index;               /* "name" -> family, "name{labels}" -> metric; borrowed values */
static zhashx_t *s_imports;             /* instance -> s_import_t: other processes' snapshots */

//  A snapshot another process sent, rendered with instance="<its name>"
typedef struct {
    char *instance;             /* owned */
    char *data;                 /* packed snapshot, owned */
    size_t size;
    int64_t received;           /* monotonic msec */
} s_import_t;

#define S_IMPORT_MAX_AGE_MSEC 15000     /* a process that stopped reporting is dropped */
#define S_IMPORT_MAX 256


//  --------------------------------------------------------------------------
//  Atomic doubles, kept as their bit pattern

static double
s_load (uint64_t *bits)
{
    uint64_t raw = __atomic_load_n (bits, __ATOMIC_RELAXED);
    double value;
    memcpy (&value, &raw, sizeof value);
    return value;
}

static void
s_store (uint64_t *bits, double value)
{
    uint64_t raw;
    memcpy (&raw, &value, sizeof raw);
    __atomic_store_n (bits, raw, __ATOMIC_RELAXED);
}

static void
s_add (uint64_t *bits, double delta)
{
    uint64_t expected = __atomic_load_n (bits, __ATOMIC_RELAXED);
    while (true) {
        double value;
        memcpy (&value, &expected, sizeof value);
        value += delta;
        uint64_t desired;
        memcpy (&desired, &value, sizeof desired);
        if (__atomic_compare_exchange_n (bits, &expected, desired, true,
                                         __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return;
    }
}


//  --------------------------------------------------------------------------
//  The registry

//  [a-zA-Z_:][a-zA-Z0-9_:]*
static bool
s_valid_name (const char *name)
{
    if (!name || !*name || isdigit ((unsigned char) name [0]))
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z')
           || (*c >= '0' && *c <= '9') || *c == '_' || *c == ':'))
            return false;
    return true;
}

//  The caller formats labels; we check only that they cannot break a line or the braces
static bool
s_valid_labels (const char *labels)
{
    return !strpbrk (labels, "\n{}") && (*labels == 0 || strchr (labels, '='));
}

static ly_metric_t *
s_metric (const char *name, const char *help, const char *labels, s_type_t type)
{
    assert (s_valid_name (name));
    if (!labels)
        labels = "";
    assert (s_valid_labels (labels));

    char *key;
    int rc = asprintf (&key, "%s{%s}", name, labels);
    assert (rc > 0);

    pthread_mutex_lock (&s_mutex);
    if (!s_index) {
        s_index = zhashx_new ();
        assert (s_index);
    }
    ly_metric_t *metric = (ly_metric_t *) zhashx_lookup (s_index, key);
    if (metric)
        assert (metric->family->type == type);     //  one name, one type
    else {
        s_family_t *family = (s_family_t *) zhashx_lookup (s_index, name);
        if (family)
            assert (family->type == type);
        else {
            family = (s_family_t *) calloc (1, sizeof *family);
            assert (family);
            family->name = strdup (name);
            assert (family->name);
            family->type = type;
            if (s_families_tail)
                s_families_tail->next = family;
            else
                s_families = family;
            s_families_tail = family;
            rc = zhashx_insert (s_index, name, family);
            assert (rc == 0);
        }
        if (!family->help && help) {
            family->help = strdup (help);
            assert (family->help);
        }
        metric = (ly_metric_t *) calloc (1, sizeof *metric);
        assert (metric);
        metric->family = family;
        metric->labels = strdup (labels);
        assert (metric->labels);
        if (family->series_tail)
            family->series_tail->next = metric;
        else
            family->series = metric;
        family->series_tail = metric;
        rc = zhashx_insert (s_index, key, metric);
        assert (rc == 0);
    }
    pthread_mutex_unlock (&s_mutex);
    free (key);
    return metric;
}

ly_metric_t *
ly_counter (const char *name, const char *help, const char *labels)
{
    return s_metric (name, help, labels, S_COUNTER);
}

ly_metric_t *
ly_gauge (const char *name, const char *help, const char *labels)
{
    return s_metric (name, help, labels, S_GAUGE);
}

ly_metric_t *
ly_histogram (const char *name, const char *help, const char *labels)
{
    return s_metric (name, help, labels, S_HISTOGRAM);
}


//  --------------------------------------------------------------------------
//  Updates: lock-free, any thread

//  A counter only goes up
void
ly_metric_add (ly_metric_t *metric, double value)
{
    assert (metric);
    assert (metric->family->type != S_HISTOGRAM);
    assert (metric->family->type == S_GAUGE || value >= 0);
    s_add (&metric->value, value);
}

void
ly_metric_set (ly_metric_t *metric, double value)
{
    assert (metric);
    assert (metric->family->type == S_GAUGE);
    s_store (&metric->value, value);
}

//  A sample lands in the first bucket whose bound is >= it (Prometheus' "le")
void
ly_metric_observe (ly_metric_t *metric, double value)
{
    assert (metric);
    assert (metric->family->type == S_HISTOGRAM);
    assert (!isnan (value));
    size_t bucket = 0;
    while (bucket < S_BOUNDS && value > s_bounds [bucket])
        bucket++;
    __atomic_fetch_add (&metric->buckets [bucket], 1, __ATOMIC_RELAXED);
    s_add (&metric->value, value);
}

static uint64_t
s_count (ly_metric_t *metric)
{
    uint64_t count = 0;
    for (size_t bucket = 0; bucket <= S_BOUNDS; bucket++)
        count += __atomic_load_n (&metric->buckets [bucket], __ATOMIC_RELAXED);
    return count;
}

double
ly_metric_value (ly_metric_t *metric)
{
    assert (metric);
    if (metric->family->type == S_HISTOGRAM)
        return (double) s_count (metric);
    return s_load (&metric->value);
}


//  --------------------------------------------------------------------------
//  Rendering

typedef struct {
    char *data;         /* owned until handed to the caller */
    size_t size;        /* bytes used, NUL excluded */
    size_t capacity;    /* bytes allocated */
    bool failed;        /* out of memory */
} s_text_t;

static void
s_append (s_text_t *text, const char *data, size_t len)
{
    if (text->failed)
        return;
    if (text->size + len + 1 > text->capacity) {
        size_t capacity = text->capacity? text->capacity: 4096;
        while (text->size + len + 1 > capacity)
            capacity *= 2;
        char *data_new = realloc (text->data, capacity);
        if (!data_new) {
            text->failed = true;
            return;
        }
        text->data = data_new;
        text->capacity = capacity;
    }
    memcpy (text->data + text->size, data, len);
    text->size += len;
    text->data [text->size] = 0;
}

static void
s_puts (s_text_t *text, const char *string)
{
    s_append (text, string, strlen (string));
}

//  Prometheus' float syntax: the shortest of %.15g / %.17g that reads back the same
static void
s_format_double (double value, char *buffer, size_t size)
{
    if (isnan (value))
        snprintf (buffer, size, "NaN");
    else
    if (isinf (value))
        snprintf (buffer, size, value > 0? "+Inf": "-Inf");
    else {
        snprintf (buffer, size, "%.15g", value);
        if (strtod (buffer, NULL) != value)
            snprintf (buffer, size, "%.17g", value);
    }
}

static void
s_put_double (s_text_t *text, double value)
{
    char buffer [32];
    s_format_double (value, buffer, sizeof buffer);
    s_puts (text, buffer);
}

static void
s_put_uint (s_text_t *text, uint64_t value)
{
    char buffer [24];
    snprintf (buffer, sizeof buffer, "%" PRIu64, value);
    s_puts (text, buffer);
}

//  HELP text escapes backslash and newline
static void
s_put_help (s_text_t *text, const char *help)
{
    for (const char *c = help; *c; c++) {
        if (*c == '\\')
            s_puts (text, "\\\\");
        else
        if (*c == '\n')
            s_puts (text, "\\n");
        else
            s_append (text, c, 1);
    }
}

//  name + suffix + {labels[,extra]} or nothing when both are empty
static void
s_put_sample_name (s_text_t *text, const char *name, const char *suffix,
                   const char *labels, const char *extra)
{
    s_puts (text, name);
    s_puts (text, suffix);
    if (*labels || extra) {
        s_puts (text, "{");
        s_puts (text, labels);
        if (*labels && extra)
            s_puts (text, ",");
        if (extra)
            s_puts (text, extra);
        s_puts (text, "}");
    }
    s_puts (text, " ");
}

static void
s_render_histogram (s_text_t *text, ly_metric_t *metric)
{
    const char *name = metric->family->name;
    uint64_t cumulative = 0;
    for (size_t bucket = 0; bucket <= S_BOUNDS; bucket++) {
        cumulative += __atomic_load_n (&metric->buckets [bucket], __ATOMIC_RELAXED);
        char bound [32];
        s_format_double (bucket < S_BOUNDS? s_bounds [bucket]: INFINITY, bound, sizeof bound);
        char le [48];
        snprintf (le, sizeof le, "le=\"%s\"", bound);
        s_put_sample_name (text, name, "_bucket", metric->labels, le);
        s_put_uint (text, cumulative);
        s_puts (text, "\n");
    }
    s_put_sample_name (text, name, "_sum", metric->labels, NULL);
    s_put_double (text, s_load (&metric->value));
    s_puts (text, "\n");
    s_put_sample_name (text, name, "_count", metric->labels, NULL);
    s_put_uint (text, cumulative);
    s_puts (text, "\n");
}

//  Renders the series of one imported family (a msgpack [name, type, help, series]).
static void
s_render_imported (s_text_t *text, const char *instance, const msgpack_object *family, s_type_t type)
{
    const msgpack_object *series = &family->via.array.ptr [3];
    if (series->type != MSGPACK_OBJECT_ARRAY)
        return;
    char name [128];
    const msgpack_object *name_obj = &family->via.array.ptr [0];
    snprintf (name, sizeof name, "%.*s", (int) name_obj->via.str.size, name_obj->via.str.ptr);
    for (uint32_t i = 0; i < series->via.array.size; i++) {
        const msgpack_object *one = &series->via.array.ptr [i];
        if (one->type != MSGPACK_OBJECT_ARRAY || one->via.array.size < 2
        ||  one->via.array.ptr [0].type != MSGPACK_OBJECT_STR
        ||  one->via.array.ptr [0].via.str.size > 512
        ||  (one->via.array.ptr [1].type != MSGPACK_OBJECT_FLOAT64
          && one->via.array.ptr [1].type != MSGPACK_OBJECT_FLOAT32))
            continue;
        char labels [640];
        int len = snprintf (labels, sizeof labels, "%.*s",
                            (int) one->via.array.ptr [0].via.str.size, one->via.array.ptr [0].via.str.ptr);
        if (!s_valid_labels (labels) || memchr (labels, 0, (size_t) len))
            continue;
        snprintf (labels + len, sizeof labels - (size_t) len, "%sinstance=\"%s\"",
                  len? ",": "", instance);
        double value = one->via.array.ptr [1].via.f64;
        if (type != S_HISTOGRAM) {
            s_put_sample_name (text, name, "", labels, NULL);
            s_put_double (text, value);
            s_puts (text, "\n");
            continue;
        }
        const msgpack_object *buckets = one->via.array.size > 2? &one->via.array.ptr [2]: NULL;
        if (!buckets || buckets->type != MSGPACK_OBJECT_ARRAY || buckets->via.array.size != S_BOUNDS + 1)
            continue;
        uint64_t cumulative = 0;
        for (size_t bucket = 0; bucket <= S_BOUNDS; bucket++) {
            const msgpack_object *count = &buckets->via.array.ptr [bucket];
            cumulative += count->type == MSGPACK_OBJECT_POSITIVE_INTEGER? count->via.u64: 0;
            char bound [32];
            s_format_double (bucket < S_BOUNDS? s_bounds [bucket]: INFINITY, bound, sizeof bound);
            char le [48];
            snprintf (le, sizeof le, "le=\"%s\"", bound);
            s_put_sample_name (text, name, "_bucket", labels, le);
            s_put_uint (text, cumulative);
            s_puts (text, "\n");
        }
        s_put_sample_name (text, name, "_sum", labels, NULL);
        s_put_double (text, value);
        s_puts (text, "\n");
        s_put_sample_name (text, name, "_count", labels, NULL);
        s_put_uint (text, cumulative);
        s_puts (text, "\n");
    }
}

//  The family of an import with this name, when well-formed; NULL otherwise.
static const msgpack_object *
s_imported_family (const msgpack_object *snapshot, const char *name, size_t index)
{
    const msgpack_object *family = &snapshot->via.array.ptr [index];
    if (family->type != MSGPACK_OBJECT_ARRAY || family->via.array.size != 4
    ||  family->via.array.ptr [0].type != MSGPACK_OBJECT_STR
    ||  family->via.array.ptr [1].type != MSGPACK_OBJECT_POSITIVE_INTEGER
    ||  family->via.array.ptr [1].via.u64 > S_HISTOGRAM)
        return NULL;
    const msgpack_object *name_obj = &family->via.array.ptr [0];
    if (name && (strlen (name) != name_obj->via.str.size
             ||  memcmp (name, name_obj->via.str.ptr, name_obj->via.str.size)))
        return NULL;
    return family;
}

static void
s_put_family_header (s_text_t *text, const char *name, const char *help, s_type_t type)
{
    if (help) {
        s_puts (text, "# HELP ");
        s_puts (text, name);
        s_puts (text, " ");
        s_put_help (text, help);
        s_puts (text, "\n");
    }
    s_puts (text, "# TYPE ");
    s_puts (text, name);
    s_puts (text, " ");
    s_puts (text, s_type_names [type]);
    s_puts (text, "\n");
}

char *
ly_metrics_render (void)
{
    s_text_t text = { NULL, 0, 0, false };
    s_append (&text, "", 0);
    pthread_mutex_lock (&s_mutex);
    //  Unpack the live imports once for this rendering.
    size_t imports = 0;
    s_import_t *import_of [S_IMPORT_MAX];
    msgpack_unpacked unpacked [S_IMPORT_MAX];
    int64_t now = ly_mono_msec ();
    for (s_import_t *import = s_imports? (s_import_t *) zhashx_first (s_imports): NULL;
         import && imports < S_IMPORT_MAX; import = (s_import_t *) zhashx_next (s_imports)) {
        if (now - import->received > S_IMPORT_MAX_AGE_MSEC)
            continue;
        msgpack_unpacked_init (&unpacked [imports]);
        size_t offset = 0;
        if (msgpack_unpack_next (&unpacked [imports], import->data, import->size, &offset)
                == MSGPACK_UNPACK_SUCCESS
        &&  unpacked [imports].data.type == MSGPACK_OBJECT_ARRAY)
            import_of [imports++] = import;
        else
            msgpack_unpacked_destroy (&unpacked [imports]);
    }
    for (s_family_t *family = s_families; family; family = family->next) {
        s_put_family_header (&text, family->name, family->help, family->type);
        for (ly_metric_t *metric = family->series; metric; metric = metric->next) {
            if (family->type == S_HISTOGRAM)
                s_render_histogram (&text, metric);
            else {
                s_put_sample_name (&text, family->name, "", metric->labels, NULL);
                s_put_double (&text, s_load (&metric->value));
                s_puts (&text, "\n");
            }
        }
        for (size_t i = 0; i < imports; i++) {
            const msgpack_object *snapshot = &unpacked [i].data;
            for (uint32_t j = 0; j < snapshot->via.array.size; j++) {
                const msgpack_object *imported = s_imported_family (snapshot, family->name, j);
                if (imported && imported->via.array.ptr [1].via.u64 == (uint64_t) family->type)
                    s_render_imported (&text, import_of [i]->instance, imported, family->type);
            }
        }
    }
    //  Families only other processes have: one header each, then every instance's series.
    zhashx_t *seen = zhashx_new ();
    for (size_t i = 0; i < imports; i++) {
        const msgpack_object *snapshot = &unpacked [i].data;
        for (uint32_t j = 0; j < snapshot->via.array.size; j++) {
            const msgpack_object *imported = s_imported_family (snapshot, NULL, j);
            if (!imported)
                continue;
            char name [128];
            const msgpack_object *name_obj = &imported->via.array.ptr [0];
            if (name_obj->via.str.size >= sizeof name)
                continue;
            snprintf (name, sizeof name, "%.*s", (int) name_obj->via.str.size, name_obj->via.str.ptr);
            if (!s_valid_name (name) || zhashx_lookup (s_index, name) || zhashx_lookup (seen, name))
                continue;
            zhashx_insert (seen, name, "");
            s_type_t type = (s_type_t) imported->via.array.ptr [1].via.u64;
            const msgpack_object *help_obj = &imported->via.array.ptr [2];
            char help [256] = "";
            if (help_obj->type == MSGPACK_OBJECT_STR)
                snprintf (help, sizeof help, "%.*s", (int) help_obj->via.str.size, help_obj->via.str.ptr);
            s_put_family_header (&text, name, help [0]? help: NULL, type);
            for (size_t k = i; k < imports; k++) {
                const msgpack_object *other = &unpacked [k].data;
                for (uint32_t m = 0; m < other->via.array.size; m++) {
                    const msgpack_object *same = s_imported_family (other, name, m);
                    if (same && same->via.array.ptr [1].via.u64 == (uint64_t) type)
                        s_render_imported (&text, import_of [k]->instance, same, type);
                }
            }
        }
    }
    zhashx_destroy (&seen);
    for (size_t i = 0; i < imports; i++)
        msgpack_unpacked_destroy (&unpacked [i]);
    pthread_mutex_unlock (&s_mutex);
    if (text.failed) {
        free (text.data);
        return NULL;
    }
    return text.data;
}

int
ly_metrics_snapshot (void **data_p, size_t *size_p)
{
    msgpack_sbuffer sbuf;
    msgpack_sbuffer_init (&sbuf);
    msgpack_packer pk;
    msgpack_packer_init (&pk, &sbuf, msgpack_sbuffer_write);
    pthread_mutex_lock (&s_mutex);
    size_t count = 0;
    for (s_family_t *family = s_families; family; family = family->next)
        count++;
    msgpack_pack_array (&pk, count);
    for (s_family_t *family = s_families; family; family = family->next) {
        msgpack_pack_array (&pk, 4);
        msgpack_pack_str_with_body (&pk, family->name, strlen (family->name));
        msgpack_pack_uint8 (&pk, (uint8_t) family->type);
        if (family->help)
            msgpack_pack_str_with_body (&pk, family->help, strlen (family->help));
        else
            msgpack_pack_nil (&pk);
        size_t series = 0;
        for (ly_metric_t *metric = family->series; metric; metric = metric->next)
            series++;
        msgpack_pack_array (&pk, series);
        for (ly_metric_t *metric = family->series; metric; metric = metric->next) {
            msgpack_pack_array (&pk, family->type == S_HISTOGRAM? 3: 2);
            msgpack_pack_str_with_body (&pk, metric->labels, strlen (metric->labels));
            msgpack_pack_double (&pk, s_load (&metric->value));
            if (family->type == S_HISTOGRAM) {
                msgpack_pack_array (&pk, S_BOUNDS + 1);
                for (size_t bucket = 0; bucket <= S_BOUNDS; bucket++)
                    msgpack_pack_uint64 (&pk, __atomic_load_n (&metric->buckets [bucket], __ATOMIC_RELAXED));
            }
        }
    }
    pthread_mutex_unlock (&s_mutex);
    *size_p = sbuf.size;
    *data_p = msgpack_sbuffer_release (&sbuf);
    return 0;
}

static void
s_import_destroy (s_import_t **import_p)
{
    if (*import_p) {
        free ((*import_p)->instance);
        free ((*import_p)->data);
        free (*import_p);
        *import_p = NULL;
    }
}

void
ly_metrics_import (const char *instance, const void *data, size_t size)
{
    for (const char *c = instance; *c; c++)
        if (!isalnum ((unsigned char) *c) && *c != '.' && *c != '-' && *c != '_')
            return;
    if (!*instance || strlen (instance) > 64 || size > 4 * 1024 * 1024)
        return;
    s_import_t *import = (s_import_t *) calloc (1, sizeof (s_import_t));
    import->instance = strdup (instance);
    import->data = (char *) malloc (size);
    memcpy (import->data, data, size);
    import->size = size;
    import->received = ly_mono_msec ();
    pthread_mutex_lock (&s_mutex);
    if (!s_imports) {
        s_imports = zhashx_new ();
        zhashx_set_destructor (s_imports, (zhashx_destructor_fn *) s_import_destroy);
    }
    //  Forget processes that stopped reporting, so restarts do not pile up.
    int64_t now = ly_mono_msec ();
    zlistx_t *stale = zlistx_new ();
    for (s_import_t *old = (s_import_t *) zhashx_first (s_imports); old;
         old = (s_import_t *) zhashx_next (s_imports))
        if (now - old->received > S_IMPORT_MAX_AGE_MSEC)
            zlistx_add_end (stale, old->instance);
    for (char *name = (char *) zlistx_first (stale); name; name = (char *) zlistx_next (stale))
        zhashx_delete (s_imports, name);
    zlistx_destroy (&stale);
    if (zhashx_size (s_imports) < S_IMPORT_MAX || zhashx_lookup (s_imports, instance))
        zhashx_update (s_imports, instance, import);
    else
        s_import_destroy (&import);
    pthread_mutex_unlock (&s_mutex);
}

void
ly_metrics_shutdown (void)
{
    pthread_mutex_lock (&s_mutex);
    zhashx_destroy (&s_index);
    zhashx_destroy (&s_imports);
    while (s_families) {
        s_family_t *family = s_families;
        s_families = family->next;
        while (family->series) {
            ly_metric_t *metric = family->series;
            family->series = metric->next;
            free (metric->labels);
            free (metric);
        }
        free (family->name);
        free (family->help);
        free (family);
    }
    s_families_tail = NULL;
    pthread_mutex_unlock (&s_mutex);
}
