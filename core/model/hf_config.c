/* Hugging Face config.json -> qins_model_config for llama, phi3 and gpt2, including RoPE
 * settings in either the older `rope_scaling` + `rope_theta` style or the newer
 * `rope_parameters` object, and the longrope attention factor as transformers computes it. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/model/model_internal.h"

/* Key readers: absent or null -> default (or an error when required); wrong type -> error. */
static int get_int(const char *path, const json_t *o, const char *key, int required, int def, int *out) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) {
    if (required) return qins_error_set(QINS_EINPUT, "%s: missing required key \"%s\"", path, key);
    *out = def;
    return 0;
  }
  /* token ids may be a list (e.g. several eos ids): the first one is the model's own */
  if (json_is_array(v) && json_array_size(v) > 0) v = json_array_get(v, 0);
  if (!json_is_integer(v))
    return qins_error_set(QINS_EINPUT, "%s: key \"%s\" must be an integer", path, key);
  json_int_t i = json_integer_value(v);
  if (i < -1 || i > (1 << 30))
    return qins_error_set(QINS_EINPUT, "%s: key \"%s\" = %lld is out of range", path, key, (long long)i);
  *out = (int)i;
  return 0;
}

static int get_num(const char *path, const json_t *o, const char *key, double def, double *out) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_number(v)) return qins_error_set(QINS_EINPUT, "%s: key \"%s\" must be a number", path, key);
  *out = json_number_value(v);
  return 0;
}

static int get_bool(const char *path, const json_t *o, const char *key, int def, int *out) {
  const json_t *v = json_object_get(o, key);
  if (!v || json_is_null(v)) {
    *out = def;
    return 0;
  }
  if (!json_is_boolean(v)) return qins_error_set(QINS_EINPUT, "%s: key \"%s\" must be true or false", path, key);
  *out = json_is_true(v);
  return 0;
}

static const char *get_str(const json_t *o, const char *key) {
  const json_t *v = json_object_get(o, key);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_act(const char *path, const char *key, const char *s, qins_act *out) {
  if (!strcmp(s, "silu") || !strcmp(s, "swish")) *out = QINS_ACT_SILU;
  else if (!strcmp(s, "gelu_new") || !strcmp(s, "gelu_pytorch_tanh")) *out = QINS_ACT_GELU_TANH;
  else if (!strcmp(s, "gelu")) *out = QINS_ACT_GELU;
  else if (!strcmp(s, "relu")) *out = QINS_ACT_RELU;
  else
    return qins_error_set(QINS_EINPUT, "%s: %s \"%s\" is not supported (silu, gelu_new, gelu, relu)", path,
                          key, s);
  return 0;
}

static int arch_from(const char *path, const json_t *root, qins_arch *out) {
  const char *mt = get_str(root, "model_type");
  const char *an = NULL;
  const json_t *archs = json_object_get(root, "architectures");
  if (json_is_array(archs) && json_array_size(archs) > 0 && json_is_string(json_array_get(archs, 0)))
    an = json_string_value(json_array_get(archs, 0));
  if (mt) {
    if (!strcmp(mt, "llama")) *out = QINS_ARCH_LLAMA;
    else if (!strcmp(mt, "phi3")) *out = QINS_ARCH_PHI3;
    else if (!strcmp(mt, "gpt2")) *out = QINS_ARCH_GPT2;
    else
      return qins_error_set(QINS_EINPUT, "%s: model_type \"%s\" is not supported (llama, phi3, gpt2)", path,
                            mt);
    return 0;
  }
  if (an) {
    if (!strncmp(an, "Llama", 5)) *out = QINS_ARCH_LLAMA;
    else if (!strncmp(an, "Phi3", 4)) *out = QINS_ARCH_PHI3;
    else if (!strncmp(an, "GPT2", 4)) *out = QINS_ARCH_GPT2;
    else
      return qins_error_set(QINS_EINPUT, "%s: architecture \"%s\" is not supported (llama, phi3, gpt2)", path,
                            an);
    return 0;
  }
  return qins_error_set(QINS_EINPUT, "%s: neither \"model_type\" nor \"architectures\" is given", path);
}

/* Reads a list of numbers of exactly n entries into a new float array. */
static int get_factors(const char *path, const json_t *rp, const char *key, int n, float **out) {
  const json_t *v = json_object_get(rp, key);
  if (!json_is_array(v))
    return qins_error_set(QINS_EINPUT, "%s: longrope needs \"%s\" as a list of %d numbers", path, key, n);
  if ((int)json_array_size(v) != n)
    return qins_error_set(QINS_EINPUT, "%s: \"%s\" has %zu entries, expected rotary dim / 2 = %d", path, key,
                          json_array_size(v), n);
  float *f = qins_mem_calloc(qins_model_owner(), (size_t)(n ? n : 1), sizeof(float));
  if (!f) return QINS_ENOMEM;
  for (int i = 0; i < n; i++) {
    const json_t *e = json_array_get(v, (size_t)i);
    if (!json_is_number(e) || !(json_number_value(e) > 0)) {
      qins_mem_free(qins_model_owner(), f);
      return qins_error_set(QINS_EINPUT, "%s: \"%s\"[%d] must be a positive number", path, key, i);
    }
    f[i] = (float)json_number_value(e);
  }
  *out = f;
  return 0;
}

/* RoPE settings (llama, phi3). rope_parameters (newer) wins over rope_scaling (older); within
 * it, values override the same keys at the top level. */
static int parse_rope(const char *path, const json_t *root, qins_model_config *c) {
  const json_t *rp = json_object_get(root, "rope_parameters");
  const char *rp_key = "rope_parameters";
  if (!rp || json_is_null(rp)) {
    rp = json_object_get(root, "rope_scaling");
    rp_key = "rope_scaling";
  }
  if (rp && json_is_null(rp)) rp = NULL;
  if (rp && !json_is_object(rp)) return qins_error_set(QINS_EINPUT, "%s: \"%s\" must be an object", path, rp_key);
  const json_t *r = rp;
  int rc;
  double theta = 0, prf = 0, top_prf = 0;
  if ((rc = get_num(path, root, "rope_theta", 10000.0, &theta))) return rc;
  if (r && (rc = get_num(path, r, "rope_theta", theta, &theta))) return rc;
  if (!(theta > 0)) return qins_error_set(QINS_EINPUT, "%s: rope_theta must be positive", path);
  if ((rc = get_num(path, root, "partial_rotary_factor", 1.0, &top_prf))) return rc;
  prf = top_prf;
  if (r && (rc = get_num(path, r, "partial_rotary_factor", top_prf, &prf))) return rc;
  if (!(prf > 0 && prf <= 1))
    return qins_error_set(QINS_EINPUT, "%s: partial_rotary_factor %g must be in (0, 1]", path, prf);
  c->rope_theta = (float)theta;
  c->rope_dim = (int)(c->head_dim * prf); /* int() truncation, as transformers does */
  if (c->rope_dim < 2 || c->rope_dim % 2)
    return qins_error_set(QINS_EINPUT, "%s: rotary dimension %d (head_dim %d x partial_rotary_factor %g) must be even "
                          "and >= 2", path, c->rope_dim, c->head_dim, prf);
  int orig;
  if ((rc = get_int(path, root, "original_max_position_embeddings", 0, 0, &orig))) return rc;
  if (r && (rc = get_int(path, r, "original_max_position_embeddings", 0, orig, &orig))) return rc;
  c->original_max_seq_len = orig > 0 ? orig : c->max_seq_len;
  c->rope_scaling = QINS_ROPE_SCALING_NONE;
  c->rope_attn_factor = 1.0f;
  const char *type = r ? get_str(r, "rope_type") : NULL;
  if (!type && r) type = get_str(r, "type");
  if (!type || !strcmp(type, "default")) return 0;
  if (strcmp(type, "longrope") != 0 && strcmp(type, "su") != 0)
    return qins_error_set(QINS_EINPUT, "%s: %s type \"%s\" is not supported (default, longrope)", path,
                          rp_key, type);
  c->rope_scaling = QINS_ROPE_SCALING_LONGROPE;
  c->rope_n_factors = c->rope_dim / 2;
  if ((rc = get_factors(path, r, "short_factor", c->rope_n_factors, &c->rope_short_factor))) return rc;
  if ((rc = get_factors(path, r, "long_factor", c->rope_n_factors, &c->rope_long_factor))) return rc;
  /* transformers: with an original length the scale is max / original (Phi-3 style); without
   * one it is the config's `factor` and the original length is the max length. */
  double scale = 1;
  if (orig > 0) {
    scale = (double)c->max_seq_len / (double)orig;
  } else {
    if ((rc = get_num(path, r, "factor", 1.0, &scale))) return rc;
  }
  double attn = 1;
  const json_t *af = json_object_get(r, "attention_factor");
  if (af && !json_is_null(af)) {
    if ((rc = get_num(path, r, "attention_factor", 1.0, &attn))) return rc;
  } else if (scale <= 1.0) {
    attn = 1.0;
  } else {
    attn = sqrt(1.0 + log(scale) / log((double)c->original_max_seq_len));
  }
  c->rope_attn_factor = (float)attn;
  return 0;
}

static int check_dims(const char *path, const qins_model_config *c) {
  const struct { const char *k; int v; } pos[] = {
      {"hidden size", c->dim}, {"layers", c->n_layers}, {"attention heads", c->n_heads},
      {"key/value heads", c->n_kv_heads}, {"head_dim", c->head_dim}, {"intermediate size", c->ffn_dim},
      {"vocab_size", c->vocab_size}, {"max positions", c->max_seq_len}};
  for (size_t i = 0; i < sizeof pos / sizeof pos[0]; i++)
    if (pos[i].v <= 0) return qins_error_set(QINS_EINPUT, "%s: %s = %d must be positive", path, pos[i].k, pos[i].v);
  if (c->n_heads % c->n_kv_heads)
    return qins_error_set(QINS_EINPUT, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d",
                          path, c->n_heads, c->n_kv_heads);
  if (!(c->norm_eps > 0)) return qins_error_set(QINS_EINPUT, "%s: norm epsilon must be positive", path);
  return 0;
}

static int parse_llama_phi3(const char *path, const json_t *root, qins_model_config *c) {
  int rc;
  double eps = 0;
  if ((rc = get_int(path, root, "hidden_size", 1, 0, &c->dim))) return rc;
  if ((rc = get_int(path, root, "num_hidden_layers", 1, 0, &c->n_layers))) return rc;
  if ((rc = get_int(path, root, "num_attention_heads", 1, 0, &c->n_heads))) return rc;
  if ((rc = get_int(path, root, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads))) return rc;
  if (c->n_heads <= 0) return qins_error_set(QINS_EINPUT, "%s: num_attention_heads must be positive", path);
  const json_t *hd = json_object_get(root, "head_dim");
  if ((!hd || json_is_null(hd)) && c->dim % c->n_heads)
    return qins_error_set(QINS_EINPUT, "%s: hidden_size %d is not a multiple of num_attention_heads %d", path, c->dim,
                          c->n_heads);
  if ((rc = get_int(path, root, "head_dim", 0, c->dim / c->n_heads, &c->head_dim))) return rc;
  if ((rc = get_int(path, root, "intermediate_size", 1, 0, &c->ffn_dim))) return rc;
  if ((rc = get_int(path, root, "vocab_size", 1, 0, &c->vocab_size))) return rc;
  int is_phi3 = c->arch == QINS_ARCH_PHI3;
  /* defaults follow transformers' LlamaConfig / Phi3Config */
  if ((rc = get_int(path, root, "max_position_embeddings", 0, is_phi3 ? 4096 : 2048, &c->max_seq_len))) return rc;
  if ((rc = get_num(path, root, "rms_norm_eps", is_phi3 ? 1e-5 : 1e-6, &eps))) return rc;
  c->norm_eps = (float)eps;
  if ((rc = get_bool(path, root, "tie_word_embeddings", 0, &c->tied_embeddings))) return rc;
  if ((rc = get_int(path, root, "bos_token_id", 0, 1, &c->bos_id))) return rc;
  if ((rc = get_int(path, root, "eos_token_id", 0, is_phi3 ? 32000 : 2, &c->eos_id))) return rc;
  if ((rc = get_int(path, root, "pad_token_id", 0, -1, &c->pad_id))) return rc;
  const char *act = get_str(root, "hidden_act");
  if ((rc = parse_act(path, "hidden_act", act ? act : "silu", &c->act))) return rc;
  if (!is_phi3) {
    if ((rc = get_bool(path, root, "attention_bias", 0, &c->attn_bias))) return rc;
    if ((rc = get_bool(path, root, "mlp_bias", 0, &c->mlp_bias))) return rc;
  }
  c->norm_type = QINS_NORM_RMS;
  c->rope_mode = QINS_ROPE_HALF;
  if ((rc = check_dims(path, c))) return rc;
  return parse_rope(path, root, c);
}

/* GPT-2 uses its own key names; hidden_size-style aliases are accepted too. */
static int parse_gpt2(const char *path, const json_t *root, qins_model_config *c) {
  int rc, v = 0;
  double eps = 0;
  if ((rc = get_int(path, root, "hidden_size", 0, 768, &v)) || (rc = get_int(path, root, "n_embd", 0, v, &c->dim)))
    return rc;
  if ((rc = get_int(path, root, "num_hidden_layers", 0, 12, &v)) ||
      (rc = get_int(path, root, "n_layer", 0, v, &c->n_layers)))
    return rc;
  if ((rc = get_int(path, root, "num_attention_heads", 0, 12, &v)) ||
      (rc = get_int(path, root, "n_head", 0, v, &c->n_heads)))
    return rc;
  if ((rc = get_int(path, root, "max_position_embeddings", 0, 1024, &v)) ||
      (rc = get_int(path, root, "n_positions", 0, v, &c->max_seq_len)))
    return rc;
  if ((rc = get_int(path, root, "n_inner", 0, 4 * c->dim, &c->ffn_dim))) return rc;
  if ((rc = get_int(path, root, "vocab_size", 0, 50257, &c->vocab_size))) return rc;
  if ((rc = get_num(path, root, "layer_norm_epsilon", 1e-5, &eps))) return rc;
  c->norm_eps = (float)eps;
  if ((rc = get_bool(path, root, "tie_word_embeddings", 1, &c->tied_embeddings))) return rc;
  if ((rc = get_int(path, root, "bos_token_id", 0, 50256, &c->bos_id))) return rc;
  if ((rc = get_int(path, root, "eos_token_id", 0, 50256, &c->eos_id))) return rc;
  if ((rc = get_int(path, root, "pad_token_id", 0, -1, &c->pad_id))) return rc;
  const char *act = get_str(root, "activation_function");
  if ((rc = parse_act(path, "activation_function", act ? act : "gelu_new", &c->act))) return rc;
  c->n_kv_heads = c->n_heads;
  if (c->n_heads <= 0 || c->dim % c->n_heads)
    return qins_error_set(QINS_EINPUT, "%s: n_embd %d is not a multiple of n_head %d", path, c->dim, c->n_heads);
  c->head_dim = c->dim / c->n_heads;
  c->norm_type = QINS_NORM_LAYER;
  c->attn_bias = c->mlp_bias = 1;
  c->learned_pos = 1;
  c->rope_dim = 0;
  c->rope_theta = 0;
  c->rope_scaling = QINS_ROPE_SCALING_NONE;
  c->rope_attn_factor = 1.0f;
  c->original_max_seq_len = c->max_seq_len;
  return check_dims(path, c);
}

int qins_hf_config_parse(const char *path, qins_model_config *c) {
  json_error_t jerr;
  json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
  if (!root) {
    if (jerr.line < 0 || strstr(jerr.text, "unable to open"))
      return qins_error_set(QINS_EINPUT, "%s: %s", path, jerr.text);
    return qins_error_set(QINS_EINPUT, "%s: bad JSON at line %d column %d: %s", path, jerr.line, jerr.column,
                          jerr.text);
  }
  int rc;
  if (!json_is_object(root)) {
    rc = qins_error_set(QINS_EINPUT, "%s: not a JSON object", path);
  } else if ((rc = arch_from(path, root, &c->arch)) == 0) {
    rc = c->arch == QINS_ARCH_GPT2 ? parse_gpt2(path, root, c) : parse_llama_phi3(path, root, c);
  }
  json_decref(root);
  return rc;
}
