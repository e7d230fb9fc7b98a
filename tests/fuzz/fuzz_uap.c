/*  fuzz_uap.c: libFuzzer target for the User-Agent parser: any bytes parse without a
    crash into a result whose every field is terminated, valid UTF-8 without control
    characters, with a family that is never empty, and the cache answers the same as
    the regexes. It includes ly_uap.c itself, so the parser is built with the fuzzer's
    coverage instrumentation; link it without ly_uap.o. */
#include "../../gateway/ly_uap.c"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

static ly_uap_t *s_plain;           /* no cache, every parse runs the regexes */
static ly_uap_t *s_cached;          /* a small cache, so entries are evicted often */

static void
s_check_field (const char *field, size_t field_size)
{
    size_t len = strnlen (field, field_size);
    if (len == field_size)
        abort ();               //  not terminated
    size_t offset = 0;
    while (offset < len) {
        uint8_t c = (uint8_t) field [offset];
        size_t char_len = ly_utf8_sequence (field + offset, len - offset);
        if (char_len == 0 || c < 0x20 || c == 0x7F)
            abort ();
        offset += char_len;
    }
    if (len > 0 && (s_is_space ((uint8_t) field [0]) || s_is_space ((uint8_t) field [len - 1])))
        abort ();
}

#define S_CHECK_FIELD(result, name) s_check_field ((result)->name, sizeof (result)->name)

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (!s_plain) {
        char err [512] = "";
        s_plain = ly_uap_new (LY_UAP_DEFAULT_REGEXES, 0, err, sizeof err);
        s_cached = ly_uap_new (LY_UAP_DEFAULT_REGEXES, 64, err, sizeof err);
        if (!s_plain || !s_cached) {
            fprintf (stderr, "fuzz_uap: %s\n", err);
            abort ();
        }
    }
    ly_uap_result_t result, cached;
    ly_uap_parse (s_plain, (const char *) data, size, &result);
    S_CHECK_FIELD (&result, ua_family);
    S_CHECK_FIELD (&result, ua_major);
    S_CHECK_FIELD (&result, ua_minor);
    S_CHECK_FIELD (&result, ua_patch);
    S_CHECK_FIELD (&result, os_family);
    S_CHECK_FIELD (&result, os_major);
    S_CHECK_FIELD (&result, os_minor);
    S_CHECK_FIELD (&result, os_patch);
    S_CHECK_FIELD (&result, os_patch_minor);
    S_CHECK_FIELD (&result, device_family);
    S_CHECK_FIELD (&result, device_brand);
    S_CHECK_FIELD (&result, device_model);
    if (!*result.ua_family || !*result.os_family || !*result.device_family)
        abort ();

    //  Twice through the cache: a miss or a hit, then certainly a hit, both the same
    for (int round = 0; round < 2; round++) {
        uint64_t hits = ly_uap_cache_hits (s_cached);
        ly_uap_parse (s_cached, (const char *) data, size, &cached);
        if (memcmp (&cached, &result, sizeof result) != 0)
            abort ();
        if (round == 1 && ly_uap_cache_hits (s_cached) != hits + 1)
            abort ();
    }
    return 0;
}
