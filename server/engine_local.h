/* engine_local: the engine interface (engine.h) over this process's own model: every layer,
 * the KV cache and one sampler per sequence, run synchronously (one micro-batch in flight).
 *
 * Ownership: eng_local_new returns an engine whose self is freed by ops->destroy. Threads: like
 * every engine, used by the scheduler thread only. */
#ifndef BATON_ENGINE_LOCAL_H
#define BATON_ENGINE_LOCAL_H

#include "engine.h"

int eng_local_new(struct engine *out);

#endif
