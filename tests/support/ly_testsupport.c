/*  ly_testsupport.c: helpers shared by the self-tests and the fuzz targets (see
    ly_testsupport.h). */
#include "ly_prelude.h"
#include "ly_testsupport.h"
#include <sys/wait.h>

int
ly_testmmdb_make (const char *out)
{
    char script [PATH_MAX] = "";
    const char *source_dir = getenv ("LY_SOURCE_DIR");
    if (source_dir && *source_dir)
        snprintf (script, sizeof script, "%s/tests/data/make_test_mmdb.pl", source_dir);
    if (!script [0] || access (script, R_OK)) {
        //  __FILE__ is absolute in a CMake build: .../tests/support/ly_testmmdb.c
        const char *slash = strrchr (__FILE__, '/');
        if (slash)
            snprintf (script, sizeof script, "%.*s/../data/make_test_mmdb.pl",
                      (int) (slash - __FILE__), __FILE__);
    }
    const char *relative [] = { ".", "..", "../..", NULL };
    for (int i = 0; relative [i] && (!script [0] || access (script, R_OK)); i++)
        snprintf (script, sizeof script, "%s/tests/data/make_test_mmdb.pl", relative [i]);
    if (access (script, R_OK)) {
        printf ("make_test_mmdb.pl not found (set LY_SOURCE_DIR)\n");
        return -1;
    }
    pid_t pid = fork ();
    if (pid == -1)
        return -1;
    if (pid == 0) {
        execlp ("perl", "perl", script, out, (char *) NULL);
        _exit (127);
    }
    int status = 0;
    while (waitpid (pid, &status, 0) == -1 && errno == EINTR)
        ;
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
        printf ("perl %s %s failed (status %d)\n", script, out, status);
        return -1;
    }
    return 0;
}

bool
ly_test_utf8_valid (const char *text, size_t len)
{
    const uint8_t *p = (const uint8_t *) text, *end = p + len;
    while (p < end) {
        if (*p < 0x80) { p++; continue; }
        size_t size = *p >= 0xf0? 4: *p >= 0xe0? 3: 2;
        if (*p < 0xc2 || *p > 0xf4 || (size_t) (end - p) < size)
            return false;
        uint32_t cp = *p & (0xff >> (size + 1));
        for (size_t i = 1; i < size; i++) {
            if ((p [i] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p [i] & 0x3f);
        }
        if ((size == 3 && cp < 0x800) || (size == 4 && (cp < 0x10000 || cp > 0x10ffff))
        ||  (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += size;
    }
    return true;
}
