/* Retention of a directory of time-named files (file_prune.h). */
#include "file_prune.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

typedef struct entry {
  char *name;
  int64_t ms;
  uint64_t bytes;
} entry;

static int newest_first(const void *a, const void *b) {
  const entry *x = a, *y = b;
  if (x->ms != y->ms) return x->ms < y->ms ? 1 : -1;
  return strcmp(y->name, x->name); /* the same time: the later name ("-1" after none) is newer */
}

void file_prune(const char *dir, file_prune_time_fn time_of, void *arg,
                const file_prune_limits *lim, file_prune_result *res) {
  memset(res, 0, sizeof *res);
  if (lim->max_files <= 0 && lim->max_days <= 0 && !lim->max_bytes) return;
  DIR *d = opendir(dir[0] ? dir : ".");
  if (!d) {
    res->err = errno;
    return;
  }
  entry *v = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    int64_t ms = time_of(de->d_name, arg);
    if (ms < 0) continue;
    struct stat st;
    if (lim->max_bytes) {
      if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode))
        continue;
    }
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      entry *nv = realloc(v, cap * sizeof *nv);
      if (!nv) break;
      v = nv;
    }
    if (!(v[n].name = strdup(de->d_name))) break;
    v[n].ms = ms;
    v[n++].bytes = lim->max_bytes ? (uint64_t)st.st_size : 0;
  }
  if (n) qsort(v, n, sizeof *v, newest_first);
  int64_t cutoff = ((int64_t)time(NULL) - lim->max_days * 86400) * 1000;
  uint64_t total = 0;
  bool over = false; /* past the size bound: this file and every older one go */
  for (size_t i = 0; i < n; i++) {
    total += v[i].bytes;
    over = over || (lim->max_bytes && i > 0 && total > lim->max_bytes);
    bool drop = over || (lim->max_files > 0 && (int64_t)i >= lim->max_files) ||
                (lim->max_days > 0 && v[i].ms < cutoff);
    if (drop && unlinkat(dirfd(d), v[i].name, 0) != 0 && errno != ENOENT) {
      if (!res->err) res->err = errno;
      drop = false;
    }
    if (drop) {
      res->removed++;
      res->removed_bytes += v[i].bytes;
    } else {
      res->kept++;
      res->kept_bytes += v[i].bytes;
    }
    free(v[i].name);
  }
  free(v);
  closedir(d);
}
