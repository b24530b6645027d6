/*
 * error.c — status names and the per-thread last-error text.
 *
 * The formatter is a small printf subset so that the core needs no stdio (a freestanding
 * build keeps it). Define TETHER_NO_TLS where the toolchain lacks _Thread_local; the buffer
 * is then one static buffer shared by all threads.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "base/base.h"

#define TETHER_ERROR_CAPACITY 512

#ifdef TETHER_NO_TLS
static char g_last_error[TETHER_ERROR_CAPACITY];
#else
static _Thread_local char g_last_error[TETHER_ERROR_CAPACITY];
#endif

const char* tether_status_string(tether_status status) {
  switch (status) {
    case TETHER_STATUS_SUCCESS: return "success";
    case TETHER_STATUS_INVALID_ARGUMENT: return "invalid_argument";
    case TETHER_STATUS_FORMAT_ERROR: return "format_error";
    case TETHER_STATUS_VERSION_MISMATCH: return "version_mismatch";
    case TETHER_STATUS_UNSUPPORTED_OP: return "unsupported_op";
    case TETHER_STATUS_UNSUPPORTED_HARDWARE: return "unsupported_hardware";
    case TETHER_STATUS_OUT_OF_MEMORY: return "out_of_memory";
    case TETHER_STATUS_IO_ERROR: return "io_error";
  }
  return "unknown_status";
}

const char* tether_last_error(void) { return g_last_error; }

void tether_clear_error(void) { g_last_error[0] = '\0'; }

typedef struct sink {
  char* buffer;
  size_t capacity;
  size_t length;
} sink;

static void put_char(sink* s, char c) {
  if (s->length + 1 < s->capacity) s->buffer[s->length] = c;
  s->length++;
}

static void put_string(sink* s, const char* text) {
  if (text == NULL) text = "(null)";
  while (*text != '\0') put_char(s, *text++);
}

static void put_unsigned(sink* s, unsigned long long value, unsigned base) {
  char digits[24];
  size_t n = 0;
  do {
    unsigned d = (unsigned)(value % base);
    digits[n++] = (char)(d < 10 ? '0' + d : 'a' + d - 10);
    value /= base;
  } while (value != 0);
  while (n > 0) put_char(s, digits[--n]);
}

static void put_signed(sink* s, long long value) {
  if (value < 0) {
    put_char(s, '-');
    put_unsigned(s, 0ull - (unsigned long long)value, 10);
  } else {
    put_unsigned(s, (unsigned long long)value, 10);
  }
}

size_t tether_format_v(char* buffer, size_t capacity, const char* format, va_list args) {
  sink s = {buffer, capacity, 0};
  for (const char* p = format; *p != '\0'; p++) {
    if (*p != '%') {
      put_char(&s, *p);
      continue;
    }
    p++;
    int size = 0;  /* 0 int, 1 long long, 2 size_t */
    if (*p == 'z') {
      size = 2;
      p++;
    } else if (p[0] == 'l' && p[1] == 'l') {
      size = 1;
      p += 2;
    }
    switch (*p) {
      case 's': put_string(&s, va_arg(args, const char*)); break;
      case 'c': put_char(&s, (char)va_arg(args, int)); break;
      case 'd':
        put_signed(&s, size == 1 ? va_arg(args, long long)
                       : size == 2 ? (long long)va_arg(args, size_t)
                                   : (long long)va_arg(args, int));
        break;
      case 'u':
      case 'x':
        put_unsigned(&s, size == 1 ? va_arg(args, unsigned long long)
                         : size == 2 ? (unsigned long long)va_arg(args, size_t)
                                     : (unsigned long long)va_arg(args, unsigned),
                     *p == 'x' ? 16u : 10u);
        break;
      case '%': put_char(&s, '%'); break;
      case '\0': p--; break;
      default: put_char(&s, '%'); put_char(&s, *p); break;
    }
  }
  if (capacity > 0) buffer[s.length < capacity ? s.length : capacity - 1] = '\0';
  return s.length;
}

size_t tether_format(char* buffer, size_t capacity, const char* format, ...) {
  va_list args;
  va_start(args, format);
  size_t n = tether_format_v(buffer, capacity, format, args);
  va_end(args);
  return n;
}

tether_status tether_set_error_v(tether_status status, const char* format, va_list args) {
  tether_format_v(g_last_error, sizeof(g_last_error), format, args);
  return status;
}

tether_status tether_set_error(tether_status status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  tether_set_error_v(status, format, args);
  va_end(args);
  return status;
}

void tether_prefix_error(const char* prefix) {
  char old[TETHER_ERROR_CAPACITY];
  memcpy(old, g_last_error, sizeof(old));
  tether_format(g_last_error, sizeof(g_last_error), "%s: %s", prefix, old);
}
