/* Logging: one line per event on stderr, "time level component: message". */
#ifndef SONDE_LOG_H
#define SONDE_LOG_H
#include <stdarg.h>
#include <stdbool.h>

#include "sonde/plugin.h"

void sonde__log_set_level(sonde_log_level lvl);
sonde_log_level sonde__log_level(void);
int sonde__log_parse_level(const char *s, sonde_log_level *out);
bool sonde__log_enabled(sonde_log_level lvl);
/* who: "exporters::file" or NULL for the service itself. */
void sonde__vlog(sonde_log_level lvl, const char *who, const char *fmt, va_list ap);
void sonde__log(sonde_log_level lvl, const char *who, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define sonde__info(...) sonde__log(SONDE_LOG_INFO, NULL, __VA_ARGS__)
#define sonde__warn(...) sonde__log(SONDE_LOG_WARN, NULL, __VA_ARGS__)
#define sonde__error(...) sonde__log(SONDE_LOG_ERROR, NULL, __VA_ARGS__)
#define sonde__debug(...) sonde__log(SONDE_LOG_DEBUG, NULL, __VA_ARGS__)
#endif
