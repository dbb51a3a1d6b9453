// SPDX-License-Identifier: Apache-2.0
//
// The avx512 instantiation of kernels_impl.h. Compiler flags: -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vbmi -mavx512vnni -mavx2 -mfma -mf16c.
// NOTE: nothing in this file may run before the dispatcher has checked that the CPU supports this ISA.
#define KVQ_NS avx512
#include "simd_avx512.h"
#include "kernels_impl.h"

namespace kvq {
const KernelTable* kernels_avx512() { return &avx512::kTable; }
}  // namespace kvq
