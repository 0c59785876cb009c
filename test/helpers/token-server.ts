/**
 * A small token server for the distribution token auth flow: checks Basic
 * credentials, grants the requested scopes, and signs a JWT (ES256, with the
 * signing certificate in x5c) that the real registry verifies against the
 * certificate bundle in its config. The key and certificate are made here.
 */
import { createPrivateKey, sign } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { ok } from './cli.js';
import { tmpDir } from './tmp.js';

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** The certificate the registry trusts tokens from. */
  certFile: string;
  /** Token requests seen: the scopes each asked for, who asked, and how (GET with Basic, or an OAuth2 refresh-token POST). */
  requests: Array<{ scopes: string[]; user?: string; method?: string }>;
  /** When > 0, that many next tokens grant nothing (so the registry refuses them). */
  emptyGrants: number;
  stop(): Promise<void>;
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export async function startTokenServer(users: Record<string, string>, refreshTokens: Record<string, string> = {}): Promise<TokenServer> {
  const dir = await tmpDir('sealimg-token-');
  const keyFile = join(dir, 'token.key');
  const certFile = join(dir, 'token.crt');
  await ok('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=sealimg test token signer']);
  const key = createPrivateKey(await readFile(keyFile, 'utf8'));
  const certPem = await readFile(certFile, 'utf8');
  const certDer = certPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const service = 'sealimg-test-registry';
  const issuer = 'sealimg-test-issuer';
  const state: Pick<TokenServer, 'requests' | 'emptyGrants'> = { requests: [], emptyGrants: 0 };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    let user: string | undefined;
    if (req.method === 'POST') {
      // OAuth2 refresh-token grant, as docker sends with an identity token.
      let text = '';
      for await (const c of req) text += c;
      const form = new URLSearchParams(text);
      user = form.get('grant_type') === 'refresh_token' ? refreshTokens[form.get('refresh_token') ?? ''] : undefined;
      if (!user) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"details":"invalid refresh token"}');
        return;
      }
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
    }
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const plain = Buffer.from(auth.slice(6), 'base64').toString();
      const colon = plain.indexOf(':');
      const [u, p] = [plain.slice(0, colon), plain.slice(colon + 1)];
      if (users[u] !== p) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end('{"details":"wrong user name or password"}');
        return;
      }
      user = u;
    }
    state.requests.push({ scopes, user, method: req.method });
    const grantNothing = state.emptyGrants > 0 ? (state.emptyGrants--, true) : false;
    // Logged-in users get what they ask for; anonymous users nothing.
    const access = user && !grantNothing
      ? scopes.map((s) => {
          const [type, ...rest] = s.split(':');
          const actions = rest.pop()!.split(',');
          return { type, name: rest.join(':'), actions };
        })
      : [];
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer] };
    const claims = { iss: issuer, sub: user ?? '', aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: `${now}-${Math.random()}`, access };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const signature = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
    const token = `${signingInput}.${b64url(signature)}`;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
  };
  const server = createServer((req, res) => void handle(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  const out: TokenServer = {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    get requests() {
      return state.requests;
    },
    get emptyGrants() {
      return state.emptyGrants;
    },
    set emptyGrants(n: number) {
      state.emptyGrants = n;
    },
    stop: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
  return out;
}
