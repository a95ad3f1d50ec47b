/*
 * gcpace.h - the cycle collector paced by the workers on free-threaded
 * interpreters whose own pacing drifts (gcpace.c).
 */
#ifndef PXPY_GCPACE_H
#define PXPY_GCPACE_H
#include "binding.h"

typedef struct pxpy_gcpace_s pxpy_gcpace_t;

/* Probes the interpreter (attached, in mode threads or gil): *out is the
 * pacing when it needs one, else NULL. -1 with an exception on error. */
int pxpy_gcpace_new(pxpy_gcpace_t **out);
/* Starts p's timer on a loop that has just started (nothing when p is
 * NULL); a negative engine error code on failure. */
int pxpy_gcpace_start(pxpy_gcpace_t *p, px_loop_t *loop);
/* The collections the workers ran (stats()["gc_paced"]). */
uint64_t pxpy_gcpace_collections(pxpy_gcpace_t *p);
/* Takes the callback out of gc.callbacks and frees p; p may be NULL. */
void pxpy_gcpace_free(pxpy_gcpace_t *p);

#endif /* PXPY_GCPACE_H */
