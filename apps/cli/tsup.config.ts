import { kvqTsup } from '@kvq/tsup-config';

export default kvqTsup({ entry: { bin: 'src/bin.ts', index: 'src/index.ts' } });
