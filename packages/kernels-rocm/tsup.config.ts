import { kvqTsup } from '@kvq/tsup-config';

export default kvqTsup();
