import { storeConformance } from '../conformance/store.js';
import { DistributionStore } from '../../registry/storage/store.js';
import { tmpDir } from '../helpers/tmp.js';

storeConformance('distribution directory', async () => ({ store: await DistributionStore.open(await tmpDir(), { create: true }) }));
