import { storeConformance } from '../conformance/store.js';
import { RemoteStore } from '../../src/content/remote.js';
import { startRegistry } from '../helpers/registry.js';

// Small chunks, so the conformance blobs (300 kB) go through POST + PATCH + PUT, not only one PUT.
storeConformance('remote registry (docker-registry, chunked)', async () => {
  const reg = await startRegistry();
  const store = await RemoteStore.open(`${reg.host}/conformance/repo`, { plainHttp: true, chunkSize: 64 * 1024, env: {} }, 'push');
  return {
    store,
    cleanup: async () => {
      await store.close();
      await reg.stop();
    },
  };
});

storeConformance('remote registry (docker-registry, monolithic)', async () => {
  const reg = await startRegistry();
  const store = await RemoteStore.open(`${reg.host}/conformance/repo`, { plainHttp: true, env: {} }, 'push');
  return {
    store,
    cleanup: async () => {
      await store.close();
      await reg.stop();
    },
  };
});
