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

char *
ly_metrics_render (void)
{
    s_text_t text = { NULL, 0, 0, false };
    s_append (&text, "", 0);
    pthread_mutex_lock (&s_mutex);
    for (s_family_t *family = s_families; family; family = family->next) {
        if (family->help) {
            s_puts (&text, "# HELP ");
            s_puts (&text, family->name);
            s_puts (&text, " ");
            s_put_help (&text, family->help);
            s_puts (&text, "\n");
        }
        s_puts (&text, "# TYPE ");
        s_puts (&text, family->name);
        s_puts (&text, " ");
        s_puts (&text, s_type_names [family->type]);
        s_puts (&text, "\n");
        for (ly_metric_t *metric = family->series; metric; metric = metric->next) {
            if (family->type == S_HISTOGRAM)
                s_render_histogram (&text, metric);
            else {
                s_put_sample_name (&text, family->name, "", metric->labels, NULL);
                s_put_double (&text, s_load (&metric->value));
                s_puts (&text, "\n");
            }
        }
    }
    pthread_mutex_unlock (&s_mutex);
    if (text.failed) {
        free (text.data);
        return NULL;
    }
    return text.data;
}

void
ly_metrics_shutdown (void)
{
    pthread_mutex_lock (&s_mutex);
    zhashx_destroy (&s_index);
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
