import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { parseAllDocuments } from 'yaml';
import { kubeadmApiVersion, kubeadmDocuments, kubeadmYaml } from '../../src/runner/kubeadm.js';

const test = suite('kubeadm configuration');
const masters = [{ name: 'm0', ip: '10.77.0.11' }, { name: 'm1', ip: '10.77.0.12' }];
const kind = (docs: Array<Record<string, unknown>>, k: string) => docs.find((d) => d.kind === k) as Record<string, any>;

test('API version follows the Kubernetes version', () => {
  assert.is(kubeadmApiVersion('v1.21.14'), 'kubeadm.k8s.io/v1beta2');
  assert.is(kubeadmApiVersion('v1.28.14'), 'kubeadm.k8s.io/v1beta3');
  assert.is(kubeadmApiVersion('v1.30.0'), 'kubeadm.k8s.io/v1beta3');
  assert.is(kubeadmApiVersion('1.31.1'), 'kubeadm.k8s.io/v1beta4');
});

test('defaults: endpoint, embedded registry, SANs, 876000h signing', () => {
  for (const [v, listArgs] of [['v1.28.14', false], ['v1.31.1', true]] as const) {
    const docs = kubeadmDocuments({ kubeVersion: v, masters });
    const c = kind(docs, 'ClusterConfiguration');
    assert.is(c.apiVersion, kubeadmApiVersion(v));
    assert.is(c.controlPlaneEndpoint, 'apiserver.cluster.local:6443');
    assert.is(c.imageRepository, 'sealos.hub:5000');
    for (const san of ['10.77.0.11', '10.77.0.12', '10.103.97.2', 'apiserver.cluster.local', '127.0.0.1', 'localhost', 'kubernetes.default.svc.cluster.local']) assert.ok(c.apiServer.certSANs.includes(san), san);
    const args = c.controllerManager.extraArgs;
    if (listArgs) assert.ok(args.some((a: { name: string; value: string }) => a.name === 'cluster-signing-duration' && a.value === '876000h'));
    else assert.is(args['cluster-signing-duration'], '876000h');
    assert.is(kind(docs, 'InitConfiguration').localAPIEndpoint.advertiseAddress, '10.77.0.11');
    assert.equal(kind(docs, 'KubeProxyConfiguration').ipvs.excludeCIDRs, ['10.103.97.2/32']);
  }
});

test('Clusterfile documents override field by field, in either extraArgs form', () => {
  const docs = kubeadmDocuments({
    kubeVersion: 'v1.31.1',
    masters,
    overrides: [
      { apiVersion: 'kubeadm.k8s.io/v1beta3', kind: 'ClusterConfiguration', networking: { podSubnet: '172.20.0.0/16' }, controllerManager: { extraArgs: { 'node-cidr-mask-size': '25' } } },
      { apiVersion: 'kubeproxy.config.k8s.io/v1alpha1', kind: 'KubeProxyConfiguration', mode: 'iptables' },
    ],
  });
  const c = kind(docs, 'ClusterConfiguration');
  assert.is(c.apiVersion, 'kubeadm.k8s.io/v1beta4', 'the version that fits the cluster wins');
  assert.is(c.networking.podSubnet, '172.20.0.0/16');
  assert.is(c.networking.serviceSubnet, '10.96.0.0/22', 'fields not overridden stay');
  assert.equal(c.controllerManager.extraArgs, [{ name: 'node-cidr-mask-size', value: '25' }]);
  assert.is(kind(docs, 'KubeProxyConfiguration').mode, 'iptables');
  const yaml = kubeadmYaml(docs, ['InitConfiguration', 'ClusterConfiguration']);
  assert.equal(parseAllDocuments(yaml).map((d: any) => d.toJS().kind), ['InitConfiguration', 'ClusterConfiguration']);
});

test('bad values are errors that name the field', () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ kind: 'ClusterConfiguration', networking: { podSubnet: '10.0.0.0/33' } }, 'ClusterConfiguration.networking.podSubnet'],
    [{ kind: 'ClusterConfiguration', controlPlaneEndpoint: 'no-port' }, 'ClusterConfiguration.controlPlaneEndpoint'],
    [{ kind: 'KubeProxyConfiguration', mode: 'userspace' }, 'KubeProxyConfiguration.mode'],
    [{ kind: 'ClusterConfiguration', kubernetesVersion: 'latest' }, 'kubernetesVersion'],
    [{ kind: 'Banana' }, 'of kind "Banana"'],
  ];
  for (const [o, field] of cases) {
    try {
      kubeadmDocuments({ kubeVersion: 'v1.28.14', masters, overrides: [o] });
      assert.unreachable(field);
    } catch (e) {
      assert.is((e as { code: string }).code, 'CLUSTERFILE_INVALID');
      assert.ok((e as Error).message.includes(field), `${(e as Error).message} !~ ${field}`);
    }
  }
});

test.run();
