/**
 * For the cleanupStaleHosts test: makes one test host, prints its namespace
 * name, and waits to be killed with SIGKILL (so no exit handler runs), as a
 * crashed test run would. Exits by itself after 60 s at most.
 */
import { createTestHosts } from './hosts.js';

const hosts = await createTestHosts({ count: 1 });
process.stdout.write(`${hosts.hosts[0].netns}\n`);
setTimeout(() => void hosts.teardown().then(() => process.exit(1)), 60_000);
