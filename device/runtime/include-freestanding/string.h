/*
 * string.h for toolchains with no C library headers (the freestanding core built with
 * -nostdlibinc, e.g. Android without the NDK): the functions the core calls, defined by
 * src/platform/freestanding.c. Hosted and libc-equipped builds never see this folder.
 */
#ifndef TETHER_FREESTANDING_STRING_H_
#define TETHER_FREESTANDING_STRING_H_

#include <stddef.h>

void* memcpy(void* restrict dst, const void* restrict src, size_t n);
void* memset(void* dst, int c, size_t n);
int memcmp(const void* a, const void* b, size_t n);
int strcmp(const char* a, const char* b);

#endif  /* TETHER_FREESTANDING_STRING_H_ */
