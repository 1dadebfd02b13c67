/* Content negotiation of the prometheus exporter's endpoint, as promhttp does it
 * (expfmt.NegotiateIncludingOpenMetrics and its gzip check). The header values are the
 * scraper's bytes, NUL-terminated; NULL means the header is absent. */
#ifndef PROM_HTTP_H
#define PROM_HTTP_H

#include <stdbool.h>

/* true: answer in OpenMetrics (*om_version "1.0.0" or "0.0.1"); false: text 0.0.4 (also when
 * om_enabled is false, or nothing in accept is understood). The first 1023 bytes and 16 media
 * ranges are looked at; ranges are taken by q (highest first), then in order. */
bool prom_negotiate(const char *accept, bool om_enabled, const char **om_version);

/* Whether Accept-Encoding allows gzip (a q of 0 refuses it). */
bool prom_accepts_gzip(const char *accept_encoding);

#endif
