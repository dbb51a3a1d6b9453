// SPDX-License-Identifier: Apache-2.0
//
// The avx2 instantiation of kernels_impl.h. Compiler flags: -mavx2 -mfma -mf16c.
// NOTE: nothing in this file may run before the dispatcher has checked that the CPU supports this ISA.
#define KVQ_NS avx2
#include "simd_avx2.h"
#include "kernels_impl.h"

namespace kvq {
const KernelTable* kernels_avx2() { return &avx2::kTable; }
}  // namespace kvq
