import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Clusterfile } from '../../src/runner/clusterfile.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('Clusterfile');
test.after.each(cleanupTmp);

/** As `sealos gen` writes one, with fields sealimg does not use and a kubeadm document. */
const SEALOS = `apiVersion: apps.sealos.io/v1beta1
kind: Cluster
metadata:
  creationTimestamp: null
  name: default
spec:
  hosts:
  - ips:
    - 10.77.0.11:22
    roles:
    - master
    - amd64
  - ips:
    - 10.77.0.12:2222
    - 10.77.0.13:22
    roles:
    - node
    - amd64
    ssh:
      user: ops
      passwd: node-secret
  image:
  - labring/kubernetes:v1.28.14
  - labring/helm:v3.14.1
  ssh:
    passwd: s3cret
    pk: /root/.ssh/id_rsa
    port: 22
    user: root
  env:
  - criData=/data/containerd
  command: []
  someFutureField: keep-me # sealimg does not know this
status: {}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
networking:
  podSubnet: 100.64.0.0/10
---
apiVersion: apps.sealos.io/v1beta1
kind: Config
metadata:
  name: calico
spec:
  path: charts/calico/values.yaml
  match: docker.io/labring/calico:v3.26.1
  strategy: merge
  data: |
    installation:
      calicoNetwork:
        bgp: Disabled
`;

test('a sealos Clusterfile is read and written back without losing fields', async () => {
  const cf = Clusterfile.parse(SEALOS, 'Clusterfile');
  const spec = cf.spec();
  assert.is(cf.name, 'default');
  assert.equal(spec.hosts[1]!.ips, ['10.77.0.12:2222', '10.77.0.13:22']);
  assert.equal(spec.hosts[1]!.ssh, { user: 'ops', passwd: 'node-secret' });
  assert.equal(spec.image, ['labring/kubernetes:v1.28.14', 'labring/helm:v3.14.1']);
  assert.equal(cf.documentsOfKind('ClusterConfiguration')[0]!.networking, { podSubnet: '100.64.0.0/10' });
  assert.equal(cf.configs(), [{ name: 'calico', path: 'charts/calico/values.yaml', match: 'docker.io/labring/calico:v3.26.1', strategy: 'merge', data: 'installation:\n  calicoNetwork:\n    bgp: Disabled\n' }]);
  cf.setCondition({ type: 'Distribute', status: 'True', reason: 'Done' });
  cf.setPhase('ClusterInProgress');
  const path = join(await tmpDir(), 'Clusterfile');
  await cf.save(path);
  assert.is((await stat(path)).mode & 0o777, 0o600);
  const again = Clusterfile.parse(cf.toString());
  assert.equal(again.spec(), spec);
  assert.match(cf.toString(), 'someFutureField: keep-me # sealimg does not know this');
  assert.is(again.phase, 'ClusterInProgress');
  assert.is(again.conditions()[0]!.type, 'Distribute');
  again.setCondition({ type: 'Distribute', status: 'False', reason: 'HostDown' });
  assert.is(again.conditions().length, 1, 'a step is recorded once, with its latest outcome');
});

test('passwords never appear in the redacted form', () => {
  const out = Clusterfile.parse(SEALOS).redacted();
  assert.not.match(out, 's3cret');
  assert.not.match(out, 'node-secret');
  assert.match(out, 'passwd: "*****"');
});

test('errors name the field', () => {
  const cases: Array<[string, string]> = [
    [SEALOS.replace('apps.sealos.io/v1beta1\nkind: Cluster', 'v1\nkind: Cluster'), 'apiVersion must be apps.sealos.io/v1beta1'],
    [SEALOS.replace('- 10.77.0.13:22', '- not-an-ip'), 'spec.hosts[1].ips[1] "not-an-ip" is not an IP'],
    [SEALOS.replace('port: 22\n    user: root', 'port: 99999\n    user: root'), 'spec.ssh.port must be a port number'],
    [SEALOS.replace('    - master\n', '    - node\n'), 'spec.hosts must have at least one host with the master role'],
    [SEALOS.replace('strategy: merge', 'strategy: squash'), 'strategy "squash" is not merge'],
    ['kind: Cluster\n  bad: [indent', 'Clusterfile:'],
  ];
  for (const [text, want] of cases) {
    try {
      Clusterfile.parse(text, 'Clusterfile').configs();
      assert.unreachable(want);
    } catch (e) {
      assert.is((e as { code: string }).code, 'CLUSTERFILE_INVALID', String(e));
      assert.ok((e as Error).message.includes(want), `${(e as Error).message} !~ ${want}`);
    }
  }
});

test.run();
