/* Loaders for Hugging Face tokenizer.json (BPE model, normalizers, pre-tokenizers, post-processor,
 * decoders, added tokens) and for the original GPT-2 encoder.json + vocab.bpe pair. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/tokenizer/tok_internal.h"

static char *dup_str(const char *s) { return qins_mem_strdup(tok_owner(), s ? s : ""); }

static const char *type_of(json_t *o) { return json_string_value(json_object_get(o, "type")); }

static int get_bool(json_t *o, const char *key, int dflt) {
  json_t *v = json_object_get(o, key);
  return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static json_t *load_json(const char *path, int *rc) {
  json_error_t err;
  json_t *root = json_load_file(path, JSON_ALLOW_NUL, &err);
  if (!root) {
    FILE *f = fopen(path, "rb");
    int exists = f != NULL;
    if (f) fclose(f);
    *rc = exists ? qins_error_set(QINS_EINPUT, "%s:%d:%d: JSON error: %s", path, err.line, err.column, err.text)
                 : qins_error_set(QINS_EINPUT, "%s: cannot open: %s", path, err.text);
    return NULL;
  }
  if (!json_is_object(root)) {
    json_decref(root);
    *rc = qins_error_set(QINS_EINPUT, "%s: top level is not a JSON object", path);
    return NULL;
  }
  *rc = 0;
  return root;
}

/* ---------------------------------------------------------------- vocab and merges */

static int load_vocab(qins_tokenizer *t, const char *path, json_t *vocab, json_t *added) {
  int64_t max_id = -1;
  const char *key;
  json_t *val;
  json_object_foreach(vocab, key, val) {
    if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= INT32_MAX)
      return qins_error_set(QINS_EINPUT, "%s: model.vocab[\"%s\"] is not a valid token id", path, key);
    if (json_integer_value(val) > max_id) max_id = json_integer_value(val);
  }
  size_t i;
  json_array_foreach(added, i, val) {
    json_t *id = json_object_get(val, "id");
    if (!json_is_integer(id) || json_integer_value(id) < 0 || json_integer_value(id) >= INT32_MAX ||
        !json_is_string(json_object_get(val, "content")))
      return qins_error_set(QINS_EINPUT, "%s: added_tokens[%zu] needs an integer id and a string content", path, i);
    if (json_integer_value(id) > max_id) max_id = json_integer_value(id);
  }
  if (max_id < 0) return qins_error_set(QINS_EINPUT, "%s: model.vocab is empty", path);
  if (max_id >= (1 << 26)) return qins_error_set(QINS_EINPUT, "%s: token id %lld is implausibly large", path, (long long)max_id);
  int rc = tok_alloc_ids(t, (int32_t)max_id + 1, 0);
  if (!rc) rc = tok_strmap_init(&t->vocab, json_object_size(vocab));
  if (rc) return rc;
  /* Iterate in file order (jansson keeps insertion order) so the first spelling of a duplicate wins. */
  json_object_foreach(vocab, key, val) {
    int32_t id = (int32_t)json_integer_value(val);
    size_t kl = json_object_iter_key_len(json_object_key_to_iter(key));
    if (t->tok[id]) return qins_error_set(QINS_EINPUT, "%s: model.vocab gives id %d to both \"%s\" and \"%s\"", path, (int)id, t->tok[id], key);
    rc = tok_set_token(t, id, key, kl);
    if (!rc) rc = tok_strmap_put(&t->vocab, t->tok[id], t->tok_len[id], id);
    if (rc) return rc;
  }
  return 0;
}

static int add_merge(qins_tokenizer *t, const char *path, size_t rank, const char *a, size_t al, const char *b,
                     size_t bl, tok_buf *cat) {
  int32_t ia = tok_strmap_get(&t->vocab, a, al), ib = tok_strmap_get(&t->vocab, b, bl);
  cat->len = 0;
  int rc = tok_buf_put(cat, a, al);
  if (!rc) rc = tok_buf_put(cat, b, bl);
  if (rc) return rc;
  int32_t im = tok_strmap_get(&t->vocab, cat->p, cat->len);
  if (ia < 0 || ib < 0 || im < 0)
    return qins_error_set(QINS_EINPUT, "%s: merges[%zu] (\"%.*s\" + \"%.*s\") uses a token missing from model.vocab",
                          path, rank, (int)al, a, (int)bl, b);
  return tok_pairmap_put(&t->merges, ia, ib, (float)rank, im);
}

static int load_merges(qins_tokenizer *t, const char *path, json_t *merges) {
  if (merges && !json_is_array(merges)) return qins_error_set(QINS_EINPUT, "%s: model.merges is not an array", path);
  int rc = tok_pairmap_init(&t->merges, merges ? json_array_size(merges) : 0);
  tok_buf cat = {0};
  size_t i;
  json_t *m;
  json_array_foreach(merges, i, m) {
    if (rc) break;
    if (json_is_string(m)) { /* "a b": tokens cannot hold a space in this older form */
      const char *s = json_string_value(m), *sp = strchr(s, ' ');
      if (!sp) {
        rc = qins_error_set(QINS_EINPUT, "%s: merges[%zu] \"%s\" is not two tokens separated by a space", path, i, s);
        break;
      }
      rc = add_merge(t, path, i, s, (size_t)(sp - s), sp + 1, json_string_length(m) - (size_t)(sp - s) - 1, &cat);
    } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
               json_is_string(json_array_get(m, 1))) {
      json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
      rc = add_merge(t, path, i, json_string_value(a), json_string_length(a), json_string_value(b),
                     json_string_length(b), &cat);
    } else {
      rc = qins_error_set(QINS_EINPUT, "%s: merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", path, i);
    }
  }
  tok_buf_free(&cat);
  return rc;
}

static int load_added(qins_tokenizer *t, const char *path, json_t *added) {
  size_t n = json_array_size(added), i;
  if (!n) return 0;
  t->added = qins_mem_calloc(tok_owner(), n, sizeof *t->added);
  if (!t->added) return QINS_ENOMEM;
  json_t *a;
  json_array_foreach(added, i, a) {
    tok_added *d = &t->added[t->n_added++];
    json_t *c = json_object_get(a, "content");
    d->id = (int32_t)json_integer_value(json_object_get(a, "id"));
    d->len = (uint32_t)json_string_length(c);
    d->text = qins_mem_alloc(tok_owner(), d->len + 1);
    if (!d->text) return QINS_ENOMEM;
    memcpy(d->text, json_string_value(c), d->len + 1);
    d->special = get_bool(a, "special", 0);
    d->lstrip = get_bool(a, "lstrip", 0);
    d->rstrip = get_bool(a, "rstrip", 0);
    d->single_word = get_bool(a, "single_word", 0);
    if (d->special) t->special[d->id] = 1;
    if (d->len) t->added_first[(unsigned char)d->text[0]] = 1;
    if (!t->tok[d->id]) {
      int rc = tok_set_token(t, d->id, d->text, d->len);
      if (rc) return rc;
    } else if (t->tok_len[d->id] != d->len || memcmp(t->tok[d->id], d->text, d->len) != 0) {
      /* The added token renames a vocab id: show the added spelling, keep the vocab's string
       * alive because the vocab hash points at it. */
      d->shadow = t->tok[d->id];
      t->tok[d->id] = NULL;
      int rc = tok_set_token(t, d->id, d->text, d->len);
      if (rc) return rc;
    }
  }
  (void)path;
  return 0;
}

/* ---------------------------------------------------------------- pipeline steps */

static int unsupported(const char *path, const char *what, const char *type) {
  return qins_error_set(QINS_EUNSUPPORTED, "%s: %s type \"%s\" is not supported (see docs/tokenizers.md)", path,
                        what, type ? type : "(none)");
}

static int parse_normalizer(qins_tokenizer *t, const char *path, json_t *o) {
  const char *type = type_of(o);
  if (!type) return qins_error_set(QINS_EINPUT, "%s: normalizer without a \"type\"", path);
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(o, "normalizers"), *n;
    size_t i;
    json_array_foreach(list, i, n) {
      int rc = parse_normalizer(t, path, n);
      if (rc) return rc;
    }
    return 0;
  }
  tok_norm nm = {0};
  if (strcmp(type, "NFC") == 0 || strcmp(type, "NFD") == 0) {
    nm.kind = type[2] == 'C' ? NORM_NFC : NORM_NFD;
  } else if (strcmp(type, "Prepend") == 0) {
    nm.kind = NORM_PREPEND;
    nm.a = dup_str(json_string_value(json_object_get(o, "prepend")));
  } else if (strcmp(type, "Replace") == 0) {
    const char *pat = json_string_value(json_object_get(json_object_get(o, "pattern"), "String"));
    if (!pat) return qins_error_set(QINS_EUNSUPPORTED, "%s: normalizer Replace supports only a String pattern", path);
    nm.kind = NORM_REPLACE;
    nm.a = dup_str(pat);
    nm.b = dup_str(json_string_value(json_object_get(o, "content")));
  } else if (strcmp(type, "Strip") == 0) {
    nm.kind = NORM_STRIP;
    nm.left = get_bool(o, "strip_left", 1);
    nm.right = get_bool(o, "strip_right", 1);
  } else {
    return unsupported(path, "normalizer", type);
  }
  tok_norm *p = qins_mem_realloc(tok_owner(), t->norm, (size_t)(t->n_norm + 1) * sizeof *p);
  if (!p) return QINS_ENOMEM;
  t->norm = p;
  t->norm[t->n_norm++] = nm;
  return 0;
}

static int push_pre(qins_tokenizer *t, tok_pre pr) {
  tok_pre *p = qins_mem_realloc(tok_owner(), t->pre, (size_t)(t->n_pre + 1) * sizeof *p);
  if (!p) {
    if (pr.re) tok_regex_free(pr.re);
    return QINS_ENOMEM;
  }
  t->pre = p;
  t->pre[t->n_pre++] = pr;
  return 0;
}

static int parse_pretokenizer(qins_tokenizer *t, const char *path, json_t *o) {
  const char *type = type_of(o);
  if (!type) return qins_error_set(QINS_EINPUT, "%s: pre_tokenizer without a \"type\"", path);
  tok_pre pr = {0};
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(o, "pretokenizers"), *n;
    size_t i;
    json_array_foreach(list, i, n) {
      int rc = parse_pretokenizer(t, path, n);
      if (rc) return rc;
    }
    return 0;
  } else if (strcmp(type, "Split") == 0) {
    json_t *pat = json_object_get(o, "pattern");
    const char *re = json_string_value(json_object_get(pat, "Regex"));
    const char *lit = json_string_value(json_object_get(pat, "String"));
    if (!re && !lit) return qins_error_set(QINS_EINPUT, "%s: pre_tokenizer Split needs pattern.Regex or pattern.String", path);
    const char *beh = json_string_value(json_object_get(o, "behavior"));
    static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
    int found = -1;
    for (int i = 0; i < 5; i++)
      if (beh && strcmp(beh, names[i]) == 0) found = i;
    if (found < 0) return qins_error_set(QINS_EINPUT, "%s: pre_tokenizer Split: unknown behavior \"%s\"", path, beh ? beh : "(none)");
    pr.kind = PRE_SPLIT;
    pr.behavior = (split_behavior)found;
    pr.invert = get_bool(o, "invert", 0);
    pr.re = tok_regex_compile(re ? re : lit, re == NULL, path, "pre_tokenizer Split");
    if (!pr.re) return qins_error_code();
  } else if (strcmp(type, "ByteLevel") == 0) {
    pr.kind = PRE_BYTELEVEL;
    pr.add_prefix_space = get_bool(o, "add_prefix_space", 1);
    pr.use_regex = get_bool(o, "use_regex", 1);
    if (pr.use_regex) {
      pr.re = tok_regex_compile(tok_gpt2_pattern, 0, path, "ByteLevel");
      if (!pr.re) return qins_error_code();
    }
  } else if (strcmp(type, "Whitespace") == 0 || strcmp(type, "WhitespaceSplit") == 0 ||
             strcmp(type, "Digits") == 0 || strcmp(type, "Punctuation") == 0) {
    /* These are regex splits in disguise: keep words / drop whitespace, isolate digits or
     * punctuation (HF's is_numeric / is_punctuation read as \p{N} / \p{P} plus ASCII symbols). */
    const char *re;
    pr.kind = PRE_SPLIT;
    if (strcmp(type, "Whitespace") == 0) {
      re = "\\w+|[^\\w\\s]+";
      pr.invert = 1;
      pr.behavior = SPLIT_REMOVED;
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
      re = "\\s+";
      pr.behavior = SPLIT_REMOVED;
    } else if (strcmp(type, "Digits") == 0) {
      re = "\\p{N}";
      pr.behavior = get_bool(o, "individual_digits", 0) ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
    } else {
      re = "[\\p{P}!-/:-@\\[-`{-~]";
      const char *beh = json_string_value(json_object_get(o, "behavior"));
      static const char *names[] = {"Isolated", "Removed", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
      pr.behavior = SPLIT_ISOLATED;
      for (int i = 0; i < 5; i++)
        if (beh && strcmp(beh, names[i]) == 0) pr.behavior = (split_behavior)i;
    }
    pr.re = tok_regex_compile(re, 0, path, type);
    if (!pr.re) return qins_error_code();
  } else if (strcmp(type, "Metaspace") == 0) {
    pr.kind = PRE_METASPACE;
    const char *rep = json_string_value(json_object_get(o, "replacement"));
    pr.replacement = dup_str(rep ? rep : "\xe2\x96\x81");
    const char *scheme = json_string_value(json_object_get(o, "prepend_scheme"));
    if (scheme) pr.prepend = strcmp(scheme, "always") == 0 ? 1 : strcmp(scheme, "first") == 0 ? 2 : 0;
    else pr.prepend = get_bool(o, "add_prefix_space", 1);
    pr.split = get_bool(o, "split", 1);
  } else {
    return unsupported(path, "pre_tokenizer", type);
  }
  return push_pre(t, pr);
}

static int push_ids(int32_t **v, int *n, const int32_t *ids, int k) {
  int32_t *p = qins_mem_realloc(tok_owner(), *v, (size_t)(*n + k + 1) * sizeof *p);
  if (!p) return QINS_ENOMEM;
  memcpy(p + *n, ids, (size_t)k * sizeof *p);
  *v = p;
  *n += k;
  return 0;
}

static int parse_post(qins_tokenizer *t, const char *path, json_t *o) {
  const char *type = type_of(o);
  if (!type) return qins_error_set(QINS_EINPUT, "%s: post_processor without a \"type\"", path);
  if (strcmp(type, "ByteLevel") == 0) return 0; /* only trims offsets */
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(o, "processors"), *n;
    size_t i;
    json_array_foreach(list, i, n) {
      int rc = parse_post(t, path, n);
      if (rc) return rc;
    }
    return 0;
  }
  if (strcmp(type, "TemplateProcessing") == 0) {
    json_t *single = json_object_get(o, "single"), *specials = json_object_get(o, "special_tokens"), *item;
    int after = 0;
    size_t i;
    json_array_foreach(single, i, item) {
      if (json_object_get(item, "Sequence")) {
        after = 1;
        continue;
      }
      const char *name = json_string_value(json_object_get(json_object_get(item, "SpecialToken"), "id"));
      json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
      if (!name || !json_is_array(ids))
        return qins_error_set(QINS_EINPUT, "%s: post_processor.single[%zu] names no token of special_tokens", path, i);
      size_t k;
      json_t *id;
      json_array_foreach(ids, k, id) {
        int32_t v = (int32_t)json_integer_value(id);
        if (!json_is_integer(id) || v < 0 || v >= t->n_vocab)
          return qins_error_set(QINS_EINPUT, "%s: post_processor special token %s has an id outside the vocabulary", path, name);
        int rc = after ? push_ids(&t->post_post, &t->n_post_post, &v, 1) : push_ids(&t->post_pre, &t->n_post_pre, &v, 1);
        if (rc) return rc;
      }
    }
    return 0;
  }
  if (strcmp(type, "BertProcessing") == 0 || strcmp(type, "RobertaProcessing") == 0) {
    json_t *cls = json_array_get(json_object_get(o, "cls"), 1), *sep = json_array_get(json_object_get(o, "sep"), 1);
    int32_t c = (int32_t)json_integer_value(cls), s = (int32_t)json_integer_value(sep);
    if (!json_is_integer(cls) || !json_is_integer(sep) || c < 0 || s < 0 || c >= t->n_vocab || s >= t->n_vocab)
      return qins_error_set(QINS_EINPUT, "%s: post_processor %s needs cls and sep as [token, id]", path, type);
    int rc = push_ids(&t->post_pre, &t->n_post_pre, &c, 1);
    return rc ? rc : push_ids(&t->post_post, &t->n_post_post, &s, 1);
  }
  return unsupported(path, "post_processor", type);
}

static int parse_decoder(qins_tokenizer *t, const char *path, json_t *o) {
  const char *type = type_of(o);
  if (!type) return qins_error_set(QINS_EINPUT, "%s: decoder without a \"type\"", path);
  if (strcmp(type, "Sequence") == 0) {
    json_t *list = json_object_get(o, "decoders"), *n;
    size_t i;
    json_array_foreach(list, i, n) {
      int rc = parse_decoder(t, path, n);
      if (rc) return rc;
    }
    return 0;
  }
  tok_dec d = {0};
  if (strcmp(type, "Replace") == 0) {
    const char *pat = json_string_value(json_object_get(json_object_get(o, "pattern"), "String"));
    if (!pat) return qins_error_set(QINS_EUNSUPPORTED, "%s: decoder Replace supports only a String pattern", path);
    d.kind = DEC_REPLACE;
    d.a = dup_str(pat);
    d.b = dup_str(json_string_value(json_object_get(o, "content")));
  } else if (strcmp(type, "ByteFallback") == 0) {
    d.kind = DEC_BYTEFALLBACK;
  } else if (strcmp(type, "Fuse") == 0) {
    d.kind = DEC_FUSE;
  } else if (strcmp(type, "Strip") == 0) {
    const char *c = json_string_value(json_object_get(o, "content"));
    if (!c || strlen(c) != 1) return qins_error_set(QINS_EUNSUPPORTED, "%s: decoder Strip supports a one-byte content only", path);
    d.kind = DEC_STRIP;
    d.a = dup_str(c);
    d.start = (int)json_integer_value(json_object_get(o, "start"));
    d.stop = (int)json_integer_value(json_object_get(o, "stop"));
  } else if (strcmp(type, "ByteLevel") == 0) {
    d.kind = DEC_BYTELEVEL;
  } else if (strcmp(type, "Metaspace") == 0) {
    d.kind = DEC_METASPACE;
    const char *rep = json_string_value(json_object_get(o, "replacement"));
    d.a = dup_str(rep ? rep : "\xe2\x96\x81");
    const char *scheme = json_string_value(json_object_get(o, "prepend_scheme"));
    d.prepend = scheme ? strcmp(scheme, "never") != 0 : get_bool(o, "add_prefix_space", 1);
  } else {
    return unsupported(path, "decoder", type);
  }
  tok_dec *p = qins_mem_realloc(tok_owner(), t->dec, (size_t)(t->n_dec + 1) * sizeof *p);
  if (!p) return QINS_ENOMEM;
  t->dec = p;
  t->dec[t->n_dec++] = d;
  t->has_decoder = 1;
  return 0;
}

/* ---------------------------------------------------------------- BOS / EOS */

static int32_t named_id(qins_tokenizer *t, const char *const *names) {
  for (int i = 0; names[i]; i++) {
    for (int k = 0; k < t->n_added; k++)
      if (strcmp(t->added[k].text, names[i]) == 0) return t->added[k].id;
    int32_t id = tok_strmap_get(&t->vocab, names[i], strlen(names[i]));
    if (id >= 0) return id;
  }
  return -1;
}

static int32_t config_token(qins_tokenizer *t, json_t *cfg, const char *key) {
  json_t *v = json_object_get(cfg, key);
  const char *s = json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "content"));
  if (!s) return -1;
  const char *names[] = {s, NULL};
  return named_id(t, names);
}

/* tokenizer.json does not say which token is BOS/EOS; tokenizer_config.json beside it does. */
static void find_bos_eos(qins_tokenizer *t, const char *path) {
  const char *slash = strrchr(path, '/');
  size_t dl = slash ? (size_t)(slash - path + 1) : 0;
  char *cfgp = malloc(dl + 32);
  json_t *cfg = NULL;
  if (cfgp) {
    memcpy(cfgp, path, dl);
    strcpy(cfgp + dl, "tokenizer_config.json");
    cfg = json_load_file(cfgp, 0, NULL);
    free(cfgp);
  }
  if (cfg) {
    t->bos = config_token(t, cfg, "bos_token");
    t->eos = config_token(t, cfg, "eos_token");
    json_decref(cfg);
  }
  static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>", "<|endoftext|>", NULL};
  static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>", "<|im_end|>", NULL};
  if (t->bos < 0) t->bos = t->n_post_pre ? t->post_pre[0] : named_id(t, bos_names);
  if (t->eos < 0) t->eos = named_id(t, eos_names);
}

/* ---------------------------------------------------------------- entry points */

int tok_load_hf(qins_tokenizer *t, const char *path) {
  int rc;
  json_t *root = load_json(path, &rc);
  if (!root) return rc;
  json_t *model = json_object_get(root, "model");
  json_t *added = json_object_get(root, "added_tokens");
  if (!json_is_object(model)) {
    rc = qins_error_set(QINS_EINPUT, "%s: no \"model\" object (not a tokenizer.json?)", path);
    goto done;
  }
  const char *type = type_of(model);
  if (type && strcmp(type, "BPE") != 0) {
    rc = qins_error_set(QINS_EINPUT, "%s: model.type \"%s\" is not supported (supported: BPE)", path, type);
    goto done;
  }
  json_t *vocab = json_object_get(model, "vocab");
  if (!json_is_object(vocab)) {
    rc = qins_error_set(QINS_EINPUT, "%s: model.vocab is missing or not an object", path);
    goto done;
  }
  if (!type && !json_object_get(model, "merges")) {
    rc = qins_error_set(QINS_EINPUT, "%s: model has no \"type\" and no merges: not a BPE model", path);
    goto done;
  }
  if (added && !json_is_array(added)) {
    rc = qins_error_set(QINS_EINPUT, "%s: added_tokens is not an array", path);
    goto done;
  }
  const char *csp = json_string_value(json_object_get(model, "continuing_subword_prefix"));
  const char *eow = json_string_value(json_object_get(model, "end_of_word_suffix"));
  if ((csp && *csp) || (eow && *eow)) {
    rc = qins_error_set(QINS_EUNSUPPORTED, "%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported", path);
    goto done;
  }
  rc = load_vocab(t, path, vocab, added);
  if (!rc) rc = load_merges(t, path, json_object_get(model, "merges"));
  if (!rc) rc = load_added(t, path, added);
  if (rc) goto done;
  t->byte_fallback = get_bool(model, "byte_fallback", 0);
  t->fuse_unk = get_bool(model, "fuse_unk", 0);
  t->ignore_merges = get_bool(model, "ignore_merges", 0);
  const char *unk = json_string_value(json_object_get(model, "unk_token"));
  if (unk) {
    t->unk_id = tok_strmap_get(&t->vocab, unk, strlen(unk));
    if (t->unk_id < 0) {
      rc = qins_error_set(QINS_EINPUT, "%s: model.unk_token \"%s\" is not in model.vocab", path, unk);
      goto done;
    }
  }
  tok_find_byte_tokens(t);
  json_t *o;
  if (json_is_object(o = json_object_get(root, "normalizer"))) rc = parse_normalizer(t, path, o);
  if (!rc && json_is_object(o = json_object_get(root, "pre_tokenizer"))) rc = parse_pretokenizer(t, path, o);
  if (!rc && json_is_object(o = json_object_get(root, "post_processor"))) rc = parse_post(t, path, o);
  if (!rc && json_is_object(o = json_object_get(root, "decoder"))) rc = parse_decoder(t, path, o);
  if (!rc) find_bos_eos(t, path);
done:
  json_decref(root);
  return rc;
}

int tok_load_gpt2(qins_tokenizer *t, const char *encoder_path, const char *bpe_path) {
  int rc;
  json_t *enc = load_json(encoder_path, &rc);
  if (!enc) return rc;
  json_t *none = json_array();
  rc = load_vocab(t, encoder_path, enc, none);
  json_decref(none);
  json_decref(enc);
  if (rc) return rc;
  FILE *f = fopen(bpe_path, "rb");
  if (!f) return qins_error_set(QINS_EINPUT, "%s: cannot open", bpe_path);
  rc = tok_pairmap_init(&t->merges, 65536);
  char *line = NULL;
  size_t cap = 0, rank = 0, lineno = 0;
  ssize_t n;
  tok_buf cat = {0};
  while (!rc && (n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    if (n == 0 || (lineno == 1 && strncmp(line, "#version", 8) == 0)) continue;
    char *sp = strchr(line, ' ');
    if (!sp || strchr(sp + 1, ' ')) {
      rc = qins_error_set(QINS_EINPUT, "%s:%zu: expected two tokens separated by one space", bpe_path, lineno);
      break;
    }
    rc = add_merge(t, bpe_path, rank++, line, (size_t)(sp - line), sp + 1, strlen(sp + 1), &cat);
  }
  free(line);
  tok_buf_free(&cat);
  fclose(f);
  if (rc) return rc;
  tok_pre pr = {0};
  pr.kind = PRE_BYTELEVEL;
  pr.use_regex = 1;
  pr.re = tok_regex_compile(tok_gpt2_pattern, 0, bpe_path, "GPT-2 regex");
  if (!pr.re) return qins_error_code();
  rc = push_pre(t, pr);
  if (rc) return rc;
  t->dec = qins_mem_calloc(tok_owner(), 1, sizeof *t->dec);
  if (!t->dec) return QINS_ENOMEM;
  t->dec[0].kind = DEC_BYTELEVEL;
  t->n_dec = 1;
  t->has_decoder = 1;
  static const char *const eot[] = {"<|endoftext|>", NULL};
  t->bos = t->eos = named_id(t, eot);
  return 0;
}
