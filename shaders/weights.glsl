// Weight/table element loads for the dtype variants: WT_F32, WT_F16, WT_BF16 (one is defined).
// f16/bf16 are read as packed 32-bit words by default; with STORAGE16 (the device has 16-bit
// storage) they are read as 16-bit elements. W_ELEM is the buffer element type to declare;
// LOAD_W(arr, off_bytes, i) reads element i of a tensor that starts off_bytes into the binding.
// Quantized matmul weights (WT_QINSF32, WT_QINS8, WT_QINS6, WT_INT8, WT_INT8B32) only set
// W_ELEM here (bytes with STORAGE8, else packed 32-bit words); qweights.glsl decodes them.
#ifndef QINS_WEIGHTS_GLSL
#define QINS_WEIGHTS_GLSL

#if defined(WT_QINS8) || defined(WT_QINS6) || defined(WT_INT8) || defined(WT_INT8B32)
#define WT_BYTES
#endif
#if defined(WT_BYTES) || defined(WT_QINSF32)
#define WT_QUANT
#endif

#if defined(WT_F16)
#define W_CVT f16_to_f32
#elif defined(WT_BF16)
#define W_CVT bf16_to_f32
#endif

#if defined(WT_QINSF32)
#define W_ELEM float
#elif defined(WT_BYTES) && defined(STORAGE8)
#define W_ELEM uint8_t
#elif defined(WT_BYTES)
#define W_ELEM uint
#elif defined(WT_F32)
#define W_ELEM float
#define LOAD_W(arr, offb, i) (arr[((offb) >> 2) + (i)])
#elif defined(STORAGE16)
#define W_ELEM uint16_t
#define LOAD_W(arr, offb, i) W_CVT(uint(arr[((offb) >> 1) + (i)]))
#else
#define W_ELEM uint
uint half_index_word(uint e) { return e >> 1; }
#define LOAD_W(arr, offb, i) W_CVT((arr[(((offb) >> 1) + (i)) >> 1] >> (((((offb) >> 1) + (i)) & 1u) * 16u)) & 0xffffu)
#endif

#endif
