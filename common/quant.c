/* quant: being written (see meson.build). */
#include "log.h"
