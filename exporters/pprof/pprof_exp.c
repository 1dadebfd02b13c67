/* Send/retry/shutdown scaffolding of the pprof, pyroscope and parca exporters (pprof_exp.h). */
#include "pprof_exp.h"

#include <stdlib.h>

int pprof_exp_send(pprof_exp *x, sonde_batch *b, sonde_send_cb cb, void *arg, size_t job_size,
                   void (*work)(void *), void (*done)(void *, int)) {
  if (x->stopping) return SONDE_ESHUTDOWN;
  pprof_job *j = calloc(1, job_size);
  if (!j) return SONDE_ENOMEM;
  j->x = x;
  j->b = sonde_batch_ref(b);
  j->cb = cb;
  j->arg = arg;
  int rc = x->h->api->queue_work(x->h, work, done, j);
  if (rc) {
    sonde_batch_unref(b);
    free(j);
    return rc;
  }
  x->in_work++;
  return 0;
}

static void maybe_stopped(pprof_exp *x) {
  if (!x->stopping || x->in_work || !x->done) return;
  void (*done)(void *) = x->done;
  x->done = NULL;
  if (x->started && x->client_shutdown)
    x->client_shutdown(x->client, done, x->done_arg);
  else
    done(x->done_arg);
}

void pprof_exp_work_done(pprof_exp *x) {
  x->in_work--;
  maybe_stopped(x);
}

void pprof_exp_shutdown(pprof_exp *x, void (*done)(void *), void *arg) {
  x->stopping = true;
  x->done = done;
  x->done_arg = arg;
  maybe_stopped(x);
}

void pprof_job_free(pprof_job *j) {
  sonde_batch_unref(j->b);
  free(j);
}

int pprof_exp_encode_status(int st) {
  return st == SONDE_ENOMEM || st == SONDE_ECANCELED ? SONDE_ERETRY : SONDE_EPERMANENT;
}

int pprof_exp_call_status(int rc) {
  return rc == SONDE_ENOMEM || rc == SONDE_ESHUTDOWN ? SONDE_ERETRY : rc;
}
