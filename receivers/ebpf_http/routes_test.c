/* Unit tests of routes.c: configured patterns, the folding heuristic, the per-service cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hx.h"

static const char *route(hx_routes *r, const char *svc, const char *path) {
  static char out[256];
  return hx_routes_match(r, svc, path, out, sizeof(out));
}

static void test_patterns(void **state) {
  (void)state;
  const char *pats[] = {
      "/users/{id}", "/users/{id}/orders/{order}", "/static/**", "/api/*/health", "/a/**/z", "/"};
  hx_routes *r;
  assert_int_equal(hx_routes_new(pats, 6, 0, &r), 0);
  assert_string_equal(route(r, "s", "/users/42"), "/users/{id}");
  assert_string_equal(route(r, "s", "/users/bob"), "/users/{id}");
  assert_string_equal(route(r, "s", "/users/bob?x=1"), "/users/{id}");
  assert_string_equal(route(r, "s", "/users/7/orders/9"), "/users/{id}/orders/{order}");
  assert_string_equal(route(r, "s", "/static/css/site.css"), "/static/**");
  assert_string_equal(route(r, "s", "/static"), "/static/**"); /* ** matches no segment too */
  assert_string_equal(route(r, "s", "/api/v2/health"), "/api/*/health");
  assert_string_equal(route(r, "s", "/a/z"), "/a/**/z");
  assert_string_equal(route(r, "s", "/a/b/c/d/z"), "/a/**/z");
  assert_string_equal(route(r, "s", "/"), "/");
  /* {id} needs a non-empty segment: falls to the heuristic */
  assert_string_equal(route(r, "s", "/users/"), "/users/");
  assert_string_equal(route(r, "s", "/users/42/profile"), "/users/{id}/profile");
  /* first match wins, in configured order */
  const char *pats2[] = {"/x/**", "/x/{id}"};
  hx_routes *r2;
  assert_int_equal(hx_routes_new(pats2, 2, 0, &r2), 0);
  assert_string_equal(route(r2, "s", "/x/1"), "/x/**");
  hx_routes_free(r2);
  hx_routes_free(r);
}

static void test_bad_patterns(void **state) {
  (void)state;
  const char *bad[] = {"",      "users/{id}", "/users/{id",   "/users/id}",
                       "/u/{}", "/u/x{id}",   "/**/a/**/b/**"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    hx_routes *r = (hx_routes *)1;
    assert_int_equal(hx_routes_new(&bad[i], 1, 0, &r), SONDE_EINVAL);
    assert_null(r);
  }
  const char *none[] = {NULL};
  hx_routes *r;
  assert_int_equal(hx_routes_new(none, 1, 0, &r), SONDE_EINVAL);
}

static void test_heuristic(void **state) {
  (void)state;
  hx_routes *r;
  assert_int_equal(hx_routes_new(NULL, 0, 0, &r), 0);
  struct {
    const char *in, *want;
  } cases[] = {
      {"/users/42/orders/9f8e7d6c5b4a", "/users/{id}/orders/{id}"},
      {"/items/123e4567-e89b-12d3-a456-426614174000", "/items/{id}"},
      {"/blobs/sha256:0123", "/blobs/sha256:0123"}, /* not a pure token */
      {"/git/da39a3ee5e6b4b0d3255bfef95601890afd80709", "/git/{id}"},
      {"/t/aGVsbG8gd29ybGQ9MTIzNDU2Nzg5MA", "/t/{id}"}, /* base64 */
      {"/t/dGVzdA2x3Y4z5Q7w", "/t/{id}"},
      {"/blog/release-notes-2024", "/blog/release-notes-2024"}, /* a slug stays */
      {"/api/v1/users", "/api/v1/users"},
      {"/facade/decade", "/facade/decade"}, /* hex letters, but words */
      {"/deadbeefdeadbeef", "/{id}"},       /* 16 hex */
      {"/a1b2c3", "/a1b2c3"},               /* short */
      {"/search?q=1", "/search"},
      {"/x#frag", "/x"},
      {"/caf%C3%A9/42", "/caf%C3%A9/{id}"}, /* percent-encoding left as is */
      {"/", "/"},
      {"", "/"},
      {"*", "*"},
      {"http://example.com/users/42?x", "/users/{id}"},
      {"http://example.com", "/"},
      {"relative/7", "/relative/{id}"},
      {"//double//7/", "//double//{id}/"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
    assert_string_equal(route(r, "svc", cases[i].in), cases[i].want);
  /* the output is bounded by its buffer */
  char small[8];
  hx_routes_match(r, "svc", "/abcdefghijklmnop", small, sizeof(small));
  assert_string_equal(small, "/abcdef");
  assert_int_equal(hx_routes_overflows(r), 0);
  hx_routes_free(r);
}

/* A service past its cap gets the overflow route for new routes, counted; old routes and other
 * services are untouched. Configured patterns never count. */
static void test_cap(void **state) {
  (void)state;
  const char *pats[] = {"/p/{x}"};
  hx_routes *r;
  assert_int_equal(hx_routes_new(pats, 1, 10, &r), 0);
  char path[64];
  for (int i = 0; i < 10; i++) {
    snprintf(path, sizeof(path), "/word%c/x", 'a' + i);
    snprintf(path + 32, 32, "/word%c/x", 'a' + i);
    assert_string_equal(route(r, "a", path), path + 32);
  }
  assert_string_equal(route(r, "a", "/wordz/x"), "/**");
  assert_string_equal(route(r, "a", "/wordy/x"), "/**");
  assert_int_equal(hx_routes_overflows(r), 2);
  assert_string_equal(route(r, "a", "/worda/x"), "/worda/x"); /* known: still itself */
  assert_string_equal(route(r, "a", "/p/anything"), "/p/{x}");
  assert_string_equal(route(r, "b", "/wordz/x"), "/wordz/x"); /* another service */
  assert_string_equal(route(r, NULL, "/wordz/x"), "/wordz/x");
  assert_int_equal(hx_routes_overflows(r), 2);
  /* many services: the ones past the service bound share one set, still capped */
  for (int i = 0; i < 600; i++) {
    snprintf(path, sizeof(path), "svc%d", i);
    (void)route(r, path, "/same");
  }
  uint64_t before = hx_routes_overflows(r);
  for (int i = 0; i < 20; i++) {
    snprintf(path, sizeof(path), "/other%c", 'a' + i);
    (void)route(r, "svc599", path);
  }
  assert_true(hx_routes_overflows(r) > before);
  hx_routes_free(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_patterns),
      cmocka_unit_test(test_bad_patterns),
      cmocka_unit_test(test_heuristic),
      cmocka_unit_test(test_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
