import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { render } from '../../src/runner/template.js';

const test = suite('templates (sealos .tmpl subset)');
const vars = { registryDomain: 'sealos.hub', registryPort: '5000', criData: '/var/lib/containerd', empty: '' };

test('values, defaults, quote', () => {
  assert.is(render('endpoint = "{{ .registryDomain }}:{{ .registryPort }}"', vars), 'endpoint = "sealos.hub:5000"');
  assert.is(render('root = {{ .criData | quote }}', vars), 'root = "/var/lib/containerd"');
  assert.is(render('u: {{ .registryUsername | default "admin" }}', vars), 'u: admin');
  assert.is(render('u: {{ default "x" .empty }}', vars), 'u: x');
});

test('if / else / end with trims', () => {
  const src = 'a:\n{{- if .criData }}\n  data: {{ .criData }}\n{{- else }}\n  data: none\n{{- end }}\nb: 1\n';
  assert.is(render(src, vars), 'a:\n  data: /var/lib/containerd\nb: 1\n');
  assert.is(render(src, { }), 'a:\n  data: none\nb: 1\n');
  assert.is(render('{{ if .empty }}yes{{ else }}no{{ end }}', vars), 'no');
});

test('unsupported actions and missing values fail with file:line', () => {
  for (const [src, why] of [
    ['x\n{{ range .items }}{{ end }}', 'etc/a.tmpl:2: unsupported template action'],
    ['{{ .a | upper }}', 'etc/a.tmpl:1: unsupported template function "upper"'],
    ['\n\n{{ .missing }}', 'etc/a.tmpl:3: {{ .missing }}: "missing" is not set'],
    ['{{ if .a }}open', 'etc/a.tmpl:1: {{ if }} is not closed'],
    ['{{ .a', 'unclosed {{'],
  ]) {
    try {
      render(src!, { a: '1' }, 'etc/a.tmpl');
      assert.unreachable(src);
    } catch (e) {
      assert.ok((e as Error).message.includes(why!), `${(e as Error).message} !~ ${why}`);
    }
  }
});

test.run();
