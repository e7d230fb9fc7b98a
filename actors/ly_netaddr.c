/*  ly_netaddr.c: IP addresses and CIDR ranges (see ly_netaddr.h). */
#include "ly_prelude.h"
#include "ly_netaddr.h"

static const uint8_t s_mapped [12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF };

static bool
s_is_mapped (const uint8_t addr [16])
{
    return memcmp (addr, s_mapped, sizeof s_mapped) == 0;
}

//  True when text holds len decimal digits, at least one
static bool
s_digits (const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (text [i] < '0' || text [i] > '9')
            return false;
    return len > 0;
}

int
ly_netaddr_parse (const char *text, size_t len, uint8_t out [16])
{
    char copy [INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof copy)
        return -1;
    memcpy (copy, text, len);
    copy [len] = 0;
    if (inet_pton (AF_INET, copy, out + 12) == 1) {
        memcpy (out, s_mapped, sizeof s_mapped);
        return 0;
    }
    return inet_pton (AF_INET6, copy, out) == 1? 0: -1;
}

int
ly_netaddr_parse_forwarded (const char *text, size_t len, uint8_t out [16])
{
    while (len && (*text == ' ' || *text == '\t')) {
        text++;
        len--;
    }
    while (len && (text [len - 1] == ' ' || text [len - 1] == '\t'))
        len--;
    if (len && *text == '[') {
        const char *close = memchr (text, ']', len);
        if (!close)
            return -1;
        size_t rest = len - (size_t) (close + 1 - text);
        if (rest && (close [1] != ':' || !s_digits (close + 2, rest - 1)))
            return -1;
        return ly_netaddr_parse (text + 1, (size_t) (close - text - 1), out);
    }
    //  IPv4:port: one colon; an IPv6 address has at least two
    const char *colon = memchr (text, ':', len);
    if (colon && !memchr (colon + 1, ':', len - (size_t) (colon + 1 - text))) {
        size_t port = len - (size_t) (colon + 1 - text);
        if (!s_digits (colon + 1, port)
        ||  ly_netaddr_parse (text, (size_t) (colon - text), out)
        ||  !s_is_mapped (out))
            return -1;
        return 0;
    }
    return ly_netaddr_parse (text, len, out);
}

void
ly_netaddr_format (const uint8_t addr [16], char out [INET6_ADDRSTRLEN])
{
    if (s_is_mapped (addr))
        inet_ntop (AF_INET, addr + 12, out, INET6_ADDRSTRLEN);
    else
        inet_ntop (AF_INET6, addr, out, INET6_ADDRSTRLEN);
}

int
ly_netaddr_range_parse (const char *text, size_t len, ly_netaddr_range_t *out)
{
    const char *slash = memchr (text, '/', len);
    size_t addr_len = slash? (size_t) (slash - text): len;
    if (ly_netaddr_parse (text, addr_len, out->bytes))
        return -1;
    //  ::ffff:0:0/96 written as IPv6 is the whole IPv4 space, as it should be
    bool ipv4 = s_is_mapped (out->bytes) && memchr (text, ':', addr_len) == NULL;
    unsigned family_bits = ipv4? 32: 128;
    unsigned bits = family_bits;
    if (slash) {
        size_t digits = len - addr_len - 1;
        if (digits > 3 || !s_digits (slash + 1, digits))
            return -1;
        bits = 0;
        for (size_t i = 0; i < digits; i++)
            bits = bits * 10 + (unsigned) (slash [1 + i] - '0');
        if (bits > family_bits)
            return -1;
    }
    out->prefix = bits + (128 - family_bits);
    for (unsigned bit = out->prefix; bit < 128; bit++)
        out->bytes [bit / 8] &= (uint8_t) ~(0x80u >> (bit % 8));
    return 0;
}

bool
ly_netaddr_range_contains (const ly_netaddr_range_t *range, const uint8_t addr [16])
{
    unsigned whole = range->prefix / 8;
    if (memcmp (range->bytes, addr, whole))
        return false;
    unsigned rest = range->prefix % 8;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t) (0xFF00u >> rest);
    return (range->bytes [whole] & mask) == (addr [whole] & mask);
}
