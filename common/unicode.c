/* unicode: code point classes and UTF-8 helpers (see unicode.h). */
#include "unicode.h"

#include "unicode_tables.h"

uint8_t uni_info(uint32_t cp)
{
    if (cp >= 0x110000) return UNI_UNDEF;
    /* last range whose start is <= cp; range 0 starts at 0 */
    size_t lo = 0, hi = UNI_N_RANGES;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (uni_range_start[mid] <= cp)
            lo = mid;
        else
            hi = mid;
    }
    return uni_range_info[lo];
}

bool uni_in_dsllm_letters(uint32_t cp)
{
    size_t lo = 0, hi = UNI_N_DSLLM_LETTERS;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < uni_dsllm_letters[mid][0])
            hi = mid;
        else if (cp > uni_dsllm_letters[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

static inline bool is_cont(uint8_t b)
{
    return (b & 0xC0) == 0x80;
}

uint32_t uni_decode_lenient(const char *str, size_t len, size_t *pos)
{
    const uint8_t *s = (const uint8_t *)str + *pos;
    size_t left = len - *pos;
    uint8_t b = s[0];
    if (!(b & 0x80)) {
        *pos += 1;
        return b;
    }
    if (!(b & 0x40)) goto bad; /* stray continuation byte */
    if (!(b & 0x20)) {
        if (left < 2 || !is_cont(s[1])) goto bad;
        *pos += 2;
        return ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F);
    }
    if (!(b & 0x10)) {
        if (left < 3 || !is_cont(s[1]) || !is_cont(s[2])) goto bad;
        *pos += 3;
        return ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    }
    if (!(b & 0x08)) {
        if (left < 4 || !is_cont(s[1]) || !is_cont(s[2]) || !is_cont(s[3])) goto bad;
        *pos += 4;
        return ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
bad:
    *pos += 1;
    return UNI_REPLACEMENT;
}

int uni_encode(uint32_t cp, char out[4])
{
    if (cp >= 0x200000) cp = UNI_REPLACEMENT;
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int uni_utf8_check(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    int need;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (b < 0x80) return 1;
    if (b < 0xC2) return -1;
    if (b < 0xE0)
        need = 2;
    else if (b < 0xF0) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;
    } else if (b < 0xF5) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;
    } else
        return -1;
    for (int i = 1; i < need; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t c = s[i];
        bool ok = i == 1 ? (c >= lo && c <= hi) : is_cont(c);
        if (!ok) return -i;
    }
    return need;
}
