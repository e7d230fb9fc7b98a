/*  ly_uap.h: User-Agent parsing with uap-core's rule set (regexes.yaml, Debian package
    uap-core), compiled with PCRE2 and its JIT, behind a bounded cache keyed by a hash of
    the User-Agent (the raw string is not kept). Not thread-safe: one per ingest actor. */
#ifndef LY_UAP_H
#define LY_UAP_H

#include "ly_prelude.h"

#define LY_UAP_DEFAULT_REGEXES "/usr/share/uap-core/regexes.yaml"
#define LY_UAP_MAX_INPUT 1024       /* longer User-Agents are cut to this many bytes */

typedef struct {
    char ua_family [64];        /* "Mobile Safari"; "Other" when nothing matched */
    char ua_major [32];         /* "" when unknown */
    char ua_minor [32];
    char ua_patch [32];
    char os_family [64];        /* "iOS", "Android"; "Other" when nothing matched */
    char os_major [32];
    char os_minor [32];
    char os_patch [32];
    char os_patch_minor [32];
    char device_family [128];   /* "iPhone"; "Other" when nothing matched */
    char device_brand [64];     /* "Apple"; "" when unknown */
    char device_model [128];    /* "iPhone"; "" when unknown */
} ly_uap_result_t;

typedef struct _ly_uap_t ly_uap_t;

/*  Loads and compiles the rules; NULL on failure with the reason in err (file, line,
    PCRE2 message). cache_size: entries kept (0: no cache). Caller owns. */
ly_uap_t *ly_uap_new (const char *regexes_path, size_t cache_size, char *err, size_t errlen);
void ly_uap_destroy (ly_uap_t **self_p);
/*  Parses ua (len bytes, need not be NUL-terminated, may be any bytes) into result.
    Always fills every field (unknowns as above). */
void ly_uap_parse (ly_uap_t *self, const char *ua, size_t len, ly_uap_result_t *result);
/*  Cache statistics, for metrics and tests. */
uint64_t ly_uap_cache_hits (ly_uap_t *self);
uint64_t ly_uap_cache_misses (ly_uap_t *self);

#endif
