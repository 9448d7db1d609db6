/* test_stop: stop strings: the earliest occurrence wins, text that may start a stop string is
 * held back, everything else is released. */
#include "stop.h"
#include "t.h"

static size_t scan(const char *text, const char *const *stops, int n, bool *found)
{
    size_t k = 12345;
    *found = stop_scan(text, strlen(text), stops, n, &k);
    return k;
}

int main(void)
{
    bool found;
    const char *s1[] = {"END"};
    CHECK_INT(scan("hello", s1, 1, &found), 5);
    CHECK(!found);
    CHECK_INT(scan("hello E", s1, 1, &found), 6); /* "E" held */
    CHECK(!found);
    CHECK_INT(scan("hello EN", s1, 1, &found), 6);  /* "EN" held */
    CHECK_INT(scan("hello ENX", s1, 1, &found), 9); /* not a prefix any more */
    CHECK_INT(scan("hello END and more", s1, 1, &found), 6);
    CHECK(found);
    CHECK_INT(scan("END", s1, 1, &found), 0);
    CHECK(found);
    CHECK_INT(scan("", s1, 1, &found), 0);
    CHECK(!found);

    /* the earliest of several; the longest hold-back of several */
    const char *s2[] = {"world", "lo", NULL, ""};
    CHECK_INT(scan("hello world", s2, 4, &found), 3);
    CHECK(found);
    CHECK_INT(scan("say wor", s2, 4, &found), 4);
    CHECK(!found);
    CHECK_INT(scan("say l", s2, 4, &found), 4);
    const char *s3[] = {"abcd", "cdx"};
    CHECK_INT(scan("zzabc", s3, 2, &found), 2); /* "abc" (prefix of abcd) beats "c" */
    CHECK_INT(scan("zzcd", s3, 2, &found), 2);

    /* a stop string longer than the text */
    const char *s4[] = {"a long stop"};
    CHECK_INT(scan("a lo", s4, 1, &found), 0);
    CHECK(!found);

    /* no stops: release all */
    CHECK_INT(scan("anything", NULL, 0, &found), 8);

    /* UTF-8: the hold-back starts at a character boundary */
    const char *s5[] = {"\xC3\xA9t\xC3\xA9"}; /* "été" */
    CHECK_INT(scan("un \xC3\xA9t", s5, 1, &found), 3);
    CHECK_INT(scan("un \xC3\xA9t\xC3\xA9!", s5, 1, &found), 3);
    CHECK(found);
    return t_done();
}
