import { kvqTsup } from '@kvq/tsup-config';

export default kvqTsup({ entry: { index: 'src/index.ts', testing: 'src/testing.ts' } });
