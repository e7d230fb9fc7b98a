/*  ly_netaddr.h: IP addresses and address ranges (CIDR), for the proxies whose
    X-Forwarded-For the gateway believes. IPv4 is held as its IPv4-mapped IPv6 form, so
    10.0.0.1 and ::ffff:10.0.0.1 are one address and one range holds both. */
#ifndef LY_NETADDR_H_INCLUDED
#define LY_NETADDR_H_INCLUDED

#include "ly_prelude.h"
#include <arpa/inet.h>

typedef struct {
    uint8_t bytes [16];             /* the first address, IPv6 or IPv4-mapped */
    unsigned prefix;                /* leading bits that must match, 0-128 */
} ly_netaddr_range_t;

/*  Parses an IPv4 or IPv6 address of len bytes (no NUL needed, no spaces) into its
    16-byte form. 0 / -1. */
int
    ly_netaddr_parse (const char *text, size_t len, uint8_t out [16]);

/*  Parses an X-Forwarded-For entry: an address, spaces around it allowed, also as
    IPv4:port, [IPv6] or [IPv6]:port, as some proxies write it. 0 / -1. */
int
    ly_netaddr_parse_forwarded (const char *text, size_t len, uint8_t out [16]);

/*  Writes the address's usual text (IPv4 for an IPv4-mapped one) into out. */
void
    ly_netaddr_format (const uint8_t addr [16], char out [INET6_ADDRSTRLEN]);

/*  Parses "ADDRESS" or "ADDRESS/BITS" (bits of the address's own family: /8 of IPv4
    is 8 bits) of len bytes. Bits past the prefix are cleared. 0 / -1. */
int
    ly_netaddr_range_parse (const char *text, size_t len, ly_netaddr_range_t *out);

/*  True when addr lies in range. */
bool
    ly_netaddr_range_contains (const ly_netaddr_range_t *range, const uint8_t addr [16]);

#endif
