/* GPT-2 byte-level mapping: every byte <-> one printable Unicode character (and the GPT-2 regex). */
#include <pthread.h>
#include <string.h>

#include "core/tokenizer/tok_internal.h"

/* Bytes that are printable Latin-1 map to themselves; the other 68 take code points 256, 257, ...
 * in byte order, so the whole table is a pure function of the byte value. */
static char enc[256][3];
static uint8_t enc_len[256];
static int16_t dec[512]; /* code point -> byte, -1 if not in the map */
static pthread_once_t once = PTHREAD_ONCE_INIT;

static int printable(int b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }

static void build(void) {
  int extra = 0;
  for (int i = 0; i < 512; i++) dec[i] = -1;
  for (int b = 0; b < 256; b++) {
    int cp = printable(b) ? b : 256 + extra++;
    dec[cp] = (int16_t)b;
    if (cp < 0x80) {
      enc[b][0] = (char)cp;
      enc_len[b] = 1;
    } else {
      enc[b][0] = (char)(0xC0 | (cp >> 6));
      enc[b][1] = (char)(0x80 | (cp & 0x3F));
      enc_len[b] = 2;
    }
  }
}

const char tok_gpt2_pattern[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int tok_bytelevel_encode(const char *s, size_t len, tok_buf *out) {
  pthread_once(&once, build);
  for (size_t i = 0; i < len; i++) {
    unsigned char b = (unsigned char)s[i];
    int rc = tok_buf_put(out, enc[b], enc_len[b]);
    if (rc) return rc;
  }
  return 0;
}

static int char_byte(const unsigned char *u, size_t cl) {
  int cp = -1;
  if (cl == 1 && u[0] < 0x80) cp = u[0];
  else if (cl == 2) cp = ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
  return cp >= 0 && cp < 512 ? dec[cp] : -1;
}

/* As HF: a token holding any character outside the map (an added token such as
 * "<|begin_of_text|>" is fine, it is all ASCII) is copied as it is. */
int tok_bytelevel_decode(const char *s, size_t len, tok_buf *out) {
  pthread_once(&once, build);
  const unsigned char *u = (const unsigned char *)s;
  for (size_t i = 0; i < len;) {
    size_t cl = tok_utf8_len(u + i, len - i);
    if (char_byte(u + i, cl) < 0) return tok_buf_put(out, s, len);
    i += cl;
  }
  for (size_t i = 0; i < len;) {
    size_t cl = tok_utf8_len(u + i, len - i);
    int rc = tok_buf_putc(out, (char)char_byte(u + i, cl));
    if (rc) return rc;
    i += cl;
  }
  return 0;
}
