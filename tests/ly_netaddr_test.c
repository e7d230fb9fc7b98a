/*  ly_netaddr_test.c: self-test of ly_netaddr: addresses of both families as one
    16-byte form, X-Forwarded-For entries with ports and brackets, CIDR ranges and
    their prefixes at and around byte boundaries, and the texts refused. */
#include "ly_prelude.h"
#include "ly_netaddr.h"

static bool
s_in (const char *range_text, const char *addr_text)
{
    ly_netaddr_range_t range;
    uint8_t addr [16];
    assert (ly_netaddr_range_parse (range_text, strlen (range_text), &range) == 0);
    assert (ly_netaddr_parse (addr_text, strlen (addr_text), addr) == 0);
    return ly_netaddr_range_contains (&range, addr);
}

//  The usual text of a forwarded entry, or "-" when it is refused
static const char *
s_forwarded (const char *text)
{
    static char out [INET6_ADDRSTRLEN];
    uint8_t addr [16];
    if (ly_netaddr_parse_forwarded (text, strlen (text), addr))
        return "-";
    ly_netaddr_format (addr, out);
    return out;
}

static int
s_parse (const char *text, size_t len)
{
    uint8_t addr [16];
    return ly_netaddr_parse (text, len, addr);
}

static int
s_parse_forwarded (const char *text, size_t len)
{
    uint8_t addr [16];
    return ly_netaddr_parse_forwarded (text, len, addr);
}

static int
s_parse_range (const char *text, size_t len)
{
    ly_netaddr_range_t range;
    return ly_netaddr_range_parse (text, len, &range);
}

//  Every text (NULL-terminated list) must be refused by parse
static void
s_refuses (const char *what, int (*parse) (const char *, size_t), const char *texts [])
{
    for (int i = 0; texts [i]; i++)
        if (parse (texts [i], strlen (texts [i])) != -1) {
            fprintf (stderr, "%s accepted \"%s\"\n", what, texts [i]);
            exit (1);
        }
}

int
main (void)
{
    //  Both families; IPv4 and its mapped form are one address
    uint8_t a [16], b [16];
    assert (ly_netaddr_parse ("192.0.2.1", 9, a) == 0);
    assert (ly_netaddr_parse ("::ffff:192.0.2.1", 16, b) == 0);
    assert (memcmp (a, b, 16) == 0);
    assert (ly_netaddr_parse ("2001:db8::1", 11, a) == 0);
    assert (ly_netaddr_parse ("192.0.2.1x", 9, a) == 0);        //  len is the bound
    const char *bad [] = { "", "192.0.2", "192.0.2.256", "192.0.2.1 ", " 192.0.2.1", "host",
                           "2001:db8::1::2", "1111:2222:3333:4444:5555:6666:7777:8888:9999",
                           "192.0.2.1/24", NULL };
    s_refuses ("ly_netaddr_parse", s_parse, bad);

    //  Forwarded entries: spaces, ports, brackets; the usual text back
    assert (streq (s_forwarded ("81.2.69.160"), "81.2.69.160"));
    assert (streq (s_forwarded (" \t81.2.69.160 "), "81.2.69.160"));
    assert (streq (s_forwarded ("81.2.69.160:51234"), "81.2.69.160"));
    assert (streq (s_forwarded ("::ffff:81.2.69.160"), "81.2.69.160"));
    assert (streq (s_forwarded ("2001:DB8:0::7"), "2001:db8::7"));
    assert (streq (s_forwarded ("[2001:db8::7]"), "2001:db8::7"));
    assert (streq (s_forwarded ("[2001:db8::7]:443"), "2001:db8::7"));
    const char *bad_forwarded [] = { "", " ", "unknown", "_hidden", "81.2.69.160:", "81.2.69.160:x",
                                     "81.2.69.160:80:80", "[2001:db8::7", "[2001:db8::7]x",
                                     "[2001:db8::7]:", "[81.2.69.160]:80x", "2001:db8::7:", NULL };
    s_refuses ("ly_netaddr_parse_forwarded", s_parse_forwarded, bad_forwarded);

    //  Ranges: a plain address is its own /32 or /128
    assert (s_in ("10.0.0.1", "10.0.0.1"));
    assert (!s_in ("10.0.0.1", "10.0.0.2"));
    assert (s_in ("10.0.0.1", "::ffff:10.0.0.1"));
    assert (s_in ("::ffff:10.0.0.1", "10.0.0.1"));
    assert (s_in ("2001:db8::1", "2001:db8::1"));
    assert (!s_in ("2001:db8::1", "2001:db8::2"));
    //  IPv4 prefixes count IPv4 bits, at and around byte boundaries
    assert (s_in ("10.0.0.0/8", "10.255.255.255"));
    assert (!s_in ("10.0.0.0/8", "11.0.0.0"));
    assert (s_in ("172.16.0.0/12", "172.31.255.255"));
    assert (!s_in ("172.16.0.0/12", "172.32.0.0"));
    assert (!s_in ("172.16.0.0/12", "172.15.255.255"));
    assert (s_in ("192.168.1.77/24", "192.168.1.1"));         //  host bits are cleared
    assert (s_in ("0.0.0.0/0", "203.0.113.9"));
    assert (!s_in ("0.0.0.0/0", "2001:db8::1"));
    assert (s_in ("10.0.0.0/31", "10.0.0.1"));
    assert (!s_in ("10.0.0.0/31", "10.0.0.2"));
    //  IPv6 prefixes
    assert (s_in ("fd00::/8", "fdab:1::9"));
    assert (!s_in ("fd00::/8", "fe80::1"));
    assert (s_in ("2001:db8::/33", "2001:db8:7fff::1"));
    assert (!s_in ("2001:db8::/33", "2001:db8:8000::1"));
    assert (s_in ("::/0", "2001:db8::1") && s_in ("::/0", "10.0.0.1"));
    assert (s_in ("::ffff:0:0/96", "198.51.100.1"));
    //  Refused ranges
    const char *bad_ranges [] = { "10.0.0.0/33", "2001:db8::/129", "10.0.0.0/", "10.0.0.0/x",
                                  "10.0.0.0/8/8", "10.0.0.0/0008", "/8", "10.0.0.0 /8",
                                  "proxy.local", "10.0.0.0/-1", NULL };
    s_refuses ("ly_netaddr_range_parse", s_parse_range, bad_ranges);
    puts ("ly_netaddr_test: OK");
    return 0;
}
