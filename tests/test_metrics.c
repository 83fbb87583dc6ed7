/* Tests for the metrics registry: counters/gauges/histograms, quantiles, JSON snapshot and merge,
 * Prometheus text. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/metrics.h"
#include "tests/test_util.h"

static int setup(void **state) {
  (void)state;
  qins_metrics_reset();
  return 0;
}

static void test_counter_gauge(void **state) {
  (void)state;
  qins_metric *c = qins_metric_counter("qins_items_total", "items", "stage=\"embed\"");
  assert_non_null(c);
  assert_ptr_equal(c, qins_metric_counter("qins_items_total", "items", "stage=\"embed\""));
  assert_ptr_not_equal(c, qins_metric_counter("qins_items_total", "items", "stage=\"head\""));
  int n = (int)(test_rand_u64() % 100) + 1;
  for (int i = 0; i < n; i++) qins_metric_add(c, 1);
  assert_true(qins_metric_value(c) == n);
  qins_metric *g = qins_metric_gauge("qins_depth", "queue depth", NULL);
  qins_metric_set(g, 5);
  qins_metric_add(g, -2);
  assert_true(qins_metric_value(g) == 3);
  /* same name, other kind: refused */
  assert_null(qins_metric_gauge("qins_items_total", "x", "stage=\"embed\""));
}

static void test_histogram_quantile(void **state) {
  (void)state;
  double b[] = {1, 2, 3, 4};
  qins_metric *h = qins_metric_histogram("qins_lat", "latency", NULL, b, 4);
  /* 100 samples uniformly in (0,4]: the median should be near 2 */
  for (int i = 1; i <= 100; i++) qins_metric_observe(h, i * 0.04);
  double med = qins_metric_quantile(h, 0.5);
  assert_true(fabs(med - 2.0) < 0.05);
  assert_true(fabs(qins_metric_quantile(h, 0.25) - 1.0) < 0.05);
  assert_true(fabs(qins_metric_value(h) - 0.04 * 5050) < 1e-9);
  qins_metric_observe(h, 100); /* +Inf bucket */
  assert_true(qins_metric_quantile(h, 1.0) == 4);
  qins_metric *d = qins_metric_histogram("qins_lat_default", "d", NULL, NULL, 0);
  assert_true(isnan(qins_metric_quantile(d, 0.5)));
  qins_metric_observe(d, 3e-3);
  double q = qins_metric_quantile(d, 0.5);
  assert_true(q > 2.5e-3 && q <= 5e-3);
}

static void test_json_and_merge(void **state) {
  (void)state;
  qins_metric *c = qins_metric_counter("w_items_total", "items", "stage=\"a\",worker=\"w0\"");
  qins_metric_add(c, 7);
  double b[] = {0.5, 1.5};
  qins_metric *h = qins_metric_histogram("w_lat", "lat", "worker=\"w0\"", b, 2);
  qins_metric_observe(h, 0.1);
  qins_metric_observe(h, 1.0);
  qins_metric_observe(h, 9.0);
  char *js = qins_metrics_json();
  assert_non_null(js);
  json_error_t e;
  json_t *root = json_loads(js, 0, &e);
  assert_non_null(root);
  json_t *arr = json_object_get(root, "metrics");
  assert_int_equal(json_array_size(arr), 2);
  json_t *m0 = json_array_get(arr, 0);
  assert_string_equal(json_string_value(json_object_get(json_object_get(m0, "labels"), "stage")), "a");
  assert_true(json_number_value(json_object_get(m0, "value")) == 7);
  json_t *m1 = json_array_get(arr, 1);
  assert_string_equal(json_string_value(json_object_get(m1, "kind")), "histogram");
  json_t *bk = json_object_get(m1, "buckets");
  assert_int_equal(json_array_size(bk), 3);
  assert_int_equal(json_integer_value(json_array_get(json_array_get(bk, 2), 1)), 1);
  assert_string_equal(json_string_value(json_array_get(json_array_get(bk, 2), 0)), "+Inf");
  json_decref(root);

  /* a "coordinator": reset, merge the snapshot twice (replace, not add) */
  qins_metrics_reset();
  assert_int_equal(qins_metrics_merge_json(js), 0);
  assert_int_equal(qins_metrics_merge_json(js), 0);
  qins_metric *c2 = qins_metric_counter("w_items_total", "items", "stage=\"a\",worker=\"w0\"");
  assert_true(qins_metric_value(c2) == 7);
  qins_metric *h2 = qins_metric_histogram("w_lat", "lat", "worker=\"w0\"", b, 2);
  assert_true(fabs(qins_metric_value(h2) - 10.1) < 1e-9);
  free(js);
  /* bad snapshots are refused with a message */
  assert_int_not_equal(qins_metrics_merge_json("{"), 0);
  assert_int_not_equal(qins_metrics_merge_json("{\"metrics\":[{\"name\":\"x\"}]}"), 0);
  assert_int_not_equal(qins_metrics_merge_json("{\"metrics\":[{\"name\":\"x\",\"kind\":\"weird\"}]}"), 0);
}

static void test_prometheus(void **state) {
  (void)state;
  qins_metric_add(qins_metric_counter("p_total", "a counter\nwith newline", "stage=\"a\""), 3);
  qins_metric_add(qins_metric_counter("p_total", "a counter\nwith newline", "stage=\"b\""), 4);
  qins_metric_set(qins_metric_gauge("p_gauge", "g", NULL), 1.5);
  double b[] = {1, 2};
  qins_metric *h = qins_metric_histogram("p_hist", "h", "stage=\"a\"", b, 2);
  qins_metric_observe(h, 0.5);
  qins_metric_observe(h, 1.5);
  qins_metric_observe(h, 3);
  char *t = qins_metrics_prometheus();
  assert_non_null(t);
  assert_non_null(strstr(t, "# HELP p_total a counter\\nwith newline\n# TYPE p_total counter\n"));
  /* one HELP per name even with two label sets */
  assert_null(strstr(strstr(t, "# HELP p_total") + 1, "# HELP p_total"));
  assert_non_null(strstr(t, "p_total{stage=\"a\"} 3\n"));
  assert_non_null(strstr(t, "p_total{stage=\"b\"} 4\n"));
  assert_non_null(strstr(t, "p_gauge 1.5\n"));
  assert_non_null(strstr(t, "# TYPE p_hist histogram\n"));
  assert_non_null(strstr(t, "p_hist_bucket{stage=\"a\",le=\"1\"} 1\n"));
  assert_non_null(strstr(t, "p_hist_bucket{stage=\"a\",le=\"2\"} 2\n"));
  assert_non_null(strstr(t, "p_hist_bucket{stage=\"a\",le=\"+Inf\"} 3\n"));
  assert_non_null(strstr(t, "p_hist_sum{stage=\"a\"} 5\n"));
  assert_non_null(strstr(t, "p_hist_count{stage=\"a\"} 3\n"));
  free(t);
}

int main(void) {
  test_seed();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_counter_gauge, setup),
      cmocka_unit_test_setup(test_histogram_quantile, setup),
      cmocka_unit_test_setup(test_json_and_merge, setup),
      cmocka_unit_test_setup(test_prometheus, setup),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
