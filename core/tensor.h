/* Tensors: a dtype, a shape and a place in a backend buffer; QINS and int8 formats carry scales. */
#ifndef QINS_TENSOR_H
#define QINS_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define QINS_MAX_DIMS 4
#define QINS_NAME_MAX 128

typedef enum qins_dtype {
  QINS_DT_F32 = 0,
  QINS_DT_F16,
  QINS_DT_BF16,
  QINS_DT_I8,
  QINS_DT_U8,
  QINS_DT_I32,
  /* QINS storage formats (../shared/QINS.md section 2). `scale` holds alpha per row (f32 [rows]). */
  QINS_DT_QINS_F32, /* z = E_alpha(x) as float32 */
  QINS_DT_QINS8,    /* 8-bit code per element */
  QINS_DT_QINS6,    /* 6-bit codes, 4 per 3 bytes little-endian, each row padded to a multiple of 4 */
  /* Baselines at the same bit width. `scale` holds the absmax/127 step (f32). */
  QINS_DT_INT8_ROW, /* int8, one scale per row: scale [rows] */
  QINS_DT_INT8_B32, /* int8, one scale per 32 elements of a row: scale [rows, ceil(cols/32)] */
  QINS_DT_COUNT
} qins_dtype;

struct qins_buf;

/* Contiguous, row-major. A "row" is the last dimension; rows = product of the others. */
typedef struct qins_tensor {
  char name[QINS_NAME_MAX];
  qins_dtype dtype;
  int ndim;
  int64_t shape[QINS_MAX_DIMS];
  struct qins_buf *buf;         /* where the bytes live (NULL: not placed yet) */
  size_t offset;                /* byte offset of element 0 inside buf */
  struct qins_tensor *scale;    /* alpha (QINS formats) or step (int8 formats); NULL otherwise */
} qins_tensor;

const char *qins_dtype_name(qins_dtype dt);
/* Parses "f32", "qins8", "int8-row", ... Returns 0 or QINS_EINPUT. */
int qins_dtype_parse(const char *name, qins_dtype *out);
/* Bytes per element for plain dtypes; 0 for packed/quantized formats (use qins_tensor_nbytes). */
size_t qins_dtype_size(qins_dtype dt);
int qins_dtype_is_quantized(qins_dtype dt);   /* QINS_F32, QINS8, QINS6, INT8_ROW, INT8_B32 */
int qins_dtype_is_qins(qins_dtype dt);        /* QINS_F32, QINS8, QINS6 */

/* Fill name/dtype/shape; buf stays NULL. Returns QINS_EINVAL on a bad shape. */
int qins_tensor_init(qins_tensor *t, const char *name, qins_dtype dt, int ndim, const int64_t *shape);
int64_t qins_tensor_numel(const qins_tensor *t);
int64_t qins_tensor_cols(const qins_tensor *t);   /* last dimension */
int64_t qins_tensor_rows(const qins_tensor *t);   /* numel / cols */
/* Bytes of one row and of the whole tensor in its storage format (scales not included). */
size_t qins_format_row_bytes(qins_dtype dt, int64_t cols);
size_t qins_tensor_nbytes(const qins_tensor *t);
/* Number of f32 scales the format needs for a [rows, cols] tensor (0 for plain dtypes). */
int64_t qins_format_scale_count(qins_dtype dt, int64_t rows, int64_t cols);
int qins_tensor_same_shape(const qins_tensor *a, const qins_tensor *b);
/* "name f32[2,3]" into buf, for messages. */
const char *qins_tensor_describe(const qins_tensor *t, char *buf, size_t n);
/* Host address of element 0, or NULL when the buffer is device-only. */
void *qins_tensor_host(const qins_tensor *t);

/* Half-precision conversions (round to nearest even), shared by every backend's reference. */
float qins_f16_to_f32(uint16_t h);
uint16_t qins_f32_to_f16(float f);
float qins_bf16_to_f32(uint16_t h);
uint16_t qins_f32_to_bf16(float f);

#endif
