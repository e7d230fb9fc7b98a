/*  ly_uap.c: User-Agent parsing with uap-core's regexes.yaml. Every rule is compiled once
    with PCRE2 (UTF mode that tolerates invalid UTF-8, JIT when available); a parse runs
    the three rule lists, first match wins, and fills the result with replacements or
    capture groups. A bounded set-associative cache maps a keyed 128-bit SipHash of the
    (cut) User-Agent to its result, so the raw string is never kept.

    Semantics follow the reference implementations (uap-python, uap-ref-impl):
    - a replacement's $1..$9 take the capture groups; a group that is absent or did not
      take part in the match gives ""; without a replacement a field takes its group
      (ua and os: family = $1, major = $2, ...; device: family = model = $1, no brand);
    - every value is trimmed of white space, and an empty value is unknown ("");
    - an empty family, or no match at all, gives "Other".
    Values are also made safe to store: invalid UTF-8 and control characters become
    '?', and a value too long for its field is cut at a character boundary. */
#include "ly_prelude.h"
#include "ly_uap.h"
#include "ly_utf8.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <yaml.h>

#define S_FIELDS        5           /* replacements per rule, at most (os has five) */
#define S_WAYS          8           /* cache entries per set */
#define S_MATCH_LIMIT   1000000     /* PCRE2 backtracking bound per regex and input */

typedef enum { S_UA, S_OS, S_DEVICE, S_KINDS } s_kind_t;

//  The rule lists of regexes.yaml and the replacement keys of each, by field
static const struct {
    const char *list;                   /* key of the list in regexes.yaml */
    const char *keys [S_FIELDS];        /* replacement keys; NULL past the last */
} s_kinds [S_KINDS] = {
    [S_UA] = { "user_agent_parsers",
        { "family_replacement", "v1_replacement", "v2_replacement", "v3_replacement",
          "v4_replacement" } },
    [S_OS] = { "os_parsers",
        { "os_replacement", "os_v1_replacement", "os_v2_replacement",
          "os_v3_replacement", "os_v4_replacement" } },
    [S_DEVICE] = { "device_parsers",
        { "device_replacement", "brand_replacement", "model_replacement" } },
};

//  One regex of a list and what it yields
typedef struct {
    pcre2_code *code;                   /* owned */
    char *replacements [S_FIELDS];      /* owned, NULL when the rule has none */
} s_rule_t;

typedef struct {
    s_rule_t *rules;                    /* owned array, file order */
    size_t count;                       /* rules in the array */
} s_list_t;

//  One cached result; an entry with stamp 0 is free
typedef struct {
    uint64_t key [2];                   /* SipHash-2-4-128 of the cut User-Agent */
    uint64_t stamp;                     /* parser's clock at last use, for LRU in the set */
    ly_uap_result_t result;             /* copy of the parse */
} s_entry_t;

struct _ly_uap_t {
    s_list_t lists [S_KINDS];           /* compiled rules, by kind */
    pcre2_match_data *match_data;       /* owned, sized for the largest group count */
    pcre2_match_context *match_context; /* owned, match limit and JIT stack */
    pcre2_jit_stack *jit_stack;         /* owned, NULL when JIT is unavailable */
    s_entry_t *cache;                   /* owned array of cache_size entries, NULL: no cache */
    size_t cache_size;                  /* entries in cache */
    size_t cache_sets;                  /* sets of S_WAYS entries; the last may be smaller */
    uint64_t clock;                     /* advanced on every cache use */
    uint64_t hash_key [2];              /* random SipHash key, per parser */
    uint64_t hits;                      /* parses answered from the cache */
    uint64_t misses;                    /* parses that ran the regexes */
};


//  --------------------------------------------------------------------------
//  SipHash-2-4 with a 128-bit output (Aumasson and Bernstein's reference)

#define S_ROTL(x, b)    (uint64_t) (((x) << (b)) | ((x) >> (64 - (b))))
#define S_SIPROUND \
    do { \
        v0 += v1; v1 = S_ROTL (v1, 13); v1 ^= v0; v0 = S_ROTL (v0, 32); \
        v2 += v3; v3 = S_ROTL (v3, 16); v3 ^= v2; \
        v0 += v3; v3 = S_ROTL (v3, 21); v3 ^= v0; \
        v2 += v1; v1 = S_ROTL (v1, 17); v1 ^= v2; v2 = S_ROTL (v2, 32); \
    } while (0)

static uint64_t
s_le64 (const uint8_t *p)
{
    return (uint64_t) p [0] | (uint64_t) p [1] << 8 | (uint64_t) p [2] << 16
         | (uint64_t) p [3] << 24 | (uint64_t) p [4] << 32 | (uint64_t) p [5] << 40
         | (uint64_t) p [6] << 48 | (uint64_t) p [7] << 56;
}

static void
s_siphash128 (const uint64_t key [2], const uint8_t *data, size_t len, uint64_t out [2])
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ key [0];
    uint64_t v1 = 0x646f72616e646f6dULL ^ key [1] ^ 0xee;
    uint64_t v2 = 0x6c7967656e657261ULL ^ key [0];
    uint64_t v3 = 0x7465646279746573ULL ^ key [1];
    const uint8_t *end = data + (len & ~(size_t) 7);
    for (; data < end; data += 8) {
        uint64_t m = s_le64 (data);
        v3 ^= m;
        S_SIPROUND; S_SIPROUND;
        v0 ^= m;
    }
    uint64_t b = (uint64_t) len << 56;
    for (size_t index = 0; index < (len & 7); index++)
        b |= (uint64_t) data [index] << (8 * index);
    v3 ^= b;
    S_SIPROUND; S_SIPROUND;
    v0 ^= b;
    v2 ^= 0xee;
    S_SIPROUND; S_SIPROUND; S_SIPROUND; S_SIPROUND;
    out [0] = v0 ^ v1 ^ v2 ^ v3;
    v1 ^= 0xdd;
    S_SIPROUND; S_SIPROUND; S_SIPROUND; S_SIPROUND;
    out [1] = v0 ^ v1 ^ v2 ^ v3;
}


//  --------------------------------------------------------------------------
//  Values: trimmed, valid UTF-8 without control characters, cut to the field

typedef struct {
    char *data;                         /* the field, borrowed */
    size_t size;                        /* its size, NUL included */
    size_t len;                         /* bytes written */
    bool full;                          /* a character did not fit; take no more */
} s_value_t;

static bool
s_is_space (uint8_t c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

static void
s_value_start (s_value_t *value, char *data, size_t size)
{
    value->data = data;
    value->size = size;
    value->len = 0;
    value->full = false;
}

//  Appends text, skipping white space at the start of the value
static void
s_value_append (s_value_t *value, const char *text, size_t len)
{
    const uint8_t *next = (const uint8_t *) text;
    const uint8_t *end = next + len;
    while (next < end && !value->full) {
        size_t char_len = ly_utf8_sequence (next, (size_t) (end - next));
        const uint8_t *bytes = next;
        bool c1 = char_len == 2 && next [0] == 0xC2 && next [1] < 0xA0;     //  U+0080-009F
        if (char_len == 0 || c1 || (char_len == 1 && (*next < 0x20 || *next == 0x7F))) {
            bytes = (const uint8_t *) (s_is_space (*next)? " ": "?");
            next += c1? 2: 1;
            char_len = 1;
        }
        else
            next += char_len;
        if (value->len == 0 && s_is_space (*bytes))
            continue;
        if (value->len + char_len >= value->size) {
            value->full = true;
            break;
        }
        memcpy (value->data + value->len, bytes, char_len);
        value->len += char_len;
    }
}

static void
s_value_end (s_value_t *value)
{
    while (value->len > 0 && s_is_space ((uint8_t) value->data [value->len - 1]))
        value->len--;
    value->data [value->len] = 0;
}


//  --------------------------------------------------------------------------
//  Matching

//  Group number (1-9) of a match; "" when the regex has no such group or the group did
//  not take part (rc is pcre2_match's count of set pairs, beyond which the vector is
//  not written)
static void
s_group (pcre2_match_data *match_data, int rc, int group, const char *subject,
         const char **text, size_t *len)
{
    PCRE2_SIZE *vector = pcre2_get_ovector_pointer (match_data);
    *text = "";
    *len = 0;
    if (group < rc && vector [2 * group] != PCRE2_UNSET) {
        *text = subject + vector [2 * group];
        *len = vector [2 * group + 1] - vector [2 * group];
    }
}

//  Sets one field from a replacement (with $1..$9) or, when it has none, from a group
//  (0: none, the field is unknown)
static void
s_field (char *field, size_t size, const char *replacement, int group,
         pcre2_match_data *match_data, int rc, const char *subject)
{
    s_value_t value;
    s_value_start (&value, field, size);
    const char *text;
    size_t len;
    if (replacement) {
        const char *next = replacement;
        while (*next) {
            const char *dollar = strchr (next, '$');
            while (dollar && !(dollar [1] >= '1' && dollar [1] <= '9'))
                dollar = strchr (dollar + 1, '$');
            if (!dollar) {
                s_value_append (&value, next, strlen (next));
                break;
            }
            s_value_append (&value, next, (size_t) (dollar - next));
            s_group (match_data, rc, dollar [1] - '0', subject, &text, &len);
            s_value_append (&value, text, len);
            next = dollar + 2;
        }
    }
    else
    if (group > 0) {
        s_group (match_data, rc, group, subject, &text, &len);
        s_value_append (&value, text, len);
    }
    s_value_end (&value);
}

//  Runs a list on the subject; returns the first matching rule and pcre2_match's
//  count, or NULL
static s_rule_t *
s_match (ly_uap_t *self, s_kind_t kind, const char *subject, size_t len, int *rc_p)
{
    s_list_t *list = &self->lists [kind];
    for (size_t index = 0; index < list->count; index++) {
        int rc = pcre2_match (list->rules [index].code, (PCRE2_SPTR) subject, len, 0, 0,
                              self->match_data, self->match_context);
        //  Errors (match limit, JIT stack) count as no match for this rule
        if (rc > 0) {
            *rc_p = rc;
            return &list->rules [index];
        }
    }
    return NULL;
}

static void
s_parse (ly_uap_t *self, const char *subject, size_t len, ly_uap_result_t *result)
{
    memset (result, 0, sizeof *result);
    int rc;
    s_rule_t *rule = s_match (self, S_UA, subject, len, &rc);
    if (rule) {
        s_field (result->ua_family, sizeof result->ua_family,
                 rule->replacements [0], 1, self->match_data, rc, subject);
        s_field (result->ua_major, sizeof result->ua_major,
                 rule->replacements [1], 2, self->match_data, rc, subject);
        s_field (result->ua_minor, sizeof result->ua_minor,
                 rule->replacements [2], 3, self->match_data, rc, subject);
        s_field (result->ua_patch, sizeof result->ua_patch,
                 rule->replacements [3], 4, self->match_data, rc, subject);
    }
    rule = s_match (self, S_OS, subject, len, &rc);
    if (rule) {
        s_field (result->os_family, sizeof result->os_family,
                 rule->replacements [0], 1, self->match_data, rc, subject);
        s_field (result->os_major, sizeof result->os_major,
                 rule->replacements [1], 2, self->match_data, rc, subject);
        s_field (result->os_minor, sizeof result->os_minor,
                 rule->replacements [2], 3, self->match_data, rc, subject);
        s_field (result->os_patch, sizeof result->os_patch,
                 rule->replacements [3], 4, self->match_data, rc, subject);
        s_field (result->os_patch_minor, sizeof result->os_patch_minor,
                 rule->replacements [4], 5, self->match_data, rc, subject);
    }
    rule = s_match (self, S_DEVICE, subject, len, &rc);
    if (rule) {
        s_field (result->device_family, sizeof result->device_family,
                 rule->replacements [0], 1, self->match_data, rc, subject);
        s_field (result->device_brand, sizeof result->device_brand,
                 rule->replacements [1], 0, self->match_data, rc, subject);
        s_field (result->device_model, sizeof result->device_model,
                 rule->replacements [2], 1, self->match_data, rc, subject);
    }
    if (!*result->ua_family)
        strcpy (result->ua_family, "Other");
    if (!*result->os_family)
        strcpy (result->os_family, "Other");
    if (!*result->device_family)
        strcpy (result->device_family, "Other");
}


//  --------------------------------------------------------------------------
//  Loading regexes.yaml

static const char *
s_scalar (yaml_node_t *node)
{
    return node && node->type == YAML_SCALAR_NODE? (const char *) node->data.scalar.value: NULL;
}

//  Value node of key in a mapping, NULL when absent
static yaml_node_t *
s_lookup (yaml_document_t *document, yaml_node_t *mapping, const char *key)
{
    if (!mapping || mapping->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pair = mapping->data.mapping.pairs.start;
         pair < mapping->data.mapping.pairs.top; pair++) {
        const char *name = s_scalar (yaml_document_get_node (document, pair->key));
        if (name && streq (name, key))
            return yaml_document_get_node (document, pair->value);
    }
    return NULL;
}

//  Compiles one entry of a list into rule; -1 with the reason in err
static int
s_rule_load (s_rule_t *rule, s_kind_t kind, yaml_document_t *document, yaml_node_t *entry,
             const char *path, char *err, size_t errlen)
{
    size_t line = entry->start_mark.line + 1;
    yaml_node_t *regex_node = s_lookup (document, entry, "regex");
    const char *regex = s_scalar (regex_node);
    if (!regex) {
        snprintf (err, errlen, "rule at \"%s\" line %zu has no regex", path, line);
        return -1;
    }
    line = regex_node->start_mark.line + 1;
    uint32_t options = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    yaml_node_t *flag_node = s_lookup (document, entry, "regex_flag");
    if (flag_node) {
        const char *flag = s_scalar (flag_node);
        if (!flag || !streq (flag, "i")) {
            snprintf (err, errlen, "unsupported regex_flag \"%s\" at \"%s\" line %zu",
                      flag? flag: "", path, (size_t) flag_node->start_mark.line + 1);
            return -1;
        }
        options |= PCRE2_CASELESS;
    }
    int code_error;
    PCRE2_SIZE offset;
    rule->code = pcre2_compile ((PCRE2_SPTR) regex, PCRE2_ZERO_TERMINATED, options,
                                &code_error, &offset, NULL);
    if (!rule->code) {
        PCRE2_UCHAR message [256];
        pcre2_get_error_message (code_error, message, sizeof message);
        snprintf (err, errlen, "could not compile regex at \"%s\" line %zu: %s at offset %zu",
                  path, line, (const char *) message, (size_t) offset);
        return -1;
    }
    //  Without JIT support (or memory for it) the interpreter matches the same
    (void) pcre2_jit_compile (rule->code, PCRE2_JIT_COMPLETE);

    for (int field = 0; field < S_FIELDS && s_kinds [kind].keys [field]; field++) {
        yaml_node_t *node = s_lookup (document, entry, s_kinds [kind].keys [field]);
        if (!node)
            continue;
        const char *replacement = s_scalar (node);
        if (!replacement) {
            snprintf (err, errlen, "%s at \"%s\" line %zu is not a string",
                      s_kinds [kind].keys [field], path, (size_t) node->start_mark.line + 1);
            return -1;
        }
        //  An empty replacement is no replacement, as in the reference parsers
        if (*replacement) {
            rule->replacements [field] = strdup (replacement);
            if (!rule->replacements [field]) {
                snprintf (err, errlen, "out of memory");
                return -1;
            }
        }
    }
    return 0;
}

static int
s_load (ly_uap_t *self, const char *path, char *err, size_t errlen)
{
    FILE *file = fopen (path, "rb");
    if (!file) {
        snprintf (err, errlen, "could not open \"%s\": %s", path, strerror (errno));
        return -1;
    }
    int rc = -1;
    yaml_parser_t parser;
    yaml_document_t document;
    bool have_document = false;
    if (!yaml_parser_initialize (&parser)) {
        snprintf (err, errlen, "out of memory");
        fclose (file);
        return -1;
    }
    yaml_parser_set_input_file (&parser, file);
    if (!yaml_parser_load (&parser, &document)) {
        snprintf (err, errlen, "could not parse \"%s\" line %zu: %s", path,
                  (size_t) parser.problem_mark.line + 1,
                  parser.problem? parser.problem: "unknown error");
        goto cleanup;
    }
    have_document = true;
    yaml_node_t *root = yaml_document_get_root_node (&document);
    if (!root || root->type != YAML_MAPPING_NODE) {
        snprintf (err, errlen, "\"%s\" is not a uap-core regexes file: no mapping at the top", path);
        goto cleanup;
    }
    uint32_t max_groups = 0;
    for (int kind = 0; kind < S_KINDS; kind++) {
        yaml_node_t *list = s_lookup (&document, root, s_kinds [kind].list);
        if (!list || list->type != YAML_SEQUENCE_NODE) {
            snprintf (err, errlen, "\"%s\" is not a uap-core regexes file: no %s list",
                      path, s_kinds [kind].list);
            goto cleanup;
        }
        size_t count = (size_t) (list->data.sequence.items.top - list->data.sequence.items.start);
        self->lists [kind].rules = calloc (count? count: 1, sizeof (s_rule_t));
        if (!self->lists [kind].rules) {
            snprintf (err, errlen, "out of memory");
            goto cleanup;
        }
        for (size_t index = 0; index < count; index++) {
            yaml_node_t *entry = yaml_document_get_node (&document,
                                                         list->data.sequence.items.start [index]);
            s_rule_t *rule = &self->lists [kind].rules [index];
            self->lists [kind].count++;
            if (!entry || entry->type != YAML_MAPPING_NODE) {
                snprintf (err, errlen, "entry %zu of %s in \"%s\" is not a mapping",
                          index + 1, s_kinds [kind].list, path);
                goto cleanup;
            }
            if (s_rule_load (rule, (s_kind_t) kind, &document, entry, path, err, errlen))
                goto cleanup;
            uint32_t groups;
            pcre2_pattern_info (rule->code, PCRE2_INFO_CAPTURECOUNT, &groups);
            if (groups > max_groups)
                max_groups = groups;
        }
    }
    self->match_data = pcre2_match_data_create (max_groups + 1, NULL);
    self->match_context = pcre2_match_context_create (NULL);
    self->jit_stack = pcre2_jit_stack_create (32 * 1024, 1024 * 1024, NULL);
    if (!self->match_data || !self->match_context) {
        snprintf (err, errlen, "out of memory");
        goto cleanup;
    }
    pcre2_set_match_limit (self->match_context, S_MATCH_LIMIT);
    if (self->jit_stack)
        pcre2_jit_stack_assign (self->match_context, NULL, self->jit_stack);
    rc = 0;

cleanup:
    if (have_document)
        yaml_document_delete (&document);
    yaml_parser_delete (&parser);
    fclose (file);
    return rc;
}


//  --------------------------------------------------------------------------
//  Public API

//  Loads and compiles the rules; NULL on failure with the reason in err. Caller owns.
ly_uap_t *
ly_uap_new (const char *regexes_path, size_t cache_size, char *err, size_t errlen)
{
    assert (err && errlen > 0);
    *err = 0;
    if (!regexes_path)
        regexes_path = LY_UAP_DEFAULT_REGEXES;
    ly_uap_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (err, errlen, "out of memory");
        return NULL;
    }
    if (s_load (self, regexes_path, err, errlen)) {
        ly_uap_destroy (&self);
        return NULL;
    }
    if (cache_size > 0) {
        self->cache = calloc (cache_size, sizeof (s_entry_t));
        if (!self->cache) {
            snprintf (err, errlen, "could not allocate a User-Agent cache of %zu entries",
                      cache_size);
            ly_uap_destroy (&self);
            return NULL;
        }
        self->cache_size = cache_size;
        self->cache_sets = (cache_size + S_WAYS - 1) / S_WAYS;
        //  The key only makes colliding User-Agents hard to craft; a weak one still works
        if (getentropy (self->hash_key, sizeof self->hash_key) != 0) {
            self->hash_key [0] = (uint64_t) ly_now_usec () ^ (uint64_t) (uintptr_t) self;
            self->hash_key [1] = (uint64_t) getpid () * 0x9E3779B97F4A7C15ULL;
        }
    }
    return self;
}

void
ly_uap_destroy (ly_uap_t **self_p)
{
    assert (self_p);
    ly_uap_t *self = *self_p;
    if (!self)
        return;
    for (int kind = 0; kind < S_KINDS; kind++) {
        for (size_t index = 0; index < self->lists [kind].count; index++) {
            s_rule_t *rule = &self->lists [kind].rules [index];
            pcre2_code_free (rule->code);
            for (int field = 0; field < S_FIELDS; field++)
                free (rule->replacements [field]);
        }
        free (self->lists [kind].rules);
    }
    pcre2_match_data_free (self->match_data);
    pcre2_match_context_free (self->match_context);
    pcre2_jit_stack_free (self->jit_stack);
    free (self->cache);
    free (self);
    *self_p = NULL;
}

//  s_parse of ua (len bytes, any bytes): a byte that is not UTF-8 (a Latin-1 é, a stray
//  0xFF) is read as '?', for PCRE2 would take it as the end of what a rule may match, and
//  a vaguer rule would win. Only parses pay this (the cache is keyed by the bytes sent).
static void
s_parse_bytes (ly_uap_t *self, const char *ua, size_t len, ly_uap_result_t *result)
{
    char clean [LY_UAP_MAX_INPUT];
    for (size_t i = 0, n; i < len; i += n? n: 1) {
        n = ly_utf8_sequence (ua + i, len - i);
        if (n)
            continue;
        if (ua != clean) {
            memcpy (clean, ua, len);
            ua = clean;
        }
        clean [i] = '?';
    }
    s_parse (self, ua, len, result);
    if (ua == clean)
        explicit_bzero (clean, len);    //  a User-Agent: personal data
}

//  Parses ua (len bytes, any bytes) into result, through the cache when there is one
void
ly_uap_parse (ly_uap_t *self, const char *ua, size_t len, ly_uap_result_t *result)
{
    assert (self && result);
    assert (ua || len == 0);
    if (!ua)
        ua = "";
    if (len > LY_UAP_MAX_INPUT)
        len = LY_UAP_MAX_INPUT;
    if (!self->cache) {
        self->misses++;
        s_parse_bytes (self, ua, len, result);
        return;
    }
    uint64_t key [2];
    s_siphash128 (self->hash_key, (const uint8_t *) ua, len, key);
    size_t set = (size_t) (key [0] % self->cache_sets);
    s_entry_t *first = self->cache + set * S_WAYS;
    s_entry_t *end = first + S_WAYS;
    if (end > self->cache + self->cache_size)
        end = self->cache + self->cache_size;
    s_entry_t *victim = first;
    for (s_entry_t *entry = first; entry < end; entry++) {
        if (entry->stamp && entry->key [0] == key [0] && entry->key [1] == key [1]) {
            entry->stamp = ++self->clock;
            *result = entry->result;
            self->hits++;
            return;
        }
        if (entry->stamp < victim->stamp)
            victim = entry;             //  a free entry (stamp 0) or the least recent
    }
    self->misses++;
    s_parse_bytes (self, ua, len, result);
    victim->key [0] = key [0];
    victim->key [1] = key [1];
    victim->stamp = ++self->clock;
    victim->result = *result;
}

uint64_t
ly_uap_cache_hits (ly_uap_t *self)
{
    assert (self);
    return self->hits;
}

uint64_t
ly_uap_cache_misses (ly_uap_t *self)
{
    assert (self);
    return self->misses;
}
