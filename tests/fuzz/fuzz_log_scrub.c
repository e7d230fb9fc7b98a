/*  fuzz_log_scrub.c: libFuzzer target for the log scrubber: any input, any output size,
    never overflows, and a cut output is always a prefix of the whole one. */
#include "ly_prelude.h"
#include "ly_log.h"

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    char *text = malloc (size + 1);
    memcpy (text, data, size);
    text [size] = 0;
    size_t cap = strlen (text) * 2 + 16;
    char *full = malloc (cap);
    assert (ly_log_scrub (text, full, cap));
    size_t n = strlen (full);
    for (size_t k = 0; k <= n + 1 && k < 64; k++) {
        char *part = malloc (k + 1);
        bool whole = ly_log_scrub (text, part, k);
        if (k > 0) {
            assert (strncmp (part, full, strlen (part)) == 0);
            assert (whole == (k > n));
        }
        free (part);
    }
    free (full);
    free (text);
    return 0;
}
