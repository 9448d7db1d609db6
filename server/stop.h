/* stop: stop strings over generated text.
 *
 * Generated text is kept in a pending buffer until it is safe to send: text that could still be
 * the beginning of a stop string is held back, text up to a stop string is released and the
 * stop string itself never is. Works on bytes; with valid UTF-8 text and stop strings the cut
 * points are character boundaries.
 *
 * Pure functions, no state: any thread. */
#ifndef BATON_STOP_H
#define BATON_STOP_H

#include <stdbool.h>
#include <stddef.h>

/* Scan the pending text[0..len) for the stop strings (NULL or empty ones are skipped).
 * Returns true if one occurs: *n is the offset of the earliest occurrence (text before it is the
 * final output). Otherwise false and *n is how many bytes can be released now (the rest may be
 * the start of a stop string). */
bool stop_scan(const char *text, size_t len, const char *const *stops, int n_stops, size_t *n);

#endif
