/*  ly_geoip_test.c: self-test of ly_geoip against a small .mmdb built at run time by
    tests/data/make_test_mmdb.pl (Perl MaxMind::DB::Writer): IPv4, IPv6, IPv4-mapped
    IPv6, unknown and invalid addresses, records without country or subdivision, codes
    that are no ISO codes, and a missing database. */
#include "ly_prelude.h"
#include "ly_geoip.h"
#include "ly_testsupport.h"
#include <sys/resource.h>
#include <sys/time.h>

static int s_failures = 0;

static void
s_check (ly_geoip_t *geoip, const char *ip, int rc_wanted, const char *country_wanted,
         const char *region_wanted)
{
    char country [3] = "?", region [16] = "?";
    int rc = ly_geoip_lookup (geoip, ip, country, region);
    if (rc != rc_wanted || strcmp (country, country_wanted) || strcmp (region, region_wanted)) {
        printf ("lookup \"%s\": %d \"%s\" \"%s\", wanted %d \"%s\" \"%s\"\n", ip? ip: "(null)",
                rc, country, region, rc_wanted, country_wanted, region_wanted);
        s_failures++;
    }
}

int
main (void)
{
    char dir [] = "/tmp/ly_geoip_test.XXXXXX";
    if (!mkdtemp (dir)) {
        printf ("could not create a temporary directory: %s\n", strerror (errno));
        return 1;
    }
    char path [PATH_MAX];
    snprintf (path, sizeof path, "%s/test.mmdb", dir);
    if (ly_testmmdb_make (path)) {
        rmdir (dir);
        return 1;
    }

    char err [512] = "";
    ly_geoip_t *geoip = ly_geoip_new (path, err, sizeof err);
    if (!geoip) {
        printf ("ly_geoip_new: %s\n", err);
        return 1;
    }
    //  IPv4
    s_check (geoip, "81.2.69.160", 0, "GB", "ENG");
    s_check (geoip, "81.2.69.0", 0, "GB", "ENG");
    s_check (geoip, "81.2.69.255", 0, "GB", "ENG");
    s_check (geoip, "175.16.199.1", 0, "CN", "22");
    //  IPv6
    s_check (geoip, "2001:db8::1", 0, "DE", "BE");
    s_check (geoip, "2001:DB8:FFFF:1::abcd", 0, "DE", "BE");
    //  IPv4-mapped IPv6, as a dual-stack socket reports IPv4 clients; 6to4 too.
    s_check (geoip, "::ffff:81.2.69.160", 0, "GB", "ENG");
    s_check (geoip, "::FFFF:175.16.199.200", 0, "CN", "22");
    s_check (geoip, "::ffff:5102:45a0", 0, "GB", "ENG");          //  81.2.69.160 in hex
    s_check (geoip, "2002:5102:4500::1", 0, "GB", "ENG");         //  6to4 of 81.2.69.0/24
    //  Found, but no subdivision; no country at all; codes that are no ISO codes.
    s_check (geoip, "89.160.20.112", 0, "SE", "");
    s_check (geoip, "192.0.2.1", 0, "", "");
    s_check (geoip, "198.51.100.7", 0, "", "");
    //  Not in the database.
    s_check (geoip, "81.2.70.1", -1, "", "");
    s_check (geoip, "8.8.8.8", -1, "", "");
    s_check (geoip, "2001:db9::1", -1, "", "");
    s_check (geoip, "::ffff:8.8.8.8", -1, "", "");
    s_check (geoip, "::1", -1, "", "");
    //  Not an address (and no name is resolved).
    s_check (geoip, "", -1, "", "");
    s_check (geoip, NULL, -1, "", "");
    s_check (geoip, "not an ip", -1, "", "");
    s_check (geoip, "81.2.69", -1, "", "");
    s_check (geoip, "81.2.69.1000", -1, "", "");
    s_check (geoip, "localhost", -1, "", "");
    s_check (geoip, "81.2.69.160:443", -1, "", "");
    s_check (geoip, "[2001:db8::1]", -1, "", "");
    s_check (NULL, "81.2.69.160", -1, "", "");
    ly_geoip_destroy (&geoip);
    ly_geoip_destroy (&geoip);                  //  NULL is fine
    if (geoip) {
        printf ("ly_geoip_destroy did not clear the pointer\n");
        s_failures++;
    }

    //  A new database that cannot be opened for want of a file descriptor (EMFILE) is
    //  a passing fault: opened at a later look, once descriptors are free again.
    geoip = ly_geoip_new (path, err, sizeof err);
    char staged [PATH_MAX];
    snprintf (staged, sizeof staged, "%s/staged.mmdb", dir);
    if (!geoip || ly_testmmdb_make (staged)) {
        printf ("EMFILE: could not set up: %s\n", err);
        s_failures++;
    }
    else {
        struct timeval old [2] = {{time (NULL) - 10, 0}, {time (NULL) - 10, 0}};
        utimes (staged, old);                   //  settled: written a while ago
        rename (staged, path);
        usleep (1100 * 1000);                   //  past the next look
        struct rlimit limit, low;
        getrlimit (RLIMIT_NOFILE, &limit);
        low = limit;
        low.rlim_cur = 256;
        setrlimit (RLIMIT_NOFILE, &low);
        int spare [256], spares = 0;
        while (spares < 256 && (spare [spares] = open ("/dev/null", O_RDONLY)) >= 0)
            spares++;
        for (int keep = 0; keep < 2 && spares > 0; keep++)
            close (spare [--spares]);           //  the file and its copy, not the reopening
        int rc_full = ly_geoip_refresh (geoip);
        while (spares > 0)
            close (spare [--spares]);
        setrlimit (RLIMIT_NOFILE, &limit);
        usleep (1100 * 1000);
        int rc_later = ly_geoip_refresh (geoip);
        if (rc_full != -1 || rc_later != 1) {
            printf ("EMFILE: refresh gave %d then %d, wanted -1 then 1\n", rc_full, rc_later);
            s_failures++;
        }
        s_check (geoip, "81.2.69.160", 0, "GB", "ENG");
    }
    ly_geoip_destroy (&geoip);

    //  A missing file and a file that is no database: NULL, with the reason.
    char missing [PATH_MAX];
    snprintf (missing, sizeof missing, "%s/missing.mmdb", dir);
    err [0] = 0;
    geoip = ly_geoip_new (missing, err, sizeof err);
    if (geoip || !strstr (err, "missing.mmdb")) {
        printf ("missing database: %p, err \"%s\"\n", (void *) geoip, err);
        s_failures++;
        ly_geoip_destroy (&geoip);
    }
    char bogus [PATH_MAX];
    snprintf (bogus, sizeof bogus, "%s/bogus.mmdb", dir);
    FILE *file = fopen (bogus, "w");
    if (file) {
        fputs ("this is not a MaxMind database\n", file);
        fclose (file);
    }
    err [0] = 0;
    geoip = ly_geoip_new (bogus, err, sizeof err);
    if (geoip || !strstr (err, "bogus.mmdb")) {
        printf ("bogus database: %p, err \"%s\"\n", (void *) geoip, err);
        s_failures++;
        ly_geoip_destroy (&geoip);
    }
    err [0] = 0;
    geoip = ly_geoip_new (NULL, err, sizeof err);
    if (geoip || !err [0]) {
        printf ("NULL path: %p, err \"%s\"\n", (void *) geoip, err);
        s_failures++;
        ly_geoip_destroy (&geoip);
    }

    unlink (bogus);
    unlink (path);
    rmdir (dir);
    if (s_failures) {
        printf ("ly_geoip_test: %d failures\n", s_failures);
        return 1;
    }
    printf ("ly_geoip_test: OK\n");
    return 0;
}
