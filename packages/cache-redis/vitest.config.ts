import { kvqVitest } from '@kvq/vitest-config';

export default kvqVitest();
