/** .sealignore/.dockerignore rules, as docker reads them. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { IgnoreRules, globToRegExp } from '../../src/build/ignore.js';

test('globs: * and ? stay in one component, ** spans many, classes and escapes', () => {
  assert.ok(globToRegExp('*.yaml').test('a.yaml'));
  assert.not.ok(globToRegExp('*.yaml').test('dir/a.yaml'));
  assert.ok(globToRegExp('**/*.bak').test('a/b/c.bak'));
  assert.ok(globToRegExp('**/*.bak').test('c.bak'));
  assert.ok(globToRegExp('file?.[ch]').test('file1.c'));
  assert.not.ok(globToRegExp('file[!0-9].c').test('file1.c'));
  assert.ok(globToRegExp('a\\*b').test('a*b'));
  assert.not.ok(globToRegExp('a\\*b').test('axb'));
});

test('rules: comments, leading slash, parents, ! exceptions, last match wins', () => {
  const r = new IgnoreRules('# editor files\n*.swp\n/build\n**/*.bak\n!keep.bak\ndocs/*\n!docs/README.md\n');
  assert.ok(r.ignores('x.swp'));
  assert.not.ok(r.ignores('dir/x.swp'), '* does not cross /');
  assert.ok(r.ignores('build'));
  assert.ok(r.ignores('build/out/a.o'), 'a matching parent ignores what is inside');
  assert.ok(r.ignores('a/b/old.bak'));
  assert.not.ok(r.ignores('keep.bak'));
  assert.ok(r.ignores('docs/guide.md'));
  assert.not.ok(r.ignores('docs/README.md'));
  assert.ok(r.hasExceptions);
  assert.not.ok(new IgnoreRules('').ignores('anything'));
});

test.run();
