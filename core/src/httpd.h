/* A small HTTP/1.1 server on the libuv loop (nodejs http-parser for the wire format): keep-alive,
 * pipelined requests answered in order, Content-Length and chunked bodies, body size and read
 * time limits. Behind the SDK's http_* host calls. */
#ifndef SONDE_HTTPD_H
#define SONDE_HTTPD_H
#include <uv.h>

#include "sonde/plugin.h"

int sonde__http_listen(uv_loop_t *loop, const char *endpoint, const sonde_http_options *opts,
                       sonde_http_handler handler, void *arg, sonde_http_server **out, char *err,
                       size_t errlen);
void sonde__http_close(sonde_http_server *srv);
const char *sonde__http_method(const sonde_http_request *r);
const char *sonde__http_path(const sonde_http_request *r);
const char *sonde__http_query(const sonde_http_request *r);
const char *sonde__http_header(const sonde_http_request *r, const char *name);
const uint8_t *sonde__http_body(const sonde_http_request *r, size_t *len);
int sonde__http_respond(sonde_http_request *r, int status, const char *content_type,
                        const char *headers, const void *body, size_t len);
/* An opaque pointer for the server's owner. */
void sonde__http_set_user(sonde_http_server *srv, void *user);
void *sonde__http_user(const sonde_http_server *srv);
/* The bound port (useful with port 0). */
int sonde__http_port(const sonde_http_server *srv);
#endif
