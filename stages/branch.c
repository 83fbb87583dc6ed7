/* Model branches: a model stage's own `policy:` option (inline map, path to a policy YAML, or
 * `none`) picks which worker runtime it uses, so two branches of one pipeline (f32 and qins8,
 * say) can sit side by side, even on one worker. */
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/pipeline.h"
#include "stages/model_shared.h"

int qins_stage_branch_policy(const qins_stage_ctx *ctx, char *key, size_t n, qins_cfg **node,
                             qins_cfg **file_root) {
  char w[256];
  *node = NULL;
  *file_root = NULL;
  qins_cfg *p = qins_cfg_get(ctx->options, "policy");
  if (!p) { /* the pipeline's root `policy:` (or none): the worker's default runtime */
    snprintf(key, n, "model");
    *node = ctx->pipeline && ctx->pipeline->root ? qins_cfg_get(ctx->pipeline->root, "policy") : NULL;
    return 0;
  }
  if (p->type == QINS_CFG_MAP) {
    /* one runtime per policy node: stages naming the same node (an anchor) share it */
    snprintf(key, n, "model@%s", qins_cfg_where(p, w, sizeof w));
    *node = p;
    return 0;
  }
  if (p->type != QINS_CFG_SCALAR || !p->value[0])
    return qins_error_set(QINS_EINPUT,
                          "%s: stage '%s': options.policy: expected a policy map, a path to a policy YAML, or none "
                          "(got a %s)",
                          qins_cfg_where(p, w, sizeof w), ctx->stage_name, qins_cfg_type_name(p->type));
  if (!strcmp(p->value, "none") || !strcmp(p->value, "fp") || !strcmp(p->value, "f32")) {
    snprintf(key, n, "model:none"); /* float, whatever the pipeline's root policy says */
    return 0;
  }
  size_t l = strlen(p->value);
  if (!(l > 5 && !strcmp(p->value + l - 5, ".yaml")) && !(l > 4 && !strcmp(p->value + l - 4, ".yml")))
    return qins_error_set(QINS_EINPUT,
                          "%s: stage '%s': options.policy: '%s' is not a policy (expected a map such as {format: "
                          "qins8}, a path to a .yaml policy file, or none)",
                          qins_cfg_where(p, w, sizeof w), ctx->stage_name, p->value);
  int rc = qins_cfg_load_file(p->value, file_root);
  if (rc)
    return qins_error_wrap(QINS_EINPUT, "%s: stage '%s': options.policy: ", qins_cfg_where(p, w, sizeof w),
                           ctx->stage_name);
  /* a policy file is the policy map itself, or a YAML with a `policy:` key (a pipeline or gate) */
  qins_cfg *in = qins_cfg_get(*file_root, "policy");
  *node = in ? in : *file_root;
  snprintf(key, n, "model:file:%s", p->value);
  return 0;
}
