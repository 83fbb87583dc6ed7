/* Loss curves from JSONL logs, an SVG line-plot writer and the C3 pilot report (see report.h). */
#include "core/train/report.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* Append (x, y) to two parallel arrays of length *n with capacity *cap. */
static int push2(double **xs, double **ys, int *n, int *cap, double x, double y) {
  if (*n == *cap) {
    int c = *cap ? 2 * *cap : 256;
    double *px = realloc(*xs, (size_t)c * sizeof *px);
    if (!px) return qins_error_set(QINS_ENOMEM, "no memory");
    *xs = px;
    double *py = realloc(*ys, (size_t)c * sizeof *py);
    if (!py) return qins_error_set(QINS_ENOMEM, "no memory");
    *ys = py;
    *cap = c;
  }
  (*xs)[*n] = x;
  (*ys)[*n] = y;
  (*n)++;
  return 0;
}

int qins_curve_read(const char *path, const char *label, qins_curve *c) {
  memset(c, 0, sizeof *c);
  snprintf(c->label, sizeof c->label, "%s", label);
  FILE *f = fopen(path, "r");
  if (!f) return qins_error_set(QINS_EIO, "%s: cannot open: %s", path, strerror(errno));
  char line[1024];
  int cap = 0, ecap = 0, lineno = 0, rc = 0;
  while (!rc && fgets(line, sizeof line, f)) {
    lineno++;
    json_error_t err;
    json_t *j = json_loads(line, 0, &err);
    if (!j) {
      rc = qins_error_set(QINS_EINPUT, "%s:%d: %s", path, lineno, err.text);
      break;
    }
    double step = json_number_value(json_object_get(j, "step"));
    json_t *l = json_object_get(j, "loss"), *e = json_object_get(j, "eval_loss");
    if (l) {
      /* a resumed run re-logs from its checkpoint: the later lines replace steps >= this one */
      while (c->n > 0 && c->step[c->n - 1] >= step) c->n--;
      rc = push2(&c->step, &c->loss, &c->n, &cap, step, json_number_value(l));
      json_t *tp = json_object_get(j, "tokens_per_s");
      if (tp) c->tokens_per_s = json_number_value(tp);
    } else if (e) {
      while (c->n_eval > 0 && c->eval_step[c->n_eval - 1] >= step) c->n_eval--;
      rc = push2(&c->eval_step, &c->eval_loss, &c->n_eval, &ecap, step, json_number_value(e));
    }
    json_decref(j);
  }
  fclose(f);
  if (rc) qins_curve_free(c);
  return rc;
}

void qins_curve_free(qins_curve *c) {
  free(c->step);
  free(c->loss);
  free(c->eval_step);
  free(c->eval_loss);
  memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------------ SVG */

static const char *palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};

/* "Nice" tick step for a range: 1, 2 or 5 times a power of ten, about 6 ticks. */
static double tick_step(double range) {
  if (!(range > 0)) return 1;
  double raw = range / 6, p = pow(10, floor(log10(raw))), f = raw / p;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void xml_text(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '<') fputs("&lt;", f);
    else if (*s == '>') fputs("&gt;", f);
    else if (*s == '&') fputs("&amp;", f);
    else fputc(*s, f);
  }
}

int qins_svg_plot(const char *path, const char *title, const char *xlabel, const char *ylabel,
                  const qins_plot_series *s, int n) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (int i = 0; i < n; i++)
    for (int k = 0; k < s[i].n; k++) {
      if (!isfinite(s[i].x[k]) || !isfinite(s[i].y[k])) continue;
      x0 = fmin(x0, s[i].x[k]);
      x1 = fmax(x1, s[i].x[k]);
      y0 = fmin(y0, s[i].y[k]);
      y1 = fmax(y1, s[i].y[k]);
    }
  if (!(x1 >= x0) || !(y1 >= y0)) return qins_error_set(QINS_EINVAL, "svg plot %s: no finite points", path);
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + 1;
  double pad = 0.04 * (y1 - y0);
  y0 -= pad;
  y1 += pad;
  const double W = 720, H = 440, L = 70, R = 20, TOP = 40, BOT = 60;
  double pw = W - L - R, ph = H - TOP - BOT;
#define PX(v) (L + ((v) - x0) / (x1 - x0) * pw)
#define PY(v) (TOP + (1 - ((v) - y0) / (y1 - y0)) * ph)
  FILE *f = fopen(path, "w");
  if (!f) return qins_error_set(QINS_EIO, "%s: cannot create: %s", path, strerror(errno));
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" "
             "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          W, H, W, H);
  fprintf(f, "<text x=\"%.0f\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">", W / 2);
  xml_text(f, title);
  fprintf(f, "</text>\n");
  double xs = tick_step(x1 - x0), ys = tick_step(y1 - y0);
  for (double v = ceil(x0 / xs) * xs; v <= x1 + 1e-9 * xs; v += xs)
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n",
            PX(v), TOP, PX(v), TOP + ph, PX(v), TOP + ph + 16, v);
  for (double v = ceil(y0 / ys) * ys; v <= y1 + 1e-9 * ys; v += ys)
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n",
            L, PY(v), L + pw, PY(v), L - 6, PY(v) + 4, v);
  fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", L, TOP, pw,
          ph);
  fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">", L + pw / 2, H - 18);
  xml_text(f, xlabel);
  fprintf(f, "</text>\n<text transform=\"translate(18 %.0f) rotate(-90)\" text-anchor=\"middle\">", TOP + ph / 2);
  xml_text(f, ylabel);
  fprintf(f, "</text>\n");
  for (int i = 0; i < n; i++) {
    const char *col = palette[s[i].color % 6];
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"", col, s[i].dashed ? "2" : "1.3",
            s[i].dashed ? " stroke-dasharray=\"6 4\"" : "");
    for (int k = 0; k < s[i].n; k++)
      if (isfinite(s[i].x[k]) && isfinite(s[i].y[k])) fprintf(f, "%.1f,%.1f ", PX(s[i].x[k]), PY(s[i].y[k]));
    fprintf(f, "\"/>\n");
    double ly = TOP + 14 + 16 * i;
    fprintf(f, "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"%s\" stroke-width=\"2\"%s/>"
               "<text x=\"%.0f\" y=\"%.0f\">",
            L + pw - 230, ly, L + pw - 200, ly, col, s[i].dashed ? " stroke-dasharray=\"6 4\"" : "", L + pw - 194,
            ly + 4);
    xml_text(f, s[i].label);
    fprintf(f, "</text>\n");
  }
#undef PX
#undef PY
  fprintf(f, "</svg>\n");
  if (fclose(f) != 0) return qins_error_set(QINS_EIO, "%s: write failed", path);
  return 0;
}

/* ------------------------------------------------------------------ C3 */

/* Mean of the last k training losses (the end of a noisy curve). */
static double tail_mean(const qins_curve *c, int k) {
  if (c->n == 0) return NAN;
  if (k > c->n) k = c->n;
  double s = 0;
  for (int i = c->n - k; i < c->n; i++) s += c->loss[i];
  return s / k;
}

/* Exponential moving average for plotting (beta 0.9, bias-corrected). */
static double *smooth(const qins_curve *c) {
  double *o = malloc((size_t)(c->n ? c->n : 1) * sizeof *o), m = 0, b = 0.9, w = 0;
  if (!o) return NULL;
  for (int i = 0; i < c->n; i++) {
    m = b * m + (1 - b) * c->loss[i];
    w = b * w + (1 - b);
    o[i] = m / w;
  }
  return o;
}

int qins_pilot_report(const char *prefix, const qins_pilot_run *runs, int n, double bar, const char *notes,
                      double *ppl_ratio) {
  if (n < 2 || n > 4) return qins_error_set(QINS_EINVAL, "pilot report: 2..4 runs (got %d)", n);
  qins_curve c[4];
  memset(c, 0, sizeof c);
  double *sm[4] = {0};
  int rc = 0;
  for (int i = 0; i < n && !rc; i++) rc = qins_curve_read(runs[i].log, runs[i].label, &c[i]);
  for (int i = 0; i < n && !rc; i++)
    if (c[i].n_eval == 0) rc = qins_error_set(QINS_EINPUT, "%s: no held-out evaluation in the log", runs[i].log);
  if (rc) goto done;
  double ppl[4];
  for (int i = 0; i < n; i++) ppl[i] = exp(c[i].eval_loss[c[i].n_eval - 1]);
  double ratio = ppl[1] / ppl[0] - 1;
  if (ppl_ratio) *ppl_ratio = ratio;
  char path[1100];
  /* JSON */
  json_t *j = json_object(), *jr = json_array();
  json_object_set_new(j, "gate", json_string("C3"));
  json_object_set_new(j, "bar_ppl_increase", json_real(bar));
  json_object_set_new(j, "ppl_increase_qins_vs_fp", json_real(ratio));
  json_object_set_new(j, "pass", json_boolean(ratio <= bar));
  if (n > 2) json_object_set_new(j, "ppl_increase_ablation_vs_fp", json_real(ppl[2] / ppl[0] - 1));
  for (int i = 0; i < n; i++) {
    json_t *o = json_object(), *ce = json_array();
    json_object_set_new(o, "label", json_string(runs[i].label));
    json_object_set_new(o, "log", json_string(runs[i].log));
    if (runs[i].checkpoint) json_object_set_new(o, "checkpoint", json_string(runs[i].checkpoint));
    json_object_set_new(o, "steps", json_integer(c[i].n ? (json_int_t)c[i].step[c[i].n - 1] : 0));
    json_object_set_new(o, "train_loss_last20", json_real(tail_mean(&c[i], 20)));
    json_object_set_new(o, "heldout_loss", json_real(c[i].eval_loss[c[i].n_eval - 1]));
    json_object_set_new(o, "heldout_ppl", json_real(ppl[i]));
    json_object_set_new(o, "tokens_per_s", json_real(c[i].tokens_per_s));
    for (int k = 0; k < c[i].n_eval; k++) json_array_append_new(ce, json_pack("[f,f]", c[i].eval_step[k], c[i].eval_loss[k]));
    json_object_set_new(o, "heldout_curve", ce);
    json_array_append_new(jr, o);
  }
  json_object_set_new(j, "runs", jr);
  if (notes) json_object_set_new(j, "notes", json_string(notes));
  snprintf(path, sizeof path, "%s.json", prefix);
  if (json_dump_file(j, path, JSON_INDENT(2))) rc = qins_error_set(QINS_EIO, "%s: write failed", path);
  json_decref(j);
  if (rc) goto done;
  /* SVG: smoothed training loss (solid) and held-out loss (dashed), same color per run */
  qins_plot_series ps[8];
  int np = 0;
  char labs[8][96];
  for (int i = 0; i < n; i++) {
    if (!(sm[i] = smooth(&c[i]))) {
      rc = qins_error_set(QINS_ENOMEM, "no memory");
      goto done;
    }
    snprintf(labs[np], 96, "%s train (EMA 0.9)", runs[i].label);
    ps[np] = (qins_plot_series){labs[np], c[i].step, sm[i], c[i].n, 0, i};
    np++;
    snprintf(labs[np], 96, "%s held-out", runs[i].label);
    ps[np] = (qins_plot_series){labs[np], c[i].eval_step, c[i].eval_loss, c[i].n_eval, 1, i};
    np++;
  }
  snprintf(path, sizeof path, "%s.svg", prefix);
  if ((rc = qins_svg_plot(path, "C3 pilot: FP/AdamW vs QINS/QINS-AdamW", "step", "cross-entropy (nats/token)", ps, np)))
    goto done;
  /* Markdown */
  snprintf(path, sizeof path, "%s.md", prefix);
  FILE *f = fopen(path, "w");
  if (!f) {
    rc = qins_error_set(QINS_EIO, "%s: cannot create: %s", path, strerror(errno));
    goto done;
  }
  const char *base = strrchr(prefix, '/');
  fprintf(f, "# C3 pilot: training in QINS coordinates\n\n");
  fprintf(f, "| run | steps | train loss (last 20) | held-out loss | held-out perplexity | vs FP | tokens/s |\n");
  fprintf(f, "|---|---|---|---|---|---|---|\n");
  for (int i = 0; i < n; i++)
    fprintf(f, "| %s | %.0f | %.4f | %.4f | %.3f | %+.2f%% | %.0f |\n", runs[i].label,
            c[i].n ? c[i].step[c[i].n - 1] : 0.0, tail_mean(&c[i], 20), c[i].eval_loss[c[i].n_eval - 1], ppl[i],
            100 * (ppl[i] / ppl[0] - 1), c[i].tokens_per_s);
  fprintf(f, "\nBar: QINS perplexity within +%.1f%% of FP. Measured: %+.2f%% -> **%s**.\n\n", 100 * bar, 100 * ratio,
          ratio <= bar ? "PASS" : "FAIL");
  fprintf(f, "![loss curves](%s.svg)\n\n", base ? base + 1 : prefix);
  if (notes) fprintf(f, "%s\n", notes);
  if (fclose(f) != 0) rc = qins_error_set(QINS_EIO, "%s: write failed", path);
done:
  for (int i = 0; i < n; i++) {
    free(sm[i]);
    qins_curve_free(&c[i]);
  }
  return rc;
}
