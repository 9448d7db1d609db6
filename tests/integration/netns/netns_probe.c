/* netns_probe: an MPI job that shows where its ranks run and that data crosses the network.
 *
 *   netns_probe [IFACE [HOLD]]     (IFACE default eth1; HOLD seconds, default 0)
 *
 * Each rank finds IFACE's IPv4 address, its network namespace (inode of /proc/self/ns/net) and
 * the size of its shared-memory communicator, passes 4 MiB around a ring (checked), takes part
 * in an allreduce, and counts the bytes IFACE received meanwhile. Rank 0 prints one line per
 * rank and a summary, for test_netns.sh to check:
 *
 *   rank=R addr=A netns=INODE local=N rx=BYTES ring=ok|bad
 *   size=N allreduce=S expected=E
 *
 * With HOLD > 0 every rank then sleeps HOLD seconds before it exits (rank 0 prints "holding"
 * first), so a test can kill the launcher and watch the remote ranks go away.
 *
 * The ranks leave after a barrier with _exit, not MPI_Finalize: over TCP between namespaces
 * (MPICH 4.0.2, UCX 1.13) Finalize hung in 2 of 40 runs of this probe on a busy machine, and
 * in up to 8 of 15 in other runs (two ranks spinning in ucp_worker_progress inside Finalize,
 * the third blocked in its PMI barrier); with barrier + _exit 0 of 80 hung.
 * Exit status 0 unless an MPI call or the local checks failed. */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <mpi.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RING_BYTES (4 << 20)

struct rank_info {
    int rank;
    int local;          /* size of MPI_COMM_TYPE_SHARED communicator */
    int ring_ok;        /* ring payload arrived intact */
    char addr[32];      /* IPv4 of IFACE, or "none" */
    unsigned long netns;/* inode of the network namespace */
    long long rx;       /* IFACE rx_bytes during the ring, -1 if unknown */
};

static void iface_addr(const char *iface, char *out, size_t cap)
{
    struct ifaddrs *ifs = NULL;
    snprintf(out, cap, "none");
    if (getifaddrs(&ifs) != 0) return;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET || strcmp(i->ifa_name, iface) != 0)
            continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)i->ifa_addr)->sin_addr, out, (socklen_t)cap);
        break;
    }
    freeifaddrs(ifs);
}

static long long rx_bytes(const char *iface)
{
    char path[256];
    long long v = -1;
    snprintf(path, sizeof(path), "/sys/class/net/%s/statistics/rx_bytes", iface);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (fscanf(f, "%lld", &v) != 1) v = -1;
    fclose(f);
    return v;
}

int main(int argc, char **argv)
{
    const char *iface = argc > 1 ? argv[1] : "eth1";
    int hold = argc > 2 ? atoi(argv[2]) : 0;
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);

    struct rank_info me;
    memset(&me, 0, sizeof(me));
    me.rank = rank;
    iface_addr(iface, me.addr, sizeof(me.addr));
    struct stat st;
    me.netns = stat("/proc/self/ns/net", &st) == 0 ? (unsigned long)st.st_ino : 0;

    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &me.local);
    MPI_Comm_free(&local);

    /* Ring: send RING_BYTES to the next rank, receive from the previous one. */
    unsigned char *out = malloc(RING_BYTES), *in = malloc(RING_BYTES);
    if (!out || !in) MPI_Abort(MPI_COMM_WORLD, 2);
    int next = (rank + 1) % size, prev = (rank + size - 1) % size;
    for (int i = 0; i < RING_BYTES; i++) out[i] = (unsigned char)(i * 7 + rank);
    MPI_Barrier(MPI_COMM_WORLD);
    long long rx0 = rx_bytes(iface);
    MPI_Sendrecv(out, RING_BYTES, MPI_BYTE, next, 1, in, RING_BYTES, MPI_BYTE, prev, 1,
                 MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    long long rx1 = rx_bytes(iface);
    me.rx = rx0 >= 0 && rx1 >= 0 ? rx1 - rx0 : -1;
    me.ring_ok = 1;
    for (int i = 0; i < RING_BYTES; i++)
        if (in[i] != (unsigned char)(i * 7 + prev)) {
            me.ring_ok = 0;
            break;
        }
    free(out);
    free(in);

    int mine = rank + 1, sum = 0;
    MPI_Allreduce(&mine, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);

    struct rank_info *all = rank == 0 ? calloc((size_t)size, sizeof(*all)) : NULL;
    if (rank == 0 && !all) MPI_Abort(MPI_COMM_WORLD, 2);
    MPI_Gather(&me, (int)sizeof(me), MPI_BYTE, all, (int)sizeof(me), MPI_BYTE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        for (int r = 0; r < size; r++)
            printf("rank=%d addr=%s netns=%lu local=%d rx=%lld ring=%s\n", all[r].rank,
                   all[r].addr, all[r].netns, all[r].local, all[r].rx,
                   all[r].ring_ok ? "ok" : "bad");
        printf("size=%d allreduce=%d expected=%d\n", size, sum, size * (size + 1) / 2);
        if (hold > 0) printf("holding %d s\n", hold);
        fflush(stdout);
        free(all);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (hold > 0) sleep((unsigned)hold);
    _exit(me.ring_ok ? 0 : 1);
}
