// SPDX-License-Identifier: Apache-2.0
//
// The neon-dotprod instantiation of kernels_impl.h (AArch64 Linux only): the neon kernels compiled with
// -march=armv8.2-a+dotprod, so the GGML int8 block dots (wquant_neon_q8.h) use SDOT instead of SMULL/SMLAL2/SADALP.
// Linux arm64 prebuilts target plain armv8-a, so this tier is how they reach SDOT on the CPUs that have it (Cortex-A55
// and -A76 on, Neoverse N1 / Graviton 2 on); the addon offers it only where the kernel reports HWCAP_ASIMDDP.
// macOS builds need no such tier: Apple Silicon's default target already has the extension, so the plain neon tier
// compiles SDOT there (kernels_neon.cc supplies a null table).
// NOTE: nothing in this file may run before the dispatcher has checked that the CPU has the dot-product extension.
#if !defined(__ARM_FEATURE_DOTPROD)
#error "kernels_neon_dotprod.cc must be compiled for a target with the dot-product extension (-march=armv8.2-a+dotprod)"
#endif
#define KVQ_NS neon_dotprod
#define KVQ_NEON_ISA_NAME "neon-dotprod"
#include "simd_neon.h"
#include "kernels_impl.h"

namespace kvq {
const KernelTable* kernels_neon_dotprod() { return &neon_dotprod::kTable; }
}  // namespace kvq
