/** sealimg add: add masters or nodes to a running cluster. */
import { addHosts } from '../../runner/membership.js';
import { membershipCommand } from '../cluster-apply.js';

export default membershipCommand(
  'add',
  'Add masters or nodes to a cluster',
  `
Installs the cluster's images on the new hosts and joins them (masters one at a
time, as control plane); every node's load balancer is updated when masters
are added. Hosts already in the cluster are skipped, so a failed add is run again.
`,
  addHosts,
);
