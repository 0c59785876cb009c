/**
 * The cluster's certificates and kubeconfigs, made by sealimg rather than by
 * kubeadm (whose leaf certificates last one year): every CA and leaf valid for
 * 99 years, as sealos' and sealer's are, with SANs for every master, the VIP
 * and the names kubeadm itself would put in. kubeadm finds them in place and
 * uses them. Layout and subjects follow kubeadm's (`/etc/kubernetes/pki`).
 */
import 'reflect-metadata'; // @peculiar/x509's dependency injection needs it loaded first
import * as x509 from '@peculiar/x509';
import { KeyObject, webcrypto } from 'node:crypto';
import { stringify } from 'yaml';
import { SealimgError } from '../errors.js';
import type { PkiFiles } from './pki-files.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const RSA: webcrypto.RsaHashedKeyGenParams = { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256', publicExponent: new Uint8Array([1, 0, 1]), modulusLength: 2048 };
const YEAR_MS = 365.25 * 24 * 3600 * 1000;

export interface PkiOptions {
  /** Every master: hostname (node name) and IP, master0 first. */
  masters: Array<{ name: string; ip: string }>;
  /** The apiserver VIP nodes reach through their local load balancer. */
  vip: string;
  /** Extra apiserver SANs (`--alt-names`, the Clusterfile's certSANs). */
  altNames?: string[];
  /** The service CIDR; its first address is the `kubernetes` service's IP. */
  serviceSubnet?: string;
  dnsDomain?: string;
  /** The endpoint kubeconfigs point at. */
  controlPlaneEndpoint?: string;
  /** Kubernetes version: from 1.29 the admin kubeconfig's group is kubeadm:cluster-admins. */
  kubeVersion: string;
  years?: number;
  now?: Date;
}

interface KeyPair {
  keys: CryptoKeyPair;
  cert: x509.X509Certificate;
}


function keyPem(k: CryptoKey): string {
  return KeyObject.from(k).export({ type: 'pkcs1', format: 'pem' }) as string;
}

async function importKey(pem: string): Promise<CryptoKeyPair> {
  const { createPrivateKey, createPublicKey } = await import('node:crypto');
  const priv = createPrivateKey(pem);
  const pub = createPublicKey(priv);
  return {
    privateKey: await webcrypto.subtle.importKey('pkcs8', priv.export({ type: 'pkcs8', format: 'der' }), RSA, true, ['sign']),
    publicKey: await webcrypto.subtle.importKey('spki', pub.export({ type: 'spki', format: 'der' }), RSA, true, ['verify']),
  };
}

function firstServiceIP(cidr: string): string {
  const [net, bits] = cidr.split('/');
  const parts = (net ?? '').split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255) || !bits) {
    throw new SealimgError('CLUSTERFILE_INVALID', `serviceSubnet "${cidr}" is not an IPv4 CIDR`);
  }
  const n = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
  const first = (n + 1) >>> 0;
  return [first >>> 24, (first >>> 16) & 255, (first >>> 8) & 255, first & 255].join('.');
}

const isIP = (s: string) => /^[0-9.]+$/.test(s) || s.includes(':');

function sans(names: string[]): x509.SubjectAlternativeNameExtension {
  const uniq = [...new Set(names.filter(Boolean))];
  return new x509.SubjectAlternativeNameExtension(uniq.map((v) => ({ type: isIP(v) ? 'ip' : 'dns', value: v }) as x509.JsonGeneralName));
}

function serial(): string {
  // Positive, 16 random bytes, as RFC 5280 asks (at most 20 octets).
  const b = webcrypto.getRandomValues(new Uint8Array(16));
  b[0] = b[0]! & 0x7f;
  return Buffer.from(b).toString('hex');
}

export class PkiBuilder {
  private readonly notBefore: Date;
  private readonly notAfter: Date;

  constructor(private readonly opts: PkiOptions) {
    // A little in the past, so a host whose clock is slightly behind accepts them at once.
    this.notBefore = new Date((opts.now ?? new Date()).getTime() - 5 * 60 * 1000);
    this.notAfter = new Date(this.notBefore.getTime() + (opts.years ?? 99) * YEAR_MS);
  }

  private async ca(cn: string, existing?: { cert: string; key: string }): Promise<KeyPair> {
    if (existing) return { keys: await importKey(existing.key), cert: new x509.X509Certificate(existing.cert) };
    const keys = await webcrypto.subtle.generateKey(RSA, true, ['sign', 'verify']);
    const cert = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=${cn}`,
      notBefore: this.notBefore,
      notAfter: this.notAfter,
      keys,
      signingAlgorithm: RSA,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return { keys, cert };
  }

  private async leaf(ca: KeyPair, subject: string, usage: Array<'server' | 'client'>, altNames: string[] = []): Promise<KeyPair> {
    const keys = await webcrypto.subtle.generateKey(RSA, true, ['sign', 'verify']);
    const eku = usage.map((u) => (u === 'server' ? x509.ExtendedKeyUsage.serverAuth : x509.ExtendedKeyUsage.clientAuth));
    const extensions: x509.Extension[] = [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment, true),
      new x509.ExtendedKeyUsageExtension(eku),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ];
    if (altNames.length > 0) extensions.push(sans(altNames));
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject,
      issuer: ca.cert.subject,
      notBefore: this.notBefore,
      notAfter: this.notAfter,
      publicKey: keys.publicKey,
      signingKey: ca.keys.privateKey,
      signingAlgorithm: RSA,
      extensions,
    });
    return { keys, cert };
  }

  private kubeconfig(ca: KeyPair, user: string, client: KeyPair): string {
    const b64 = (s: string) => Buffer.from(s).toString('base64');
    const server = `https://${this.opts.controlPlaneEndpoint ?? 'apiserver.cluster.local:6443'}`;
    return stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'kubernetes', cluster: { server, 'certificate-authority-data': b64(ca.cert.toString('pem')) } }],
      contexts: [{ name: `${user}@kubernetes`, context: { cluster: 'kubernetes', user } }],
      'current-context': `${user}@kubernetes`,
      users: [{ name: user, user: { 'client-certificate-data': b64(client.cert.toString('pem')), 'client-key-data': b64(keyPem(client.keys.privateKey)) } }],
    });
  }

  /**
   * Every file kubeadm expects under /etc/kubernetes. CAs and the service
   * account key already in `existing` are kept, so re-running (or adding a
   * master) never changes the cluster's trust roots.
   */
  async build(existing: PkiFiles = new Map()): Promise<PkiFiles> {
    const o = this.opts;
    if (o.masters.length === 0) throw new SealimgError('CLUSTERFILE_INVALID', 'a cluster needs at least one master');
    const master0 = o.masters[0]!;
    const domain = o.dnsDomain ?? 'cluster.local';
    const have = (base: string) => {
      const cert = existing.get(`${base}.crt`);
      const key = existing.get(`${base}.key`);
      return cert && key ? { cert, key } : undefined;
    };
    const [ca, frontCa, etcdCa] = await Promise.all([
      this.ca('kubernetes', have('pki/ca')),
      this.ca('front-proxy-ca', have('pki/front-proxy-ca')),
      this.ca('etcd-ca', have('pki/etcd/ca')),
    ]);
    const masterNames = o.masters.flatMap((m) => [m.name, m.ip]);
    const apiserverSans = [
      ...masterNames,
      o.vip,
      'apiserver.cluster.local',
      'kubernetes',
      'kubernetes.default',
      'kubernetes.default.svc',
      `kubernetes.default.svc.${domain}`,
      'localhost',
      '127.0.0.1',
      firstServiceIP(o.serviceSubnet ?? '10.96.0.0/12'),
      ...(o.altNames ?? []),
    ];
    const etcdSans = [...masterNames, 'localhost', '127.0.0.1', '::1'];
    const minor = Number(/^v?\d+\.(\d+)/.exec(o.kubeVersion)?.[1] ?? NaN);
    if (Number.isNaN(minor)) throw new SealimgError('CLUSTERFILE_INVALID', `kubernetes version "${o.kubeVersion}" is not vMAJOR.MINOR.PATCH`);
    const adminGroup = minor >= 29 ? 'kubeadm:cluster-admins' : 'system:masters';

    const [apiserver, kubeletClient, etcdClient, frontClient, etcdServer, etcdPeer, etcdHealth, admin, controller, scheduler, kubelet] = await Promise.all([
      this.leaf(ca, 'CN=kube-apiserver', ['server'], apiserverSans),
      this.leaf(ca, `CN=kube-apiserver-kubelet-client, O=${adminGroup}`, ['client']),
      this.leaf(etcdCa, 'CN=kube-apiserver-etcd-client', ['client']),
      this.leaf(frontCa, 'CN=front-proxy-client', ['client']),
      this.leaf(etcdCa, `CN=${master0.name}`, ['server', 'client'], etcdSans),
      this.leaf(etcdCa, `CN=${master0.name}`, ['server', 'client'], etcdSans),
      this.leaf(etcdCa, 'CN=kube-etcd-healthcheck-client', ['client']),
      this.leaf(ca, `CN=kubernetes-admin, O=${adminGroup}`, ['client']),
      this.leaf(ca, 'CN=system:kube-controller-manager', ['client']),
      this.leaf(ca, 'CN=system:kube-scheduler', ['client']),
      this.leaf(ca, `CN=system:node:${master0.name}, O=system:nodes`, ['client']),
    ]);

    const out: PkiFiles = new Map();
    const put = (base: string, kp: KeyPair) => {
      out.set(`${base}.crt`, kp.cert.toString('pem') + '\n');
      out.set(`${base}.key`, keyPem(kp.keys.privateKey));
    };
    put('pki/ca', ca);
    put('pki/front-proxy-ca', frontCa);
    put('pki/etcd/ca', etcdCa);
    put('pki/apiserver', apiserver);
    put('pki/apiserver-kubelet-client', kubeletClient);
    put('pki/apiserver-etcd-client', etcdClient);
    put('pki/front-proxy-client', frontClient);
    put('pki/etcd/server', etcdServer);
    put('pki/etcd/peer', etcdPeer);
    put('pki/etcd/healthcheck-client', etcdHealth);

    let sa = existing.get('pki/sa.key');
    if (!sa) sa = keyPem((await webcrypto.subtle.generateKey(RSA, true, ['sign', 'verify'])).privateKey);
    out.set('pki/sa.key', sa);
    const { createPublicKey } = await import('node:crypto');
    out.set('pki/sa.pub', createPublicKey(sa).export({ type: 'spki', format: 'pem' }) as string);

    out.set('admin.conf', this.kubeconfig(ca, 'kubernetes-admin', admin));
    out.set('controller-manager.conf', this.kubeconfig(ca, 'system:kube-controller-manager', controller));
    out.set('scheduler.conf', this.kubeconfig(ca, 'system:kube-scheduler', scheduler));
    out.set('kubelet.conf', this.kubeconfig(ca, `system:node:${master0.name}`, kubelet));
    if (minor >= 29) {
      // From 1.29 kubeadm init binds kubeadm:cluster-admins with this break-glass identity; sealimg
      // skips kubeadm's kubeconfig phase, so it must make it too.
      const superAdmin = await this.leaf(ca, 'CN=kubernetes-super-admin, O=system:masters', ['client']);
      out.set('super-admin.conf', this.kubeconfig(ca, 'kubernetes-super-admin', superAdmin));
    }
    return out;
  }
}
