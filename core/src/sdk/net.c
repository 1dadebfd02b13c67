#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sonde/errors.h"
#include "sonde/net.h"

int sonde_endpoint_parse(const char *endpoint, struct sockaddr_storage *addr, char *err,
                         size_t errlen) {
  char host[256];
  const char *colon = strrchr(endpoint, ':');
  if (!colon || !colon[1]) {
    snprintf(err, errlen, "endpoint \"%s\" has no port (use host:port)", endpoint);
    return SONDE_EINVAL;
  }
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 0 || port > 65535) {
    snprintf(err, errlen, "endpoint \"%s\": invalid port", endpoint);
    return SONDE_EINVAL;
  }
  size_t hl = (size_t)(colon - endpoint);
  if (hl >= sizeof host) {
    snprintf(err, errlen, "endpoint \"%s\": host too long", endpoint);
    return SONDE_EINVAL;
  }
  memcpy(host, endpoint, hl);
  host[hl] = 0;
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
    memmove(host, host + 1, hl - 2);
    host[hl - 2] = 0;
  }
  memset(addr, 0, sizeof *addr);
  if (!host[0] || strcmp(host, "localhost") == 0) strcpy(host, "127.0.0.1");
  struct sockaddr_in *v4 = (struct sockaddr_in *)addr;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)addr;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    return 0;
  }
  if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    return 0;
  }
  /* A name: resolved once at start, before the loop serves anything. */
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
  int rc = getaddrinfo(host, NULL, &hints, &res);
  if (rc || !res) {
    snprintf(err, errlen, "endpoint \"%s\": cannot resolve \"%s\": %s", endpoint, host,
             gai_strerror(rc));
    return SONDE_EINVAL;
  }
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  if (addr->ss_family == AF_INET)
    ((struct sockaddr_in *)addr)->sin_port = htons((uint16_t)port);
  else
    ((struct sockaddr_in6 *)addr)->sin6_port = htons((uint16_t)port);
  freeaddrinfo(res);
  return 0;
}
