/* kernels_avx2: being written (see meson.build). */
#include "log.h"
