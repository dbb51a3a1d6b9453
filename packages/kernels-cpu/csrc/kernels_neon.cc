// SPDX-License-Identifier: Apache-2.0
//
// The neon instantiation of kernels_impl.h (AArch64 only). Compiler flags: none: Advanced SIMD (NEON) with FP16
// conversions is part of the AArch64 baseline, so this tier runs on every arm64 CPU (Linux and Apple Silicon).
#define KVQ_NS neon
#include "simd_neon.h"
#include "kernels_impl.h"

namespace kvq {
const KernelTable* kernels_neon() { return &neon::kTable; }
#if !defined(__linux__)
// The neon-dotprod tier (kernels_neon_dotprod.cc) is built on Linux only; elsewhere it is never usable.
const KernelTable* kernels_neon_dotprod() { return nullptr; }
#endif
}  // namespace kvq
