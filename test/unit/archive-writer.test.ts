import { join } from 'node:path';
import { ArchiveWriter } from '../../src/content/archive-writer.js';
import { storeConformance } from '../conformance/store.js';
import { tmpDir } from '../helpers/tmp.js';

// A file-backed archive can read back what it wrote, so it answers the whole contract.
storeConformance('archive writer (tar file)', async () => {
  const store = await ArchiveWriter.create(join(await tmpDir(), 'out.tar'));
  return { store, cleanup: () => store.abort() };
});
