/* Retention of a directory of time-named files (static library sonde_file_prune, in the file
 * exporter's folder; the file exporter prunes its rotated backups with it, the pprof exporter its
 * pprof files). Blocking I/O: call it on the thread pool. */
#ifndef SONDE_FILE_PRUNE_H
#define SONDE_FILE_PRUNE_H

#include <stddef.h>
#include <stdint.h>

/* The time of an entry of dir (its name), in ms since the epoch, or -1 when the file is not one
 * of those pruned. */
typedef int64_t (*file_prune_time_fn)(const char *name, void *arg);

typedef struct file_prune_limits {
  int64_t max_files;  /* files kept, newest first (0: any number) */
  int64_t max_days;   /* files older than this, by the time in their name, go (0: no age limit) */
  uint64_t max_bytes; /* total size kept, newest first; the newest file always stays (0: none) */
} file_prune_limits;

typedef struct file_prune_result {
  size_t removed, kept;
  uint64_t removed_bytes, kept_bytes;
  int err; /* errno of the first failure (opendir, unlink other than ENOENT), else 0 */
} file_prune_result;

/* Removes the files of dir ("" is ".") that time_of accepts and that lie beyond a limit, oldest
 * first. */
void file_prune(const char *dir, file_prune_time_fn time_of, void *arg,
                const file_prune_limits *lim, file_prune_result *res);

#endif
