/*  fuzz_netaddr.c: libFuzzer target for the X-Forwarded-For entry and CIDR range
    readers: any bytes are read without a crash or a read past their length; an entry
    read is written back as text that reads as the same address; a range read holds
    the address it was written with. It includes ly_netaddr.c itself, so the reader is
    built with the fuzzer's coverage instrumentation. */
#include "../../actors/ly_netaddr.c"

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    //  An exact-size copy, so that reading one byte past the input trips ASan
    char *text = (char *) malloc (size? size: 1);
    memcpy (text, data, size);
    uint8_t addr [16], again [16];
    if (ly_netaddr_parse_forwarded (text, size, addr) == 0) {
        char out [INET6_ADDRSTRLEN];
        ly_netaddr_format (addr, out);
        if (ly_netaddr_parse (out, strlen (out), again) || memcmp (addr, again, 16))
            abort ();
    }
    ly_netaddr_range_t range;
    if (ly_netaddr_range_parse (text, size, &range) == 0) {
        const char *slash = memchr (text, '/', size);
        if (range.prefix > 128
        ||  ly_netaddr_parse (text, slash? (size_t) (slash - text): size, addr)
        ||  !ly_netaddr_range_contains (&range, addr)
        ||  !ly_netaddr_range_contains (&range, range.bytes))
            abort ();
    }
    free (text);
    return 0;
}
