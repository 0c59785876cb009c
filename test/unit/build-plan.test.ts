/** The Sealfile parser and planner, on inline text: no files, no store. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseSealfile } from '../../src/build/parse.js';
import { plan, planFrom, type CopyStep, type PlanOptions, type RunStep } from '../../src/build/plan.js';
import { processWord, splitWords } from '../../src/build/words.js';
import { isSealimgError } from '../../src/errors.js';
import type { ImageConfig } from '../../src/oci/types.js';

const amd64 = { os: 'linux', architecture: 'amd64' };
const P = (text: string, opts: Partial<PlanOptions> = {}) => plan(parseSealfile(text, 'Sealfile'), { platform: amd64, ...opts });

function fails(fn: () => unknown, code: string, where: RegExp): void {
  try {
    fn();
  } catch (e) {
    assert.ok(isSealimgError(e), String(e));
    assert.is((e as { code: string }).code, code, (e as Error).message);
    assert.match((e as Error).message, where);
    return;
  }
  assert.unreachable('expected an error');
}

test('words: quotes, escapes and expansion as docker does', () => {
  const vars = new Map([['A', 'one'], ['E', '']]);
  assert.equal(splitWords(`a "b c" 'd $A' \\$A $A \${A}x`, { vars }), ['a', 'b c', 'd $A', '$A', 'one', 'onex']);
  assert.is(processWord('${E:-dflt}/${E-set}/${A:+alt}/${Z+alt}/$Z', { vars }), 'dflt//alt//');
  assert.is(processWord('"quoted \\"in\\" $A"', { vars }), 'quoted "in" one');
  fails(() => splitWords(`"open`, { where: 'F:1:1' }), 'SEALFILE_SYNTAX', /^F:1:1: unterminated double quote/);
  fails(() => processWord('${Q:?must be set}', { vars, where: 'F:2:3' }), 'SEALFILE_SYNTAX', /F:2:3: Q: must be set/);
});

test('parse: positions, continuation lines and flags', () => {
  const p = parseSealfile('# comment\nFROM scratch\n\n  COPY --chmod=755 \\\n    a b /x/\n', 'Kubefile');
  assert.is(p.instructions.length, 2);
  const copy = p.instructions[1]!;
  assert.is(copy.keyword, 'COPY');
  assert.is(copy.where, 'Kubefile:4:3');
  assert.equal(copy.flags.map((f) => [f.name, f.value, f.where]), [['chmod', '755', 'Kubefile:4:8']]);
  assert.is(copy.args, 'a b /x/');
});

test('parse: unknown instructions are SEALFILE_SYNTAX with file:line:col', () => {
  fails(() => parseSealfile('FROM scratch\n  FOO bar\n', 'dir/Sealfile'), 'SEALFILE_SYNTAX', /^dir\/Sealfile:2:3: unknown instruction "FOO"/);
  fails(() => parseSealfile('FROM scratch\nRUN <<EOF\necho\nEOF\n'), 'UNSUPPORTED', /Sealfile:2:1: here-documents/);
});

test('plan: ARG before FROM, build args, ENV and LABEL expansion', () => {
  const text = `ARG BASE=scratch
ARG VERSION=v1.0
FROM \${BASE}
ARG VERSION
ENV KUBE_VERSION=\${VERSION} PATH_X="a b"
ENV LEGACY value with  spaces
LABEL sealos.io.type=rootfs "sealos.io.version"=v1beta1 version=$KUBE_VERSION
`;
  const p = P(text, { buildArgs: { VERSION: 'v1.28.0', UNUSED: 'x' }, labels: { extra: 'yes' } });
  assert.is(p.from.image, 'scratch');
  assert.is(p.from.where, 'Sealfile:3:1');
  assert.equal(p.config.Env, ['KUBE_VERSION=v1.28.0', 'PATH_X=a b', 'LEGACY=value with  spaces']);
  assert.equal(p.config.Labels, { 'sealos.io.type': 'rootfs', 'sealos.io.version': 'v1beta1', version: 'v1.28.0', extra: 'yes' });
  assert.equal(p.warnings, ['build argument UNUSED was given but no ARG declares it']);
  assert.ok(p.steps.every((s) => s.kind === 'meta'));
  assert.is(planFrom(parseSealfile('ARG B=x\nFROM $B\n'), { platform: amd64, buildArgs: { B: 'example.com/base:1' } }).image, 'example.com/base:1');
});

test('plan: an ARG after FROM is not visible unless declared there', () => {
  const p = P('ARG G=global\nFROM scratch\nLABEL a=$G\nARG G\nLABEL b=$G\n');
  assert.equal(p.config.Labels, { a: '', b: 'global' });
});

test('plan: CMD and ENTRYPOINT keep the JSON or shell form as docker does', () => {
  const p = P('FROM scratch\nSHELL ["/bin/bash","-c"]\nCMD ["kubectl", "apply", "-f", "manifests"]\nENTRYPOINT echo $HOME\n');
  assert.equal(p.config.Cmd, ['kubectl', 'apply', '-f', 'manifests']);
  assert.equal(p.config.Entrypoint, ['/bin/bash', '-c', 'echo $HOME']);
  const q = P('FROM scratch\nCMD [not json\n');
  assert.equal(q.config.Cmd, ['/bin/sh', '-c', '[not json']);
});

test('plan: ENTRYPOINT resets a CMD inherited from the base image', () => {
  const base: ImageConfig = { architecture: 'amd64', os: 'linux', config: { Cmd: ['old'], Env: ['A=1'] }, rootfs: { type: 'layers', diff_ids: [] } };
  const p = P('FROM example.com/base\nENTRYPOINT ["run"]\nENV B=$A\n', { base });
  assert.is(p.config.Cmd, undefined);
  assert.equal(p.config.Env, ['A=1', 'B=1']);
});

test('plan: COPY/ADD sources, destinations against WORKDIR, --chmod, --from', () => {
  const p = P('FROM scratch\nWORKDIR /opt\nWORKDIR app\nCOPY --chmod=0640 a b ./\nCOPY --from=example.com/other:1 /etc/x y\nADD --checksum=sha256:' + 'a'.repeat(64) + ' https://h/f.yaml /m/\nCOPY ${ARCH}/bin /bin/\n');
  const copies = p.steps.filter((s): s is CopyStep => s.kind === 'copy');
  assert.is(p.config.WorkingDir, '/opt/app');
  assert.equal(copies[0], { kind: 'copy', where: 'Sealfile:4:1', createdBy: 'COPY --chmod=0640 a b ./', add: false, sources: ['a', 'b'], dest: '/opt/app/', chmod: 0o640 });
  assert.is(copies[1]!.from, 'example.com/other:1');
  assert.is(copies[1]!.dest, '/opt/app/y');
  assert.is(copies[2]!.add, true);
  assert.is(copies[2]!.checksum, `sha256:${'a'.repeat(64)}`);
  assert.equal(copies[3]!.sources, ['amd64/bin']);
});

test('plan: bad COPY/ADD forms name the file, line and column', () => {
  fails(() => P('FROM scratch\nCOPY a\n'), 'SEALFILE_SYNTAX', /^Sealfile:2:1: COPY needs at least one source/);
  fails(() => P('FROM scratch\nCOPY a b c\n'), 'SEALFILE_SYNTAX', /Sealfile:2:1: .*directory destination/);
  fails(() => P('FROM scratch\nCOPY  --mode=1 a b\n'), 'SEALFILE_SYNTAX', /^Sealfile:2:7: COPY does not take --mode/);
  fails(() => P('FROM scratch\nCOPY --chmod=9 a b\n'), 'SEALFILE_SYNTAX', /^Sealfile:2:6: --chmod=9 must be octal/);
  fails(() => P('FROM scratch\nCOPY https://x/y /\n'), 'SEALFILE_SYNTAX', /COPY cannot fetch URLs/);
  fails(() => P('FROM scratch\nCOPY --chown=1000 a /\n'), 'UNSUPPORTED', /Sealfile:2:6/);
});

test('plan: structure errors (no FROM, before FROM, stages, unsupported)', () => {
  fails(() => P('# nothing\n'), 'SEALFILE_SYNTAX', /Sealfile: no FROM/);
  fails(() => P('LABEL a=b\nFROM scratch\n'), 'SEALFILE_SYNTAX', /^Sealfile:1:1: LABEL before FROM/);
  fails(() => P('FROM scratch\nFROM scratch\n'), 'UNSUPPORTED', /^Sealfile:2:1: a second FROM/);
  fails(() => P('FROM x AS y\n'), 'UNSUPPORTED', /^Sealfile:1:1: named stages/);
  fails(() => P('FROM scratch\nHEALTHCHECK NONE\n'), 'UNSUPPORTED', /^Sealfile:2:1: HEALTHCHECK/);
  fails(() => P('FROM scratch\nENV lonely\n'), 'SEALFILE_SYNTAX', /^Sealfile:2:1: ENV lonely needs a value/);
});

test('plan: RUN gets ARG and ENV, the workdir, and the shell form as sh -c', () => {
  const p = P('FROM scratch\nARG A=1\nENV B=2\nWORKDIR /w\nRUN echo $A$B > out\nRUN ["touch", "x"]\n');
  const runs = p.steps.filter((s): s is RunStep => s.kind === 'run');
  assert.equal(runs[0]!.argv, ['/bin/sh', '-c', 'echo $A$B > out']);
  assert.is(runs[0]!.env.A, '1');
  assert.is(runs[0]!.env.B, '2');
  assert.is(runs[0]!.workdir, '/w');
  assert.equal(runs[1]!.argv, ['touch', 'x']);
});

test("plan: sealer's Kubefile instructions map onto labels, COPY steps and the extension", () => {
  const p = P(`FROM scratch
KUBEVERSION 1.19-1.28
APP dash local://dashboard.yaml https://example.com/extra.yaml
CNI calico local://calico/
APPCMDS dash ["kubectl apply -f dashboard.yaml"]
APPENV dash ns=kube-system
LAUNCH ["calico", "dash"]
`);
  assert.is(p.config.Labels![`app.alpha.sealer.io/supported-kube-version`], '1.19-1.28');
  assert.is(p.config.Labels!['cluster.alpha.sealer.io/kube-cni-calico'], 'true');
  const copies = p.steps.filter((s): s is CopyStep => s.kind === 'copy');
  assert.equal(copies.map((c) => [c.add, c.sources, c.dest]), [
    [false, ['dashboard.yaml'], '/application/apps/dash/'],
    [true, ['https://example.com/extra.yaml'], '/application/apps/dash/'],
    [false, ['calico/'], '/application/apps/calico/'],
  ]);
  assert.equal(p.sealer!.apps.map((a) => a.name), ['dash', 'calico']);
  assert.equal(p.sealer!.appCmds, { dash: ['kubectl apply -f dashboard.yaml'] });
  assert.equal(p.sealer!.appEnv, { dash: { ns: 'kube-system' } });
  assert.equal(p.sealer!.launchApps, ['calico', 'dash']);
});

test('plan: Kubefile rules sealer enforces', () => {
  fails(() => P('FROM scratch\nAPP a local://x\nLAUNCH ["a"]\nLABEL x=y\n'), 'SEALFILE_SYNTAX', /^Sealfile:3:1: LAUNCH must be the last/);
  fails(() => P('FROM scratch\nLAUNCH ["nope"]\n'), 'SEALFILE_SYNTAX', /LAUNCH names "nope"/);
  fails(() => P('FROM scratch\nAPP a ftp://x\n'), 'SEALFILE_SYNTAX', /^Sealfile:2:1: APP source "ftp:\/\/x"/);
  fails(() => P('FROM scratch\nAPPCMDS a ["x"]\n'), 'SEALFILE_SYNTAX', /APPCMDS names "a"/);
});

test.run();
