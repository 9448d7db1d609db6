/* test_embed: index_html.h, made by tools/embed.py at build time, holds exactly the bytes of
 * server/static/index.html (what baton-server serves at GET /), followed by a NUL. */
#include "index_html.h"
#include "t.h"

int main(void)
{
    const char *path = t_path("BATON_SRC", "server/static/index.html");
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) return t_done();
    static unsigned char file[1 << 20];
    size_t n = fread(file, 1, sizeof(file), f);
    CHECK(feof(f));
    fclose(f);
    CHECK_INT(baton_index_html_len, n);
    CHECK(n > 0 && memcmp(baton_index_html, file, n < baton_index_html_len ? n : baton_index_html_len) == 0);
    CHECK_INT(sizeof(baton_index_html), baton_index_html_len + 1);
    CHECK_INT(baton_index_html[baton_index_html_len], 0);
    CHECK(strstr((const char *)baton_index_html, "/v1/chat/completions") != NULL);
    return t_done();
}
