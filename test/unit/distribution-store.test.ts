import { storeConformance } from '../conformance/store.js';
import { DistributionStore } from '../../src/content/distribution/store.js';
import { tmpDir } from '../helpers/tmp.js';

storeConformance('distribution directory', async () => ({ store: await DistributionStore.open(await tmpDir(), { create: true }) }));
