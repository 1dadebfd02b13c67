/* Plug-in loader: finds every *.so on the plug-in path, checks it (ownership, permissions, ABI,
 * descriptor) and indexes its components by (kind, type). */
#ifndef SONDE_LOADER_H
#define SONDE_LOADER_H
#include "sonde/plugin.h"

typedef struct sonde__plugin_lib {
  char *path;
  void *dl;
  const sonde_plugin *desc;
  unsigned used; /* components referenced by a running service */
} sonde__plugin_lib;

typedef struct sonde__registry {
  sonde__plugin_lib *libs;
  size_t nlibs;
  struct sonde__comp_entry {
    const sonde_component *comp;
    size_t lib;
  } * comps;
  size_t ncomps;
  char **refused; /* "path: reason", one per refused file */
  size_t nrefused;
} sonde__registry;

/* Checks one file and, when fit, adds its components. Returns 0 or an error with the reason in
 * err ("<path>: <reason>"); a refused file changes nothing in r. */
int sonde__registry_add_file(sonde__registry *r, const char *path, char *err, size_t errlen);
/* Adds every *.so of dir (sorted by name); refusals are logged and kept in r->refused. A missing
 * directory is not an error. */
int sonde__registry_add_dir(sonde__registry *r, const char *dir);
/* The default search path: ../lib/sonde next to the binary, then $SONDE_PLUGIN_PATH
 * (colon-separated), then extra (--plugin-path, may be NULL). */
int sonde__registry_load_default(sonde__registry *r, const char *const *extra, size_t nextra);
const sonde_component *sonde__registry_find(const sonde__registry *r, sonde_kind kind,
                                            const char *type, size_t *lib);
/* Every type name of a kind, for "valid choices" messages; the array is malloc'd, names borrowed.
 */
const char **sonde__registry_types(const sonde__registry *r, sonde_kind kind, size_t *n);
/* Unloads libraries with no used component (keeps idle memory low). */
void sonde__registry_trim(sonde__registry *r);
void sonde__registry_free(sonde__registry *r);
const char *sonde__kind_name(sonde_kind k);    /* "receiver" */
const char *sonde__kind_section(sonde_kind k); /* "receivers" */
#endif
