/*  ly_testsupport.h: helpers shared by the self-tests and the fuzz targets. */
#ifndef LY_TESTSUPPORT_H_INCLUDED
#define LY_TESTSUPPORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Runs "perl tests/data/make_test_mmdb.pl out"; the script is found through
//  LY_SOURCE_DIR (set by ctest), next to this source tree, or relative to the working
//  directory. 0 / -1 (with the reason printed).
int
    ly_testmmdb_make (const char *out);

//  True when text holds valid UTF-8 (no overlongs, surrogates or code points past
//  U+10FFFF): the tests' own oracle, written apart from the library's checks.
bool
    ly_test_utf8_valid (const char *text, size_t len);

#endif
