/* The A1 codec report: every weight of a model through every storage format and back, with the
 * error measures of ../shared/QINS.md section 7 and the A1 gate on qins-f32 (docs/codec.md). */
#ifndef QINS_CODEC_REPORT_H
#define QINS_CODEC_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "core/backend.h"
#include "core/model/model.h"
#include "core/tensor.h"

/* A1 thresholds (QINS.md section 7), applied per tensor to qins-f32 only. */
#define QINS_A1_MIN_COSINE 0.999999
#define QINS_A1_MAX_REL_ERR 1e-6 /* max |err| / max(1, |x|) */

#define QINS_CODEC_REPORT_MAX_FORMATS 8

/* One tensor in one format. Errors are over finite inputs; NaN inputs decode to 0 and +-Inf to the
 * largest code of their sign (the codec's policy): they are counted, not measured. */
typedef struct qins_codec_metrics {
  qins_dtype format;
  int64_t elements;
  double cosine;        /* of decoded vs original (1 when both are all zero) */
  double max_abs_err;
  double max_rel_err;   /* max |err| / max(1, |x|) */
  double nmse;          /* sum err^2 / sum x^2 (0 when both are zero) */
  double bit_exact;     /* fraction of elements whose decoded float bits equal the original's */
  size_t bytes;         /* codes + scales */
  double alpha_min, alpha_median, alpha_max; /* QINS formats: the calibrated per-row alpha; else 0 */
  int gated;            /* the A1 gate applies (qins-f32) */
  int a1_pass;          /* cosine >= QINS_A1_MIN_COSINE and max_rel_err <= QINS_A1_MAX_REL_ERR */
  /* sums for the summary (double) */
  double sum_err2, sum_x2;
  int64_t exact_count;
} qins_codec_metrics;

typedef struct qins_codec_tensor_report {
  char name[QINS_NAME_MAX];
  qins_dtype dtype;     /* as stored in the model */
  int ndim;
  int64_t shape[QINS_MAX_DIMS];
  int64_t rows, cols;   /* as coded: rows = product of the leading dimensions */
  int64_t nan_count, inf_count;
  qins_codec_metrics m[QINS_CODEC_REPORT_MAX_FORMATS];
} qins_codec_tensor_report;

typedef struct qins_codec_summary {
  qins_dtype format;
  int tensors;
  int64_t elements;
  double min_cosine, max_abs_err, max_rel_err;
  double nmse;          /* over all tensors: total err^2 / total x^2 */
  double bit_exact;     /* over all elements */
  size_t bytes;
  int gated, a1_passed; /* qins-f32: tensors passing A1 */
} qins_codec_summary;

typedef struct qins_codec_report_opts {
  qins_dtype formats[QINS_CODEC_REPORT_MAX_FORMATS];
  int n_formats;        /* 0: the default list (qins-f32, qins8, qins6, int8-row, int8-block32, f16, bf16) */
  qins_alpha_spec alpha;
} qins_codec_report_opts;

typedef struct qins_codec_report {
  char model[1024];
  char model_format[32];
  char backend[64], device[256];
  qins_alpha_spec alpha;
  int n_formats;
  qins_dtype formats[QINS_CODEC_REPORT_MAX_FORMATS];
  int n_tensors;
  qins_codec_tensor_report *tensors;
  qins_codec_summary summary[QINS_CODEC_REPORT_MAX_FORMATS];
  int64_t nan_count, inf_count;
  int a1_pass;          /* every tensor passes A1 in qins-f32 (0 when qins-f32 was not measured) */
  int a1_measured;
} qins_codec_report;

/* "qins8,int8-row,..." into opts->formats. Returns 0 or QINS_EINPUT naming the bad entry. */
int qins_codec_report_parse_formats(const char *list, qins_codec_report_opts *opts);

/* One host tensor x[rows, cols] (f32) through `format` on backend be and back. */
int qins_codec_measure(qins_backend *be, const float *x, int64_t rows, int64_t cols, qins_dtype format,
                       qins_alpha_spec spec, qins_codec_metrics *out);

/* Every weight of m (f32/f16/bf16, converted to f32) in every format of opts. */
int qins_codec_report_model(qins_backend *be, const qins_model *m, const qins_codec_report_opts *opts,
                            qins_codec_report **out);
/* The same for tensors held in memory (tests, tools without a model): weights as qins_weight. */
int qins_codec_report_weights(qins_backend *be, const char *label, const qins_weight *w, int n,
                              const qins_codec_report_opts *opts, qins_codec_report **out);
void qins_codec_report_free(qins_codec_report *r);

/* Human-readable table (per tensor, per format) and a summary line per format. */
void qins_codec_report_print(const qins_codec_report *r, FILE *f);
/* A stable JSON document (keys in a fixed order; non-finite numbers as null). Caller frees
 * with free(). NULL on allocation failure. */
char *qins_codec_report_json(const qins_codec_report *r);

#endif
