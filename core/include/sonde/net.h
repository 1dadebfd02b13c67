/* sonde public SDK: network helpers shared by the core and plug-ins. */
#ifndef SONDE_NET_H
#define SONDE_NET_H

#include <stddef.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Parses an otelcol endpoint "host:port", "[v6]:port" or ":port" into addr. An empty host or
 * "localhost" is 127.0.0.1 (listeners bind localhost unless told otherwise); a name is resolved
 * with getaddrinfo, which blocks: call it at start, not on the hot path. Returns 0 or
 * SONDE_EINVAL with the reason in err. */
int sonde_endpoint_parse(const char *endpoint, struct sockaddr_storage *addr, char *err,
                         size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
