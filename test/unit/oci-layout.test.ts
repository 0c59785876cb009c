import { storeConformance } from '../conformance/store.js';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { tmpDir } from '../helpers/tmp.js';

storeConformance('OCI layout', async () => ({ store: await OciLayoutStore.open(await tmpDir(), { create: true }) }));
