#include "log.h"
#include "t.h"

int main(void)
{
    char err[32];
    CHECK_INT(bt_errf(err, sizeof(err), BT_EFORMAT, "%s: bad %d", "f.gguf", 7), BT_EFORMAT);
    CHECK_STR(err, "f.gguf: bad 7");
    /* truncation keeps the buffer NUL-terminated */
    bt_errf(err, sizeof(err), BT_ERR, "%s", "0123456789012345678901234567890123456789");
    CHECK_INT(strlen(err), sizeof(err) - 1);
    CHECK_INT(bt_errf(NULL, 0, BT_EIO, "x"), BT_EIO);
    CHECK_STR(bt_strstatus(BT_ETIMEOUT), "timed out");
    uint64_t a = bt_now_ns(), b = bt_now_ns();
    CHECK(b >= a);
    return t_done();
}
