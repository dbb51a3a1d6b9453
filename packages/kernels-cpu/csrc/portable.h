// SPDX-License-Identifier: Apache-2.0
//
// The few compiler and OS specifics of the CPU kernels, in one place, so the rest of csrc/ is plain C++17 for
// GCC and Clang (Linux, macOS, MinGW-w64) and MSVC (Windows):
//   KVQ_ALWAYS_INLINE      force inlining (kernels and vector layers rely on it for their speed)
//   kvq_inff()             +infinity as a float constant
//   kvq_sqrt(x)            double square root (one instruction with -fno-math-errno / MSVC intrinsic)
//   kvq_rintf(x)           round to nearest, ties to even (the current rounding mode; kvq never changes it)
//   KVQ_PREFETCH(p)        read prefetch into all cache levels (a hint; may be a no-op)
//   kvq::detectX86()       x86-64 CPU features the OS has enabled (AVX/AVX-512 register state included)
//   kvq::alignedAlloc/Free 64-byte (or any power of two) aligned heap blocks
// On GCC and Clang outside Windows every macro expands to exactly the builtin used before, so code generation
// on Linux and macOS is unchanged. Windows (MSVC or MinGW-w64) detects CPU features with CPUID + XGETBV
// (-DKVQ_CPUID_DETECT selects that path on other x86-64 systems too). MinGW-w64 builds are checked under wine
// (scripts/wine-win64-check.mjs); the MSVC branches are written for MSVC but not compiled by any check here.
//
// Everything here is a macro or a `static inline` function: this header is included by translation units
// compiled with different -m flags (kernels_<isa>.cc), and a non-static inline function emitted by one of them
// could be picked by the linker for another.
#ifndef KVQ_PORTABLE_H_
#define KVQ_PORTABLE_H_

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(_MSC_VER)
#include <math.h>
#include <intrin.h>
#if defined(_M_X64) || defined(_M_IX86)
#include <immintrin.h>
#endif
#endif
#if defined(_WIN32)
#include <malloc.h>
#endif
#if !defined(_MSC_VER) && (defined(__x86_64__) || defined(__i386__))
#include <cpuid.h>
#endif

// ---- compiler builtins ----------------------------------------------------------------------------

#if defined(_MSC_VER)
#define KVQ_ALWAYS_INLINE __forceinline
/** +inf (MSVC: the constant HUGE_VALF, i.e. its own __builtin_huge_valf()). */
#define kvq_inff() HUGE_VALF
#define kvq_sqrt(x) sqrt(x)
#define kvq_rintf(x) rintf(x)
#if defined(_M_X64) || defined(_M_IX86)
#define KVQ_PREFETCH(p) _mm_prefetch((const char*)(p), _MM_HINT_T0)
#elif defined(_M_ARM64)
#define KVQ_PREFETCH(p) __prefetch((const void*)(p))
#else
#define KVQ_PREFETCH(p) ((void)(p))
#endif
#else
#define KVQ_ALWAYS_INLINE inline __attribute__((always_inline))
#define kvq_inff() __builtin_inff()
#define kvq_sqrt(x) __builtin_sqrt(x)
#define kvq_rintf(x) __builtin_rintf(x)
#define KVQ_PREFETCH(p) __builtin_prefetch(p)
#endif

#if defined(__x86_64__) || defined(_M_X64)
#define KVQ_X86_64 1
#endif

namespace kvq {

// ---- CPU features (x86-64) ------------------------------------------------------------------------

/** The x86-64 features kvq asks about; all false on other architectures. */
struct X86Features {
  bool sse42 = false, avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512vbmi = false, avx512bf16 = false, avx512fp16 = false, avx512vnni = false;
  /** AMX-TILE and AMX-INT8 (CPUID.7.0:EDX bits 24-25) with the tile state enabled by the OS (XCR0 bits 17-18). */
  bool amxInt8 = false;
};

#if defined(KVQ_X86_64)
/** CPUID leaf/subleaf into r[0..3] = eax, ebx, ecx, edx. */
static inline void cpuidex(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
#if defined(_MSC_VER)
  int v[4];
  __cpuidex(v, (int)leaf, (int)sub);
  for (int i = 0; i < 4; i++) r[i] = (uint32_t)v[i];
#else
  __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
#endif
}

/** XCR0: which register states the OS saves on context switches (only valid when CPUID.1:ECX.OSXSAVE is set). */
static inline uint64_t xcr0() {
#if defined(_MSC_VER)
  return (uint64_t)_xgetbv(0);
#else
  uint32_t lo, hi;
  // The instruction, not _xgetbv(): GCC's intrinsic needs -mxsave on this (baseline x86-64) translation unit.
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
#endif
}

/**
 * AMX-TILE and AMX-INT8 from CPUID.7.0:EDX (bits 24, 25) and the OS's tile state in XCR0 (bits 17-18: XTILECFG and
 * XTILEDATA). Both detection paths use it (GCC's __builtin_cpu_supports has no "amx-int8" before GCC 13).
 */
static inline bool amxInt8From(uint32_t edx7, uint64_t xcr) {
  return ((edx7 >> 24) & 1) && ((edx7 >> 25) & 1) && (xcr & 0x60000) == 0x60000;
}

#endif

#if defined(KVQ_X86_64) && (defined(_WIN32) || defined(KVQ_CPUID_DETECT))
#define KVQ_DETECT_CPUID 1


/**
 * Features from CPUID, with the OS checks GCC's __builtin_cpu_supports does itself: AVX-family features
 * (AVX2, FMA, F16C) only when the OS saves the XMM and YMM state (XCR0 bits 1-2), AVX-512 features only when
 * it also saves the opmask and both ZMM halves (XCR0 bits 5-7).
 */
static inline X86Features detectX86() {
  X86Features f;
  uint32_t r[4];
  cpuidex(0, 0, r);
  const uint32_t maxLeaf = r[0];
  if (maxLeaf < 1) return f;
  cpuidex(1, 0, r);
  const uint32_t ecx1 = r[2];
  f.sse42 = (ecx1 >> 20) & 1;
  const bool osxsave = (ecx1 >> 27) & 1;
  const uint64_t xcr = osxsave ? xcr0() : 0;
  const bool avxState = (xcr & 0x6) == 0x6;
  const bool avx512State = avxState && (xcr & 0xE0) == 0xE0;
  const bool avx = avxState && ((ecx1 >> 28) & 1);
  f.fma = avx && ((ecx1 >> 12) & 1);
  f.f16c = avx && ((ecx1 >> 29) & 1);
  if (maxLeaf < 7) return f;
  cpuidex(7, 0, r);
  const uint32_t maxSub7 = r[0], ebx7 = r[1], ecx7 = r[2], edx7 = r[3];
  f.avx2 = avx && ((ebx7 >> 5) & 1);
  if (avx512State) {
    f.avx512f = (ebx7 >> 16) & 1;
    f.avx512dq = (ebx7 >> 17) & 1;
    f.avx512bw = (ebx7 >> 30) & 1;
    f.avx512vl = (ebx7 >> 31) & 1;
    f.avx512vbmi = (ecx7 >> 1) & 1;
    f.avx512vnni = (ecx7 >> 11) & 1;
    f.avx512fp16 = (edx7 >> 23) & 1;
    f.amxInt8 = amxInt8From(edx7, xcr);
    if (maxSub7 >= 1) {
      cpuidex(7, 1, r);
      f.avx512bf16 = (r[0] >> 5) & 1;
    }
  }
  return f;
}

#elif defined(KVQ_X86_64)

/** Features from GCC/Clang's __builtin_cpu_supports (which checks the OS-enabled register state itself). */
static inline X86Features detectX86() {
  X86Features f;
  __builtin_cpu_init();
  f.sse42 = __builtin_cpu_supports("sse4.2");
  f.avx2 = __builtin_cpu_supports("avx2");
  f.fma = __builtin_cpu_supports("fma");
  f.f16c = __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.avx512dq = __builtin_cpu_supports("avx512dq");
  f.avx512vbmi = __builtin_cpu_supports("avx512vbmi");
  f.avx512bf16 = __builtin_cpu_supports("avx512bf16");
  f.avx512fp16 = __builtin_cpu_supports("avx512fp16");
  f.avx512vnni = __builtin_cpu_supports("avx512vnni");
  // AMX from CPUID and XCR0 directly (XGETBV only when CPUID.1:ECX.OSXSAVE says it may run).
  uint32_t r[4];
  cpuidex(0, 0, r);
  if (r[0] >= 7) {
    cpuidex(1, 0, r);
    if ((r[2] >> 27) & 1) {
      const uint64_t xcr = xcr0();
      cpuidex(7, 0, r);
      f.amxInt8 = amxInt8From(r[3], xcr);
    }
  }
  return f;
}

#else

static inline X86Features detectX86() { return X86Features(); }

#endif

// ---- aligned heap blocks --------------------------------------------------------------------------

/** `bytes` (a multiple of `align`, a power of two) aligned to `align`; nullptr when out of memory. */
static inline void* alignedAlloc(size_t align, size_t bytes) {
#if defined(_WIN32)
  return _aligned_malloc(bytes, align);
#else
  return aligned_alloc(align, bytes);
#endif
}

/** Frees a block from alignedAlloc (nullptr is fine). */
static inline void alignedFree(void* p) {
#if defined(_WIN32)
  _aligned_free(p);
#else
  free(p);
#endif
}

}  // namespace kvq

#endif  // KVQ_PORTABLE_H_
