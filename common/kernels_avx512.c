/* kernels_avx512: being written (see meson.build). */
#include "log.h"
