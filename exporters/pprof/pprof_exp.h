/* The send/retry/shutdown scaffolding of the exporters that turn profiles into pprof (pprof,
 * pyroscope, parca; static library sonde_pprof_enc). A send references the batch and runs the
 * exporter's work (encoding, file writes) on the host's thread pool; its done callback runs on the
 * loop and ends with pprof_exp_work_done. Shutdown waits for every work item, then shuts the
 * transport down (when there is one and it was started) before calling the core's done. Loop
 * thread only, but for the work callbacks themselves. */
#ifndef SONDE_PPROF_EXP_H
#define SONDE_PPROF_EXP_H

#include <stdbool.h>
#include <stddef.h>

#include "sonde/sonde.h"

typedef struct pprof_exp {
  const sonde_host *h;
  /* The transport (otlp_grpc/otlp_http client), shut down after the last work item; NULL
   * client_shutdown: none. */
  void *client;
  void (*client_shutdown)(void *client, void (*done)(void *), void *arg);
  bool started, stopping;
  unsigned in_work;
  void (*done)(void *);
  void *done_arg;
} pprof_exp;

/* The head of every job (a job is job_size bytes, zeroed, with this first). */
typedef struct pprof_job {
  pprof_exp *x;
  sonde_batch *b; /* referenced until pprof_job_free */
  sonde_send_cb cb;
  void *arg;
} pprof_job;

/* The component's send: queues work(job) then done(job, status) on the loop. Returns 0,
 * SONDE_ESHUTDOWN after shutdown began, SONDE_ENOMEM or queue_work's error (no callback then). */
int pprof_exp_send(pprof_exp *x, sonde_batch *b, sonde_send_cb cb, void *arg, size_t job_size,
                   void (*work)(void *), void (*done)(void *, int));
/* The last thing a done callback does (after answering or handing its job on). */
void pprof_exp_work_done(pprof_exp *x);
/* The component's shutdown. */
void pprof_exp_shutdown(pprof_exp *x, void (*done)(void *), void *arg);
void pprof_job_free(pprof_job *j);

/* What a batch whose encoding failed with st (an error, or a cancelled work item) becomes: retried
 * when memory or a shutdown was the cause, else dropped. */
int pprof_exp_encode_status(int st);
/* What a transport call that could not be issued (rc) becomes: retried when it may pass later. */
int pprof_exp_call_status(int rc);

#endif
