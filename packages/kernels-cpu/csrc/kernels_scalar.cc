// SPDX-License-Identifier: Apache-2.0
//
// The scalar instantiation of kernels_impl.h. Compiler flags: none (baseline x86-64 / any architecture).
// NOTE: nothing in this file may run before the dispatcher has checked that the CPU supports this ISA.
#define KVQ_NS scalar
#include "simd_scalar.h"
#include "kernels_impl.h"

namespace kvq {
const KernelTable* kernels_scalar() { return &scalar::kTable; }
}  // namespace kvq
