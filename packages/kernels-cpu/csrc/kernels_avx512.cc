// SPDX-License-Identifier: Apache-2.0
//
// The avx512 instantiation of kernels_impl.h. Compiler flags: -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vbmi -mavx512vnni -mavx2 -mfma -mf16c.
// Also the "amx" table (wquant_amx.h): these kernels plus the GGML prefill GEMMs on AMX tiles, whose functions carry
// their own target attribute (Linux with GCC/Clang only: the tile state needs the kernel's per-process permission).
// NOTE: nothing in this file may run before the dispatcher has checked that the CPU supports this ISA.
#define KVQ_NS avx512
#include "simd_avx512.h"
#include "kernels_impl.h"

#if defined(__linux__) && defined(__GNUC__)
#define KVQ_AMX 1
#include <string.h>
namespace kvq {
namespace avx512 {
#include "wquant_amx.h"
}  // namespace avx512
}  // namespace kvq
#endif

namespace kvq {
const KernelTable* kernels_avx512() { return &avx512::kTable; }
#if defined(KVQ_AMX)
const KernelTable* kernels_amx() { return &avx512::kAmxTable; }
#else
const KernelTable* kernels_amx() { return nullptr; }
#endif
}  // namespace kvq
