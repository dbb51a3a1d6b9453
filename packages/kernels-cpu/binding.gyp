# SPDX-License-Identifier: Apache-2.0
# node-gyp build of @kvq/kernels-cpu. Each ISA's kernels are a separate static library compiled with its own
# -m flags; the addon itself (glue, thread pool, scalar kernels) uses only the baseline flags of the target, so
# the binary loads on any CPU of the architecture and picks kernels at run time (__builtin_cpu_supports). On arm64
# the NEON kernels (kvq_cpu_neon) need no flag at all: Advanced SIMD is part of the AArch64 baseline.
# No -march=native anywhere. Build with `pnpm build:native` (scripts/build-native.mjs), never at install time.
{
  "variables": {
    # The FP8 conversion header shared with the GPU backends (fp8.h), published in @kvq/kernels's csrc/ and found
    # by package resolution, so this package builds from its own tarball as well as in the monorepo.
    "kvq_shared_include": "<!(node -p \"require('path').join(require('path').dirname(require.resolve('@kvq/kernels/package.json')), 'csrc')\")",
    "kvq_common_cflags": ["-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
                          "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wextra",
                          "-Wno-unused-parameter"],
    # macOS (clang via xcode_settings; gyp ignores cflags_cc there) and Windows (MSVC via msvs_settings).
    "kvq_mac_cflags": ["-std=c++17", "-O3", "-fvisibility=hidden", "-fvisibility-inlines-hidden", "-ffp-contract=off",
                       "-fno-math-errno", "-fexceptions"],
    "kvq_msvc_cflags": ["/std:c++17", "/EHsc", "/O2", "/fp:precise"],
  },
  "target_defaults": {
    "xcode_settings": {"MACOSX_DEPLOYMENT_TARGET": "11.0", "CLANG_CXX_LANGUAGE_STANDARD": "c++17",
                       "GCC_OPTIMIZATION_LEVEL": "3"},
  },
  "targets": [
    {
      "target_name": "kvq_cpu_avx2",
      "type": "static_library",
      "include_dirs": ["<(kvq_shared_include)"],
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["csrc/kernels_avx2.cc"],
          "cflags_cc": ["<@(kvq_common_cflags)", "-mavx2", "-mfma", "-mf16c"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<@(kvq_mac_cflags)", "-mavx2", "-mfma", "-mf16c"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<@(kvq_msvc_cflags)", "/arch:AVX2"]}},
        }],
      ],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions"],
    },
    {
      "target_name": "kvq_cpu_avx512",
      "type": "static_library",
      "include_dirs": ["<(kvq_shared_include)"],
      "conditions": [
        ["target_arch=='x64'", {
          "sources": ["csrc/kernels_avx512.cc"],
          "cflags_cc": ["<@(kvq_common_cflags)", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vbmi", "-mavx512vnni", "-mavx2",
                        "-mfma", "-mf16c", "-Wno-maybe-uninitialized", "-Wno-uninitialized"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<@(kvq_mac_cflags)", "-mavx512f", "-mavx512bw", "-mavx512vl",
                                                     "-mavx512dq", "-mavx512vbmi", "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]},
          "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<@(kvq_msvc_cflags)", "/arch:AVX512"]}},
        }],
      ],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions"],
    },
    {
      # AArch64 (Linux, Apple Silicon): Advanced SIMD is baseline, so no extra flags; the dispatcher always offers it.
      "target_name": "kvq_cpu_neon",
      "type": "static_library",
      "include_dirs": ["<(kvq_shared_include)"],
      "conditions": [
        ["target_arch=='arm64'", {
          "sources": ["csrc/kernels_neon.cc"],
          "cflags_cc": ["<@(kvq_common_cflags)"],
          "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<@(kvq_mac_cflags)"]},
        }],
      ],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions"],
    },
    {
      # AArch64 Linux: the neon kernels again, built for armv8.2-a+dotprod (SDOT int8 dots of the GGML weights; GCC
      # gates the SDOT intrinsics on armv8.2-a); the dispatcher offers them only where the kernel reports HWCAP_ASIMDDP. Not on macOS: Apple Silicon's default
      # target already has the extension, so the plain neon tier has SDOT there.
      "target_name": "kvq_cpu_neon_dotprod",
      "type": "static_library",
      "include_dirs": ["<(kvq_shared_include)"],
      "conditions": [
        ["target_arch=='arm64' and OS=='linux'", {
          "sources": ["csrc/kernels_neon_dotprod.cc"],
          "cflags_cc": ["<@(kvq_common_cflags)", "-march=armv8.2-a+dotprod"],
        }],
      ],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions"],
    },
    {
      "target_name": "kvq_cpu",
      "sources": ["csrc/addon.cc", "csrc/threadpool.cc", "csrc/kernels_scalar.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")",
                       "<(kvq_shared_include)"],
      "defines": ["NAPI_VERSION=8", "NODE_ADDON_API_CPP_EXCEPTIONS", "NODE_ADDON_API_CPP_EXCEPTIONS_ALL",
                  "NODE_ADDON_API_DISABLE_DEPRECATED"],
      "cflags_cc": ["<@(kvq_common_cflags)", "-fexceptions"],
      "cflags_cc!": ["-std=gnu++17", "-fno-exceptions"],
      "cflags!": ["-fno-exceptions"],
      "ldflags": ["-pthread"],
      "xcode_settings": {"OTHER_CPLUSPLUSFLAGS": ["<@(kvq_mac_cflags)"], "GCC_ENABLE_CPP_EXCEPTIONS": "YES"},
      "msvs_settings": {"VCCLCompilerTool": {"AdditionalOptions": ["<@(kvq_msvc_cflags)"], "ExceptionHandling": 1}},
      "conditions": [
        ["target_arch=='x64'", {
          "dependencies": ["kvq_cpu_avx2", "kvq_cpu_avx512"],
        }],
        ["target_arch=='arm64'", {
          "dependencies": ["kvq_cpu_neon"],
        }],
        ["target_arch=='arm64' and OS=='linux'", {
          "dependencies": ["kvq_cpu_neon_dotprod"],
        }],
      ],
    },
  ],
}
