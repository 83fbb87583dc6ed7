/* Hugging Face tokenizer.json loader (BPE model, normalizers, pre-tokenizers, decoders, added tokens). */
#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

int tok_load_hf(qins_tokenizer *t, const char *path) {
  (void)t;
  return qins_error_set(QINS_EUNSUPPORTED, "%s: tokenizer.json not supported yet", path);
}

int tok_load_gpt2(qins_tokenizer *t, const char *encoder_path, const char *bpe_path) {
  (void)t;
  (void)bpe_path;
  return qins_error_set(QINS_EUNSUPPORTED, "%s: GPT-2 files not supported yet", encoder_path);
}
