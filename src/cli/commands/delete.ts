/** sealimg delete: remove masters or nodes from a cluster. */
import { deleteHosts } from '../../runner/membership.js';
import { membershipCommand } from '../cluster-apply.js';

export default membershipCommand(
  'delete',
  'Remove masters or nodes from a cluster',
  `
Drains each host with kubectl on master0, resets it (kubeadm reset; a master's
etcd member is removed), cleans its files and takes it out of the Clusterfile;
then every node's load balancer is updated. master0 cannot be deleted.
`,
  deleteHosts,
);
