/* gpu_probe [N]: exit 0 and print the name of CUDA device N (default 0), or print why there is
 * none ("no CUDA device: ...") and exit 77, the skip code of the gpu suite's scripts. */
#include "cuda.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    char name[128], err[512];
    double bw = 0;
    const int dev = argc > 1 ? atoi(argv[1]) : 0;
    if (cuda_probe(dev, name, sizeof(name), &bw, err, sizeof(err)) < 0) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    printf("cuda:%d %s, peak memory bandwidth %.0f GB/s\n", dev, name, bw / 1e9);
    return 0;
}
