/*  ly_db_test.c: self-test of what ly_db builds without a server: the options a session
    connects with keep those of the database URL (or $PGOPTIONS) and add jit=off, and
    libpq messages become one log line. */
#include "ly_prelude.h"
#include "ly_db.h"

int
main (void)
{
    char out [256];
    unsetenv ("PGOPTIONS");
    assert (streq (ly_db_options ("postgresql://u@h/db", out, sizeof out), "-c jit=off"));
    assert (streq (ly_db_options ("postgresql://u@h/db?options=-c%20search_path%3Dapp",
                                  out, sizeof out), "-c search_path=app -c jit=off"));
    assert (streq (ly_db_options ("host=/run/pg dbname=layers options='-c lock_timeout=5s'",
                                  out, sizeof out), "-c lock_timeout=5s -c jit=off"));
    setenv ("PGOPTIONS", "-c work_mem=64MB", 1);
    assert (streq (ly_db_options ("host=/run/pg dbname=layers", out, sizeof out),
                   "-c work_mem=64MB -c jit=off"));
    assert (streq (ly_db_options ("host=/run/pg options='-c a=b'", out, sizeof out),
                   "-c a=b -c jit=off"));           //  the URL's own win over the variable
    unsetenv ("PGOPTIONS");
    assert (streq (ly_db_options ("not a = valid 'conninfo", out, sizeof out), "-c jit=off"));
    assert (streq (ly_db_options (NULL, out, sizeof out), "-c jit=off"));

    assert (streq (ly_db_message (out, sizeof out, "ERROR:  boom\n"), "ERROR:  boom"));
    assert (streq (ly_db_message (out, sizeof out, "server closed \n \n"), "server closed"));
    assert (streq (ly_db_message (out, sizeof out, NULL), ""));
    printf ("ly_db_test: OK\n");
    return 0;
}
