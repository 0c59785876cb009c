/** Image discovery on inline manifests and values: what sealos would embed, read as YAML. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { manifestImages, mergeValues, podImages, referenceLines, valuesImages } from '../../src/build/discover.js';

test('shim lists: one reference a line, # comments and blanks skipped', () => {
  assert.equal(referenceLines('# images\nnginx:1.25  \n\n  quay.io/a/b@sha256:' + 'a'.repeat(64) + ' # pinned\n'), ['nginx:1.25', `quay.io/a/b@sha256:${'a'.repeat(64)}`]);
});

test('manifests: every pod spec in every document, init and ephemeral containers, quoted and pinned refs', () => {
  const text = `apiVersion: batch/v1
kind: CronJob
spec:
  jobTemplate:
    spec:
      template:
        spec:
          initContainers: [{name: i, image: "busybox:1.36"}]
          containers:
            - {name: c, image: 'registry.k8s.io/pause:3.9'}
---
kind: Pod
spec:
  ephemeralContainers:
    - name: debug
      image: example.com/debug@sha256:${'b'.repeat(64)}
  containers:
    - name: x
      # image: commented/out:1
      image: nginx
---
kind: ConfigMap
data:
  note: "image: not-an-image:1"
`;
  assert.equal(manifestImages(text, 'manifests/x.yaml').images, ['busybox:1.36', 'registry.k8s.io/pause:3.9', `example.com/debug@sha256:${'b'.repeat(64)}`, 'nginx']);
});

test('manifests: a template that is not YAML falls back to image: lines; broken YAML is reported', () => {
  const tmpl = 'spec:\n  containers:\n  - name: a\n    image: {{ .registry }}/x:1\n  - name: b\n    image: "sealos.hub:5000/y:2"\n{{- if .z }}\n';
  const r = manifestImages(tmpl, 'manifests/a.yaml.tmpl');
  assert.equal(r.images, ['sealos.hub:5000/y:2']);
  assert.match(r.note!, /a template/);
  assert.match(manifestImages('a: [b\n', 'manifests/bad.yaml').note!, /bad\.yaml: not valid YAML, skipped/);
});

test('helm values: strings and registry/repository/tag/digest maps, the file beside the chart merged over them', () => {
  const chart = { image: { registry: 'docker.io', repository: 'library/redis', tag: '7.0' }, sidecar: { image: 'busybox:1' }, exporterImage: { repository: 'x/exp', digest: `sha256:${'c'.repeat(64)}` } };
  assert.equal(valuesImages(chart), ['docker.io/library/redis:7.0', 'busybox:1', `x/exp@sha256:${'c'.repeat(64)}`]);
  assert.equal(valuesImages(mergeValues(chart, { image: { tag: '7.2' } })).slice(0, 1), ['docker.io/library/redis:7.2']);
  assert.equal(podImages({ containers: [{ image: 'a:1' }, { name: 'no-image' }] }), ['a:1']);
});

test.run();
