#include "loader.h"

#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"

const char *sonde__kind_name(sonde_kind k) {
  switch (k) {
  case SONDE_KIND_RECEIVER:
    return "receiver";
  case SONDE_KIND_PROCESSOR:
    return "processor";
  case SONDE_KIND_EXPORTER:
    return "exporter";
  case SONDE_KIND_CONNECTOR:
    return "connector";
  case SONDE_KIND_EXTENSION:
    return "extension";
  }
  return "component";
}

const char *sonde__kind_section(sonde_kind k) {
  switch (k) {
  case SONDE_KIND_RECEIVER:
    return "receivers";
  case SONDE_KIND_PROCESSOR:
    return "processors";
  case SONDE_KIND_EXPORTER:
    return "exporters";
  case SONDE_KIND_CONNECTOR:
    return "connectors";
  case SONDE_KIND_EXTENSION:
    return "extensions";
  }
  return "components";
}

static bool valid_type_name(const char *s) {
  if (!s || !*s || strlen(s) > 63) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
  return true;
}

const sonde_component *sonde__registry_find(const sonde__registry *r, sonde_kind kind,
                                            const char *type, size_t *lib) {
  for (size_t i = 0; i < r->ncomps; i++) {
    const sonde_component *c = r->comps[i].comp;
    if (c->kind == kind && strcmp(c->type, type) == 0) {
      if (lib) *lib = r->comps[i].lib;
      return c;
    }
  }
  return NULL;
}

/* Code that the process runs must not be writable by anyone but root or the user it runs as. */
static int check_file(const char *path, char *err, size_t errlen) {
  struct stat st;
  if (stat(path, &st) != 0) {
    snprintf(err, errlen, "%s: cannot stat: %m", path);
    return SONDE_ENOTFOUND;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file", path);
    return SONDE_EINVAL;
  }
  if (st.st_uid != 0 && st.st_uid != geteuid()) {
    snprintf(err, errlen, "%s: owned by uid %u, not by root or the running user (uid %u)", path,
             (unsigned)st.st_uid, (unsigned)geteuid());
    return SONDE_EPERM;
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    snprintf(err, errlen, "%s: group- or world-writable (mode %04o); run chmod go-w on it", path,
             (unsigned)(st.st_mode & 07777));
    return SONDE_EPERM;
  }
  return 0;
}

int sonde__registry_add_file(sonde__registry *r, const char *path, char *err, size_t errlen) {
  int rc = check_file(path, err, errlen);
  if (rc) return rc;
  void *dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    snprintf(err, errlen, "%s: cannot load: %s", path, dlerror());
    return SONDE_EINVAL;
  }
  const sonde_plugin *d = dlsym(dl, SONDE_PLUGIN_SYMBOL_NAME);
  rc = SONDE_EABI;
  if (!d) {
    snprintf(err, errlen,
             "%s: no descriptor: the symbol %s is missing (define it with "
             "SONDE_PLUGIN_DEFINE)",
             path, SONDE_PLUGIN_SYMBOL_NAME);
    goto fail;
  }
  if (d->abi_major != SONDE_ABI_MAJOR) {
    snprintf(err, errlen,
             "%s: ABI mismatch: built for sonde plug-in ABI %u.%u, this sonde "
             "speaks %d.%d; rebuild it against this SDK",
             path, d->abi_major, d->abi_minor, SONDE_ABI_MAJOR, SONDE_ABI_MINOR);
    goto fail;
  }
  if (d->abi_minor > SONDE_ABI_MINOR) {
    snprintf(err, errlen, "%s: ABI mismatch: needs ABI %u.%u, newer than this sonde's %d.%d", path,
             d->abi_major, d->abi_minor, SONDE_ABI_MAJOR, SONDE_ABI_MINOR);
    goto fail;
  }
  if (d->struct_size < sizeof(sonde_plugin) || !d->build_signature ||
      strcmp(d->build_signature, SONDE_BUILD_SIGNATURE) != 0) {
    snprintf(err, errlen, "%s: ABI mismatch: build signature \"%s\", expected \"%s\"", path,
             d->build_signature ? d->build_signature : "(none)", SONDE_BUILD_SIGNATURE);
    goto fail;
  }
  rc = SONDE_EINVAL;
  if (!d->components || d->n_components == 0 || d->n_components > 256) {
    snprintf(err, errlen, "%s: the descriptor lists no components", path);
    goto fail;
  }
  for (size_t i = 0; i < d->n_components; i++) {
    const sonde_component *c = d->components[i];
    if (!c || c->struct_size != sizeof(sonde_component)) {
      snprintf(err, errlen, "%s: component %zu: struct_size %u, expected %zu (ABI mismatch)", path,
               i, c ? c->struct_size : 0, sizeof(sonde_component));
      rc = SONDE_EABI;
      goto fail;
    }
    if (!valid_type_name(c->type)) {
      snprintf(err, errlen, "%s: component %zu: invalid type name \"%s\" (use [a-z0-9_]+)", path, i,
               c->type ? c->type : "(null)");
      goto fail;
    }
    if (c->kind < SONDE_KIND_RECEIVER || c->kind > SONDE_KIND_EXTENSION || !c->create ||
        !c->destroy || !c->shutdown) {
      snprintf(err, errlen, "%s: %s: invalid kind or missing create/shutdown/destroy", path,
               c->type);
      goto fail;
    }
    bool needs_consume = c->kind == SONDE_KIND_PROCESSOR || c->kind == SONDE_KIND_CONNECTOR ||
                         (c->kind == SONDE_KIND_EXPORTER && !(c->flags & SONDE_COMP_QUEUED));
    if ((needs_consume && !c->consume) ||
        (c->kind == SONDE_KIND_EXPORTER && (c->flags & SONDE_COMP_QUEUED) && !c->send)) {
      snprintf(err, errlen, "%s: %s %s: missing %s callback", path, sonde__kind_name(c->kind),
               c->type, needs_consume ? "consume" : "send");
      goto fail;
    }
    if (c->kind != SONDE_KIND_EXTENSION && (c->signals & SONDE_SIGNAL_ALL) == 0) {
      snprintf(err, errlen, "%s: %s %s: handles no signal", path, sonde__kind_name(c->kind),
               c->type);
      goto fail;
    }
    size_t other;
    if (sonde__registry_find(r, c->kind, c->type, &other)) {
      snprintf(err, errlen, "%s: duplicate %s type \"%s\", already provided by %s", path,
               sonde__kind_name(c->kind), c->type, r->libs[other].path);
      rc = SONDE_EEXISTS;
      goto fail;
    }
    for (size_t j = 0; j < i; j++)
      if (d->components[j]->kind == c->kind && strcmp(d->components[j]->type, c->type) == 0) {
        snprintf(err, errlen, "%s: duplicate %s type \"%s\" in one descriptor", path,
                 sonde__kind_name(c->kind), c->type);
        rc = SONDE_EEXISTS;
        goto fail;
      }
  }
  rc = SONDE_ENOMEM;
  sonde__plugin_lib *libs = realloc(r->libs, (r->nlibs + 1) * sizeof *libs);
  if (!libs) goto fail;
  r->libs = libs;
  struct sonde__comp_entry *comps =
      realloc(r->comps, (r->ncomps + d->n_components) * sizeof *comps);
  if (!comps) goto fail;
  r->comps = comps;
  char *p = strdup(path);
  if (!p) goto fail;
  r->libs[r->nlibs] = (sonde__plugin_lib){.path = p, .dl = dl, .desc = d};
  for (size_t i = 0; i < d->n_components; i++)
    r->comps[r->ncomps++] = (struct sonde__comp_entry){d->components[i], r->nlibs};
  r->nlibs++;
  return 0;
fail:
  if (rc == SONDE_ENOMEM) snprintf(err, errlen, "%s: out of memory", path);
  dlclose(dl);
  return rc;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int sonde__registry_add_dir(sonde__registry *r, const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  char **names = NULL;
  size_t n = 0;
  struct dirent *e;
  int rc = 0;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 4 || strcmp(e->d_name + len - 3, ".so") != 0) continue;
    char **nn = realloc(names, (n + 1) * sizeof *nn);
    if (!nn || !(nn[n] = strdup(e->d_name))) {
      names = nn ? nn : names;
      rc = SONDE_ENOMEM;
      break;
    }
    names = nn;
    n++;
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, cmp_str);
  for (size_t i = 0; i < n; i++) {
    char path[PATH_MAX], err[1024];
    snprintf(path, sizeof path, "%s/%s", dir, names[i]);
    if (!rc && sonde__registry_add_file(r, path, err, sizeof err) != 0) {
      sonde__warn("plug-in refused: %s", err);
      char **rf = realloc(r->refused, (r->nrefused + 1) * sizeof *rf);
      if (rf) {
        r->refused = rf;
        if ((rf[r->nrefused] = strdup(err))) r->nrefused++;
      }
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int sonde__registry_load_default(sonde__registry *r, const char *const *extra, size_t nextra) {
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  int rc = 0;
  if (n > 0) {
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) {
      *slash = 0;
      char dir[PATH_MAX + 64];
      /* build tree: build/bin/sonde -> build/lib/sonde; installed: bin -> lib/sonde */
      snprintf(dir, sizeof dir, "%s/%s", exe, SONDE_PLUGIN_RELDIR);
      rc = sonde__registry_add_dir(r, dir);
      if (!rc && strcmp(SONDE_PLUGIN_RELDIR, "../lib/sonde") != 0) {
        snprintf(dir, sizeof dir, "%s/../lib/sonde", exe);
        rc = sonde__registry_add_dir(r, dir);
      }
    }
  }
  const char *env = getenv("SONDE_PLUGIN_PATH");
  if (!rc && env && *env) {
    char *copy = strdup(env), *save = NULL;
    if (!copy) return SONDE_ENOMEM;
    for (char *tok = strtok_r(copy, ":", &save); tok && !rc; tok = strtok_r(NULL, ":", &save))
      rc = sonde__registry_add_dir(r, tok);
    free(copy);
  }
  for (size_t i = 0; i < nextra && !rc; i++)
    rc = sonde__registry_add_dir(r, extra[i]);
  return rc;
}

const char **sonde__registry_types(const sonde__registry *r, sonde_kind kind, size_t *n) {
  const char **v = malloc((r->ncomps + 1) * sizeof *v);
  *n = 0;
  if (!v) return NULL;
  for (size_t i = 0; i < r->ncomps; i++)
    if (r->comps[i].comp->kind == kind) v[(*n)++] = r->comps[i].comp->type;
  return v;
}

void sonde__registry_trim(sonde__registry *r) {
  size_t keep = 0, ncomps = 0;
  size_t *map = calloc(r->nlibs ? r->nlibs : 1, sizeof *map);
  if (!map) return; /* only a memory saving: skip it */
  for (size_t i = 0; i < r->nlibs; i++) {
    if (r->libs[i].used) {
      map[i] = keep;
      r->libs[keep++] = r->libs[i];
    } else {
      dlclose(r->libs[i].dl);
      free(r->libs[i].path);
      map[i] = SIZE_MAX;
    }
  }
  for (size_t i = 0; i < r->ncomps; i++)
    if (map[r->comps[i].lib] != SIZE_MAX)
      r->comps[ncomps++] = (struct sonde__comp_entry){r->comps[i].comp, map[r->comps[i].lib]};
  r->nlibs = keep;
  r->ncomps = ncomps;
  free(map);
}

void sonde__registry_free(sonde__registry *r) {
  for (size_t i = 0; i < r->nlibs; i++) {
    /* Under ASan, keep code mapped so leak reports can still symbolize plug-in frames. */
#if !defined(__SANITIZE_ADDRESS__)
    dlclose(r->libs[i].dl);
#endif
    free(r->libs[i].path);
  }
  for (size_t i = 0; i < r->nrefused; i++)
    free(r->refused[i]);
  free(r->refused);
  free(r->libs);
  free(r->comps);
  memset(r, 0, sizeof *r);
}
