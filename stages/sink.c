/* Stage type `sink`: collects a request's text pieces and, on the request's last message, emits
 * one JSON record ({"text": ..., "tokens": n}) that the coordinator writes as a JSONL line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "stages/stage.h"

typedef struct acc {
  uint64_t req;
  uint32_t attempt;
  int pieces;
  char *text;
  size_t len, cap;
  struct acc *next;
} acc;

typedef struct sink {
  acc *list;
} sink;


static int init(qins_stage *st, const qins_stage_ctx *ctx) {
  (void)ctx;
  st->priv = calloc(1, sizeof(sink));
  return st->priv ? 0 : qins_error_set(QINS_ENOMEM, "sink: out of memory");
}

static void acc_free(acc *a) {
  free(a->text);
  free(a);
}

static void forget(qins_stage *st, uint64_t req, uint32_t below) {
  sink *s = st->priv;
  for (acc **pp = &s->list; *pp;) {
    if ((*pp)->req == req && (*pp)->attempt < below) {
      acc *a = *pp;
      *pp = a->next;
      acc_free(a);
    } else {
      pp = &(*pp)->next;
    }
  }
}

static void fini(qins_stage *st) {
  sink *s = st->priv;
  if (!s) return;
  while (s->list) {
    acc *a = s->list;
    s->list = a->next;
    acc_free(a);
  }
  free(s);
}

/* JSON string body: valid UTF-8 passes through, invalid bytes become U+FFFD. */
static size_t json_escape(const unsigned char *p, size_t n, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    unsigned char c = p[i];
    if (c == '"' || c == '\\') {
      out[o++] = '\\';
      out[o++] = (char)c;
      i++;
    } else if (c < 0x20) {
      o += (size_t)sprintf(out + o, "\\u%04x", c);
      i++;
    } else if (c < 0x80) {
      out[o++] = (char)c;
      i++;
    } else {
      int len = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
      int ok = len > 0 && i + (size_t)len <= n;
      for (int k = 1; ok && k < len; k++)
        if ((p[i + (size_t)k] & 0xc0) != 0x80) ok = 0;
      if (ok) {
        memcpy(out + o, p + i, (size_t)len);
        o += (size_t)len;
        i += (size_t)len;
      } else {
        memcpy(out + o, "\xef\xbf\xbd", 3);
        o += 3;
        i++;
      }
    }
  }
  return o;
}

static int fwd(qins_stage *st, const qins_msg *in, qins_msg *out) {
  sink *s = st->priv;
  acc *a = s->list;
  while (a && !(a->req == in->req && a->attempt == in->attempt)) a = a->next;
  if (!a) {
    if (in->step > 1) return 0; /* a piece of a forgotten attempt: the replay will answer */
    a = calloc(1, sizeof *a);
    if (!a) return qins_error_set(QINS_ENOMEM, "sink: out of memory");
    a->req = in->req;
    a->attempt = in->attempt;
    a->next = s->list;
    s->list = a;
  }
  if (a->len + in->nbytes + 1 > a->cap) {
    size_t cap = (a->cap + in->nbytes + 64) * 2;
    char *t = realloc(a->text, cap);
    if (!t) return qins_error_set(QINS_ENOMEM, "sink: out of memory");
    a->text = t;
    a->cap = cap;
  }
  if (in->nbytes) memcpy(a->text + a->len, in->data, in->nbytes);
  a->len += in->nbytes;
  if (!(in->flags & QINS_MSG_STOP)) a->pieces++;
  if (!(in->flags & QINS_MSG_END)) return 0;
  char *buf = malloc(a->len * 6 + 64);
  if (!buf) return qins_error_set(QINS_ENOMEM, "sink: out of memory");
  size_t o = (size_t)sprintf(buf, "{\"text\":\"");
  o += json_escape((const unsigned char *)a->text, a->len, buf + o);
  o += (size_t)sprintf(buf + o, "\",\"tokens\":%d}", a->pieces);
  int rc = qins_msg_output_text(out, in, buf, o);
  free(buf);
  forget(st, in->req, in->attempt + 1);
  return rc ? rc : 1;
}

const qins_stage_type qins_stage_sink = {
    .name = "sink",
    .summary = "collect text pieces per request; emit one JSON record at the end",
    .in_port = "u8[N]",
    .out_port = "u8[N]",
    .init = init,
    .forward = fwd,
    .forget = forget,
    .fini = fini,
};
