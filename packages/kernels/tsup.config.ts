import { kvqTsup } from '@kvq/tsup-config';

export default kvqTsup({ entry: { index: 'src/index.ts', native: 'src/native/index.ts', testing: 'src/testing/index.ts' } });
