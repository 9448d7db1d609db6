#include "stop.h"

#include <string.h>

bool stop_scan(const char *text, size_t len, const char *const *stops, int n_stops, size_t *n)
{
    bool found = false;
    size_t first = len, hold = 0;
    for (int i = 0; i < n_stops; i++) {
        const char *s = stops[i];
        size_t sl = s ? strlen(s) : 0;
        if (!sl) continue;
        const char *hit = len >= sl ? memmem(text, len, s, sl) : NULL;
        if (hit && (size_t)(hit - text) < first) {
            first = (size_t)(hit - text);
            found = true;
        }
        /* longest proper prefix of s that ends the text */
        size_t k = sl - 1 < len ? sl - 1 : len;
        for (; k > hold; k--)
            if (!memcmp(text + len - k, s, k)) break;
        if (k > hold) hold = k;
    }
    *n = found ? first : len - hold;
    return found;
}
