/* An HTTPS/1.1 server with OpenSSL linked in statically, for test_ebpf_http_tls.py: its SSL_read
 * and SSL_write are in no libssl.so and in no .dynsym, only in the .symtab of the file that
 * carries them (this executable, or a library built from this file with -DPEER_LIB and
 * -Wl,--exclude-libs,ALL, the way grpcio or Envoy carry BoringSSL).
 *
 *   tls_peer PORT CERT KEY   serves until killed; prints "ready" once listening. Every request
 *   (keep-alive) gets "200 ok". */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int peer_serve(int port, const char *cert, const char *key);

#ifndef PEER_MAIN_ONLY
#include <openssl/err.h>
#include <openssl/ssl.h>

static void serve_conn(SSL *ssl) {
  char buf[8192];
  size_t have = 0;
  for (;;) {
    int n = SSL_read(ssl, buf + have, (int)(sizeof(buf) - 1 - have));
    if (n <= 0) return;
    have += (size_t)n;
    buf[have] = 0;
    char *end;
    while ((end = strstr(buf, "\r\n\r\n"))) { /* one request (no bodies in this test) */
      static const char resp[] = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n";
      if (SSL_write(ssl, resp, sizeof(resp) - 1) <= 0) return;
      size_t used = (size_t)(end + 4 - buf);
      memmove(buf, end + 4, have - used + 1);
      have -= used;
    }
    if (have == sizeof(buf) - 1) return;
  }
}

int peer_serve(int port, const char *cert, const char *key) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx || SSL_CTX_use_certificate_file(ctx, cert, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    ERR_print_errors_fp(stderr);
    return 1;
  }
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(ls, (struct sockaddr *)&a, sizeof(a)) || listen(ls, 16)) {
    perror("listen");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  for (;;) {
    int c = accept(ls, NULL, NULL);
    if (c < 0) continue;
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, c);
    if (SSL_accept(ssl) == 1) serve_conn(ssl);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(c);
  }
}
#endif

#ifndef PEER_LIB
int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s PORT CERT KEY\n", argv[0]);
    return 2;
  }
  return peer_serve(atoi(argv[1]), argv[2], argv[3]);
}
#endif
