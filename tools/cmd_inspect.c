/* `qins inspect --model PATH [--json]`: what a model file/folder holds (format, config, tensors). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/model/model.h"
#include "core/model/safetensors.h"
#include "tools/commands.h"

static const char *dtype_label(qins_dtype dt) {
  const char *s = qins_st_dtype_name(dt);
  return s ? s : qins_dtype_name(dt);
}

static const char *rope_scaling_name(qins_rope_scaling s) {
  return s == QINS_ROPE_SCALING_LONGROPE ? "longrope" : "none";
}

static json_t *floats_json(const float *f, int n) {
  json_t *a = json_array();
  for (int i = 0; f && i < n; i++) json_array_append_new(a, json_real(f[i]));
  return a;
}

static json_t *config_json(const qins_model_config *c) {
  json_t *o = json_object();
  json_object_set_new(o, "arch", json_string(qins_arch_name(c->arch)));
  if (c->arch == QINS_ARCH_NONE) return o;
  json_object_set_new(o, "dim", json_integer(c->dim));
  json_object_set_new(o, "n_layers", json_integer(c->n_layers));
  json_object_set_new(o, "n_heads", json_integer(c->n_heads));
  json_object_set_new(o, "n_kv_heads", json_integer(c->n_kv_heads));
  json_object_set_new(o, "head_dim", json_integer(c->head_dim));
  json_object_set_new(o, "ffn_dim", json_integer(c->ffn_dim));
  json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
  json_object_set_new(o, "max_seq_len", json_integer(c->max_seq_len));
  json_object_set_new(o, "norm_eps", json_real(c->norm_eps));
  json_object_set_new(o, "norm", json_string(c->norm_type == QINS_NORM_LAYER ? "layernorm" : "rmsnorm"));
  json_object_set_new(o, "act", json_string(qins_act_name(c->act)));
  json_object_set_new(o, "tied_embeddings", json_boolean(c->tied_embeddings));
  json_object_set_new(o, "attn_bias", json_boolean(c->attn_bias));
  json_object_set_new(o, "mlp_bias", json_boolean(c->mlp_bias));
  json_object_set_new(o, "learned_pos", json_boolean(c->learned_pos));
  json_object_set_new(o, "bos_id", json_integer(c->bos_id));
  json_object_set_new(o, "eos_id", json_integer(c->eos_id));
  json_object_set_new(o, "pad_id", json_integer(c->pad_id));
  if (!c->learned_pos) {
    json_object_set_new(o, "rope_theta", json_real(c->rope_theta));
    json_object_set_new(o, "rope_dim", json_integer(c->rope_dim));
    json_object_set_new(o, "rope_mode", json_string(c->rope_mode == QINS_ROPE_HALF ? "half" : "interleaved"));
    json_object_set_new(o, "rope_scaling", json_string(rope_scaling_name(c->rope_scaling)));
    json_object_set_new(o, "original_max_seq_len", json_integer(c->original_max_seq_len));
    json_object_set_new(o, "rope_attn_factor", json_real(c->rope_attn_factor));
    if (c->rope_scaling == QINS_ROPE_SCALING_LONGROPE) {
      json_object_set_new(o, "rope_short_factor", floats_json(c->rope_short_factor, c->rope_n_factors));
      json_object_set_new(o, "rope_long_factor", floats_json(c->rope_long_factor, c->rope_n_factors));
    }
  }
  return o;
}

static void print_floats(const char *label, const float *f, int n) {
  printf("  %-22s [", label);
  for (int i = 0; i < n; i++) printf("%s%.6g", i ? ", " : "", f[i]);
  printf("]\n");
}

static void print_text(const qins_model *m) {
  const qins_model_config *c = &m->cfg;
  printf("model    %s\nformat   %s\narch     %s\n", m->path, m->format, qins_arch_name(c->arch));
  if (c->arch != QINS_ARCH_NONE) {
    printf("config:\n");
    printf("  %-22s %d\n  %-22s %d\n  %-22s %d\n  %-22s %d\n  %-22s %d\n  %-22s %d\n  %-22s %d\n  %-22s %d\n",
           "dim", c->dim, "n_layers", c->n_layers, "n_heads", c->n_heads, "n_kv_heads", c->n_kv_heads, "head_dim",
           c->head_dim, "ffn_dim", c->ffn_dim, "vocab_size", c->vocab_size, "max_seq_len", c->max_seq_len);
    printf("  %-22s %s (eps %g)\n  %-22s %s\n  %-22s %s\n", "norm",
           c->norm_type == QINS_NORM_LAYER ? "layernorm" : "rmsnorm", c->norm_eps, "act", qins_act_name(c->act),
           "tied_embeddings", c->tied_embeddings ? "yes" : "no");
    printf("  %-22s attn %s, mlp %s\n", "biases", c->attn_bias ? "yes" : "no", c->mlp_bias ? "yes" : "no");
    printf("  %-22s bos %d, eos %d, pad %d\n", "token ids", c->bos_id, c->eos_id, c->pad_id);
    if (c->learned_pos) {
      printf("  %-22s learned (wpe)\n", "positions");
    } else {
      printf("  %-22s theta %g, dim %d, %s pairs, scaling %s\n", "rope", c->rope_theta, c->rope_dim,
             c->rope_mode == QINS_ROPE_HALF ? "half" : "interleaved", rope_scaling_name(c->rope_scaling));
      if (c->rope_scaling == QINS_ROPE_SCALING_LONGROPE) {
        printf("  %-22s %d\n  %-22s %.9g\n", "original_max_seq_len", c->original_max_seq_len, "rope_attn_factor",
               c->rope_attn_factor);
        print_floats("rope_short_factor", c->rope_short_factor, c->rope_n_factors);
        print_floats("rope_long_factor", c->rope_long_factor, c->rope_n_factors);
      }
    }
  }
  printf("tensors (%d):\n", m->n_weights);
  for (int i = 0; i < m->n_weights; i++) {
    const qins_weight *w = &m->weights[i];
    char shape[96];
    size_t k = (size_t)snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < w->ndim && k < sizeof shape; d++)
      k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%lld", d ? ", " : "", (long long)w->shape[d]);
    if (k < sizeof shape) snprintf(shape + k, sizeof shape - k, "]");
    printf("  %-56s %-5s %-16s %zu\n", w->name, dtype_label(w->dtype), shape, w->nbytes);
  }
  printf("parameters  %lld\ntotal bytes %zu\n", (long long)qins_model_param_count(m), qins_model_total_bytes(m));
}

static int print_json(const qins_model *m) {
  json_t *o = json_object();
  json_object_set_new(o, "path", json_string(m->path));
  json_object_set_new(o, "format", json_string(m->format));
  json_object_set_new(o, "config", config_json(&m->cfg));
  json_t *ts = json_array();
  for (int i = 0; i < m->n_weights; i++) {
    const qins_weight *w = &m->weights[i];
    json_t *t = json_object(), *sh = json_array();
    for (int d = 0; d < w->ndim; d++) json_array_append_new(sh, json_integer(w->shape[d]));
    json_object_set_new(t, "name", json_string(w->name));
    json_object_set_new(t, "dtype", json_string(dtype_label(w->dtype)));
    json_object_set_new(t, "shape", sh);
    json_object_set_new(t, "bytes", json_integer((json_int_t)w->nbytes));
    json_object_set_new(t, "file", json_string(w->file));
    json_array_append_new(ts, t);
  }
  json_object_set_new(o, "tensors", ts);
  json_object_set_new(o, "parameters", json_integer(qins_model_param_count(m)));
  json_object_set_new(o, "total_bytes", json_integer((json_int_t)qins_model_total_bytes(m)));
  char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
  json_decref(o);
  if (!s) return qins_cli_fail(qins_error_set(QINS_ENOMEM, "inspect: cannot format JSON"));
  printf("%s\n", s);
  free(s);
  return 0;
}

int cmd_inspect(int argc, char **argv) {
  const char *model = NULL;
  int as_json = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: qins inspect --model PATH [--json]\n\n"
             "Opens a model (llama2.c .bin, Hugging Face folder, .safetensors file or\n"
             "model.safetensors.index.json) and prints its format, architecture, config and\n"
             "every tensor's name, dtype, shape and bytes, then the parameter count and total bytes.\n"
             "--json prints the same as one JSON object. Exit 2 when the model is defective.\n");
      return 0;
    } else if (!strcmp(argv[i], "--model") && i + 1 < argc) {
      model = argv[++i];
    } else if (!strncmp(argv[i], "--model=", 8)) {
      model = argv[i] + 8;
    } else if (!strcmp(argv[i], "--json")) {
      as_json = 1;
    } else {
      fprintf(stderr, "qins inspect: unexpected argument '%s' (see qins inspect --help)\n", argv[i]);
      return 2;
    }
  }
  if (!model) {
    fprintf(stderr, "qins inspect: --model PATH is required\n");
    return 2;
  }
  qins_model *m;
  int rc = qins_model_open(model, &m);
  if (rc) return qins_cli_fail(rc);
  int out = as_json ? print_json(m) : (print_text(m), 0);
  qins_model_close(m);
  return out;
}
