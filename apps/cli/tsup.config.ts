import { kvqTsup } from '@kvq/tsup-config';

// The GPU packages are optional dependencies, which tsup would bundle: they must stay imports, because they find
// their native addons relative to their own files (and may be absent).
export default kvqTsup({ entry: { bin: 'src/bin.ts', index: 'src/index.ts' }, external: ['@kvq/kernels-cuda', '@kvq/kernels-rocm'] });
