import { kvqTsup } from '@kvq/tsup-config';

export default kvqTsup({ entry: { index: 'src/index.ts', 'gpu-check-cli': 'src/gpu-check-cli.ts' } });
