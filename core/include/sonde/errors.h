/* sonde public SDK: error codes.
 * Every fallible call returns 0 or one of these negative codes; one convention everywhere. */
#ifndef SONDE_ERRORS_H
#define SONDE_ERRORS_H

#ifdef __cplusplus
extern "C" {
#endif

/* X(name, value, message) */
#define SONDE_ERRNO_MAP(X)                                                                         \
  X(NOMEM, -1, "out of memory")                                                                    \
  X(INVAL, -2, "invalid argument")                                                                 \
  X(CONFIG, -3, "invalid configuration")                                                           \
  X(NOTFOUND, -4, "not found")                                                                     \
  X(EXISTS, -5, "already exists")                                                                  \
  X(ABI, -6, "plug-in ABI mismatch")                                                               \
  X(IO, -7, "I/O error")                                                                           \
  X(RETRY, -8, "temporarily unavailable, retry later")                                             \
  X(REFUSED, -9, "refused: the pipeline is over capacity")                                         \
  X(PERMANENT, -10, "permanent failure, not retried")                                              \
  X(TIMEOUT, -11, "timed out")                                                                     \
  X(SHUTDOWN, -12, "shutting down")                                                                \
  X(PROTO, -13, "malformed data")                                                                  \
  X(PERM, -14, "permission denied")                                                                \
  X(UNSUPPORTED, -15, "not supported")                                                             \
  X(TOOBIG, -16, "too large")                                                                      \
  X(CANCELED, -17, "canceled")                                                                     \
  X(FULL, -18, "queue full")

typedef enum sonde_err {
  SONDE_OK = 0,
#define SONDE__ERR_ENUM(name, val, msg) SONDE_E##name = (val),
  SONDE_ERRNO_MAP(SONDE__ERR_ENUM)
#undef SONDE__ERR_ENUM
} sonde_err;

/* Human-readable message for an error code; never NULL. */
const char *sonde_strerror(int err);
/* Symbolic name ("SONDE_ENOMEM"); never NULL. */
const char *sonde_err_name(int err);

#ifdef __cplusplus
}
#endif
#endif
