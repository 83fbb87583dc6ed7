/* Gate report documents: JSON model, Markdown rendering and a plain SVG line plot per plot. */
#include "core/eval/report.h"

#include "core/eval/gate_board.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/error.h"
#include "core/fsutil.h"

int qins_report_init(qins_report *r, const char *gate, const char *title) {
  r->root = json_object();
  if (!r->root) return QINS_ENOMEM;
  json_object_set_new(r->root, "gate", json_string(gate));
  json_object_set_new(r->root, "title", json_string(title));
  json_object_set_new(r->root, "verdict", json_null());
  json_object_set_new(r->root, "reason", json_string(""));
  json_object_set_new(r->root, "run", json_object());
  json_object_set_new(r->root, "checks", json_array());
  json_object_set_new(r->root, "tables", json_object());
  json_object_set_new(r->root, "plots", json_array());
  json_object_set_new(r->root, "notes", json_array());
  return 0;
}

void qins_report_free(qins_report *r) {
  json_decref(r->root);
  r->root = NULL;
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

void qins_report_run_str(qins_report *r, const char *key, const char *value) {
  json_object_set_new(json_object_get(r->root, "run"), key, json_string(value ? value : ""));
}
void qins_report_run_num(qins_report *r, const char *key, double value) {
  json_object_set_new(json_object_get(r->root, "run"), key, num(value));
}
void qins_report_run_json(qins_report *r, const char *key, json_t *value) {
  json_object_set_new(json_object_get(r->root, "run"), key, value);
}

int qins_report_check(qins_report *r, const char *what, double value, const char *op, double threshold,
                      const char *note) {
  int pass = 0;
  if (isfinite(value)) {
    if (!strcmp(op, ">=")) pass = value >= threshold;
    else if (!strcmp(op, "<=")) pass = value <= threshold;
    else if (!strcmp(op, ">")) pass = value > threshold;
    else if (!strcmp(op, "<")) pass = value < threshold;
  }
  json_t *c = json_object();
  json_object_set_new(c, "what", json_string(what));
  json_object_set_new(c, "value", num(value));
  json_object_set_new(c, "op", json_string(op));
  json_object_set_new(c, "threshold", num(threshold));
  json_object_set_new(c, "verdict", json_string(pass ? "pass" : "fail"));
  json_object_set_new(c, "note", json_string(note ? note : ""));
  json_array_append_new(json_object_get(r->root, "checks"), c);
  const char *gate = json_string_value(json_object_get(r->root, "gate"));
  if (gate) qins_gate_board_check(gate, what, value, threshold, pass); /* the dashboard's gates panel */
  return pass;
}

void qins_report_check_not_run(qins_report *r, const char *what, const char *reason) {
  json_t *c = json_object();
  json_object_set_new(c, "what", json_string(what));
  json_object_set_new(c, "value", json_null());
  json_object_set_new(c, "op", json_string(""));
  json_object_set_new(c, "threshold", json_null());
  json_object_set_new(c, "verdict", json_string("not-run"));
  json_object_set_new(c, "note", json_string(reason));
  json_array_append_new(json_object_get(r->root, "checks"), c);
}

void qins_report_row(qins_report *r, const char *table, json_t *row) {
  json_t *tables = json_object_get(r->root, "tables"), *t = json_object_get(tables, table);
  if (!t) {
    t = json_array();
    json_object_set_new(tables, table, t);
  }
  json_array_append_new(t, row);
}

void qins_report_series(qins_report *r, const char *plot, const char *xlabel, const char *ylabel, int logy,
                        const char *name, const double *x, const double *y, int n) {
  json_t *plots = json_object_get(r->root, "plots"), *p = NULL;
  size_t i;
  json_t *it;
  json_array_foreach(plots, i, it) if (!strcmp(json_string_value(json_object_get(it, "title")), plot)) p = it;
  if (!p) {
    p = json_object();
    json_object_set_new(p, "title", json_string(plot));
    json_object_set_new(p, "xlabel", json_string(xlabel));
    json_object_set_new(p, "ylabel", json_string(ylabel));
    json_object_set_new(p, "logy", json_boolean(logy));
    json_object_set_new(p, "series", json_array());
    json_array_append_new(plots, p);
  }
  json_t *s = json_object(), *xs = json_array(), *ys = json_array();
  for (int k = 0; k < n; k++) {
    json_array_append_new(xs, num(x[k]));
    json_array_append_new(ys, num(y[k]));
  }
  json_object_set_new(s, "name", json_string(name));
  json_object_set_new(s, "x", xs);
  json_object_set_new(s, "y", ys);
  json_array_append_new(json_object_get(p, "series"), s);
}

void qins_report_note(qins_report *r, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  json_array_append_new(json_object_get(r->root, "notes"), json_string(buf));
}

void qins_report_set_verdict(qins_report *r, const char *verdict, const char *reason) {
  json_object_set_new(r->root, "verdict", json_string(verdict));
  json_object_set_new(r->root, "reason", json_string(reason ? reason : ""));
}

const char *qins_report_finish(qins_report *r) {
  json_t *v = json_object_get(r->root, "verdict");
  if (json_is_string(v)) return json_string_value(v);
  int passed = 0, failed = 0, notrun = 0;
  size_t i;
  json_t *c;
  json_array_foreach(json_object_get(r->root, "checks"), i, c) {
    const char *s = json_string_value(json_object_get(c, "verdict"));
    if (!strcmp(s, "pass")) passed++;
    else if (!strcmp(s, "fail")) failed++;
    else notrun++;
  }
  const char *verdict = failed ? "fail" : passed ? "pass" : "not-run";
  char reason[256];
  snprintf(reason, sizeof reason, "%d check(s) passed, %d failed, %d not run", passed, failed, notrun);
  qins_report_set_verdict(r, verdict, reason);
  return verdict;
}

/* ---------------------------------------------------------------- Markdown */

static void md_value(FILE *f, json_t *v) {
  if (json_is_real(v)) {
    double d = json_real_value(v);
    if (d != 0 && (fabs(d) < 1e-3 || fabs(d) >= 1e6)) fprintf(f, "%.3e", d);
    else fprintf(f, "%.6g", d);
  } else if (json_is_integer(v)) {
    fprintf(f, "%lld", (long long)json_integer_value(v));
  } else if (json_is_string(v)) {
    for (const char *s = json_string_value(v); *s; s++) fputs(*s == '|' ? "\\|" : (char[2]){*s, 0}, f);
  } else if (json_is_null(v) || !v) {
    fputs("-", f);
  } else if (json_is_boolean(v)) {
    fputs(json_is_true(v) ? "yes" : "no", f);
  } else {
    char *s = json_dumps(v, JSON_COMPACT);
    if (s) {
      for (char *p = s; *p; p++) fputs(*p == '|' ? "\\|" : (char[2]){*p, 0}, f);
      free(s);
    }
  }
}

static void write_md(const qins_report *r, FILE *f, const char *svg_name) {
  json_t *root = r->root;
  fprintf(f, "# %s: %s\n\n", json_string_value(json_object_get(root, "gate")),
          json_string_value(json_object_get(root, "title")));
  fprintf(f, "**Verdict: %s**", json_string_value(json_object_get(root, "verdict")));
  const char *reason = json_string_value(json_object_get(root, "reason"));
  if (reason && *reason) fprintf(f, " (%s)", reason);
  fprintf(f, "\n\n## What was run\n\n| | |\n|---|---|\n");
  const char *k;
  json_t *v;
  json_object_foreach(json_object_get(root, "run"), k, v) {
    fprintf(f, "| %s | ", k);
    md_value(f, v);
    fprintf(f, " |\n");
  }
  fprintf(f, "\n## Measured against the plan's thresholds\n\n| measure | value | threshold | verdict | note |\n"
             "|---|---|---|---|---|\n");
  size_t i;
  json_array_foreach(json_object_get(root, "checks"), i, v) {
    fprintf(f, "| %s | ", json_string_value(json_object_get(v, "what")));
    md_value(f, json_object_get(v, "value"));
    fprintf(f, " | %s ", json_string_value(json_object_get(v, "op")));
    md_value(f, json_object_get(v, "threshold"));
    fprintf(f, " | %s | ", json_string_value(json_object_get(v, "verdict")));
    md_value(f, json_object_get(v, "note"));
    fprintf(f, " |\n");
  }
  json_object_foreach(json_object_get(root, "tables"), k, v) {
    fprintf(f, "\n## %s\n\n", k);
    json_t *first = json_array_get(v, 0);
    if (!first) continue;
    const char *col;
    json_t *cv;
    fputc('|', f);
    json_object_foreach(first, col, cv) fprintf(f, " %s |", col);
    fputs("\n|", f);
    json_object_foreach(first, col, cv) fputs("---|", f);
    fputc('\n', f);
    size_t j;
    json_t *row;
    json_array_foreach(v, j, row) {
      fputc('|', f);
      json_object_foreach(first, col, cv) {
        fputc(' ', f);
        md_value(f, json_object_get(row, col));
        fputs(" |", f);
      }
      fputc('\n', f);
    }
  }
  if (json_array_size(json_object_get(root, "plots"))) fprintf(f, "\n## Plots\n\n![plots](%s)\n", svg_name);
  if (json_array_size(json_object_get(root, "notes"))) {
    fprintf(f, "\n## Notes\n\n");
    json_array_foreach(json_object_get(root, "notes"), i, v) fprintf(f, "- %s\n", json_string_value(v));
  }
}

/* ---------------------------------------------------------------- SVG */

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"};

static void svg_text(FILE *f, const char *s) {
  for (; *s; s++) {
    if (*s == '<') fputs("&lt;", f);
    else if (*s == '>') fputs("&gt;", f);
    else if (*s == '&') fputs("&amp;", f);
    else fputc(*s, f);
  }
}

static void write_svg(const qins_report *r, FILE *f) {
  json_t *plots = json_object_get(r->root, "plots");
  int np = (int)json_array_size(plots);
  const int W = 860, H = 320, L = 90, R = 300, T = 36, B = 48;
  fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" "
             "font-size=\"12\">\n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
          W, np ? H * np : 60);
  if (!np) {
    fprintf(f, "<text x=\"10\" y=\"30\">%s: no plots (verdict %s)</text>\n",
            json_string_value(json_object_get(r->root, "gate")),
            json_string_value(json_object_get(r->root, "verdict")));
  }
  size_t pi;
  json_t *p;
  json_array_foreach(plots, pi, p) {
    int oy = (int)pi * H, logy = json_is_true(json_object_get(p, "logy"));
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    size_t si, k;
    json_t *s, *v;
    json_array_foreach(json_object_get(p, "series"), si, s) {
      json_t *xs = json_object_get(s, "x"), *ys = json_object_get(s, "y");
      json_array_foreach(xs, k, v) {
        json_t *yv = json_array_get(ys, k);
        if (!json_is_number(v) || !json_is_number(yv)) continue;
        double x = json_number_value(v), y = json_number_value(yv);
        if (logy) {
          if (y <= 0) continue;
          y = log10(y);
        }
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
    }
    if (!(x1 >= x0)) x0 = 0, x1 = 1;
    if (!(y1 >= y0)) y0 = 0, y1 = 1;
    if (x1 == x0) x0 -= 0.5, x1 += 0.5;
    if (y1 == y0) y0 -= logy ? 0.5 : (fabs(y0) > 0 ? fabs(y0) * 0.1 : 0.5), y1 += logy ? 0.5 : (fabs(y1) > 0 ? fabs(y1) * 0.1 : 0.5);
    double pw = W - L - R, ph = H - T - B;
    fprintf(f, "<g transform=\"translate(0,%d)\">\n<text x=\"%d\" y=\"20\" font-weight=\"bold\">", oy, L);
    svg_text(f, json_string_value(json_object_get(p, "title")));
    fprintf(f, "</text>\n<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n", L, T,
            pw, ph);
    for (int t = 0; t <= 4; t++) {
      double yv = y0 + (y1 - y0) * t / 4, py = T + ph - ph * t / 4;
      double xv = x0 + (x1 - x0) * t / 4, px = L + pw * t / 4;
      fprintf(f, "<text x=\"%d\" y=\"%g\" text-anchor=\"end\">%.*g</text>\n", L - 4, py + 4, logy ? 2 : 6,
              logy ? pow(10, yv) : yv);
      fprintf(f, "<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">%.4g</text>\n", px, (double)T + ph + 16, xv);
      fprintf(f, "<line x1=\"%d\" x2=\"%g\" y1=\"%g\" y2=\"%g\" stroke=\"#ddd\"/>\n", L, L + pw, py, py);
    }
    fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">", L + pw / 2, H - 10);
    svg_text(f, json_string_value(json_object_get(p, "xlabel")));
    fprintf(f, "</text>\n<text x=\"14\" y=\"%g\" transform=\"rotate(-90 14 %g)\" text-anchor=\"middle\">", T + ph / 2,
            T + ph / 2);
    svg_text(f, json_string_value(json_object_get(p, "ylabel")));
    fprintf(f, "%s</text>\n", logy ? " (log)" : "");
    json_array_foreach(json_object_get(p, "series"), si, s) {
      const char *col = colors[si % (sizeof colors / sizeof colors[0])];
      json_t *xs = json_object_get(s, "x"), *ys = json_object_get(s, "y");
      fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", col);
      int npts = 0;
      json_array_foreach(xs, k, v) {
        json_t *yv = json_array_get(ys, k);
        if (!json_is_number(v) || !json_is_number(yv)) continue;
        double y = json_number_value(yv);
        if (logy) {
          if (y <= 0) continue;
          y = log10(y);
        }
        fprintf(f, "%.1f,%.1f ", L + pw * (json_number_value(v) - x0) / (x1 - x0), T + ph - ph * (y - y0) / (y1 - y0));
        npts++;
      }
      fputs("\"/>\n", f);
      if (npts == 1 || json_array_size(xs) <= 16)
        json_array_foreach(xs, k, v) {
          json_t *yv = json_array_get(ys, k);
          if (!json_is_number(v) || !json_is_number(yv)) continue;
          double y = json_number_value(yv);
          if (logy) {
            if (y <= 0) continue;
            y = log10(y);
          }
          fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                  L + pw * (json_number_value(v) - x0) / (x1 - x0), T + ph - ph * (y - y0) / (y1 - y0), col);
        }
      fprintf(f, "<rect x=\"%g\" y=\"%d\" width=\"12\" height=\"3\" fill=\"%s\"/><text x=\"%g\" y=\"%d\">", L + pw + 10,
              T + 8 + 16 * (int)si, col, L + pw + 26, T + 12 + 16 * (int)si);
      char nm[48];
      const char *full = json_string_value(json_object_get(s, "name"));
      snprintf(nm, sizeof nm, "%.44s%s", full, strlen(full) > 44 ? "..." : "");
      svg_text(f, nm);
      fputs("</text>\n", f);
    }
    fputs("</g>\n", f);
  }
  fputs("</svg>\n", f);
}

int qins_report_write(qins_report *r, const char *dir) {
  qins_report_finish(r);
  int rc = qins_mkdirs(dir);
  if (rc) return qins_error_wrap(rc, "report: ");
  const char *gate = json_string_value(json_object_get(r->root, "gate"));
  char path[1200], svg[256];
  snprintf(path, sizeof path, "%s/%s.json", dir, gate);
  if (json_dump_file(r->root, path, JSON_INDENT(2) | JSON_PRESERVE_ORDER))
    return qins_error_set(QINS_EIO, "report: cannot write %s", path);
  snprintf(svg, sizeof svg, "%s.svg", gate);
  snprintf(path, sizeof path, "%s/%s.md", dir, gate);
  FILE *f = fopen(path, "w");
  if (!f) return qins_error_set(QINS_EIO, "report: cannot write %s", path);
  write_md(r, f, svg);
  if (fclose(f)) return qins_error_set(QINS_EIO, "report: cannot write %s", path);
  snprintf(path, sizeof path, "%s/%s", dir, svg);
  f = fopen(path, "w");
  if (!f) return qins_error_set(QINS_EIO, "report: cannot write %s", path);
  write_svg(r, f);
  if (fclose(f)) return qins_error_set(QINS_EIO, "report: cannot write %s", path);
  return 0;
}
