/* oneshot: `baton run` on rank 0 (baton-server --oneshot -p PROMPT -n N ...): the continuation of
 * one prompt through the engine interface (engine_local in one process, engine_pipe under
 * mpiexec with more ranks), printed on stdout as it is produced (UTF-8-safe: a character split
 * over tokens is printed when complete), nothing else on stdout; logs go to stderr. The prompt
 * gets a BOS token when the vocabulary asks for one, as baton-cli does, so greedy output
 * (--temp 0) is the same as baton-cli's. Generation stops after N tokens (-n; -1: until the
 * context is full) or at an end-of-generation token; a prompt plus N tokens that does not fit
 * the context is an error. Then the engine is destroyed (SHUTDOWN to the ranks).
 *
 * Threads: runs on the calling thread (main), which owns the engine throughout. */
#ifndef BATON_ONESHOT_H
#define BATON_ONESHOT_H

struct cfg;

/* Run it; returns the process's exit status (exitcodes.h). */
int oneshot_main(const struct cfg *c, int *argc, char ***argv);

#endif
