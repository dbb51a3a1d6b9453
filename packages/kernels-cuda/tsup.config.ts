import { kvqTsup } from '@kvq/tsup-config';

export default kvqTsup({ entry: { index: 'src/index.ts', gpu: 'src/gpu.ts', testing: 'src/testing.ts', 'gpu-check-cli': 'src/gpu-check-cli.ts' } });
